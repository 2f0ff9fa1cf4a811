"""Benchmark: which ranker levers help, on the validation stage (LlamaRec protocol, all users).

    .venv/bin/python bench/ranker_ablation.py                                  # zero-shot, the bundled model
    .venv/bin/python bench/ranker_ablation.py --model runs/ft-ev/merged --label finetuned --variants h10+ev

For every prompt variant (``h<N>``: the last N history items; ``+ev``: each candidate line carries
the retriever's evidence, :func:`recagent.ranking.prompt.evidence_text`; ``+compact``: the
compact prompt, ``rank_compact.jinja``, instead of ``rank.jinja``) the retriever → ranker
pipeline scores every validation user's top 20 once; then, offline on those scores:

* ``llm``: the label log-probability alone;
* ``fused``: ``ln p − w·ln(rank)`` with the grid weight of best validation NDCG@10 (in-sample, as
  the shipped card was fitted);
* ``combiner``: the learned combiner (LLM log-probability + retriever rank + per-source evidence,
  :mod:`recagent.ranking.combine`), each user scored by weights fitted on the other 4 folds;
* ``features only`` (once): the same combiner without the LLM — what the retriever's own evidence
  buys, so an LLM gain is measured against it.

Every row has a paired t-test against the retriever order on the same users. Rows accumulate in
bench/results/ranker_ablation_<data>.json (a variant re-run replaces its row).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time

import numpy as np
from common import RESULTS, add_data_args, command, fitted_retriever, load_split, prompt_tokens, write_results


def _variant(spec: str) -> dict:
    head, *flags = spec.split("+")
    if not head.startswith("h") or not head[1:].isdigit() or set(flags) - {"ev", "compact"}:
        raise SystemExit(f"bad variant {spec!r}: use h<N>[+ev][+compact], e.g. h10+ev")
    # the results on file were measured on rank.jinja; +compact: prompts/rank_compact.jinja
    return {
        "history_len": int(head[1:]),
        "evidence": "ev" in flags,
        "template": "rank_compact" if "compact" in flags else "rank",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap)
    ap.add_argument("--model", default=None, help="HF model folder (default: the bundled SmolLM2-135M-Instruct)")
    ap.add_argument("--label", default="zero_shot", help="model label in the table")
    ap.add_argument("--variants", default="h10,h10+ev,h5+ev,h0+ev")
    ap.add_argument("--l2", type=float, default=0.1, help="combiner L2 penalty")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from threadpoolctl import threadpool_limits

    threadpool_limits(1, "blas")
    from recagent.eval import metrics as M
    from recagent.finetune.fusion import collect_scores, cross_fit_combiner, fit_retrieval_weight, ndcg_for_weight
    from recagent.llm import LLMConfig, VLLMEngine
    from recagent.pipeline import Pipeline
    from recagent.ranking import VerbalizerRanker
    from recagent.ranking.combine import DEFAULT_FEATURES as FEATURES_LLM

    split = load_split(args.data)
    stage = "val"
    retriever = fitted_retriever(split, stage, tempfile.mkdtemp(prefix="recagent-abl-"), args.seed)
    engine = VLLMEngine(LLMConfig(model=args.model, max_model_len=4096))
    out_json = (RESULTS if args.out is None else args.out) / f"ranker_ablation_{split.dataset.name}.json"
    old = json.loads(out_json.read_text()) if out_json.exists() else {}
    rows = {r["name"]: r for r in old.get("rows", [])}

    def row(name: str, vals: np.ndarray, base: np.ndarray, **extra) -> dict:
        t = M.paired_test(vals, base)
        return {"name": name, "NDCG@10": round(float(vals.mean()), 4), "p_vs_retriever": round(t["t_p"], 4),
                "diff_ci95": [round(t["ci_low"], 4), round(t["ci_high"], 4)], "command": command(), **extra}  # fmt: skip

    base = None
    for spec in args.variants.split(","):
        v = _variant(spec)
        ranker = VerbalizerRanker(engine, split.catalog(stage), **v)
        t0 = time.perf_counter()
        records = collect_scores(Pipeline(retriever, ranker, name=spec), split, stage, progress=True)
        seconds = time.perf_counter() - t0
        tokens = prompt_tokens(ranker, retriever, split, stage)
        base = ndcg_for_weight(records, 1e6)
        common = {"model": args.label, "prompt": spec, "prompt_tokens_per_user": tokens,
                  "users_per_s": round(split.n_users / seconds, 2)}  # fmt: skip
        fused = fit_retrieval_weight(records)
        w = fused["retrieval_weight"]
        rows[f"{args.label} {spec} llm"] = row(
            f"{args.label} {spec} llm", ndcg_for_weight(records, 0.0), base, **common
        )
        rows[f"{args.label} {spec} fused"] = row(f"{args.label} {spec} fused", ndcg_for_weight(records, w), base,
                                                 retrieval_weight=w, **common)  # fmt: skip
        comb = cross_fit_combiner(records, FEATURES_LLM, l2=args.l2, seed=args.seed)
        rows[f"{args.label} {spec} combiner"] = row(f"{args.label} {spec} combiner", comb, base, **common)
        logging.warning(
            "%s: %s", spec, {k: rows[f"{args.label} {spec} {k}"]["NDCG@10"] for k in ("llm", "fused", "combiner")}
        )
    feats = [f for f in FEATURES_LLM if f != "llm"]
    only = cross_fit_combiner(records, feats, l2=args.l2, seed=args.seed)
    rows["features only combiner"] = row("features only combiner", only, base, model="none", prompt_tokens_per_user=0)
    rows["retriever"] = {"name": "retriever", "NDCG@10": round(float(base.mean()), 4), "model": "none",
                         "prompt_tokens_per_user": 0}  # fmt: skip
    engine.close()
    payload = {"stage": stage, "users": int(split.n_users), "data": split.dataset.name,
               "protocol": "LlamaRec: retriever top 20 re-ranked; a retriever miss scores 0",
               "combiner": {"features": list(FEATURES_LLM), "l2": args.l2, "folds": 5},
               "rows": sorted(rows.values(), key=lambda r: r["name"])}  # fmt: skip
    md = [f"# Ranker levers on {split.dataset.name}, validation stage, all {split.n_users} users", "",
          "| row | model | prompt tokens/user | NDCG@10 | paired t p vs retriever | diff 95% CI |",
          "|---|---|---|---|---|---|"]  # fmt: skip
    for r in payload["rows"]:
        md.append(f"| {r['name']} | {r.get('model', '')} | {r.get('prompt_tokens_per_user', '')} | {r['NDCG@10']:.4f} | "
                  f"{r.get('p_vs_retriever', '')} | {r.get('diff_ci95', '')} |")  # fmt: skip
    md += ["", "`llm`: label log-probability alone; `fused`: ln p − w·ln(rank), w on validation (in-sample); "
           "`combiner`: learned over LLM + rank + per-source evidence, 5-fold cross-fitted on validation; "
           "`features only`: the combiner without the LLM."]  # fmt: skip
    write_results(out_json.with_suffix(""), payload, md)


if __name__ == "__main__":
    main()
