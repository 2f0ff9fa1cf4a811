"""Fit the weight that fuses the LLM ranker's score with the retriever's rank, on the validation stage.

The served score is ``ln p_LLM(label) − w·ln(retriever rank)`` (:func:`recagent.ranking.fuse_with_rank`).
:func:`fit_retrieval_weight` runs the pipeline once at the validation stage with ``w = 0`` (the
ranker keeps the pure label log-probabilities and the retriever's rank of every candidate), then
scores every ``w`` of a grid offline: NDCG@10 over all users, a miss of the retriever scoring 0.
The chosen weight is stored next to the adapter (``fusion.json``) and read back with
:func:`load_fusion`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from recagent.components import Component
from recagent.errors import DataError
from recagent.eval.splits import Split
from recagent.ranking import fuse_with_rank

__all__ = ["collect_scores", "fit_retrieval_weight", "ndcg_for_weight", "load_fusion", "save_fusion", "GRID"]

GRID = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, 10.0, 1e6)  # 1e6 = the retriever order


def collect_scores(pipeline: Component, split: Split, stage: str, users: Sequence[int] | None = None, *,
                   batch: int = 64, progress: bool = True) -> list[tuple[str, list[str], np.ndarray]]:  # fmt: skip
    """Per user: (target id, candidates in retriever order, their label log-probabilities)."""
    users = list(range(split.n_users)) if users is None else list(users)
    out = []
    bar = tqdm(total=len(users), desc=f"LLM scores ({stage})", unit="user", disable=not progress, leave=False)
    for start in range(0, len(users), batch):
        chunk = users[start : start + batch]
        for u, lst in zip(chunk, pipeline.batch([split.query(u, stage) for u in chunk]), strict=True):
            ranks = lst.field("retrieval_rank")
            order = np.argsort(ranks)
            ids = [lst.ids[j] for j in order]
            logp = np.array(lst.field("llm_logprob", float("nan")), dtype=np.float64)[order]
            if "rank" in lst.notes or not np.all(np.isfinite(logp)):
                logp = np.full(len(ids), np.nan)  # the ranker fell back: this user keeps the retriever order
            out.append((str(split.item_ids[split.target(u, stage)]), ids, logp))
        bar.update(len(chunk))
    bar.close()
    return out


def ndcg_for_weight(records: list[tuple[str, list[str], np.ndarray]], weight: float, k: int = 10) -> np.ndarray:
    """Per-user NDCG@k of the fused order at ``weight``."""
    vals = np.zeros(len(records))
    for n, (target, ids, logp) in enumerate(records):
        if target not in ids:
            continue
        scores = -np.log(np.arange(1, len(ids) + 1)) if np.isnan(logp).any() else fuse_with_rank(logp, weight)
        order = sorted(range(len(ids)), key=lambda i: (-scores[i], i))
        r = [ids[i] for i in order].index(target)
        vals[n] = 1.0 / math.log2(r + 2) if r < k else 0.0
    return vals


def fit_retrieval_weight(
    records: list[tuple[str, list[str], np.ndarray]], grid: Sequence[float] = GRID
) -> dict[str, Any]:
    """The grid weight with the best mean NDCG@10 (ties: the smaller weight), and the whole table."""
    table = {str(w): float(ndcg_for_weight(records, w).mean()) for w in grid}
    best = max(grid, key=lambda w: (round(table[str(w)], 6), -w))
    return {"retrieval_weight": float(best), "ndcg@10_by_weight": table, "users": len(records)}


def save_fusion(path: str | Path, fitted: dict[str, Any], **extra: Any) -> Path:
    path = Path(path)
    path.write_text(json.dumps({**fitted, **extra}, indent=2) + "\n")
    return path


def load_fusion(path: str | Path) -> float:
    """The fitted ``retrieval_weight`` from a ``fusion.json``; a missing or malformed file is a clear error."""
    path = Path(path)
    hint = "re-run the fusion fit (bench/finetune.py) or pass --retrieval-weight explicitly"
    if not path.is_file():
        raise DataError("fusion weight file not found", file=str(path), hint=hint)
    try:
        w = float(json.loads(path.read_text())["retrieval_weight"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"malformed fusion weight file ({type(e).__name__}: {e})", file=str(path), hint=hint) from None
    if not (math.isfinite(w) and w >= 0):
        raise DataError(f"retrieval_weight must be a finite number >= 0, got {w}", file=str(path), hint=hint)
    return w
