"""Benchmark: how the retriever's build time and memory grow with the number of interactions.

    flock /tmp/recagent-heavy.lock .venv/bin/python bench/scale_data.py --sizes 1m,4m,16m,32m --ml

For each size a synthetic data set in the generic format is generated once (bench/synth_data.py:
``--items`` items, ``--per-user`` interactions per user on average, Zipf popularity) and measured
in a fresh process, so every peak RSS is that size's alone: load, LlamaRec split, training data,
the retriever's fit split into index build (embeddings: a per-item cost) and the rest (ALS, the
bounded sequence graph, the knowledge graph, popularity), query latency (k=50, known users' test
histories) and the harness evaluation of ``--users`` users (retriever pipeline; popularity).
Writes bench/results/scale_data.json and .md with the growth rate per million interactions.
Sizes run one after another; the load average is recorded before each.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
SIZES = {"1m": 1_000_000, "4m": 4_000_000, "16m": 16_000_000, "32m": 32_000_000}


def _status(field: str) -> float:
    """A /proc/self/status field in GB (VmRSS now, VmHWM peak since the last reset)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"{field}:\s+(\d+)", text).group(1)) / 2**20


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux)


class Stages:
    """Seconds, RSS after, and peak RSS during each named stage."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, float]] = {}

    def __call__(self, name: str, fn, *args, **kw):
        _reset_peak()
        t0 = time.perf_counter()
        out = fn(*args, **kw)
        self.rows[name] = {"seconds": round(time.perf_counter() - t0, 2), "rss_gb": round(_status("VmRSS"), 3),
                           "peak_gb": round(_status("VmHWM"), 3)}  # fmt: skip
        print(f"  {name}: {self.rows[name]}", file=sys.stderr, flush=True)
        return out


def _pct(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs)
    return {"p50": round(float(np.percentile(a, 50)), 2), "p95": round(float(np.percentile(a, 95)), 2)}


def measure(spec: str, index_path: str, n_users: int, latency_users: int) -> dict:
    """Everything measured for one data set, in this process."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, "blas")  # ALS fold-in per query is a tiny solve; as in bench/retriever.py
    from recagent.cf import make_baseline
    from recagent.data import load_dataset
    from recagent.eval.harness import evaluate
    from recagent.eval.splits import llamarec_split
    from recagent.pipeline import Pipeline
    from recagent.retrieval import Retriever
    from recagent.retrieval.sequence import graph_from_codes
    from recagent.store import IndexConfig, ItemIndex

    st = Stages()
    t_all = time.perf_counter()
    ds = st("load", load_dataset, spec)
    split = st("split", llamarec_split, ds)
    data = st("train_data", split.train_data, "test")
    # one collection per distinct catalog: the synthetic sizes share theirs, so embedding (a per-item
    # cost) is paid once and the later sizes measure an unchanged rebuild
    digest = int(pd.util.hash_pandas_object(data.catalog.items["title"]).sum()) % 10**12
    name = f"scale-{len(data.catalog)}-{digest}"
    retriever = Retriever(ItemIndex(IndexConfig(path=index_path, name=name, progress=False)), seed=0)
    st("index_build", retriever.index.build, data.catalog)  # embeds only items not yet in the index
    c = retriever.config  # the graph alone first (its build was the memory hog); fit builds it again
    st("sequence_graph", graph_from_codes, data.sequences, np.arange(data.n_items), data.n_items, c.sequence_window,
       c.sequence_backward, c.sequence_distance_power, top_k=c.sequence_top_k)  # fmt: skip
    st("retriever_fit", retriever.fit, data)
    graph = retriever.state.sequence
    rng = np.random.default_rng(0)
    users = np.sort(rng.choice(split.n_users, size=min(n_users, split.n_users), replace=False))
    sample = users[: min(latency_users, len(users))]
    queries = [split.query(int(u), "test") for u in sample]

    def latency() -> dict:
        for q in queries[:10]:  # warm-up
            retriever(q, n=50)
        ms = []
        for q in queries:
            t0 = time.perf_counter()
            retriever(q, n=50)
            ms.append((time.perf_counter() - t0) * 1000)
        return _pct(ms)

    query_ms = st("query_latency", latency)
    pipe = Pipeline(retriever, name="retriever", n_candidates=20)
    res = st("eval_retriever", evaluate, pipe, split, "test", users, cutoffs=(10, 20), fit=False)
    pop = st("eval_popularity", evaluate, make_baseline("popularity"), split, "test", users, cutoffs=(10, 20))
    keep = ("NDCG@10", "Recall@20")
    return {
        "data": spec,
        "split": split.stats(),
        "stages": st.rows,
        "build_seconds": round(st.rows["index_build"]["seconds"] + st.rows["retriever_fit"]["seconds"], 2),
        "sequence_graph": None
        if graph is None
        else {
            "nnz": int(graph.nnz),
            "mb": round((graph.data.nbytes + graph.indices.nbytes + graph.indptr.nbytes) / 2**20, 1),
        },  # fmt: skip
        "query_ms": query_ms,
        "eval_users": len(users),
        "retriever": {m: round(v, 4) for m, v in res.means.items() if m in keep},
        "popularity": {m: round(v, 4) for m, v in pop.means.items() if m in keep},
        "total_seconds": round(time.perf_counter() - t_all, 1),
        # resetting VmHWM per stage resets ru_maxrss too: the run's peak is the highest stage peak
        "peak_rss_gb": max(r["peak_gb"] for r in st.rows.values()),
    }


