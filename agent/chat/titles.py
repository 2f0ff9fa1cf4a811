"""Catalog titles from what people type: "the matrix", "Amélie", "Lola rennt", "Alien (1979)"."""

from __future__ import annotations

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
    """Catalog titles by normalised form; a phrase resolves to the most popular exact match,
    else to the most popular title that starts with it before a subtitle ("Star Wars" →
    "Star Wars: Episode IV - A New Hope (1977)"). Never a loose substring match.

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
        for table in (self.by_norm, self.by_alt):
            for ids in table.values():
                ids.sort(key=lambda i: (-pop.get(i, 0), i))

    def resolve(self, phrase: str) -> str | None:
        """The item id ``phrase`` names, or ``None``."""
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
        # subtitle prefix: "star wars" → "star wars episode iv a new hope" (title had a ':' or ' - ')
        if len(n.split()) >= 2 or len(n) >= 5:
            hits = []
            tail = fold(phrase.strip())[-3:]
            for item_id, norm in self.norm.items():
                if norm.startswith(n + " "):
                    raw = fold(self.catalog.title(item_id))
                    cut = raw.find(tail)
                    if re.search(r"[:\-–]", raw[cut:]) or len(n.split()) >= 3:
                        hits.append(item_id)
            if hits:
                return max(hits, key=lambda i: (self._pop.get(i, 0), i))
        return None

    def suggest(self, phrase: str, limit: int = 3) -> list[str]:
        """Titles sharing the phrase's longest word, most popular first (for "did you mean")."""
        found = sorted(re.findall(r"\w{4,}", phrase.lower()), key=len, reverse=True)
        if not found:
            return []
        ids = self.catalog.search_title(found[0], limit=200)
        ids.sort(key=lambda i: -self._pop.get(i, 0))
        return [self.catalog.title(i) for i in ids[:limit]]
