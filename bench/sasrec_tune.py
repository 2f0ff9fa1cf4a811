"""Tune SASRec on the validation stage (LlamaRec protocol, ml-latest-small).

    .venv/bin/python bench/sasrec_tune.py                 # CPU: slow (minutes per config)
    python3 bench/sasrec_tune.py --out $OUT               # on a CUDA GPU: seconds per config

Each row trains from scratch with one change from the base config and reports validation
NDCG@10 / Recall@10; the winner becomes SASRec's default. Writes sasrec_tune.json and .md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from recagent.data import load_dataset
from recagent.eval.baselines import SASRec
from recagent.eval.metrics import accuracy, target_ranks
from recagent.eval.splits import llamarec_split

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
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    ap.add_argument("--stage", default="val", choices=["val", "test"])
    ap.add_argument("--only", type=int, nargs="*", help="indices of VARIANTS to run")
    args = ap.parse_args()
    split = llamarec_split(load_dataset("ml-latest-small"))
    users = np.arange(split.n_users)
    targets = split.targets(args.stage)
    rows = []
    for i, var in enumerate(VARIANTS):
        if args.only and i not in args.only:
            continue
        cfg = {**BASE, **var}
        t0 = time.perf_counter()
        m = SASRec(progress=False, **cfg).fit(split, args.stage)
        acc = accuracy(target_ranks(m.topk(users, 20), targets), (10, 20))
        row = {"variant": var or "base", **{k: round(float(v.mean()), 4) for k, v in acc.items() if not k.startswith("MRR")},
               "seconds": round(time.perf_counter() - t0, 1), "final_loss": round(m.losses[-1], 4)}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sasrec_tune.json").write_text(json.dumps({"base": BASE, "stage": args.stage, "device": device, "rows": rows}, indent=2))
    md = [
        "# SASRec tuning (validation stage, ml-latest-small, LlamaRec protocol)",
        "",
        f"Reproduce: `python bench/sasrec_tune.py` (ran on: {device}). Base: `{BASE}`.",
        "",
        "| variant | NDCG@10 | Recall@10 | NDCG@20 | Recall@20 | seconds |",
        "|---|---|---|---|---|---|",
        *[f"| {r['variant']} | {r['NDCG@10']} | {r['Recall@10']} | {r['NDCG@20']} | {r['Recall@20']} | {r['seconds']} |" for r in rows],
    ]
    (args.out / "sasrec_tune.md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
