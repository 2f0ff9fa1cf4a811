"""LLMRank's position-bias probe: the true item at fixed positions among random negatives."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..components import ItemList, Query
from ..errors import ConfigError, EmptyInputError
from .base import LLMRanker

__all__ = ["measure_position_bias", "PositionBiasReport"]


@dataclass
class PositionBiasReport:
    """Per fixed position of the true item: hit@1, NDCG@10, mean rank (1-based) over users;
    plus how often each position was ranked first overall (a flat share means no bias)."""

    positions: list[int]
    hit1: list[float]
    ndcg10: list[float]
    mean_rank: list[float]
    top1_share: list[float]
    n_users: int
    n_candidates: int
    fallbacks: int

    def as_markdown(self) -> str:
        rows = ["| true item at | HR@1 | NDCG@10 | mean rank |", "|---:|---:|---:|---:|"]
        for p, h, nd, mr in zip(self.positions, self.hit1, self.ndcg10, self.mean_rank, strict=True):
            rows.append(f"| {p + 1} | {h:.3f} | {nd:.3f} | {mr:.2f} |")
        return "\n".join(rows)


def measure_position_bias(
    ranker: LLMRanker,
    cases: Sequence[tuple[Query, str]],
    *,
    positions: Sequence[int] = (0, 4, 9, 14, 19),
    n_candidates: int = 20,
    seed: int = 0,
    item_pool: Sequence[str] | None = None,
) -> PositionBiasReport:
    """LLMRank's position-bias probe: the true item with n-1 random negatives, placed at each position.

    ``cases``: (query with history/profile, true item id); the query's own candidates are ignored.
    Negatives are drawn from ``item_pool`` (default: the whole catalog) minus the history; the
    same negatives are used at every position, so only the position changes.
    """
    if not cases:
        raise EmptyInputError("no cases to measure position bias on", hint="pass (query, true_item) pairs")
    bad = [p for p in positions if not 0 <= p < n_candidates]
    if bad:
        raise ConfigError(f"positions {bad} outside 0..{n_candidates - 1}", param="positions")
    rng = np.random.default_rng(seed)
    all_ids = np.array([str(i) for i in (item_pool if item_pool is not None else ranker.catalog.ids)])
    if len(all_ids) < 2 * n_candidates:
        raise ConfigError(f"item pool of {len(all_ids)} is too small for {n_candidates} candidates", param="item_pool")
    queries, lists, truths = [], [], []
    for q, true in cases:
        exclude = set(map(str, q.history)) | {str(true)}
        negs: list[str] = []
        while len(negs) < n_candidates - 1:
            for c in rng.choice(all_ids, size=2 * n_candidates, replace=False):
                if c not in exclude and c not in negs and len(negs) < n_candidates - 1:
                    negs.append(str(c))
        for p in positions:
            lists.append(ItemList.of(negs[:p] + [str(true)] + negs[p:]))
            queries.append(q)
            truths.append(str(true))
    results = ranker.batch(queries, lists)
    P = len(positions)
    ranks = np.array([r.ids.index(t) for r, t in zip(results, truths, strict=True)]).reshape(len(cases), P)
    top1_pos = Counter()
    for r, given in zip(results, lists, strict=True):
        top1_pos[given.ids.index(r.ids[0])] += 1
    ndcg = np.where(ranks < 10, 1.0 / np.log2(ranks + 2), 0.0)
    return PositionBiasReport(
        positions=list(positions),
        hit1=(ranks == 0).mean(axis=0).tolist(),
        ndcg10=ndcg.mean(axis=0).tolist(),
        mean_rank=(ranks + 1).mean(axis=0).tolist(),
        top1_share=[top1_pos[i] / len(results) for i in range(n_candidates)],
        n_users=len(cases),
        n_candidates=n_candidates,
        fallbacks=sum("rank" in r.notes for r in results),
    )
