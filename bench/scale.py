"""Benchmark: the same 610-user batch single-process and on a local Ray with 1 and 2 workers.

    flock /tmp/recagent-heavy.lock .venv/bin/python bench/scale.py              # ~10 min on 2 CPU cores
    .venv/bin/python bench/scale.py --users 64 --no-llm-rank                    # a quick look

Rows are the LlamaRec test queries of ml-latest-small (each user's history before the held-out
item, which is expected): retrieval (fused Chroma retriever, embedded index) → the zero-shot
verbalizer ranker on the bundled SmolLM2-135M (vLLM, bf16, batch-invariant as every batch job)
→ MMR; reasons off. Each run starts from nothing (agent, or the driver's fit shipped to Ray
actors with their own index copy and engine), so wall time includes start-up: that is what a
batch job costs. ``differing_rows``: rows whose top-10 ids are not those of the single process. Writes bench/results/scale.json and .md: wall time,
rows/s, overhead over the single-process run, ``identical_results`` (same item ids in the same
order for every row) and the agreement within the bf16 tolerance, and the load average.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TOL = 0.05  # bf16 tolerance on label probabilities, as tests/test_ranker.py


def _rows(path: Path, n_users: int | None) -> list:
    from recagent.batch import read_rows
    from recagent.data import load_dataset
    from recagent.eval.splits import llamarec_split

    split = llamarec_split(load_dataset("ml-latest-small"))
    users = range(split.n_users if n_users is None else min(n_users, split.n_users))
    with path.open("w") as f:
        for u in users:
            f.write(json.dumps({"id": str(split.user_ids[u]), "user_id": str(split.user_ids[u]),
                                "history": [str(split.item_ids[c]) for c in split.history(u, "test")],
                                "expected": [str(split.item_ids[split.target(u, "test")])]}) + "\n")  # fmt: skip
    return read_rows(path)


def _lists(out: Path) -> dict[str, list[tuple[str, float]]]:
    recs = [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()]
    return {r["id"]: [(it["item_id"], it["score"]) for it in r["items"]] for r in recs}


def _agree(a: list[tuple[str, float]], b: list[tuple[str, float]]) -> bool:
    """The rule of tests/test_ray.py on label probabilities (exp of the scores): shared items
    within TOL, an item in one list only no likelier than the other's last + TOL, and order kept
    wherever neighbours differ by more than 2·TOL."""
    sa, sb = ({i: math.exp(s) for i, s in x} for x in (a, b))
    if any(abs(sa[i] - sb[i]) > TOL for i in sa.keys() & sb.keys()):
        return False
    for one, other in ((sa, sb), (sb, sa)):
        if any(one[i] > min(other.values()) + TOL for i in one.keys() - other.keys()):
            return False
    ids = [i for i, _ in a if i in sb]
    return all(sb[x] > sb[y] for x, y in zip(ids, ids[1:], strict=False) if sa[x] - sa[y] > 2 * TOL)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=None, help="first N users (default: all 610)")
    ap.add_argument("--workers", default="1,2", help="Ray pool sizes to run")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--no-llm-rank", action="store_true", help="retrieval and MMR only")
    ap.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: spinning OpenMP threads slow neighbours

    from recagent.agent import AgentConfig, RecAgent
    from recagent.batch import BatchConfig, run_batch, strict_config
    from recagent.distributed import RayConfig, init_ray, run_batch_ray
    from recagent.models import cache_dir

    load = {"start": os.getloadavg()}
    tmp = Path(tempfile.mkdtemp(prefix="recagent-scale-"))
    rows = _rows(tmp / "rows.jsonl", args.users)
    # the shipped index under the cache dir (built once); adapter none = zero-shot LLM ranking,
    # since the card of ml-latest-small serves the retriever order (no LLM call at all)
    cfg = AgentConfig(chroma_path=str(cache_dir() / "chroma"), explain=False, llm_rank=not args.no_llm_rank,
                      adapter="none")  # fmt: skip
    runs: list[dict] = []

    t0 = time.perf_counter()
    agent = RecAgent.from_config(strict_config(cfg), progress=False)  # what `recagent batch` runs
    build = time.perf_counter() - t0
    s = run_batch(agent, rows, BatchConfig(out=tmp / "single.jsonl", batch_size=args.batch_size, progress=False))
    wall = time.perf_counter() - t0
    agent.close()
    del agent
    runs.append({"name": "single process", "workers": 1, "wall_s": round(wall, 1), "startup_s": round(build, 1),
                 "rows_per_s": round(len(rows) / wall, 3), "rows_per_s_after_startup": s.rows_per_s,
                 "failed": s.failed, "metrics": s.metrics})  # fmt: skip
    base = _lists(tmp / "single.jsonl")

    t0 = time.perf_counter()
    ray_cfg = RayConfig(num_cpus=os.cpu_count())
    init_ray(ray_cfg)
    ray_init = time.perf_counter() - t0
    for n in [int(w) for w in args.workers.split(",")]:
        out = tmp / f"ray{n}.jsonl"
        t0 = time.perf_counter()
        s = run_batch_ray(cfg, rows, BatchConfig(out=out, batch_size=args.batch_size, progress=False),
                          ray_cfg.model_copy(update={"workers": n}))  # fmt: skip
        wall = time.perf_counter() - t0
        got = _lists(out)
        runs.append({"name": f"Ray, {n} worker(s)", "workers": n, "wall_s": round(wall, 1),
                     "rows_per_s": round(len(rows) / wall, 3), "failed": s.failed, "metrics": s.metrics,
                     "identical_ids": sum([i for i, _ in got[k]] == [i for i, _ in base[k]] for k in base),
                     "differing_rows": sum([i for i, _ in got.get(k, [])] != [i for i, _ in base[k]] for k in base),
                     "agree_within_tol": sum(_agree(base[k], got[k]) for k in base),
                     "top_item_differs": sum(base[k][:1] != got[k][:1] and base[k][0][0] != got[k][0][0] for k in base)})  # fmt: skip
    load["end"] = os.getloadavg()
    single = runs[0]["wall_s"]
    for r in runs:
        r["overhead_ratio"] = round(r["wall_s"] / single, 3)
    ray_runs = runs[1:]
    result = {
        "command": "flock /tmp/recagent-heavy.lock .venv/bin/python bench/scale.py "
        + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "rows": len(rows), "batch_size": args.batch_size, "llm_rank": not args.no_llm_rank, "explain": False,
        "ray_init_s": round(ray_init, 1),
        "identical_results": all(r["identical_ids"] == len(rows) for r in ray_runs),
        "same_within_bf16_tolerance": all(r["agree_within_tol"] == len(rows) for r in ray_runs),
        "runs": runs, "load_average": load, "cpus": os.cpu_count(), "machine": platform.platform(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(result))
    print(json.dumps(result, indent=2))


def _markdown(r: dict) -> str:
    lines = [
        r["command"],
        "",
        f"# Batch scale-out: single process vs local Ray ({r['rows']} users, {r['cpus']} CPUs)",
        "",
        f"Retrieval → {'zero-shot LLM ranking (SmolLM2-135M, vLLM bf16)' if r['llm_rank'] else 'retriever order'} "
        f"→ MMR, reasons off, batches of {r['batch_size']}. Wall time from nothing (agent or actors built, "
        f"engines started) to the last row written. Load average {r['load_average']['start']} at the start, "
        f"{r['load_average']['end']} at the end. {r['when']}.",
        "",
        "| run | wall s | rows/s | overhead vs single | rows with identical ids | rows agreeing within bf16 tol "
        "| rows with another top item | NDCG@10 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["runs"]:
        lines.append(f"| {x['name']} | {x['wall_s']} | {x['rows_per_s']} | {x['overhead_ratio']} | "
                     f"{x.get('identical_ids', '—')} | {x.get('agree_within_tol', '—')} | {x.get('top_item_differs', '—')} | "
                     f"{x['metrics'].get('ndcg@10', float('nan')):.4f} |")  # fmt: skip
    lines += [
        "",
        f"`identical_results`: **{str(r['identical_results']).lower()}** (same item ids in the same order for "
        f"every row); within the bf16 tolerance ({TOL}): **{str(r['same_within_bf16_tolerance']).lower()}**. "
        f"Local Ray start: {r['ray_init_s']} s. {r.get('note', '')}",
        "",
        "What made Ray's lists differ, and what changed (bench/results/scale_causes.md, one cause at a time): "
        "(1) vLLM computes a prompt's bf16 label probabilities with kernels that depend on the other prompts "
        "in its engine step and on cached prefixes, which reorders near-ties: batch jobs now score each prompt "
        "alone and from no cached prefix (`LLMConfig.batch_invariant`; generated text stays batched); "
        "(2) embedded Chroma keeps its last writes in a log that every open re-inserts into its HNSW "
        "graph with several threads, so each process (each actor's copy) held another graph: writes now "
        "leave nothing in the log (`recagent.store.settle`), a refit that gives the same factors writes "
        "nothing, and a collection of at most 10,000 items is searched whole (`IndexConfig.exact_up_to`), "
        "so even two separate builds give the same content neighbours; (3) every actor refitted the "
        "retriever: the driver now fits once and ships the fitted state through Ray's object store.",
        "",
        "On 2 cores no speed-up is expected: every Ray actor builds its own agent (index copy, CF model, "
        "vLLM engine) and the actors share the same two cores, so the figures show the cost of the "
        "distribution (start-up, serialisation, one engine per actor) and that the lists do not change.",
        "",
        "What a multi-node run changes: each node brings its own cores (or GPU) for its actors' engines, so "
        "ranking throughput grows with the number of actors until the Chroma server or the driver (the single "
        "writer of the output) limits it; the per-actor start-up (~15–40 s here) is paid once per actor and "
        "amortised over a large batch; with `--chroma-host` the actors query one Chroma server instead of "
        "copying the index, and with several `--llm-url` they rank on `vllm serve` replicas (GPU, tensor/data "
        "parallel) instead of starting engines of their own.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
