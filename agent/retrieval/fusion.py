"""Weighted reciprocal-rank fusion of the sources' rankings, as a component.

``score(i) = Σ_s w_s / (rrf_k + rank_s(i))`` over the sources that found item ``i``; ties break
by the item's best single rank, then by item id, so the order is deterministic. A query without
history uses the cold-start weights (request text, profile, popularity).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from pydantic import Field, field_validator

from ..components import Component, ComponentConfig, ItemList, Query

__all__ = ["RRFFusion", "fuse", "rrf_fuse", "union", "DEFAULT_WEIGHTS", "COLD_START_WEIGHTS"]

#: Fusion weights tuned on the LlamaRec validation stage of ml-latest-small (bench/retriever.py).
DEFAULT_WEIGHTS: dict[str, float] = {
    "cf": 0.5,
    "sequence": 1.0,
    "content": 0.5,
    "knowledge": 0.3,
    "profile": 1.0,
    "query": 2.0,
    "popularity": 0.0,  # lowered recall of users with a history in every setting tried
}

#: Weights for a user without history: the request text, the profile and what is popular.
COLD_START_WEIGHTS: dict[str, float] = {"query": 2.0, "profile": 1.0, "popularity": 0.5}


def union(rankings: Mapping[str, Sequence[str] | ItemList]) -> ItemList:
    """Every item any source found, once, in first-found order, with field ``sources``
    (name → 1-based rank): the fusion's input."""
    found: dict[str, dict[str, int]] = {}
    for name, ranked in rankings.items():
        for r, i in enumerate(ranked.ids if isinstance(ranked, ItemList) else ranked, start=1):
            found.setdefault(i, {})[name] = r
    ids = list(found)
    return ItemList.of(ids, [0.0] * len(ids), sources=[found[i] for i in ids])


def fuse(
    items: ItemList, weights: Mapping[str, float], rrf_k: float, default_weight: float, n: int | None = None
) -> ItemList:
    """Weighted RRF over the ``sources`` field of ``items``, best first (the one fusion rule)."""
    src = items.field("sources", {})
    scores = [sum(weights.get(s, default_weight) / (rrf_k + r) for s, r in d.items() if weights.get(s, default_weight) > 0)
              for d in src]  # fmt: skip
    order = sorted(range(len(items)), key=lambda j: (-scores[j], min(src[j].values(), default=math.inf), items.ids[j]))
    order = order[:n] if n is not None else order
    return items.select(order, [scores[j] for j in order])


def rrf_fuse(
    rankings: Mapping[str, Sequence[str]],
    weights: Mapping[str, float],
    *,
    rrf_k: float = 60.0,
    default_weight: float = 1.0,
) -> ItemList:
    """Fuse named rankings (best first) into one ItemList with field ``sources``."""
    return fuse(union(rankings), weights, rrf_k, default_weight)


class RRFFusion(Component):
    """Re-scores a union of source rankings (field ``sources``) by weighted RRF, best first."""

    name = "fusion"

    class Config(ComponentConfig):
        weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
        cold_start_weights: dict[str, float] = Field(default_factory=lambda: dict(COLD_START_WEIGHTS))
        """Used when the query has no history."""
        rrf_k: float = Field(60.0, ge=0)
        """RRF damping: larger flattens the rank discount."""
        default_weight: float = Field(1.0, ge=0)
        """Weight of a source not named in ``weights`` (extra CF collections)."""

        @field_validator("weights", "cold_start_weights")
        @classmethod
        def _finite(cls, v: dict[str, float]) -> dict[str, float]:
            bad = {s: w for s, w in v.items() if not (w >= 0 and math.isfinite(w))}
            if bad:
                raise ValueError(f"source weights must be finite and >= 0, got {bad}")
            return v

    def weights_for(self, query: Query) -> tuple[dict[str, float], float]:
        """(weights, weight of unnamed sources) for this query: cold start without history."""
        c = self.config
        return (c.weights, c.default_weight) if query.history else (c.cold_start_weights, 0.0)

    def score_one(self, query: Query, items: ItemList | None, n: int | None) -> ItemList:
        if items is None:
            return ItemList([], [])
        weights, default = self.weights_for(query)
        return fuse(items, weights, self.config.rrf_k, default, n)
