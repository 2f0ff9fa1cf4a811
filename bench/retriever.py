"""Benchmark: the Chroma retriever under the LlamaRec protocol: recall per source and fused, build
speed, query latency — through the retriever component and the harness.

    .venv/bin/python bench/retriever.py --seeds 5 --name retriever   # ml-latest-small, ~6 min: bench/results/retriever.json
    .venv/bin/python bench/retriever.py --stage val --tune        # the weight search behind the defaults
    .venv/bin/python bench/retriever.py --data PATH --users 50 --latency-users 20 --out /tmp/smoke   # smoke run

Writes bench/results/retriever_<data>[_<stage>].json and .md: Recall@20/50/100 and NDCG@20 of each
source alone (``Retriever.source_lists``) and fused (the ``retriever`` system through
:func:`recagent.eval.harness.evaluate`, full ranking, history excluded), CF baselines next to it,
index build time and items/s, the fused retriever's NDCG@10 / Recall@10 for seeds 0..N-1 (``--seeds``:
ALS is seeded; mean and standard deviation = the seed noise a ranker gain must exceed), and query latency p50/p95 for k=50 with and without metadata
filters (embedded PersistentClient). ``--tune`` searches fusion weights with the library's own
rule (``recagent.retrieval.fuse`` over ``union`` of the cached source lists), so a weight found
here is the weight the retriever applies.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import tempfile
import time

import numpy as np
from common import add_data_args, load_split, out_stem, write_results

CUTOFFS = (20, 50, 100)
FILTERS = {
    "none": None,
    "exclude Horror, year ≥ 1990": {"exclude": {"genres": ["Horror"]}, "ranges": {"year": [1990, None]}},
    "include Comedy": {"include": {"genres": ["Comedy"]}},
}
TEXT_SOURCES = {"profile", "query"}  # need a profile or a request text (MovieLens has neither)
GRID = {
    "cf": [0.5, 1.0],
    "sequence": [1.0, 2.0],
    "content": [0, 0.3, 0.5],
    "knowledge": [0, 0.3, 0.5],
    "popularity": [0, 0.1],
}
# LlamaRec (Yue et al. 2023): LRURec R@10 .1426 overall, .6654 among users whose target is in its top 20
LRUREC_R20 = round(0.1426 / 0.6654, 4)


def _metrics(split, lists, targets) -> dict[str, float]:
    """Recall@k / NDCG@20 of per-user item-id lists."""
    from recagent.eval.metrics import accuracy, target_ranks

    top = np.full((len(lists), max(CUTOFFS)), -1, dtype=np.int64)
    for j, ids in enumerate(lists):
        codes = [split.item_code(i) for i in ids[: max(CUTOFFS)]]
        top[j, : len(codes)] = codes
    acc = accuracy(target_ranks(top, targets), CUTOFFS)
    return {m: round(float(acc[m].mean()), 4) for m in [*(f"Recall@{k}" for k in CUTOFFS), "NDCG@20"]}


def _pct(xs: list[float]) -> dict[str, float]:
    return {"p50": round(float(np.percentile(xs, 50)), 2), "p95": round(float(np.percentile(xs, 95)), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap)
    ap.add_argument("--stage", default="test", choices=["val", "test"])
    ap.add_argument("--users", type=int, default=None, help="a seeded user sample (smoke runs; labelled)")
    ap.add_argument("--latency-users", type=int, default=300)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for MiniLM (1 was faster beside other jobs)")
    ap.add_argument("--baselines", default="popularity,itemknn,als,ease", help="harness baselines to show alongside")
    ap.add_argument("--tune", action="store_true", help="grid-search fusion weights on the cached source lists")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--seeds", type=int, default=1, help="also fit the retriever with seeds 0..N-1 (all users): the seed spread"
    )
    ap.add_argument("--name", default=None, help="results file stem (default retriever_<data>[_<stage>])")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    threadpool_limits(1, "blas")  # implicit's advice; ALS fold-in per request is a tiny solve
    from recagent.components import Query
    from recagent.embeddings import load_model
    from recagent.eval.harness import evaluate
    from recagent.eval.report import versions
    from recagent.eval.runner import select_users
    from recagent.eval.systems import build_systems, make_retriever
    from recagent.pipeline import Pipeline
    from recagent.retrieval import fuse, union
    from recagent.store import IndexConfig, ItemIndex

    split = load_split(args.data)
    users = select_users(split.n_users, args.users, args.seed)
    targets = np.array([split.target(int(u), args.stage) for u in users])
    tmp = tempfile.TemporaryDirectory(prefix="recagent-bench-")

    # --- index build ----------------------------------------------------------------------------
    index = ItemIndex(IndexConfig(path=tmp.name, name="bench", progress=True))
    load_model()  # model load (~8 s cold) is not part of the build rate
    first = index.build(split.dataset.catalog)
    again = index.build(split.dataset.catalog)
    build = {"items": first.total, "seconds": round(first.seconds, 2), "items_per_s": round(first.items_per_s, 1),
             "rebuild_unchanged_seconds": round(again.seconds, 3), "rebuild_embedded": again.embedded,
             "torch_threads": args.threads}  # fmt: skip

    # --- fit; each source alone ----------------------------------------------------------------
    index_opts = {"index_path": tmp.name, "index_name": "bench"}
    retriever = make_retriever(
        split, {**index_opts, "depth": max(CUTOFFS)}, seed=args.seed
    )  # what `recagent eval` builds
    cfg = retriever.config
    t0 = time.perf_counter()
    retriever.fit(split.train_data(args.stage))
    fit_s = time.perf_counter() - t0
    names = [s.name for s in retriever.sources if s.name not in TEXT_SOURCES]
    queries = [split.query(int(u), args.stage) for u in users]
    t0 = time.perf_counter()
    cached = [retriever.source_lists(q, max(CUTOFFS), sources=names) for q in queries]
    lists_s = time.perf_counter() - t0
    sources = {s: _metrics(split, [c[s].ids if s in c else [] for c in cached], targets) for s in names}

    # --- fused, through the harness, next to baselines ------------------------------------------
    rows: dict[str, dict[str, float]] = {}
    keep = ("Recall@10", "NDCG@10", "NDCG@20", *(f"Recall@{k}" for k in CUTOFFS))
    fused = evaluate(Pipeline(retriever, name="retriever", n_candidates=max(CUTOFFS)), split, args.stage, users,
                     cutoffs=(10, *CUTOFFS), fit=False, progress=True)  # fmt: skip
    rows["retriever (fused)"] = {m: round(v, 4) for m, v in fused.means.items() if m in keep}
    rows["retriever (fused)"]["users_per_s"] = round(fused.users_per_s, 1)
    for b in build_systems([b for b in args.baselines.split(",") if b], split=split, seed=args.seed):
        res = evaluate(b, split, args.stage, users, cutoffs=(10, *CUTOFFS))
        rows[b.name] = {m: round(v, 4) for m, v in res.means.items() if m in keep}
        rows[b.name]["users_per_s"] = round(res.users_per_s, 1)

    tuning = None
    if args.tune:

        def fused_with(w: dict[str, float]) -> dict[str, float]:
            weights = {**cfg.weights, **w}
            return _metrics(split, [fuse(union(c), weights, cfg.rrf_k, cfg.default_weight, max(CUTOFFS)).ids for c in cached],
                            targets)  # fmt: skip

        tried = [
            {"weights": w, **fused_with(w)}
            for w in (dict(zip(GRID, v, strict=True)) for v in itertools.product(*GRID.values()))
        ]
        tried.sort(key=lambda r: (-r["Recall@20"], -r["Recall@50"]))
        tuning = {"grid": GRID, "top": tried[:10], "defaults": fused_with({})}

    # --- latency ---------------------------------------------------------------------------------
    lat_users = users[select_users(len(users), args.latency_users, args.seed)]
    hist = [split.query(int(u), args.stage).history for u in lat_users]
    for h in hist[:20]:  # warm-up: HNSW pages, filter masks
        retriever(Query(history=h), n=50)
    latency: dict[str, dict] = {}
    for label, f in FILTERS.items():
        total, cpu, per_source = [], [], {}
        for h in hist:
            t0, c0 = time.perf_counter(), time.process_time()
            out = retriever(Query(history=h, filters=f), n=50)
            total.append((time.perf_counter() - t0) * 1000)
            cpu.append((time.process_time() - c0) * 1000)
            for s, ms in out.timings_ms.items():
                per_source.setdefault(s, []).append(ms)
        latency[label] = {"total_ms": _pct(total), "cpu_ms": _pct(cpu),
                          "source_p50_ms": {s: _pct(v)["p50"] for s, v in per_source.items()}}  # fmt: skip
    t0 = time.perf_counter()
    for _ in range(50):
        retriever(Query(text="a funny animated movie for kids", filters=FILTERS["exclude Horror, year ≥ 1990"]), n=50)
    text_ms = (time.perf_counter() - t0) * 1000 / 50

    # --- seed noise: the default retriever as `recagent eval --systems retriever --seed S` runs it
    # (after the latency runs: each fit rewrites the index's CF vectors)
    seeds = None
    if args.seeds > 1:
        per_seed = []
        for seed in range(args.seeds):
            res = evaluate(Pipeline(make_retriever(split, index_opts, seed=seed), name="retriever"), split, args.stage,
                           users)  # fmt: skip
            per_seed.append({"seed": seed, **{m: round(res.means[m], 4) for m in ("NDCG@10", "Recall@10")}})
        seeds = {"per_seed": per_seed, "users": len(users)}
        for m in ("NDCG@10", "Recall@10"):
            vals = [p[m] for p in per_seed]
            seeds[m] = {"mean": round(float(np.mean(vals)), 4), "std": round(float(np.std(vals, ddof=1)), 4)}

    tmp.cleanup()

    result = {
        "protocol": "LlamaRec: 5-core, leave-one-out, full ranking, history excluded",
        "stage": args.stage, "split": {"name": split.dataset.name, **split.stats()}, "users": len(users),
        "sample": args.users is not None, "config": cfg.model_dump(), "sources": sources, "systems": rows,
        "lrurec_recall@20_derived": LRUREC_R20, "build": build, "fit_seconds": round(fit_s, 1),
        "source_lists_seconds": round(lists_s, 1), "latency_k50": latency, "latency_users": len(lat_users),
        "text_query_k50_filtered_ms_mean": round(text_ms, 2), "seeds": seeds, "tuning": tuning, "versions": versions(),
    }  # fmt: skip
    suffix = ("" if args.stage == "test" else f"_{args.stage}") + (f"_sample{args.users}" if args.users else "")
    stem = args.out / args.name if args.name else out_stem(args.out, "retriever", split, suffix)
    write_results(stem, result, _markdown(result))


def _markdown(r: dict) -> list[str]:
    s = r["split"]
    lines = [
        f"# Retriever benchmark on {s['name']}",
        "",
        f"{r['protocol']}; stage **{r['stage']}**; {s['users']} users, {s['items']} items, {s['interactions']} "
        f"interactions; {r['users']} users evaluated" + (" (**a seeded sample: a smoke run**)" if r["sample"] else "")
        + f". Fusion weights {json.dumps(r['config']['weights'])}, RRF k={r['config']['rrf_k']}, "
        f"depth {r['config']['depth']} per source (tuned on the validation stage: `--stage val --tune`).",
        "",
        "## Recall of each source alone and fused",
        "",
        "| source | Recall@20 | Recall@50 | Recall@100 | NDCG@20 |",
        "|---|---|---|---|---|",
    ]  # fmt: skip
    for name, m in r["sources"].items():
        lines.append(
            f"| {name} | {m['Recall@20']:.4f} | {m['Recall@50']:.4f} | {m['Recall@100']:.4f} | {m['NDCG@20']:.4f} |"
        )
    f = r["systems"]["retriever (fused)"]
    lines += [
        f"| **fused (RRF)** | **{f['Recall@20']:.4f}** | **{f['Recall@50']:.4f}** | **{f['Recall@100']:.4f}** | **{f['NDCG@20']:.4f}** |",
        "",
        f"`profile` and `query` need text that MovieLens lacks. LRURec's recall@20 derived from LlamaRec Tables 1 "
        f"and 3 is ≈ {r['lrurec_recall@20_derived']}.",
        "",
        "## Next to the CF baselines (harness, same users)",
        "",
        "| system | Recall@10 | NDCG@10 | Recall@20 | NDCG@20 | Recall@50 | Recall@100 | users/s |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, m in r["systems"].items():
        lines.append(f"| {name} | {m['Recall@10']:.4f} | {m['NDCG@10']:.4f} | {m['Recall@20']:.4f} | {m['NDCG@20']:.4f} | "
                     f"{m['Recall@50']:.4f} | {m['Recall@100']:.4f} | {m['users_per_s']} |")  # fmt: skip
    if r.get("seeds"):
        sd = r["seeds"]
        lines += ["", f"## Seed noise (the retriever alone, all {sd['users']} users, seeds 0–{len(sd['per_seed']) - 1})", "",
                  "| seed | NDCG@10 | Recall@10 |", "|---|---|---|"]  # fmt: skip
        lines += [f"| {p['seed']} | {p['NDCG@10']:.4f} | {p['Recall@10']:.4f} |" for p in sd["per_seed"]]
        lines.append(f"| **mean ± sd** | **{sd['NDCG@10']['mean']:.4f} ± {sd['NDCG@10']['std']:.4f}** | "
                     f"**{sd['Recall@10']['mean']:.4f} ± {sd['Recall@10']['std']:.4f}** |")  # fmt: skip
        lines += ["", "A ranker gain is claimed only when it exceeds both the paired test and this spread."]
    b = r["build"]
    lines += [
        "",
        "## Index build (embedded PersistentClient, all-MiniLM-L6-v2 on CPU)",
        "",
        f"- content collection: {b['items']} items in {b['seconds']} s = **{b['items_per_s']} items/s** "
        f"(torch threads: {b['torch_threads']}; embedding dominates)",
        f"- rebuild of the unchanged catalog: {b['rebuild_unchanged_seconds']} s, {b['rebuild_embedded']} items re-embedded",
        "",
        f"## Query latency, k=50, {r['latency_users']} users (history from the split), per request",
        "",
        "| filter | p50 ms | p95 ms | CPU p50 ms | CPU p95 ms | per-source p50 ms (wall) |",
        "|---|---|---|---|---|---|",
    ]
    for label, m in r["latency_k50"].items():
        per = ", ".join(f"{s} {v:.1f}" for s, v in m["source_p50_ms"].items() if v >= 0.05)
        lines.append(f"| {label} | {m['total_ms']['p50']:.1f} | {m['total_ms']['p95']:.1f} | {m['cpu_ms']['p50']:.1f} | "
                     f"{m['cpu_ms']['p95']:.1f} | {per} |")  # fmt: skip
    lines += [
        "",
        f"A chat request (text → MiniLM → content search, filtered, k=50): {r['text_query_k50_filtered_ms_mean']:.1f} ms on average.",
    ]
    if r.get("tuning"):
        lines += ["", "## Weight search (this stage)", "", "| weights | Recall@20 | Recall@50 |", "|---|---|---|"]
        lines += [
            f"| {json.dumps(t['weights'])} | {t['Recall@20']:.4f} | {t['Recall@50']:.4f} |" for t in r["tuning"]["top"]
        ]
        d = r["tuning"]["defaults"]
        lines.append(f"| defaults {json.dumps(r['config']['weights'])} | {d['Recall@20']:.4f} | {d['Recall@50']:.4f} |")
    return lines


if __name__ == "__main__":
    main()