def k_sweep(index_path: str, ks: list[int | None], seeds: int = 1) -> list[dict]:
    """Retriever NDCG@10 / Recall@20 on ml-latest-small (all 610 users, both stages) for each
    sequence graph size ``sequence_top_k`` (None = every neighbour), for seeds 0..seeds-1 (ALS is
    seeded): per seed, mean and standard deviation. Pick on the validation mean."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, "blas")
    from recagent.data import load_dataset
    from recagent.eval.harness import evaluate
    from recagent.eval.splits import llamarec_split
    from recagent.eval.systems import make_retriever
    from recagent.pipeline import Pipeline

    split = llamarec_split(load_dataset("ml-latest-small"))
    rows = []
    for k in ks:
        row: dict = {"sequence_top_k": k}
        for stage in ("val", "test"):
            per_seed = []
            for seed in range(seeds):
                r = make_retriever(split, {"index_path": index_path, "index_name": "scale-ml-small",
                                           "sequence_top_k": k}, seed=seed)  # fmt: skip
                res = evaluate(Pipeline(r, name="retriever", n_candidates=20), split, stage, cutoffs=(10, 20))
                per_seed.append(
                    {m: round(v, 4) for m, v in res.means.items() if m in ("NDCG@10", "Recall@10", "Recall@20")}
                )
                row["graph_nnz"] = int(r.state.sequence.nnz)
            row[stage] = {m: round(float(np.mean([p[m] for p in per_seed])), 4) for m in per_seed[0]}
            row[stage]["NDCG@10_std"] = (
                round(float(np.std([p["NDCG@10"] for p in per_seed], ddof=1)), 4) if seeds > 1 else None
            )
            row[stage]["per_seed"] = per_seed
        print(f"  {row}", file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def _growth(rows: list[dict]) -> dict:
    """Least-squares slope of peak RSS and build seconds over millions of interactions."""
    x = np.array([r["split"]["interactions"] / 1e6 for r in rows])
    if len(x) < 2:
        return {}
    out = {}
    for key, get in (("peak_gb_per_m", lambda r: r["peak_rss_gb"]), ("build_s_per_m", lambda r: r["build_seconds"]),
                     ("total_s_per_m", lambda r: r["total_seconds"])):  # fmt: skip
        slope, icpt = np.polyfit(x, np.array([get(r) for r in rows]), 1)
        out[key] = round(float(slope), 4)
        out[key.replace("_per_m", "_intercept")] = round(float(icpt), 3)
    return out


def _markdown(result: dict) -> str:
    lines = [f"Reproduce: `{result['command']}`", "", "# Scale: retriever build and evaluation vs interactions", "",
             result["setup"], "",
             "| data | interactions | users | items | load s | split s | index build s | fit s | peak RSS GB | "
             "graph nnz (MB) | query p50/p95 ms | eval s | retriever NDCG@10 / R@20 | popularity NDCG@10 / R@20 | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in result["runs"]:
        s, g = r["stages"], r["sequence_graph"] or {"nnz": 0, "mb": 0}
        lines.append(
            f"| {Path(r['data']).name} | {r['split']['interactions']:,} | {r['split']['users']:,} | {r['split']['items']:,} "
            f"| {s['load']['seconds']} | {s['split']['seconds']} | {s['index_build']['seconds']} | {s['retriever_fit']['seconds']} "
            f"| {r['peak_rss_gb']} | {g['nnz']:,} ({g['mb']}) | {r['query_ms']['p50']} / {r['query_ms']['p95']} "
            f"| {s['eval_retriever']['seconds']} | {r['retriever']['NDCG@10']} / {r['retriever']['Recall@20']} "
            f"| {r['popularity']['NDCG@10']} / {r['popularity']['Recall@20']} | {r['load_average']} |"
        )
    lines += ["", "Peak RSS per stage (GB):", "", "| data | " + " | ".join(result["runs"][0]["stages"]) + " |",
              "|---|" + "---|" * len(result["runs"][0]["stages"])]  # fmt: skip
    for r in result["runs"]:
        lines.append(
            f"| {Path(r['data']).name} | " + " | ".join(str(v["peak_gb"]) for v in r["stages"].values()) + " |"
        )
    if result.get("growth"):
        lines += ["", f"Growth over the synthetic sizes (least squares): {json.dumps(result['growth'])}"]
    if result.get("k_sweep"):
        ks = result["k_sweep"]
        n = len(ks["rows"][0]["val"].get("per_seed", [None]))
        lines += ["", f"Sequence graph size on ml-latest-small (`{ks['command']}`, load average {ks['load_average']}; "
                  f"all 610 users, mean ± sd over seeds 0–{n - 1}; chosen on the validation NDCG@10 mean):", "",
                  "| sequence_top_k | graph nnz | val NDCG@10 | val Recall@20 | test NDCG@10 | test Recall@20 |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in ks["rows"]:
            sd = {
                s: f" ± {r[s]['NDCG@10_std']}" if r[s].get("NDCG@10_std") is not None else "" for s in ("val", "test")
            }
            lines.append(f"| {r['sequence_top_k']} | {r['graph_nnz']:,} | {r['val']['NDCG@10']}{sd['val']} | {r['val']['Recall@20']} "
                         f"| {r['test']['NDCG@10']}{sd['test']} | {r['test']['Recall@20']} |")  # fmt: skip
    for note in result.get("notes", []):
        lines += ["", note]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1m,4m,16m,32m", help=f"comma-separated, from {list(SIZES)}")
    ap.add_argument("--ml", action="store_true", help="also measure ml-latest-small")
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--per-user", type=float, default=100.0)
    ap.add_argument("--users", type=int, default=1000, help="users evaluated by the harness")
    ap.add_argument("--latency-users", type=int, default=200)
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/recagent-scale"), help="where generated sets are kept")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--k-sweep", default=None, help="only measure sequence_top_k values on ml-latest-small, e.g. 50,100,200,none"
    )
    ap.add_argument("--seeds", type=int, default=1, help="--k-sweep: seeds 0..N-1 per value (mean ± sd)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child mode: measure this data set, print JSON
    args = ap.parse_args()
    index_path = str(args.data_dir / "chroma")
    if args.one:
        print(json.dumps(measure(args.one, index_path, args.users, args.latency_users)))
        return
    out_json = args.out / "scale_data.json"
    old = json.loads(out_json.read_text()) if out_json.exists() else {}
    if args.k_sweep:
        ks = [None if k.lower() == "none" else int(k) for k in args.k_sweep.split(",")]
        old["k_sweep"] = {"command": ".venv/bin/python bench/scale_data.py " + " ".join(sys.argv[1:]),
                          "load_average": [round(x, 2) for x in os.getloadavg()], "rows": k_sweep(index_path, ks, args.seeds)}  # fmt: skip
        args.out.mkdir(parents=True, exist_ok=True)
        out_json.write_text(json.dumps(old, indent=2) + "\n")
        if old.get("runs"):
            (args.out / "scale_data.md").write_text(_markdown(old))
        return
    sys.path.insert(0, str(ROOT))
    from synth_data import SynthConfig, generate

    specs = ["ml-latest-small"] if args.ml else []
    for size in [s for s in args.sizes.split(",") if s]:
        n = SIZES[size]
        folder = args.data_dir / f"synth-{size}"
        if not (folder / "synth.json").exists():
            users = 2 * round(n / args.per_user)
            generate(SynthConfig(users=users, items=args.items, per_user=args.per_user, interactions=n), folder)
        specs.append(str(folder))
    runs = {r["data"]: r for r in old.get("runs", [])}  # sizes not rerun keep their last measurement
    for spec in specs:
        load = os.getloadavg()
        print(f"{spec} (load average {load[0]:.2f})", file=sys.stderr, flush=True)
        cmd = [sys.executable, __file__, "--one", spec, "--users", str(args.users), "--latency-users",
               str(args.latency_users), "--data-dir", str(args.data_dir)]  # fmt: skip
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "1"})
        if proc.returncode != 0:
            print(f"{spec}: failed with exit code {proc.returncode}", file=sys.stderr)
            continue
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row["load_average"] = [round(x, 2) for x in load]
        runs[spec] = row
    ordered = sorted(runs.values(), key=lambda r: r["split"]["interactions"])
    synth = [r for r in ordered if "synth-" in r["data"]]
    result = {
        "command": ".venv/bin/python bench/scale_data.py " + " ".join(sys.argv[1:]),
        "setup": (f"Synthetic sets: {args.items:,} items, ~{args.per_user:g} interactions per user (log-normal), Zipf 1.0 "
                  f"popularity, 20 genre clusters (bench/synth_data.py, seed 0). LlamaRec split, test stage, "
                  f"{args.users} random users, full ranking; retriever defaults (ALS CF, sequence graph top-k "
                  f"neighbours, knowledge, content, popularity). One process per data set; 2 CPU cores, 24 GB."),
        "runs": ordered,
        "growth": _growth(synth),
        "notes": old.get("notes", []),
        "k_sweep": old.get("k_sweep"),
    }  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "scale_data.md").write_text(_markdown(result))
    print(_markdown(result))


if __name__ == "__main__":
    main()
