"""Tune SASRec on the validation stage (LlamaRec protocol), through the harness.

    .venv/bin/python bench/sasrec_tune.py                      # ml-latest-small; CPU: minutes per config
    .venv/bin/python bench/sasrec_tune.py --data PATH --only 0 1
    python3 bench/sasrec_tune.py --out $OUT                    # on a CUDA GPU: seconds per config

Each row trains from scratch with one change from the base config and reports validation
NDCG@10 / Recall@10 (:func:`recagent.eval.harness.evaluate`, the path `recagent eval` takes); the
winner becomes SASRec's default. Writes bench/results/sasrec_tune_<data>.json and .md.
"""

from __future__ import annotations

import argparse
import json

from common import add_data_args, load_split, out_stem, write_results

BASE = dict(dim=64, layers=2, heads=2, max_len=200, dropout=0.2, epochs=200, batch_size=64, lr=1e-3, weight_decay=0.0)
VARIANTS = [
    {},
    {"epochs": 100},
    {"epochs": 400},
    {"dropout": 0.5},
    {"dropout": 0.1},
    {"dim": 128},
    {"dim": 128, "dropout": 0.5},
    {"max_len": 100},
    {"lr": 2e-3},
    {"lr": 5e-4, "epochs": 400},
    {"batch_size": 32},
    {"layers": 3},
    {"weight_decay": 0.1},
    {"dim": 128, "dropout": 0.5, "epochs": 400},
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap)
    ap.add_argument("--stage", default="val", choices=["val", "test"])
    ap.add_argument("--only", type=int, nargs="*", help="indices of VARIANTS to run")
    ap.add_argument("--epochs", type=int, default=None, help="override every variant's epochs (smoke runs; labelled)")
    args = ap.parse_args()
    import torch

    from recagent.cf import SASRec
    from recagent.eval.harness import evaluate

    split = load_split(args.data)
    rows = []
    for i, var in enumerate(VARIANTS):
        if args.only and i not in args.only:
            continue
        cfg = {**BASE, **var, **({"epochs": args.epochs} if args.epochs else {})}
        model = SASRec(progress=False, **cfg)
        res = evaluate(model, split, args.stage, cutoffs=(10, 20), progress=False)
        row = {"variant": var or "base", **{k: round(v, 4) for k, v in res.means.items() if not k.startswith("MRR")},
               "seconds": round(res.fit_seconds + res.rank_seconds, 1), "final_loss": round(model.losses[-1], 4)}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    md = [
        f"# SASRec tuning ({args.stage} stage, {split.dataset.name}, LlamaRec protocol)",
        "",
        f"Ran on: {device}. Base: `{BASE}`."
        + (f" **Every variant at {args.epochs} epochs: a smoke run.**" if args.epochs else ""),
        "",
        "| variant | NDCG@10 | Recall@10 | NDCG@20 | Recall@20 | seconds |",
        "|---|---|---|---|---|---|",
        *[
            f"| {r['variant']} | {r['NDCG@10']} | {r['Recall@10']} | {r['NDCG@20']} | {r['Recall@20']} | {r['seconds']} |"
            for r in rows
        ],
    ]
    suffix = "" if args.stage == "val" else f"_{args.stage}"
    write_results(out_stem(args.out, "sasrec_tune", split, suffix), {"base": BASE, "stage": args.stage, "device": device,
                                                                     "rows": rows}, md)  # fmt: skip


if __name__ == "__main__":
    main()
