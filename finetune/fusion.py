"""Fit the weight that fuses the LLM ranker's score with the retriever's rank, on the validation stage.

The served score is ``ln p_LLM(label) − w·ln(retriever rank)`` (:func:`recagent.ranking.fuse_with_rank`).
:func:`fit_retrieval_weight` runs the pipeline once at the validation stage with ``w = 0`` (the
ranker keeps the pure label log-probabilities and the retriever's rank of every candidate), then
scores every ``w`` of a grid offline: NDCG@10 over all users, a miss of the retriever scoring 0.
The chosen weight is stored next to the adapter (``fusion.json``) and read back with
:func:`recagent.ranking.card.load_fusion`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from recagent.components import Component
from recagent.errors import DataError
from recagent.eval.splits import Split
from recagent.ranking import fuse_with_rank
from recagent.ranking.combine import Combiner, feature_matrix

__all__ = ["collect_scores", "collect_cut_scores", "fit_retrieval_weight", "ndcg_for_weight", "ndcg_for_scores", "fit_combiner",
           "cross_fit_combiner", "GRID"]  # fmt: skip

GRID = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0, 1e6)  # 1e6 = the retriever order


def collect_scores(pipeline: Component, split: Split, stage: str, users: Sequence[int] | None = None, *,
                   batch: int = 64, progress: bool = True) -> list[tuple[str, list[str], np.ndarray, list[dict]]]:  # fmt: skip
    """Per user: (target id, candidates in retriever order, their label log-probabilities, the
    retriever's per-source ranks of each candidate)."""
    users = list(range(split.n_users)) if users is None else list(users)
    out = []
    bar = tqdm(total=len(users), desc=f"LLM scores ({stage})", unit="user", disable=not progress, leave=False)
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        for u, lst in zip(chunk, pipeline.batch([split.query(u, stage) for u in chunk]), strict=True):
            out.append(_record(str(split.item_ids[split.target(u, stage)]), lst))
        bar.update(len(chunk))
    bar.close()
    return out


def _record(target: str, lst: Any) -> tuple[str, list[str], np.ndarray, list[dict]]:
    order = np.argsort(lst.field("retrieval_rank"))
    ids = [lst.ids[j] for j in order]
    sources = [lst.field("sources", {})[j] for j in order]
    logp = np.array(lst.field("llm_logprob", float("nan")), dtype=np.float64)[order]
    if "rank" in lst.notes or not np.all(np.isfinite(logp)):
        logp = np.full(len(ids), np.nan)  # the ranker fell back: this user keeps the retriever order
    return target, ids, logp, sources


def collect_cut_scores(pipeline: Component, split: Split, cuts: Sequence[tuple[int, int]], *, batch: int = 64,
                       progress: bool = True) -> list[tuple[str, list[str], np.ndarray, list[dict]]]:  # fmt: skip
    """:func:`collect_scores` for training cuts ``(user, position)``: the query is the history
    before the position, the target the item at it (a training item, never a validation or test
    one). Fit the pipeline's retriever on :func:`~recagent.finetune.examples.cut_data` first."""
    from .examples import _query

    out = []
    bar = tqdm(total=len(cuts), desc="LLM scores (training cuts)", unit="cut", disable=not progress, leave=False)
    for start in range(0, len(cuts), batch):
        part = cuts[start : start + batch]
        for (u, t), lst in zip(part, pipeline.batch([_query(split, u, t) for u, t in part]), strict=True):
            out.append(_record(str(split.item_ids[split.sequences[u][t]]), lst))
        bar.update(len(part))
    bar.close()
    return out


def ndcg_for_scores(records: list[tuple], score: Any, k: int = 10) -> np.ndarray:
    """Per-user NDCG@k of the order ``score(logp, sources)`` gives each record's candidates (ties
    keep the retriever order; a record whose ranker fell back keeps the retriever order)."""
    vals = np.zeros(len(records))
    for n, (target, ids, logp, *rest) in enumerate(records):
        if target not in ids:
            continue
        if np.isnan(logp).any():
            scores = -np.log(np.arange(1, len(ids) + 1))
        else:
            scores = score(logp, rest[0] if rest else [{}] * len(ids))
        order = sorted(range(len(ids)), key=lambda i: (-scores[i], i))
        r = [ids[i] for i in order].index(target)
        vals[n] = 1.0 / math.log2(r + 2) if r < k else 0.0
    return vals


def ndcg_for_weight(records: list[tuple], weight: float, k: int = 10) -> np.ndarray:
    """Per-user NDCG@k of the fused order at ``weight``."""
    return ndcg_for_scores(records, lambda logp, _: fuse_with_rank(logp, weight), k)


def fit_combiner(records: list[tuple], features: Sequence[str], l2: float = 1.0) -> Combiner:
    """Conditional-logit weights of :class:`~recagent.ranking.combine.Combiner` features: maximise
    the mean log-softmax of each user's true candidate (users whose target the retriever missed,
    or whose ranker fell back, carry no signal and are left out), minus ``l2 · |w|²`` / 2."""
    from scipy.optimize import minimize

    xs, ys = [], []
    for target, ids, logp, sources in records:
        if target in ids and not (np.isnan(logp).any() and "llm" in features):
            xs.append(feature_matrix(features, logp, sources))
            ys.append(ids.index(target))
    if not xs:
        raise DataError("no validation user has its target among the candidates: nothing to fit the combiner on")
    n = len(xs)

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        total, grad = 0.0, np.zeros_like(w)
        for x, y in zip(xs, ys, strict=True):
            z = x @ w
            z = z - z.max()
            p = np.exp(z)
            p /= p.sum()
            total -= np.log(p[y] + 1e-300)
            grad -= x[y] - p @ x
        return total / n + 0.5 * l2 * float(w @ w), grad / n + l2 * w

    w0 = np.array([1.0 if f in ("llm", "rank") else 0.0 for f in features])
    res = minimize(loss, w0, jac=True, method="L-BFGS-B")
    return Combiner(features=list(features), weights=[round(float(v), 6) for v in res.x])


def cross_fit_combiner(records: list[tuple], features: Sequence[str], l2: float = 1.0, folds: int = 5,
                       seed: int = 0) -> np.ndarray:  # fmt: skip
    """Per-user NDCG@10 of the combiner when each user is scored by weights fitted on the other
    folds: an honest validation figure for choosing features and ``l2``, before the final fit."""
    fold = np.random.default_rng(seed).permutation(len(records)) % folds
    vals = np.zeros(len(records))
    for f in range(folds):
        train = [r for r, g in zip(records, fold, strict=True) if g != f]
        held = [j for j, g in enumerate(fold) if g == f]
        c = fit_combiner(train, features, l2)
        vals[held] = ndcg_for_scores([records[j] for j in held], c.scores)
    return vals


def fit_retrieval_weight(records: list[tuple], grid: Sequence[float] = GRID) -> dict[str, Any]:
    """The grid weight with the best mean NDCG@10 (ties: the smaller weight), and the whole table."""
    table = {str(w): float(ndcg_for_weight(records, w).mean()) for w in grid}
    best = max(grid, key=lambda w: (round(table[str(w)], 6), -w))
    return {"retrieval_weight": float(best), "ndcg@10_by_weight": table, "users": len(records)}
