"""Diversification by maximal marginal relevance (MMR) over the items' content vectors.

``λ·relevance − (1−λ)·max similarity to the items already picked``: ``lam=1`` keeps the ranker's
order, lower values trade relevance for variety (no ten sequels of one film).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field

from .components import Component, ComponentConfig, ItemList, Query
from .store import ItemIndex

__all__ = ["MMR", "mmr"]


def mmr(relevance: Sequence[float], vectors: np.ndarray | None, k: int, lam: float) -> list[int]:
    """Maximal marginal relevance: indices of ``k`` items, greedily maximising
    ``λ·rel(i) − (1−λ)·max_{j picked} cos(i, j)``. ``relevance`` is min-max scaled first, so λ
    means the same for log-probabilities and fallback scores. Rows of ``vectors`` that are all
    zero (no vector) count as dissimilar to everything."""
    n = len(relevance)
    k = min(k, n)
    if n == 0:
        return []
    rel = np.asarray(relevance, dtype=np.float64)
    finite = np.isfinite(rel)
    rel = np.where(finite, rel, rel[finite].min() - 1.0 if finite.any() else 0.0)  # -inf: below everything
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.ones(n)
    if vectors is None or lam >= 1.0:
        return sorted(range(n), key=lambda i: (-rel[i], i))[:k]
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    sim = v @ v.T
    picked: list[int] = []
    max_sim = np.full(n, -np.inf)
    left = set(range(n))
    while len(picked) < k:
        best, best_val = -1, -np.inf
        for i in sorted(left):  # sorted: ties go to the better-ranked item
            div = max_sim[i] if picked else 0.0
            val = lam * rel[i] - (1.0 - lam) * div
            if val > best_val + 1e-12:
                best, best_val = i, val
        picked.append(best)
        left.discard(best)
        max_sim = np.maximum(max_sim, sim[best])
    return picked


class MMR(Component):
    """Re-orders (and cuts to ``n``) a ranked list for variety; scores are kept."""

    name = "mmr"

    class Config(ComponentConfig):
        lam: float = Field(0.7, ge=0.0, le=1.0)
        """1 = the ranker's order, 0 = maximal variety."""

    def __init__(self, index: ItemIndex, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.index = index

    def score_one(self, query: Query, items: ItemList | None, n: int | None) -> ItemList:
        if items is None:
            return ItemList([], [])
        n = len(items) if n is None else n
        vectors = None
        if self.config.lam < 1.0 and len(items) > 1:
            found = self.index.vectors(items.ids)
            dim = len(next(iter(found.values()))) if found else 0
            vectors = np.stack([found.get(i, np.zeros(dim, dtype=np.float32)) for i in items.ids]) if dim else None
        return items.select(mmr(items.scores, vectors, n, self.config.lam))
