"""Benchmark: every CF baseline under the LlamaRec protocol (or LLMRank's), through `recagent eval`.

    .venv/bin/python bench/baselines.py                                  # ml-latest-small, ~15-25 min on 2 CPU cores
    .venv/bin/python bench/baselines.py --data path/to/dataset --stage val
    .venv/bin/python bench/baselines.py --protocol llmrank --systems random,popularity,ease,sasrec

Writes bench/results/baselines_<data>[_<protocol>][_<stage>].json and .md: every metric per model,
timings (fit, rank, users/s), significance against the best, and for ml-latest-small LlamaRec's
published rows. The systems run through :func:`recagent.eval.runner.run_eval`, the same path as
``recagent eval``. Hyper-parameters were chosen on the validation stage (``--stage val``).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

from common import add_data_args, load_split, out_stem, write_results

# LlamaRec (Yue et al. 2023), Table 1, ML-100k (= ml-latest-small), full ranking
PUBLISHED = {
    "ml-latest-small": {
        "SASRec (LlamaRec Table 1)": {"NDCG@10": 0.0522, "Recall@10": 0.0993},
        "LRURec (LlamaRec Table 1)": {"NDCG@10": 0.0705, "Recall@10": 0.1426},
        "LlamaRec, Llama-2-7B QLoRA (Table 1)": {"NDCG@10": 0.0759, "Recall@10": 0.1524},
    }
}
SYSTEMS = "popularity,itemknn,bpr,als,ease,sasrec"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap)
    ap.add_argument("--stage", default="test", choices=["val", "test"])
    ap.add_argument("--protocol", default="llamarec", choices=["llamarec", "llmrank"])
    ap.add_argument("--systems", default=SYSTEMS)
    ap.add_argument("--users", type=int, default=None, help="a seeded sample of users (smoke runs; labelled)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    from recagent.eval.report import markdown_table, protocol_text, versions
    from recagent.eval.runner import EvalSettings, run_eval

    split = load_split(args.data)
    with tempfile.TemporaryDirectory(prefix="bench-baselines-") as tmp:
        settings = EvalSettings(data=args.data, systems=args.systems.split(","), protocol=args.protocol, stage=args.stage,
                                users=args.users, seed=args.seed, out=Path(tmp))  # fmt: skip
        report, _ = run_eval(settings, split=split)
    published = PUBLISHED.get(split.dataset.name, {}) if args.protocol == "llamarec" else {}
    payload = {
        "protocol": report.protocol,
        "stage": args.stage,
        "dataset": report.split_stats,
        "users_evaluated": int(len(report.users)),
        "sample": args.users is not None,
        "models": {
            r.name: {
                "config": r.config,
                "metrics": {k: round(v, 5) for k, v in r.means.items()},
                "ci95": {m: [round(x, 5) for x in r.ci(m)] for m in ("NDCG@10", "Recall@10")},
                "beyond_accuracy": {k: round(v, 5) for k, v in r.beyond.items()},
                "fit_seconds": round(r.fit_seconds, 2),
                "rank_seconds": round(r.rank_seconds, 2),
                "users_per_s": round(r.users_per_s, 1),
            }
            for r in report.results
        },  # fmt: skip
        "published": published,
        "significance_vs_best": report.significance(),
        "versions": versions(),
    }
    s, best = report.split_stats, report.best("NDCG@10")
    metrics = ("NDCG@1", "NDCG@5", "NDCG@10", "NDCG@20", "Recall@5", "Recall@10", "Recall@20", "MRR@10")
    lines = [
        f"# CF baselines on {s['name']} ({args.protocol} protocol)",
        "",
        f"Data after filtering: {s['users']} users, {s['items']} items, {s['interactions']} interactions. "
        f"Stage `{args.stage}`, {len(report.users)} users"
        + (f" (**a seeded sample of {args.users}: a smoke run, not the full figure**)" if args.users else "")
        + f", {protocol_text(report.protocol)}. Intervals: 95% bootstrap over users; users/s excludes fitting.",
        "",
        markdown_table(report, metrics),
    ]
    if report.protocol.get("random_order"):
        lines += ["", f"A random order scores NDCG@10 {report.protocol['random_order']['NDCG@10']:.4f} in expectation."]
    if published:
        lines += [
            "",
            "Published rows (LlamaRec, Table 1), same protocol:",
            "",
            "| model | NDCG@10 | Recall@10 |",
            "|---|---|---|",
        ]
        lines += [f"| {k} | {v['NDCG@10']:.4f} | {v['Recall@10']:.4f} |" for k, v in published.items()]
    lines += [
        "",
        f"Best here: **{best.name}**, NDCG@10 {best.means['NDCG@10']:.4f}, Recall@10 {best.means['Recall@10']:.4f}.",
    ]
    sig = report.significance()
    if sig:
        lines += [
            "",
            "Paired tests against the best (NDCG@10):",
            "",
            "| other | mean diff | 95% CI | t-test p |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {r['other']} | {r['mean_diff']:.4f} | {r['ci_low']:.4f}–{r['ci_high']:.4f} | {r['t_p']:.3g} |"
            for r in sig
        ]
    suffix = ("" if args.protocol == "llamarec" else f"_{args.protocol}") + (
        "" if args.stage == "test" else f"_{args.stage}"
    )
    suffix += f"_sample{args.users}" if args.users else ""
    write_results(out_stem(args.out, "baselines", split, suffix), payload, lines)


if __name__ == "__main__":
    main()
