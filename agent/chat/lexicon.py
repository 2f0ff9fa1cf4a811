"""The word lists the chat parser reads, from data files in ``lexicon/``.

One JSON file per language (``en.json``, ``fr.json``, ...): stop words for language detection
and, for the languages the rules parse (:data:`PARSED_LANGUAGES`), negators, title cues, year
phrases and reply lines. ``attributes.json`` holds the words that name attribute values
(MovieLens genres: "scary" → Horror, "Zeichentrick*" → Animation); ``occasions.json`` the
occasion and mood phrases ("a date night" → Romance; "Christmas Eve" → nothing, but no title
either). Edit the files to add a language or another catalog's vocabulary; no code changes.

All matching happens on :func:`fold`-ed text: lower case, accents dropped, same length as the
input, so a span found in the folded text cuts the same span out of the original.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = [
    "LEXICON_DIR",
    "PARSED_LANGUAGES",
    "fold",
    "language",
    "language_names",
    "detection_words",
    "words",
    "year_words",
    "attribute_words",
    "occasion_phrases",
    "refine_words",
    "ordinal_words",
    "tone_genres",
    "reply_line",
    "alternation",
    "tokenize",
]

LEXICON_DIR = Path(__file__).resolve().parent / "lexicon"
PARSED_LANGUAGES = ("en", "fr", "de", "es")
"""Languages whose requests the rules parse; others get a reply saying which ones are read."""

_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "ʼ": "'", "`": "'"})


def fold(text: str) -> str:
    """Lower case without accents, character for character (``len(fold(s)) == len(s)``)."""
    out = []
    for c in text.translate(_APOSTROPHES):
        base = unicodedata.normalize("NFD", c)
        out.append(base[0] if len(base) > 1 and unicodedata.combining(base[1]) else c)
    return "".join(out).lower()


@functools.cache
def language(code: str) -> dict[str, Any]:
    """The parsed JSON of ``lexicon/<code>.json``."""
    return json.loads((LEXICON_DIR / f"{code}.json").read_text(encoding="utf-8"))


@functools.cache
def _codes() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in LEXICON_DIR.glob("*.json") if p.stem not in ("attributes", "occasions")))


def language_names() -> dict[str, str]:
    return {c: language(c)["name"] for c in _codes()}


_EVIDENCE = ("stop_words", "negators", "like_cues", "dislike_cues", "dislike_after", "clause_breaks", "more", "reset")


@functools.cache
def detection_words() -> dict[str, frozenset[str]]:
    """Language → words typical of it (folded), for :func:`~recagent.chat.language.detect_language`:
    its stop words and the single words of its cue, year and attribute lists."""
    out = {}
    for code in _codes():
        lang = language(code)
        phrases = [p for key in _EVIDENCE for p in lang.get(key, [])]
        for v in lang.get("years", {}).values():
            phrases += list(v) if isinstance(v, (list, dict)) else []
        for values in _attributes().values():
            for per_lang in values.values():
                phrases += per_lang.get(code, [])
        # "horror*" (German compounds) counts as its stem: detect_language also tries word prefixes
        found = {w for p in phrases for w in re.findall(r"[^\W\d_]{2,}\*?", fold(p))}
        out[code] = frozenset(found | {fold(w) for w in lang["stop_words"]})
    return out


@functools.cache
def words(key: str, langs: tuple[str, ...] = PARSED_LANGUAGES) -> tuple[str, ...]:
    """The folded union of one list (``"negators"``, ``"like_cues"``, ...) over ``langs``."""
    out: dict[str, None] = {}
    for code in langs:
        for w in language(code).get(key, []):
            out[fold(w)] = None
    return tuple(out)


@functools.cache
def year_words(key: str) -> tuple[str, ...]:
    """The folded union of ``years.<key>`` over the parsed languages (``"before"``, ``"or_later"``)."""
    out: dict[str, None] = {}
    for code in PARSED_LANGUAGES:
        for w in language(code).get("years", {}).get(key, []):
            out[fold(w)] = None
    return tuple(out)


@functools.cache
def decade_words() -> dict[str, int]:
    """Folded decade names of every parsed language ("nineties", "neunzigern", ...) → first year."""
    out: dict[str, int] = {}
    for code in PARSED_LANGUAGES:
        for w, y in language(code).get("years", {}).get("decades", {}).items():
            out[fold(w)] = int(y)
    return out


@functools.cache
def _attributes() -> dict[str, dict[str, dict[str, list[str]]]]:
    data = json.loads((LEXICON_DIR / "attributes.json").read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


@functools.cache
def _occasions() -> dict[str, list[dict[str, Any]]]:
    data = json.loads((LEXICON_DIR / "occasions.json").read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


@functools.cache
def occasion_phrases() -> tuple[str, ...]:
    """Folded occasion phrases of every parsed language, with or without values."""
    return tuple(
        dict.fromkeys(fold(p) for code in PARSED_LANGUAGES for g in _occasions().get(code, []) for p in g["phrases"])
    )


@functools.cache
def refine_words(key: str) -> tuple[str, ...]:
    """Folded ``refine.<key>`` phrases of every parsed language ("older", "plus récent", "weniger")."""
    out: dict[str, None] = {}
    for code in PARSED_LANGUAGES:
        for w in language(code).get("refine", {}).get(key, []):
            out[fold(w)] = None
    return tuple(out)


@functools.cache
def ordinal_words() -> dict[str, int]:
    """Folded ordinal words of every parsed language → list position (-1: the last)."""
    out: dict[str, int] = {}
    for code in PARSED_LANGUAGES:
        for w, i in language(code).get("refine", {}).get("ordinals", {}).items():
            out[fold(w)] = int(i)
    return out


@functools.cache
def tone_genres() -> tuple[tuple[tuple[str, ...], tuple[str, ...]], ...]:
    """(folded tone words, genres a "less <tone>" turn leaves out), from ``occasions.json``."""
    return tuple(
        (tuple(fold(w) for w in g["words"]), tuple(g["genres"])) for g in _occasions().get("tones", {}).get("words", [])
    )


def attribute_words(attr: str, value: str) -> list[str]:
    """Folded words naming ``value`` of ``attr`` in any parsed language (its word list and the
    occasion phrases that carry it), plus the value's own name (so a catalog without a word
    list still matches its values by name)."""
    per_lang = _attributes().get(attr, {}).get(value, {})
    out = [fold(w) for code in PARSED_LANGUAGES for w in per_lang.get(code, [])]
    out += [fold(p) for code in PARSED_LANGUAGES for g in _occasions().get(code, [])
            if value in g.get("include", {}).get(attr, []) for p in g["phrases"]]  # fmt: skip
    name = fold(value)
    out += [name, name.replace("-", " ")]
    return list(dict.fromkeys(w for w in out if w.strip()))


def reply_line(lang: str, key: str, **fields: Any) -> str | None:
    """A reply line in ``lang`` from its lexicon (``None`` when that language has no such line)."""
    try:
        tmpl = language(lang).get("replies", {}).get(key)
    except FileNotFoundError:
        return None
    return tmpl.format(**fields) if tmpl else None


def alternation(phrases: Iterable[str]) -> str:
    """A regex group matching any phrase, longest first; spaces match any whitespace and a
    trailing ``*`` any word ending ("horror*" → "horrorfilme")."""
    parts = []
    for p in sorted(set(phrases), key=len, reverse=True):
        star = p.endswith("*")
        core = re.escape(p.rstrip("*")).replace(r"\ ", r"\s+")
        parts.append(core + (r"\w*" if star else ""))
    return "(?:" + "|".join(parts) + ")" if parts else "(?!)"


# French elisions (l', d', qu') are tokens of their own, so "d'horreur" reads as "d'" + "horreur";
# English contractions ("don't", "isn't") stay whole.
_TOKEN = re.compile(r"\b(?:[ldjmnst]|qu|jusqu)'(?=\w|\s|$)|\w+(?:['-]\w+)*|[^\w\s]")


def tokenize(folded: str) -> list[tuple[str, int, int]]:
    """(token, start, end) over folded text: words, elisions and single punctuation marks."""
    return [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(folded)]
