"""Why a Ray batch does not reproduce the single-process lists: each suspected cause alone, in one process.

    flock /tmp/recagent-heavy.lock .venv/bin/python bench/scale_causes.py          # ~25 min on 2 CPU cores (engines default,invariant)
    .venv/bin/python bench/scale_causes.py --users 40 --engines default,invariant  # a quick look

The rows are bench/scale.py's (the LlamaRec test queries of ml-latest-small, 610 users), run
through the production batch path (:func:`recagent.batch.run_batch`: retrieval → zero-shot
verbalizer ranking on the bundled SmolLM2-135M in bf16 → MMR, reasons off). The reference is a
fresh agent, batches of 16 in file order. Each other run changes one thing and counts the rows
whose top-10 ids differ from the reference's:

- ``retrieval, refit + index copy``: a second agent fitted from nothing on a copy of the index
  folder (what a Ray actor does), ranking off — does retrieval itself reproduce? And two copies
  of a folder whose last 500 writes are still in Chroma's log (as every index was before
  ``recagent.store.settle``): each open re-inserts them into its own HNSW graph.
- per engine setting (``default``: vLLM's chunked prefill with 4096-token steps and prefix
  caching; ``whole``: every prompt prefilled whole in one step; ``whole-nocache``: that and no
  prefix cache; ``invariant``: vLLM's defaults, but each prompt scored alone in its engine step
  from no cached prefix, ``LLMConfig.batch_invariant``, what batch jobs run): the same rows
  again on the warm engine (prefix cache full), in batches of 64,
  and in batches of 16 in a shuffled order (other neighbours in every batch, as Ray's blocks).

Writes bench/results/scale_causes.json and .md (differing rows per run, seconds per run, the CPU
and load average).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from common import RESULTS, write_results
from scale import _lists, _rows  # the same rows and output reader as bench/scale.py

ENGINES = {
    "default": {},
    "whole": {"enable_chunked_prefill": False},
    "whole-nocache": {"enable_chunked_prefill": False, "enable_prefix_caching": False},
    "invariant": {"batch_invariant": True},  # each prompt scored alone, no cached prefix (batch jobs' setting)
}


def _cpu() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")


UNSETTLED = 500


def _unsettled(index: Path, tmp: Path) -> Path:
    """A copy of ``index`` whose collections end with UNSETTLED identical re-upserts in Chroma's log,
    written by plain chromadb (no settle): what every index was before recagent settled them."""
    import chromadb

    import recagent.embeddings  # noqa: F401  (registers the embedding function of the content collection)

    folder = tmp / "unsettled"
    shutil.copytree(index, folder)
    client = chromadb.PersistentClient(path=str(folder))
    for c in client.list_collections():
        col = client.get_collection(c.name)
        got = col.get(limit=UNSETTLED, include=["embeddings", "metadatas"])
        col.upsert(ids=got["ids"], embeddings=got["embeddings"], metadatas=got["metadatas"])
    client.close()
    return folder


def _differing(a: dict, b: dict) -> dict[str, int]:
    ids = {k: [i for i, _ in v] for k, v in a.items()}
    other = {k: [i for i, _ in v] for k, v in b.items()}
    return {
        "differing_rows": sum(ids[k] != other.get(k) for k in ids),
        "same_set_other_order": sum(ids[k] != other.get(k) and set(ids[k]) == set(other.get(k, [])) for k in ids),
        "top_item_differs": sum(ids[k][:1] != other.get(k, [])[:1] for k in ids),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=None, help="first N users (default: all 610)")
    ap.add_argument("--engines", default="default,invariant", help=f"engine settings to run, of {list(ENGINES)}")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    from recagent.agent import AgentConfig, RecAgent
    from recagent.batch import BatchConfig, run_batch
    from recagent.models import cache_dir

    load = {"start": os.getloadavg()}
    tmp = Path(tempfile.mkdtemp(prefix="recagent-causes-"))
    rows = _rows(tmp / "rows.jsonl", args.users)
    index = cache_dir() / "chroma"
    base_cfg = AgentConfig(chroma_path=str(index), explain=False, adapter="none")
    runs: list[dict] = []
    ref: dict | None = None

    def batch(agent, name: str, order: list, size: int) -> dict:
        out = tmp / f"{len(runs)}.jsonl"
        t0 = time.perf_counter()
        run_batch(agent, order, BatchConfig(out=out, batch_size=size, progress=False))
        got = _lists(out)
        runs.append({"name": name, "seconds": round(time.perf_counter() - t0, 1)})
        print(runs[-1], flush=True)
        return got

    # retrieval alone: the shared index vs a refit on a copy of the folder
    agent = RecAgent.from_config(base_cfg.model_copy(update={"llm_rank": False}), progress=False)
    retr = batch(agent, "retrieval, this process", rows, 16)
    agent.close()
    copy = Path(tempfile.mkdtemp(prefix="chroma-", dir=tmp)) / "chroma"
    shutil.copytree(index, copy)
    agent = RecAgent.from_config(base_cfg.model_copy(update={"llm_rank": False, "chroma_path": str(copy)}),
                                 progress=False)  # fmt: skip
    again = batch(agent, "retrieval, refit + index copy", rows, 16)
    runs[-1].update(_differing(retr, again) | {"vs": "retrieval, this process"})
    agent.close()

    # the cause settle() removes: a folder with operations in Chroma's log, replayed at every open
    unsettled = _unsettled(index, tmp)
    lists = []
    for n in range(2):
        folder = Path(tempfile.mkdtemp(prefix="chroma-", dir=tmp)) / "chroma"
        shutil.copytree(unsettled, folder)
        agent = RecAgent.from_config(base_cfg.model_copy(update={"llm_rank": False, "chroma_path": str(folder)}),
                                     progress=False)  # fmt: skip
        lists.append(batch(agent, f"retrieval, copy {n + 1} of a folder with {UNSETTLED} operations in its log",
                           rows, 16))  # fmt: skip
        agent.close()
    runs[-1].update(_differing(*lists) | {"vs": runs[-2]["name"]})

    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    for name in args.engines.split(","):
        llm = base_cfg.llm.model_copy(update=ENGINES[name])
        agent = RecAgent.from_config(base_cfg.model_copy(update={"llm": llm}), progress=False)
        first = batch(agent, f"{name}: batches of 16, file order", rows, 16)
        if ref is None:
            ref = first
            runs[-1]["reference"] = True
        else:
            runs[-1].update(_differing(ref, first))
        runs[-1]["engine"] = name
        local = first
        for label, order, size, reset in (("again on the same engine (prefix cache warm where on)", rows, 16, False),
                                          ("batches of 64", rows, 64, True),
                                          ("batches of 16, shuffled order", shuffled, 16, True)):  # fmt: skip
            if reset:
                agent.llm.reset_prefix_cache()
            got = batch(agent, f"{name}: {label}", order, size)
            runs[-1].update(_differing(local, got) | {"engine": name, "vs": f"{name}: batches of 16, file order"})
        agent.close()
        del agent

    load["end"] = os.getloadavg()
    shutil.rmtree(tmp, ignore_errors=True)
    payload = {"rows": len(rows), "cpu": _cpu(), "load_average": load,
               "engines": {k: ENGINES[k] for k in args.engines.split(",")}, "runs": runs,
               "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip
    md = [
        f"# Why Ray's lists differ: one cause at a time ({len(rows)} users, one process)",
        "",
        f"CPU {payload['cpu']}; load average {load['start']} at the start; {payload['when']}. Differing rows: "
        "top-10 id lists not identical to those of the run named in `vs`.",
        "",
        "| run | vs | differing rows | same ids, other order | other top item | seconds |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for x in runs:
        vs = "—" if "differing_rows" not in x else x.get("vs", "reference (default engine, file order)")
        md.append(f"| {x['name']} | {vs} | {x.get('differing_rows', '—')} | {x.get('same_set_other_order', '—')} | "
                  f"{x.get('top_item_differs', '—')} | {x['seconds']} |")  # fmt: skip
    write_results(args.out / "scale_causes", payload, md)


if __name__ == "__main__":
    main()
