"""A query resolved for the retrieval sources: history checked, filter translated, seen items."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..components import ItemList, Query
from ..errors import UnknownIdError
from ..store import ItemFilter
from .attributes import AttributeTable

__all__ = ["Context", "resolve"]


@dataclass
class Context:
    """What a source sees. ``mask`` (catalog positions), ``where`` (Chroma) and ``allowed`` (ids)
    all express the same restriction: the query's filter, and the given candidates if any."""

    history: list[str]  # oldest first
    seen: set[str]  # excluded from every source
    profile: str | None
    text: str | None
    filters: ItemFilter | None
    where: dict[str, Any] | None
    mask: np.ndarray | None
    allowed: frozenset[str] | None
    depth: int


def resolve(query: Query, table: AttributeTable, depth: int, items: ItemList | None = None) -> Context:
    """Check the query against the catalog and translate its filter once for every source.

    ``items`` restricts every source to those candidates (a retriever scoring a given list).
    """
    hist = list(query.history)
    unknown = [i for i in dict.fromkeys(hist) if i not in table.pos]
    if unknown:
        raise UnknownIdError("item", unknown, hint="history items must be in the catalog (add new items first)")
    f = ItemFilter.parse(query.filters)
    mask = table.mask(f)  # validates the filter against the catalog attributes
    where = f.to_where(table.schema) if f is not None else None
    allowed = table.allowed(f) if f is not None else None
    if items is not None:
        missing = [i for i in items.ids if i not in table.pos]
        if missing:
            raise UnknownIdError("item", missing, hint="candidates must be catalog items")
        given = frozenset(items.ids)
        allowed = given if allowed is None else allowed & given
        only = np.zeros(len(table.ids), dtype=bool)
        only[[table.pos[i] for i in given]] = True
        mask = only if mask is None else mask & only
    seen = set(query.seen)
    return Context(hist, seen, profile_text(query.profile), query.text, f, where, mask, allowed, depth)


def profile_text(profile: Any) -> str | None:
    """A profile (free text or fields) as one line of text for content search."""
    if profile is None:
        return None
    if isinstance(profile, str):
        return profile.strip() or None
    parts = []
    for k, v in profile.items():
        if v is None or v == "" or (isinstance(v, float) and v != v):
            continue
        parts.append(str(v) if k == "text" else f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}")
    return ". ".join(parts) or None
