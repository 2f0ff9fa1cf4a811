"""Nearest items in one Chroma collection, with the query's filter, exclusions and allowed ids.

:meth:`ItemIndex.query_content` and :meth:`ItemIndex.query_cf` both search through
:func:`nearest`; it is exact: the hits are the collection's top ``k`` among the items that pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, EmptyInputError
from .filters import AttrKind, ItemFilter

__all__ = ["Hit", "nearest", "stored_schema", "with_removals", "SCHEMA_KEY", "MAX_GET"]

SCHEMA_KEY = "recagent_schema"  # collection metadata: JSON {attribute: kind}
MAX_GET = 5000  # Chroma caps the variables of one SQL statement; page large id lists


@dataclass
class Hit:
    item_id: str
    distance: float


def stored_schema(col: Any) -> dict[str, AttrKind]:
    """The attribute schema a collection was built with (its metadata), for filter checks."""
    return json.loads((col.metadata or {}).get(SCHEMA_KEY, "{}"))


def with_removals(col: Any, ids: Sequence[str], metas: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Chroma merges metadata on upsert/update; set keys the new metadata lacks to None to drop them."""
    old: dict[str, dict[str, Any]] = {}
    for s in range(0, len(ids), MAX_GET):
        r = col.get(ids=list(ids[s : s + MAX_GET]), include=["metadatas"])
        old.update({i: m or {} for i, m in zip(r["ids"], r["metadatas"], strict=False)})
    return [{**{k: None for k in old.get(i, {}) if k not in m}, **m} for i, m in zip(ids, metas, strict=False)]


def nearest(
    col: Any,
    embeddings: Any,
    k: int,
    filters: ItemFilter | Mapping[str, Any] | None,
    exclude: Iterable[str],
    where: dict[str, Any] | None,
    allowed: Container[str] | None,
    post_filter_max: int,
) -> list[list[Hit]]:
    """Top ``k`` hits per query vector. ``where`` (already translated) wins over ``filters``;
    with ``allowed`` ids known, an unfiltered search of at most ``post_filter_max`` neighbours
    filtered in memory is tried first (cheaper than Chroma's ``where``, measured in IndexConfig)."""
    if k < 1:
        raise ConfigError(f"k={k} must be ≥ 1", param="k")
    emb = np.atleast_2d(np.asarray(embeddings, dtype=np.float32))
    if emb.shape[0] == 0:
        raise EmptyInputError("no query vectors", param="query")
    if where is None and filters is not None:
        f = ItemFilter.parse(filters)
        where = None if f is None else f.to_where(stored_schema(col))
    total = col.count()
    if total == 0:
        raise EmptyInputError(
            f"collection {col.name!r} is empty", hint="build the index first: ItemIndex.build(catalog)"
        )
    excluded = set(map(str, exclude))
    ids = None
    if allowed is not None:
        hits = _post_filtered(col, emb, k, excluded, allowed, total, post_filter_max)
        if hits is not None:
            return hits
        if where is None:  # a restriction to given items only: let Chroma search among them
            ids = sorted(allowed)  # type: ignore[call-overload]
    # over-fetch by the number of excluded ids: at most that many hits are dropped
    n = min(total if ids is None else len(ids), k + len(excluded))
    if n == 0:
        return [[] for _ in range(len(emb))]
    r = col.query(query_embeddings=emb, n_results=n, where=where, ids=ids, include=["distances"])
    out = []
    for got, dists in zip(r["ids"], r["distances"], strict=True):
        hits = [Hit(i, float(d)) for i, d in zip(got, dists, strict=True) if i not in excluded]
        out.append(hits[:k])
    return out


def _post_filtered(col, emb, k, excluded, allowed, total, post_filter_max) -> list[list[Hit]] | None:
    """Unfiltered search, hits kept if in ``allowed``; None when it would fetch too many.

    Exact like the ``where`` query: it stops only when every query has ``k`` allowed, unseen
    hits among its top ``n``, and those are then its top ``k``.
    """
    frac = len(allowed) / total if hasattr(allowed, "__len__") else 1.0
    if frac == 0:
        return [[] for _ in range(len(emb))]
    n = min(total, math.ceil((k + len(excluded)) / frac * 1.2))
    while n <= post_filter_max:
        r = col.query(query_embeddings=emb, n_results=n, include=["distances"])
        out = []
        for ids, dists in zip(r["ids"], r["distances"], strict=True):
            out.append(
                [Hit(i, float(d)) for i, d in zip(ids, dists, strict=True) if i in allowed and i not in excluded]
            )
        if n >= total or all(len(h) >= k for h in out):
            return [h[:k] for h in out]
        n = min(total, 2 * n)
    return None
