"""Catalog titles from what people type: "the matrix", "Amélie", "Lola rennt", "Alien (1979)"."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any

from ..data import Catalog
from ..titles import normalize_title
from .lexicon import fold

__all__ = ["TitleResolver"]

_LEADING_ARTICLE = re.compile(r"^(the|a|an) ")
_YEAR = re.compile(r"\s*\((\d{4})\)\s*$")
# MovieLens keeps other names in brackets: "Run Lola Run (Lola rennt) (1998)",
# "Seven (a.k.a. Se7en) (1995)", "Amelie (Fabuleux destin d'Amélie Poulain, Le) (2001)"
_ALT = re.compile(r"\((?:a\.k\.a\.\s*)?([^()]{2,})\)")


def _norm(title: str) -> str:
    return fold(normalize_title(title))


class TitleResolver:
    """Catalog titles by normalised form; a phrase resolves to the most popular exact match
    (ties: the earlier film), else to the most popular title that starts with it — a franchise
    name ("Harry Potter" → the most-rated Harry Potter film; "Star Wars" → "Star Wars: Episode
    IV - A New Hope (1977)"). :meth:`partial` ("shawshank") is the loose match, for callers that
    know a title was meant (after "like", in quotes).

    Matching ignores case, accents and a leading article; the alternative titles MovieLens
    keeps in brackets count too, after every main title; "Alien (1979)" prefers that year.
    Takes a :class:`~recagent.agent.RecAgent` (its catalog and popularity) or ``catalog=`` and
    ``popularity=`` directly.
    """

    def __init__(
        self, pipeline: Any = None, *, catalog: Catalog | None = None, popularity: Mapping[str, int] | None = None
    ):
        self.catalog: Catalog = catalog if catalog is not None else pipeline.catalog
        pop = dict(popularity if popularity is not None else getattr(pipeline, "popularity", {}) or {})
        self._pop = pop
        self.by_norm: dict[str, list[str]] = {}
        self.by_alt: dict[str, list[str]] = {}
        self.norm: dict[str, str] = {}
        self.year: dict[str, int] = {}
        for item_id, title in self.catalog.items["title"].items():
            raw = str(title)
            n = _norm(raw)
            if not n:
                continue
            self.norm[item_id] = n
            m = _YEAR.search(raw)
            if m:
                self.year[item_id] = int(m.group(1))
            for key in {n, _LEADING_ARTICLE.sub("", n)}:
                self.by_norm.setdefault(key, []).append(item_id)
            for alt in _ALT.findall(_YEAR.sub("", raw)):
                a = _norm(alt)
                if len(a) >= 3:
                    for key in {a, _LEADING_ARTICLE.sub("", a)}:
                        self.by_alt.setdefault(key, []).append(item_id)
        self.words: dict[str, set[str]] = {}  # title word -> items (for partial titles)
        for item_id, n in self.norm.items():
            for w in set(n.split()):
                if len(w) >= 4:
                    self.words.setdefault(w, set()).add(item_id)
        for table in (self.by_norm, self.by_alt):
            for ids in table.values():
                ids.sort(key=self._rank)
        # the rule parser tries overlapping spans and the LLM parser re-resolves what it names: the
        # same phrase is resolved several times per message (119 calls, 73 phrases for the 98 held-out
        # requests), and the franchise match scans every title. The catalog is fixed per resolver.
        self.resolve = functools.lru_cache(maxsize=4096)(self._resolve)  # type: ignore[method-assign]

    def _rank(self, item_id: str) -> tuple[int, int, str]:
        """Best-known first: most ratings, then the earlier film."""
        return (-self._pop.get(item_id, 0), self.year.get(item_id, 9999), item_id)

    def popularity(self, item_id: str) -> int:
        return int(self._pop.get(item_id, 0))

    def exact(self, phrase: str) -> str | None:
        """The best-known title equal to ``phrase`` (leading article and year aside), or ``None``."""
        n = _norm(phrase)
        for table in (self.by_norm, self.by_alt):
            for key in (n, _LEADING_ARTICLE.sub("", n)):
                if table.get(key):
                    return table[key][0]
        return None

    def rivals(self, phrase: str, chosen: str, share: float = 0.5, min_ratings: int = 5) -> list[str]:
        """Other films of exactly that name nearly as well known as ``chosen`` (at least
        ``share`` of its ratings): the mention is ambiguous and a reply should ask. A year in the
        phrase ("Heat (1986)") settles it."""
        if _YEAR.search(phrase):
            return []
        n = _norm(phrase)
        ids: list[str] = []
        for table in (self.by_norm, self.by_alt):
            for key in (n, _LEADING_ARTICLE.sub("", n)):
                ids += [i for i in table.get(key, []) if i not in ids]
        top = self.popularity(chosen)
        return [i for i in ids if i != chosen and self.popularity(i) >= max(min_ratings, share * top)]

    def partial(self, phrase: str, dominance: float = 2.0, min_ratings: int = 10) -> str | None:
        """The title whose words contain every word of ``phrase`` ("shawshank" → "Shawshank
        Redemption, The (1994)"), when it is clearly the best known of those that do: at least
        ``dominance`` times the ratings of the next and ``min_ratings``; else ``None``."""
        ws = [w for w in _norm(phrase).split() if w not in ("the", "a", "an")]
        if not ws or sum(len(w) for w in ws) < 5 or any(len(w) < 4 for w in ws):
            return None
        hits = set.intersection(*(self.words.get(w, set()) for w in ws))
        if not hits:
            return None
        ranked = sorted(hits, key=self._rank)
        top = self.popularity(ranked[0])
        second = self.popularity(ranked[1]) if len(ranked) > 1 else 0
        return ranked[0] if top >= min_ratings and top >= dominance * second else None

    def resolve(self, phrase: str) -> str | None:  # replaced per instance by a memo of _resolve
        """The item id ``phrase`` names, or ``None``."""
        return self._resolve(phrase)

    def _resolve(self, phrase: str) -> str | None:
        m = _YEAR.search(phrase)
        year = int(m.group(1)) if m else None
        n = _norm(phrase)
        if len(n) < 2:
            return None
        for table in (self.by_norm, self.by_alt):
            for key in (n, _LEADING_ARTICLE.sub("", n)):
                ids = table.get(key)
                if ids:
                    same_year = [i for i in ids if year is not None and self.year.get(i) == year]
                    return (same_year or ids)[0]
        # a franchise or a subtitle: "harry potter" → every "harry potter and the ..." title; one
        # word needs a subtitle mark after it ("alien" must not become "alien nation")
        if len(n.split()) >= 2 or len(n) >= 5:
            hits = []
            tail = fold(phrase.strip())[-3:]
            for item_id, norm in self.norm.items():
                if norm.startswith(n + " "):
                    raw = fold(self.catalog.title(item_id))
                    cut = raw.find(tail)
                    if len(n.split()) >= 2 or re.match(r"\s*[:\-–]", raw[cut + len(tail) :]):
                        hits.append(item_id)
            if hits:
                return min(hits, key=self._rank)
        return None

    def suggest(self, phrase: str, limit: int = 3) -> list[str]:
        """Titles sharing the phrase's longest word, most popular first (for "did you mean")."""
        found = sorted(re.findall(r"\w{4,}", phrase.lower()), key=len, reverse=True)
        if not found:
            return []
        ids = self.catalog.search_title(found[0], limit=200)
        ids.sort(key=lambda i: -self._pop.get(i, 0))
        return [self.catalog.title(i) for i in ids[:limit]]
