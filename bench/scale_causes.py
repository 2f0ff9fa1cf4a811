"""Benchmark: why a Ray batch may not reproduce the single-process run — each factor alone.

    .venv/bin/python bench/scale_causes.py              # ~25 min on 2 CPU cores (1.7 rows/s), all 610 users
    .venv/bin/python bench/scale_causes.py --from DIR   # score the outputs a run (one cut short) left in DIR

One agent (the configuration of bench/scale.py: shipped index, zero-shot LLM ranking, reasons
off) ranks the same 610 rows three times in one process:

* ``batch 16`` twice — run-to-run determinism with everything equal;
* ``batch 64`` — the same rows in other batches: what batch composition alone changes (vLLM
  prefills the prompts of one call together; other neighbours, other kernel shapes, other bf16
  rounding).

A second agent built from the same configuration (its retriever refitted: ALS, graph, index
reopened) ranks them again at batch 16 — what refitting alone changes (what each Ray actor did).
Rows differ when their top-10 id lists differ. Writes bench/results/scale_causes.json/.md.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from common import RESULTS, write_results
from scale import _rows


def _ids(path: Path) -> dict[str, list[str]]:
    return {r["id"]: [it["item_id"] for it in r["items"]] for r in map(json.loads, path.read_text().splitlines()) if r}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=None)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--from", dest="src", type=Path, default=None,
                    help="score the outputs a run left in this folder (e.g. one cut short) instead of running")  # fmt: skip
    args = ap.parse_args()
    if args.src is not None:
        names = {"batch 16": "16-0.jsonl", "batch 16 again": "16-1.jsonl", "batch 64": "64-2.jsonl",
                 "refitted agent, batch 16": "refit.jsonl"}  # fmt: skip
        out = {k: _ids(args.src / f) for k, f in names.items() if (args.src / f).exists()}
        return _report(args, out, {"note": f"scored from {args.src}: rows compared where both runs have them"})
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from recagent.agent import AgentConfig, RecAgent
    from recagent.batch import BatchConfig, run_batch
    from recagent.models import cache_dir

    tmp = Path(tempfile.mkdtemp(prefix="recagent-causes-"))
    rows = _rows(tmp / "rows.jsonl", args.users)
    cfg = AgentConfig(chroma_path=str(cache_dir() / "chroma"), explain=False, llm_rank=True, adapter="none")
    out: dict[str, dict[str, list[str]]] = {}
    secs = {}
    agent = RecAgent.from_config(cfg, progress=False)
    for name, bs in (("batch 16", 16), ("batch 16 again", 16), ("batch 64", 64)):
        t0 = time.perf_counter()
        run_batch(agent, rows, BatchConfig(out=tmp / f"{bs}-{len(out)}.jsonl", batch_size=bs, progress=False))
        secs[name] = round(time.perf_counter() - t0, 1)
        out[name] = _ids(tmp / f"{bs}-{len(out)}.jsonl")
    agent.close()
    del agent
    agent = RecAgent.from_config(cfg, progress=False)  # a second build: the retriever fitted again
    t0 = time.perf_counter()
    run_batch(agent, rows, BatchConfig(out=tmp / "refit.jsonl", batch_size=16, progress=False))
    secs["refitted agent, batch 16"] = round(time.perf_counter() - t0, 1)
    out["refitted agent, batch 16"] = _ids(tmp / "refit.jsonl")
    agent.close()
    _report(args, out, secs)


def _report(args, out: dict[str, dict[str, list[str]]], secs: dict) -> None:
    base = out["batch 16"]
    rows_out = []
    for name, got in out.items():
        if name == "batch 16":
            continue
        common = [k for k in base if k in got]
        diff = [k for k in common if got[k] != base[k]]
        rows_out.append({"comparison": f"batch 16 vs {name}", "rows_compared": len(common), "differing_rows": len(diff),
                         "top_item_differs": sum(got.get(k, [None])[:1] != base[k][:1] for k in diff),
                         "same_set_other_order": sum(set(got.get(k, [])) == set(base[k]) for k in diff),
                         "examples": diff[:5]})  # fmt: skip
    payload = {"users": len(base), "batch_seconds": secs, "rows": rows_out}
    md = [f"# What changes a user's top 10: one factor at a time ({len(base)} users, zero-shot LLM ranking)", "",
          "| comparison | rows compared | differing rows | top item differs | same 10, other order |",
          "|---|---|---|---|---|"]  # fmt: skip
    md += [f"| {r['comparison']} | {r['rows_compared']} | {r['differing_rows']} | {r['top_item_differs']} | "
           f"{r['same_set_other_order']} |" for r in rows_out]  # fmt: skip
    md += ["", "Rows are compared where both runs have them (a run cut short leaves fewer)."]
    write_results(args.out / "scale_causes", payload, md)


if __name__ == "__main__":
    main()
