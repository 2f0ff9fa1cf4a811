"""The experiment harness: run systems on a split, score them the same way, write a run folder.

Two protocols share this path. **LlamaRec**: every system ranks the whole catalog (history
excluded). **LLMRank**: every system ranks the same given candidate lists (``candidates``: the
true item + N−1 others per user, :mod:`recagent.eval.candidates`), CF baselines included.

A run folder (:func:`~recagent.eval.report.write_run`) holds ``results.json`` (every metric,
counts, timings, config, versions; schema in the README, section Evaluate), ``results.md``, ``per_user.csv``,
``significance.md`` and PNG plots.

>>> split = llamarec_split(load_dataset())
>>> report = run_experiment([make_baseline("popularity"), make_baseline("ease")], split, "test")
>>> cands = sample_candidates(split, "test", n=20)
>>> report = run_experiment(systems, split, "test", users=cands.users, candidates=cands.items,
...                         protocol={"name": "llmrank", "candidates": cands.describe()})
>>> write_run(report, Path("runs/demo"))
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from recagent.components import Component, ItemList
from recagent.errors import ConfigError

from . import metrics as M
from .report import HEADLINE, markdown_table, versions, write_run  # the writers; re-exported where callers find them
from .splits import STAGES, Split

__all__ = [
    "SystemResult", "Report", "evaluate", "run_experiment", "write_run", "genre_matrix", "versions", "markdown_table", "HEADLINE",
]  # fmt: skip

log = logging.getLogger(__name__)


@dataclass
class SystemResult:
    """One system's scores: means, per-user values, beyond-accuracy metrics and timings.

    ``stage_seconds`` sums a pipeline's per-stage times (retrieve, rank, ...) over the batches;
    ``fallbacks`` counts users for whom a stage fell back (e.g. an invalid LLM answer kept the
    input order), by stage."""

    name: str
    config: dict[str, Any]
    per_user: dict[str, np.ndarray]
    beyond: dict[str, float]
    fit_seconds: float
    rank_seconds: float
    topk: np.ndarray = field(repr=False)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    fallbacks: dict[str, int] = field(default_factory=dict)

    @property
    def means(self) -> dict[str, float]:
        return {k: float(np.mean(v)) for k, v in self.per_user.items()}

    @property
    def n_users(self) -> int:
        return int(len(self.topk))

    @property
    def users_per_s(self) -> float:
        """Users ranked per second (fitting excluded)."""
        return self.n_users / self.rank_seconds if self.rank_seconds > 0 else float("inf")

    def ci(self, metric: str) -> tuple[float, float]:
        return M.bootstrap_ci(self.per_user[metric])


@dataclass
class Report:
    split_stats: dict[str, Any]
    stage: str
    users: np.ndarray
    user_ids: list[str]
    results: list[SystemResult]
    cutoffs: tuple[int, ...]
    extra: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=lambda: {"name": "llamarec"})
    """``name`` (llamarec | llmrank) and, for llmrank, where the candidate lists came from."""

    def best(self, metric: str = "NDCG@10") -> SystemResult:
        return max(self.results, key=lambda r: r.means[metric])

    def significance(self, metric: str = "NDCG@10") -> list[dict[str, Any]]:
        """Paired tests of every system against the best one on ``metric``."""
        best = self.best(metric)
        rows = []
        for r in self.results:
            if r is best:
                continue
            t = M.paired_test(best.per_user[metric], r.per_user[metric])
            rows.append({"best": best.name, "other": r.name, "metric": metric, **t})
        return rows


def genre_matrix(split: Split, attribute: str = "genres") -> np.ndarray | None:
    """Binary items × attribute-values matrix (for genre-based intra-list diversity)."""
    items = split.dataset.catalog.items
    if attribute not in items:
        return None
    values = sorted({g for gs in items[attribute] for g in gs})
    col = {g: j for j, g in enumerate(values)}
    m = np.zeros((split.n_items, len(values)), dtype=np.float32)
    for i, gs in enumerate(items.loc[list(split.item_ids), attribute]):
        for g in gs:
            m[i, col[g]] = 1.0
    return m


def evaluate(
    system: Component,
    split: Split,
    stage: str,
    users: np.ndarray | None = None,
    *,
    cutoffs: tuple[int, ...] = M.CUTOFFS,
    item_vectors: np.ndarray | None = None,
    genres: np.ndarray | None = None,
    fit: bool = True,
    candidates: np.ndarray | None = None,
    batch_users: int = 64,
    progress: bool = False,
) -> SystemResult:
    """Fit ``system`` on ``split.train_data(stage)`` and score its lists for ``users``.

    Every system is a component (a CF baseline or a :class:`~recagent.pipeline.Pipeline`), asked
    through the same call with :meth:`Split.query`. ``candidates`` (one row of N item codes per
    user in ``users``, -1 = padding: the LLMRank protocol) makes every system rank exactly those
    items instead of the whole catalog. ``progress`` shows a bar with users/s.
    """
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}", hint=f"use one of {STAGES}")
    users = np.arange(split.n_users) if users is None else np.asarray(users)
    if candidates is not None and len(candidates) != len(users):
        raise ConfigError(
            f"{len(candidates)} candidate lists for {len(users)} users", hint="pass one row per evaluated user"
        )
    k = max(cutoffs)
    data = split.train_data(stage)
    t0 = time.perf_counter()
    if fit:
        log.info("%s: fitting on %d users' histories (stage %s)", system.name, data.n_users, stage)
        system.fit(data)
    t1 = time.perf_counter()
    top = np.full((len(users), k), -1, dtype=np.int64)
    stage_s: dict[str, float] = {}
    fallbacks: dict[str, int] = {}
    bar = tqdm(total=len(users), desc=f"{system.name}", unit="user", disable=not progress, leave=False, mininterval=1.0)
    for start in range(0, len(users), batch_users):
        chunk = users[start : start + batch_users]
        queries = [split.query(int(u), stage) for u in chunk]
        given = None
        if candidates is not None:
            rows = candidates[start : start + len(chunk)]
            given = [ItemList.of([str(split.item_ids[c]) for c in row if c >= 0]) for row in rows]
        lists = system.batch(queries, given, k)
        for j, lst in enumerate(lists):
            codes = [split.item_code(i) for i in lst.ids[:k]]
            top[start + j, : len(codes)] = codes
            for stage_name in lst.notes:
                fallbacks[stage_name] = fallbacks.get(stage_name, 0) + 1
        if lists:  # a pipeline's stage totals are shared by the lists of one batch: count them once
            for name, ms in lists[0].timings_ms.items():
                if "." not in name:
                    stage_s[name] = stage_s.get(name, 0.0) + ms / 1000
        bar.update(len(chunk))
    bar.close()
    t2 = time.perf_counter()
    targets = np.array([split.target(u, stage) for u in users])
    per_user = M.accuracy(M.target_ranks(top, targets), cutoffs)
    pop = data.popularity()
    beyond = {
        "Coverage@10": M.coverage(top, split.n_items, 10),
        "Novelty@10": M.novelty(top, pop, split.n_users, 10),
        "PopBias@10": M.popularity_bias(top, pop, 10),
    }
    genres = genre_matrix(split) if genres is None else genres
    if genres is not None:
        beyond["ILD-genre@10"] = M.intra_list_diversity(top, genres, 10, metric="jaccard")
    if item_vectors is not None:
        beyond["ILD-emb@10"] = M.intra_list_diversity(top, item_vectors, 10, metric="cosine")
    if fallbacks:
        log.warning(
            "%s: fell back for some users: %s (see results.json systems.%s.fallbacks)",
            system.name,
            fallbacks,
            system.name,
        )
    return SystemResult(system.name, system.describe(), per_user, beyond, t1 - t0, t2 - t1, top,
                        {k: round(v, 3) for k, v in stage_s.items()}, fallbacks)  # fmt: skip


def run_experiment(
    systems: list[Component],
    split: Split,
    stage: str = "test",
    *,
    users: np.ndarray | None = None,
    cutoffs: tuple[int, ...] = M.CUTOFFS,
    item_vectors: np.ndarray | None = None,
    progress: bool = True,
    candidates: np.ndarray | None = None,
    protocol: dict[str, Any] | None = None,
    batch_users: int = 64,
) -> Report:
    """Evaluate every system on the same users (and the same candidate lists, if given); keeps
    per-user scores for paired comparisons."""
    if not systems:
        raise ConfigError("no systems to evaluate", hint="pass at least one system, e.g. popularity")
    users = np.arange(split.n_users) if users is None else np.asarray(users)
    protocol = dict(protocol or {"name": "llmrank" if candidates is not None else "llamarec"})
    if candidates is not None:
        protocol.setdefault("n_candidates", int(candidates.shape[1]))
        protocol["random_order"] = {
            m: round(v, 6) for m, v in M.random_order_expectation(candidates.shape[1], cutoffs).items()
        }
    results = []
    genres = genre_matrix(split)  # shared by every system's diversity score
    for n, system in enumerate(systems, start=1):
        log.info("system %d/%d: %s", n, len(systems), system.name)
        res = evaluate(system, split, stage, users, cutoffs=cutoffs, item_vectors=item_vectors, genres=genres,
                       candidates=candidates, progress=progress, batch_users=batch_users)  # fmt: skip
        log.info(
            "%s: NDCG@10=%.4f Recall@10=%.4f (fit %.1f s, rank %.1f s = %.1f users/s)",
            res.name, res.means["NDCG@10"], res.means["Recall@10"], res.fit_seconds, res.rank_seconds, res.users_per_s,
        )  # fmt: skip
        results.append(res)
    stats = {"name": split.dataset.name, **split.stats()}
    return Report(
        stats, stage, users, [str(split.user_ids[u]) for u in users], results, tuple(cutoffs), protocol=protocol
    )
