"""Benchmark: every CF baseline on ml-latest-small under the LlamaRec protocol.

    .venv/bin/python bench/baselines.py            # ~15-25 min on 2 CPU cores (SASRec dominates)

Writes bench/results/baselines.json (data set counts, every metric per model, timings, versions)
and bench/results/baselines.md (the table, next to LlamaRec's published rows). Hyper-parameters
were chosen on the validation stage (``--stage val``); the table reports the test stage.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from recagent.data import load_dataset
from recagent.eval.harness import markdown_table, run_experiment, versions
from recagent.eval.splits import llamarec_split
from recagent.eval.systems import build_system

RESULTS = Path(__file__).resolve().parent / "results"
# LlamaRec (Yue et al. 2023), Table 1, ML-100k (= ml-latest-small), full ranking
PUBLISHED = {
    "SASRec (LlamaRec Table 1)": {"NDCG@10": 0.0522, "Recall@10": 0.0993},
    "LRURec (LlamaRec Table 1)": {"NDCG@10": 0.0705, "Recall@10": 0.1426},
    "LlamaRec, Llama-2-7B QLoRA (Table 1)": {"NDCG@10": 0.0759, "Recall@10": 0.1524},
}
SYSTEMS = ["popularity", "itemknn", "bpr", "als", "ease", "sasrec"]


def _machine() -> str:
    import os

    import torch

    cpu = f"{os.cpu_count()} CPU cores"
    return f"{torch.cuda.get_device_name(0)} + {cpu}" if torch.cuda.is_available() else cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stage", default="test", choices=["val", "test"])
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    split = llamarec_split(load_dataset("ml-latest-small"))
    systems = [build_system(n, split=split, seed=args.seed) for n in args.systems.split(",")]
    report = run_experiment(systems, split, args.stage)
    command = "python bench/baselines.py" + ("" if args.stage == "test" else f" --stage {args.stage}")
    name = "baselines" if args.stage == "test" else f"baselines_{args.stage}"

    payload = {
        "command": command,
        "protocol": "LlamaRec: drop untitled items, 5-core, chronological leave-one-out, full ranking, history excluded",
        "stage": args.stage,
        "dataset": report.split_stats,
        "models": {
            r.name: {
                "config": r.config,
                "metrics": {k: round(v, 5) for k, v in r.means.items()},
                "ci95": {m: [round(x, 5) for x in r.ci(m)] for m in ("NDCG@10", "Recall@10")},
                "beyond_accuracy": {k: round(v, 5) for k, v in r.beyond.items()},
                "fit_seconds": round(r.fit_seconds, 2),
                "rank_seconds": round(r.rank_seconds, 2),
            }
            for r in report.results
        },
        "published": PUBLISHED,
        "significance_vs_best": report.significance(),
        "versions": versions(),
        "machine": _machine(),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(payload, indent=2, default=float))

    s = report.split_stats
    metrics = ("NDCG@1", "NDCG@5", "NDCG@10", "NDCG@20", "Recall@5", "Recall@10", "Recall@20", "MRR@10")
    best = report.best("NDCG@10")
    lines = [
        "# CF baselines on ml-latest-small (LlamaRec protocol)",
        "",
        f"Reproduce: `{command}` (seed {args.seed}; ran on {_machine()}; SASRec uses CUDA when present, else the CPU).",
        "",
        f"Data after filtering: {s['users']} users, {s['items']} items, {s['interactions']} interactions, "
        f"average length {s['avg_length']}. Stage `{args.stage}`: "
        + ("last item per user" if args.stage == "test" else "second-to-last item per user")
        + ", full ranking over all items, history excluded. Intervals: 95% bootstrap over users.",
        "",
        markdown_table(report, metrics),
        "",
        "Published rows (LlamaRec, Table 1), same protocol:",
        "",
        "| model | NDCG@10 | Recall@10 |",
        "|---|---|---|",
        *[f"| {k} | {v['NDCG@10']:.4f} | {v['Recall@10']:.4f} |" for k, v in PUBLISHED.items()],
        "",
        f"Best here: **{best.name}**, NDCG@10 {best.means['NDCG@10']:.4f}, Recall@10 {best.means['Recall@10']:.4f}.",
    ]
    sig = [r for r in report.significance() if r["other"] != best.name]
    if sig:
        lines += ["", "Paired tests against the best (NDCG@10):", "", "| other | mean diff | 95% CI | t-test p |", "|---|---|---|---|"]
        lines += [f"| {r['other']} | {r['mean_diff']:.4f} | {r['ci_low']:.4f}–{r['ci_high']:.4f} | {r['t_p']:.3g} |" for r in sig]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    np.set_printoptions()
    return None


if __name__ == "__main__":
    sys.exit(main())
