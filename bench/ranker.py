"""Benchmark: the LLM ranker under the LLMRank and LlamaRec protocols, through `recagent eval`'s path.

    .venv/bin/python bench/ranker.py                                  # ml-latest-small, 60 users, ~10-15 min on 2 cores
    .venv/bin/python bench/ranker.py --data PATH --users 200 --permutations 1,3
    .venv/bin/python bench/ranker.py --adapter none                   # the base model zero-shot (default: the shipped card)
    .venv/bin/python bench/ranker.py --users 20 --bias-users 5 --out /tmp/smoke   # a smoke run

Writes bench/results/ranker_<data>.json and .md:

* LLMRank (stage ``--stage``): the true item + 19 never-interacted items per user, seeded; the
  random order, popularity, EASE and the LLM (K permutations each) rank the same lists — the
  harness's ``candidates=`` path (:func:`recagent.eval.runner.run_eval`).
* LlamaRec: the fused retriever's top 20 → the LLM re-ranks them (``Pipeline(retriever, ranker)``,
  built by :func:`recagent.eval.systems.build_systems`); a user whose true item is not in the 20
  scores 0.
* Position bias: the same lists with the true item moved to fixed positions, through the harness.
* Speed: users/s per system from the harness. Users are a seeded random sample (``--users``) so a
  run fits in minutes on 2 CPU cores: the figures are labelled as samples; ``recagent eval`` runs
  all users.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from common import add_data_args, load_split, out_stem, write_results

SHOWN = ("NDCG@1", "NDCG@5", "NDCG@10", "Recall@5", "Recall@10", "MRR@20")
POSITIONS = (0, 4, 9, 14, 19)
# LlamaRec (Yue et al. 2023), Table 1, ml-latest-small, NDCG@10 / Recall@10 (full ranking, 20 retrieved)
PUBLISHED = {
    "SASRec": {"NDCG@10": 0.0522, "Recall@10": 0.0993},
    "LRURec": {"NDCG@10": 0.0705, "Recall@10": 0.1426},
    "LlamaRec (Llama-2-7B QLoRA)": {"NDCG@10": 0.0759, "Recall@10": 0.1524},
}

log = logging.getLogger("bench.ranker")


def _rows(report, k: int | None = None) -> list[dict]:
    """One row per system; the llm row says its K permutations."""
    return [
        {"system": r.name + (f" K={k}" if k and r.name == "llm" else ""), "users": r.n_users, **{m: round(r.means[m], 4) for m in SHOWN},
         "rank_seconds": round(r.rank_seconds, 1), "users_per_s": round(r.users_per_s, 2), "fallbacks": r.fallbacks,
         "llm_choice": r.config.get("llm_choice")}
        for r in report.results
    ]  # fmt: skip


def _table(rows: list[dict]) -> list[str]:
    cols = ["system", "users", *SHOWN, "users_per_s", "fallbacks"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    return lines + [
        "| " + " | ".join(str(r[c] or "") if c == "fallbacks" else str(r[c]) for c in cols) + " |" for r in rows
    ]


def _at_position(items: np.ndarray, targets: np.ndarray, pos: int) -> np.ndarray:
    """Each row with its target moved to ``pos``, the other candidates in their order."""
    out = np.empty_like(items)
    for j, (row, t) in enumerate(zip(items, targets, strict=True)):
        rest = [c for c in row if c != t]
        out[j] = [*rest[:pos], t, *rest[pos:]]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap)
    ap.add_argument("--users", type=int, default=60, help="seeded user sample for both protocols")
    ap.add_argument("--bias-users", type=int, default=10, help="users for the position-bias probe (0 = skip)")
    ap.add_argument("--permutations", default="1,3", help="K values for the LLM under LLMRank")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stage", default="test", choices=["val", "test"])
    ap.add_argument("--model", default=None, help="local HF model folder; default: bundled SmolLM2-135M-Instruct")
    ap.add_argument(
        "--adapter", default="auto", help="'auto' (the shipped ranker card), 'none', or a card/LoRA/merged folder"
    )
    ap.add_argument(
        "--history-len", type=int, default=None, help="history items in the prompt (default: the card's, else 20)"
    )
    ap.add_argument("--skip-llamarec", action="store_true", help="skip the retriever → ranker protocol")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("vllm", "httpx", "chromadb"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from recagent.eval.candidates import sample_candidates
    from recagent.eval.harness import evaluate
    from recagent.eval.runner import EvalSettings, run_eval, select_users
    from recagent.eval.systems import LLMOptions, adapter_kind, build_systems
    from recagent.llm import LLMConfig, VLLMEngine

    t_start = time.perf_counter()
    split = load_split(args.data)
    lora = args.adapter not in ("auto", "none") and adapter_kind(args.adapter) == "lora"
    t0 = time.perf_counter()
    engine = VLLMEngine(LLMConfig(model=args.model, max_model_len=4096, enable_lora=lora, max_lora_rank=64))
    startup = round(time.perf_counter() - t0, 1)
    llm = LLMOptions(model=args.model, adapter=args.adapter, engine=engine)
    llm_opts = {"llm": {"history_len": args.history_len}} if args.history_len else {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-ranker-"))

    def run(name: str, systems: list[str], protocol: str, **kw):
        opts = {k: v for k, v in llm_opts.items() if k in systems}
        s = EvalSettings(data=args.data, systems=systems, protocol=protocol, stage=args.stage, users=args.users,
                         seed=args.seed, options=opts, llm=llm, out=tmp / name, progress=True, **kw)  # fmt: skip
        return run_eval(s, split=split)[0]

    ks = [int(k) for k in args.permutations.split(",")]
    first = run("llmrank", ["random", "popularity", "ease", "llm"], "llmrank", permutations=ks[0])
    llmrank = _rows(first, ks[0])
    for k in ks[1:]:  # same seed, same users: the same candidate lists
        llmrank += _rows(run(f"llmrank-k{k}", ["llm"], "llmrank", permutations=k), k)
    out: dict = {"stage": args.stage, "dataset": first.split_stats, "users_sampled": len(first.users), "seed": args.seed,
                 "engine_startup_s": startup, "llmrank": {"rows": llmrank, "protocol": first.protocol}}  # fmt: skip

    if not args.skip_llamarec:
        rep = run("llamarec", ["retriever", "llm"], "llamarec")
        out["llamarec"] = {
            "rows": _rows(rep),
            "published": PUBLISHED if split.dataset.name == "ml-latest-small" else {},
        }

    if args.bias_users:
        (system,) = build_systems(["llm"], split=split, seed=args.seed, protocol="llmrank", llm=llm, options=llm_opts,
                                  n_candidates=20)  # fmt: skip
        cands = sample_candidates(split, args.stage, n=20, seed=args.seed)
        cands = cands.subset(select_users(len(cands.users), args.bias_users, args.seed))
        targets = np.array([split.target(int(u), args.stage) for u in cands.users])
        bias = {}
        for pos in POSITIONS:
            res = evaluate(system, split, args.stage, cands.users, candidates=_at_position(cands.items, targets, pos),
                           fit=pos == POSITIONS[0], progress=False)  # fmt: skip
            bias[pos] = {"hit@1": round(res.means["Recall@1"], 3), "NDCG@10": round(res.means["NDCG@10"], 3)}
        out["position_bias"] = {"users": len(cands.users), "by_position": bias}
    engine.close()
    out["total_seconds"] = round(time.perf_counter() - t_start, 1)

    s = out["dataset"]
    choice = next((r["llm_choice"] for r in llmrank if r["llm_choice"]), {})
    md = [
        f"# LLM ranker benchmark on {s['name']}",
        "",
        f"LlamaRec preprocessing (5-core, leave-one-out), stage **{args.stage}**; **{out['users_sampled']} users sampled** "
        f"at random (seed {args.seed}) out of {s['users']}, so the run fits in minutes on 2 CPU cores: a sample, not "
        f"the full figure (`recagent eval` runs every user). Model: `{Path(str(choice.get('model', ''))).name}` "
        f"(vLLM in-process, CPU), adapter `{args.adapter}` → {choice.get('adapter')} {choice.get('variant') or ''}. "
        f"Engine startup {startup} s; total {out['total_seconds']} s.",
        "",
        "## LLMRank protocol (true item + 19 never-interacted items, shuffled; every system the same lists)",
        "",
        *_table(llmrank),
        "",
        f"A random order scores NDCG@10 {first.protocol['random_order']['NDCG@10']:.4f} in expectation.",
    ]
    if "llamarec" in out:
        md += [
            "",
            "## LlamaRec protocol (retriever top 20 → LLM; a miss scores 0)",
            "",
            *_table(out["llamarec"]["rows"]),
        ]
        if out["llamarec"]["published"]:
            md += ["", "Published (LlamaRec Table 1, all 610 users): "
                   + "; ".join(f"{k} {v['NDCG@10']:.4f} / {v['Recall@10']:.4f}" for k, v in PUBLISHED.items())]  # fmt: skip
    if "position_bias" in out:
        pb = out["position_bias"]
        md += ["", f"## Position bias ({pb['users']} users, the true item moved to a fixed position)", "",
               "| position | hit@1 | NDCG@10 |", "|---|---|---|"]  # fmt: skip
        md += [f"| {p + 1} | {v['hit@1']} | {v['NDCG@10']} |" for p, v in pb["by_position"].items()]
    write_results(out_stem(args.out, "ranker", split), out, md)


if __name__ == "__main__":
    main()
