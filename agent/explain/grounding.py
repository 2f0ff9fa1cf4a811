"""Grounded options: the history items that truly relate to a recommended item, and the reasons
composed from them.

A history item relates to a recommended item when the two share an attribute value (a genre or
a tag) or when it is a content neighbour (cosine similarity of their content vectors at least
``min_similarity``). Only these options reach the LLM, as the enums of a JSON schema, and a
reason is composed by us from the option chosen, so every cited title relates by construction.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Option", "SIMILAR", "related_options", "compose", "display_title", "generic_reason"]

SIMILAR = "similar content"
"""The attribute choice that stands for "a content neighbour" (offered only when one is)."""


@dataclass(frozen=True)
class Option:
    """One history item the reason may cite, with what it shares with the recommended item."""

    item_id: str
    title: str
    genres: tuple[str, ...]
    """Genres both items have, in the recommended item's order."""
    tags: tuple[str, ...]
    """Tags both items have."""
    similarity: float
    neighbour: bool
    """Content vectors at least ``min_similarity`` apart (cosine)."""

    @property
    def attributes(self) -> tuple[str, ...]:
        """What the LLM may name as shared: the genres, the tags, and SIMILAR for a neighbour."""
        return self.genres + self.tags + ((SIMILAR,) if self.neighbour else ())


def related_options(
    view: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    vectors: Mapping[str, np.ndarray],
    *,
    min_similarity: float,
    limit: int,
) -> list[Option]:
    """The history items (catalog views) related to the item ``view``, the most similar first.

    Items that share nothing and are not neighbours are left out; so is the item itself.
    """
    v = vectors.get(view["item_id"])
    genres, tags = list(view.get("genres") or []), list(view.get("tags") or [])
    out: list[Option] = []
    seen_titles: set[str] = set()
    for h in history:
        if h["item_id"] == view["item_id"] or h["title"] in seen_titles:
            continue  # two history items with one title would make the title enum ambiguous
        hv = vectors.get(h["item_id"])
        sim = float(v @ hv) if v is not None and hv is not None else -1.0
        shared_g = tuple(g for g in genres if g in (h.get("genres") or []))
        shared_t = tuple(t for t in tags if t in (h.get("tags") or []))
        if shared_g or shared_t or sim >= min_similarity:
            seen_titles.add(h["title"])
            out.append(Option(h["item_id"], h["title"], shared_g, shared_t, sim, sim >= min_similarity))
    out.sort(key=lambda o: (-o.similarity, -len(o.genres) - len(o.tags)))
    return out[:limit]


_ARTICLE = re.compile(r"^(?P<name>.+), (?P<article>The|A|An)(?P<rest>(?: \([^)]*\))*)$")


def display_title(title: str) -> str:
    """A catalog title as people say it: "Terminator, The (1984)" → "The Terminator (1984)"."""
    m = _ARTICLE.match(title)
    return f"{m['article']} {m['name']}{m['rest']}" if m else title


def compose(option: Option, attribute: str | None = None) -> str:
    """The reason for citing ``option`` for ``attribute`` (one of ``option.attributes``; another
    value or None picks the option's own best: shared genres, then a shared tag, then neighbour)."""
    if attribute not in option.attributes:
        attribute = (option.genres or option.tags or (SIMILAR,))[0]
    title = display_title(option.title)
    if attribute == SIMILAR:
        return f"It is close in content to {title}, which you liked."
    if attribute in option.genres:
        genres = [attribute, *[g for g in option.genres if g != attribute]][:3]
        return f"It shares {_join(genres)} with {title}, which you liked."
    return f"Like {title}, which you liked, it is tagged “{attribute}”."


def generic_reason(view: Mapping[str, Any], *, has_history: bool, request: str | None, noun: str) -> str:
    """An honest reason that cites nothing: said so when the history holds nothing related."""
    genres = list(view.get("genres") or [])[:3]
    what = f" ({', '.join(genres)})" if genres else ""
    if request:
        return f"It matches your request “{request[:80]}”{what}" + (
            "; nothing in your history is close to it." if has_history else "."
        )
    if has_history:
        return f"Nothing in your history shares its genres{what} or is close in content; it ranked high among the candidates."
    return f"A {noun}{what} that ranked high among the candidates; there is no history to compare it with yet."


def _join(words: Sequence[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
