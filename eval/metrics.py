"""Ranking metrics over top-k lists with one held-out target per user (leave-one-out).

Accuracy (per user, so systems can be compared pairwise): Recall@k (= HR@k with one target),
NDCG@k, MRR@k. Beyond accuracy (per system): catalog coverage, intra-list diversity (genre
Jaccard distance and embedding cosine distance), novelty (mean self-information of the
recommended items) and popularity bias (mean popularity percentile of recommended items).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

__all__ = [
    "target_ranks",
    "accuracy",
    "coverage",
    "intra_list_diversity",
    "novelty",
    "popularity_bias",
    "paired_test",
    "bootstrap_ci",
    "random_order_expectation",
    "auc",
    "CUTOFFS",
]

CUTOFFS = (1, 5, 10, 20)


def target_ranks(topk: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each user's target in its top-k row, or -1 when it is absent."""
    topk = np.asarray(topk)
    hits = topk == np.asarray(targets)[:, None]
    found = hits.any(axis=1)
    return np.where(found, hits.argmax(axis=1), -1)


def accuracy(ranks: np.ndarray, cutoffs: Sequence[int] = CUTOFFS) -> dict[str, np.ndarray]:
    """Per-user Recall/NDCG/MRR at each cutoff from target ranks (-1 = not retrieved → 0)."""
    ranks = np.asarray(ranks)
    out: dict[str, np.ndarray] = {}
    hit_any = ranks >= 0
    for k in cutoffs:
        hit = hit_any & (ranks < k)
        out[f"Recall@{k}"] = hit.astype(float)
        out[f"NDCG@{k}"] = np.where(hit, 1.0 / np.log2(np.maximum(ranks, 0) + 2.0), 0.0)
        out[f"MRR@{k}"] = np.where(hit, 1.0 / (np.maximum(ranks, 0) + 1.0), 0.0)
    return out


def coverage(topk: np.ndarray, n_items: int, k: int = 10) -> float:
    """Share of the catalog that appears in at least one top-k list."""
    rec = np.asarray(topk)[:, :k]
    return float(len(np.unique(rec[rec >= 0])) / n_items)


def intra_list_diversity(topk: np.ndarray, item_vectors: np.ndarray, k: int = 10, metric: str = "cosine") -> float:
    """Mean pairwise distance inside each top-k list, averaged over users.

    ``metric="cosine"``: rows of ``item_vectors`` are embeddings, distance = 1 - cosine.
    ``metric="jaccard"``: rows are binary attribute indicators (e.g. genres), distance = 1 - Jaccard.
    """
    vals = []
    for row in np.asarray(topk)[:, :k]:
        row = row[row >= 0]
        if len(row) < 2:
            continue
        v = item_vectors[row].astype(float)
        if metric == "cosine":
            v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
            sim = v @ v.T
        elif metric == "jaccard":
            inter = v @ v.T
            size = v.sum(axis=1)
            union = size[:, None] + size[None, :] - inter
            sim = np.divide(inter, union, out=np.ones_like(inter), where=union > 0)
        else:
            raise ValueError(f"unknown metric {metric!r}; use 'cosine' or 'jaccard'")
        iu = np.triu_indices(len(row), 1)
        vals.append(float(np.mean(1.0 - sim[iu])))
    return float(np.mean(vals)) if vals else 0.0


def novelty(topk: np.ndarray, popularity: np.ndarray, n_users: int, k: int = 10) -> float:
    """Mean self-information -log2(p(item)) of recommended items, p = share of users who had it."""
    rec = np.asarray(topk)[:, :k]
    rec = rec[rec >= 0]
    p = np.clip(popularity[rec] / max(n_users, 1), 1e-12, 1.0)
    return float(np.mean(-np.log2(p))) if len(rec) else 0.0


def popularity_bias(topk: np.ndarray, popularity: np.ndarray, k: int = 10) -> float:
    """Mean popularity percentile (0 = least, 1 = most popular item) of recommended items."""
    rec = np.asarray(topk)[:, :k]
    rec = rec[rec >= 0]
    pct = stats.rankdata(popularity, method="average") / len(popularity)
    return float(np.mean(pct[rec])) if len(rec) else 0.0


def paired_test(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Paired comparison of two systems' per-user scores: mean difference, paired t-test and
    Wilcoxon signed-rank p-values, and a 95% bootstrap interval for the difference."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError("paired scores need the same users in the same order")
    d = a - b
    if np.allclose(d, 0):
        return {"mean_diff": 0.0, "t_p": 1.0, "wilcoxon_p": 1.0, "ci_low": 0.0, "ci_high": 0.0}
    t_p = float(stats.ttest_rel(a, b).pvalue)
    w_p = float(stats.wilcoxon(a, b, zero_method="zsplit").pvalue)
    lo, hi = bootstrap_ci(d)
    return {"mean_diff": float(d.mean()), "t_p": t_p, "wilcoxon_p": w_p, "ci_low": lo, "ci_high": hi}


def bootstrap_ci(x: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-user scores."""
    x = np.asarray(x, float)
    if len(x) == 0:
        return (0.0, 0.0)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def random_order_expectation(n: int, cutoffs: Sequence[int] = CUTOFFS) -> dict[str, float]:
    """Expected NDCG/Recall/MRR@k of a uniformly random order of ``n`` candidates holding one
    relevant item (the LLMRank floor): every rank 0..n-1 is equally likely."""
    ranks = np.arange(n)
    return {m: float(v.mean()) for m, v in accuracy(ranks, cutoffs).items()}


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: the chance that a random positive outscores a random negative
    (ties count half). ``nan`` without both classes."""
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = stats.rankdata(scores)  # average ranks: ties count half
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))
