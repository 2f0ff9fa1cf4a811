"""Benchmark: one ranker variant fitted on validation, reported on test (LlamaRec protocol, all users).

    .venv/bin/python bench/ranker_test.py --variant h10                      # zero-shot bundled model
    .venv/bin/python bench/ranker_test.py --variant h10 --fit-cuts 2 --card finetune/adapters/ml-latest-small

The retriever → ranker pipeline scores every user's top 20 once per stage (validation and test,
each stage's retriever fitted on what that stage may see). Fitted on the validation scores (or,
with ``--fit-cuts N``, on the last N training items of every user, the retriever fitted on the
history before them, so that validation measures the fit out of sample): the
grid fusion weight of ``ln p − w·ln(rank)`` and the learned combiner (LLM log-probability +
retriever rank + per-source evidence, :mod:`recagent.ranking.combine`), and the same combiner
without the LLM (``features_only``: what the retriever's own evidence buys). On test, every row
gets a paired t-test against the retriever order, and the combiner one against ``features_only``
(does the LLM add anything over the features it is fused with?).

``--card DIR`` adds the variant to that ranker card as ``<label>_combiner`` and makes it the
card's default when its validation NDCG@10 beats the retriever order's with paired p < 0.05 (the
card's rule for every variant) and the features-only combiner's (the LLM must add something);
else the card's default stays as it was.

Writes bench/results/ranker_test_<data><suffix>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
from common import add_data_args, fitted_retriever, load_split, out_stem, prompt_tokens, write_results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(ap)
    ap.add_argument("--model", default=None, help="HF model folder (default: the bundled SmolLM2-135M-Instruct)")
    ap.add_argument("--label", default="zero_shot")
    ap.add_argument("--variant", default="h5+ev",
                    help="h<N>[+ev][+compact]: history items, evidence on candidate lines, the compact prompt")  # fmt: skip
    ap.add_argument("--suffix", default="", help="results file suffix, e.g. _compact (keeps other variants' files)")
    ap.add_argument("--l2", type=float, default=0.1, help="combiner L2 penalty")
    ap.add_argument("--fit-cuts", type=int, default=0,
                    help="fit the fusion on the last N training items of every user (retriever fitted before them) "
                         "instead of on validation; validation then measures it out of sample")  # fmt: skip
    ap.add_argument("--card", type=Path, default=None, help="ranker card folder to add the variant to")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from threadpoolctl import threadpool_limits

    threadpool_limits(1, "blas")
    from ranker_ablation import _variant

    from recagent.eval import metrics as M
    from recagent.eval.systems import make_retriever
    from recagent.finetune.examples import cut_data, training_cuts
    from recagent.finetune.fusion import (
        collect_cut_scores,
        collect_scores,
        cross_fit_combiner,
        fit_combiner,
        fit_retrieval_weight,
        ndcg_for_scores,
        ndcg_for_weight,
    )
    from recagent.llm import LLMConfig, VLLMEngine
    from recagent.pipeline import Pipeline
    from recagent.ranking import VerbalizerRanker
    from recagent.ranking.combine import DEFAULT_FEATURES

    split = load_split(args.data)
    v = _variant(args.variant)
    tmp = tempfile.mkdtemp(prefix="recagent-rtest-")
    engine = VLLMEngine(LLMConfig(model=args.model, max_model_len=4096))
    records, speed = {}, {}
    if args.fit_cuts:
        data = cut_data(split, np.arange(split.n_users), args.fit_cuts)
        retriever = make_retriever(split, {"index_path": tmp}, seed=args.seed).fit(data)
        cuts = [(u, t) for u in range(split.n_users) for t in training_cuts(split, u, args.fit_cuts)]
        t0 = time.perf_counter()
        ranker = VerbalizerRanker(engine, data.catalog, **v)
        records["cuts"] = collect_cut_scores(Pipeline(retriever, ranker), split, cuts, progress=True)
        speed["cuts"] = len(cuts)
        speed["cuts_users_per_s"] = round(len(cuts) / (time.perf_counter() - t0), 2)
    for stage in ("val", "test"):
        # one index for both stages, used one after the other: the test fit re-embeds only items whose
        # text changed (tags dated before each stage's cut) and replaces the CF vectors
        retriever = fitted_retriever(split, stage, tmp, args.seed)
        ranker = VerbalizerRanker(engine, split.catalog(stage), **v)
        t0 = time.perf_counter()
        records[stage] = collect_scores(Pipeline(retriever, ranker), split, stage, progress=True)
        speed[f"{stage}_users_per_s"] = round(split.n_users / (time.perf_counter() - t0), 2)
        if stage == "test":
            speed["prompt_tokens_per_user"] = prompt_tokens(ranker, retriever, split, stage)
    engine.close()

    val, test = records["val"], records["test"]
    fit_on = records.get("cuts", val)
    feats_only = [f for f in DEFAULT_FEATURES if f != "llm"]
    w = fit_retrieval_weight(fit_on)["retrieval_weight"]
    comb = fit_combiner(fit_on, DEFAULT_FEATURES, l2=args.l2)
    only = fit_combiner(fit_on, feats_only, l2=args.l2)
    if "cuts" in records:  # fitted on training cuts: validation is out of sample as it is
        val_comb, val_only = ndcg_for_scores(val, comb.scores), ndcg_for_scores(val, only.scores)
    else:  # fitted on validation: each validation user scored by weights from the other folds
        val_comb = cross_fit_combiner(val, DEFAULT_FEATURES, l2=args.l2, seed=args.seed)
        val_only = cross_fit_combiner(val, feats_only, l2=args.l2, seed=args.seed)
    val_users = {
        "retriever": ndcg_for_weight(val, 1e6),
        "llm": ndcg_for_weight(val, 0.0),
        "fused": ndcg_for_weight(val, w),
        "combiner": val_comb,
        "features_only": val_only,
    }
    test_users = {
        "retriever": ndcg_for_weight(test, 1e6),
        "llm": ndcg_for_weight(test, 0.0),
        "fused": ndcg_for_weight(test, w),
        "combiner": ndcg_for_scores(test, comb.scores),
        "features_only": ndcg_for_scores(test, only.scores),
    }

    def table(per_user: dict[str, np.ndarray]) -> dict[str, dict]:
        out = {}
        for k, vals in per_user.items():
            out[k] = {"NDCG@10": round(float(vals.mean()), 4)}
            if k != "retriever":
                t = M.paired_test(vals, per_user["retriever"])
                out[k] |= {
                    "p_vs_retriever": round(t["t_p"], 4),
                    "diff_ci95": [round(t["ci_low"], 4), round(t["ci_high"], 4)],
                }
        t = M.paired_test(per_user["combiner"], per_user["features_only"])
        out["combiner"]["p_vs_features_only"] = round(t["t_p"], 4)
        return out

    payload = {
        "users": int(split.n_users), "data": split.dataset.name, "model": args.label, "variant": args.variant,
        "prompt": v, "protocol": "LlamaRec: retriever top 20 re-ranked; a retriever miss scores 0",
        "fitted_on": f"the last {args.fit_cuts} training items of every user" if args.fit_cuts else "validation",
        "fitted": {"retrieval_weight": w, "combiner": comb.describe(), "features_only": only.describe(), "l2": args.l2},
        "validation": table(val_users), "test": table(test_users), "speed": speed,
    }  # fmt: skip
    name = f"{args.label}_combiner"
    if args.card is not None:
        payload["card"] = _update_card(args.card, name, payload, comb, v)
    md = [f"# {args.label} {args.variant} on {split.dataset.name}: fitted on {payload['fitted_on']}, reported on validation "
          f"and test (LlamaRec protocol, all {split.n_users} users)",
          "", f"Prompt tokens per user {speed['prompt_tokens_per_user']}; {speed['test_users_per_s']} users/s on the test stage.",
          "", "| row | val NDCG@10 | val p vs retriever | test NDCG@10 | test p vs retriever | test diff 95% CI |",
          "|---|---|---|---|---|---|"]  # fmt: skip
    for k in test_users:
        a, b = payload["validation"][k], payload["test"][k]
        md.append(f"| {k} | {a['NDCG@10']:.4f} | {a.get('p_vs_retriever', '')} | {b['NDCG@10']:.4f} | "
                  f"{b.get('p_vs_retriever', '')} | {b.get('diff_ci95', '')} |")  # fmt: skip
    md += ["", f"Combiner vs features only (does the LLM add anything?): test p = {payload['test']['combiner']['p_vs_features_only']}, "
           f"validation p = {payload['validation']['combiner']['p_vs_features_only']}.",
           "", (f"Fitted on {payload['fitted_on']} ({speed.get('cuts')} cuts): every validation and test figure is out of "
                f"sample. `fused`: w = {w} (grid)." if args.fit_cuts else
                f"`fused`: w = {w} (grid, in-sample on validation); `combiner` / `features_only`: validation column "
                "5-fold cross-fitted, test column fitted on every validation user."),
           "", f"Combiner weights: {json.dumps(comb.describe())}"]  # fmt: skip
    if "card" in payload:
        md += ["", f"Card {args.card}: default **{payload['card']['default']}** ({payload['card']['why']})."]
    write_results(out_stem(args.out, "ranker_test", split, args.suffix), payload, md)


def _update_card(folder: Path, name: str, payload: dict, comb, prompt: dict) -> dict:
    """Add the variant to card.json; it becomes the default when it beats the retriever order on validation."""
    path = folder / "card.json"
    card = json.loads(path.read_text())
    val = payload["validation"]["combiner"]
    card["variants"][name] = {"model": "base" if payload["model"] == "zero_shot" else "finetuned", "retrieval_weight": 0.0,
                              "combiner": comb.model_dump(), **prompt}  # fmt: skip
    card.setdefault("validation_ndcg@10", {})[name] = val["NDCG@10"]
    card.setdefault("validation_p_vs_retriever", {})[name] = val["p_vs_retriever"]
    card.setdefault("test", {})[name] = {"NDCG@10": payload["test"]["combiner"]["NDCG@10"]}
    card.setdefault("p_value_vs_retriever", {})[name] = payload["test"]["combiner"]["p_vs_retriever"]
    retr = payload["validation"]["retriever"]["NDCG@10"]
    # the LLM must earn it: beat the retriever order (p < 0.05) and the same combiner without the LLM
    only = payload["validation"]["features_only"]["NDCG@10"]
    wins = val["NDCG@10"] > retr and val["p_vs_retriever"] < 0.05 and val["NDCG@10"] > only
    if wins:
        card["default"] = card["best_llm"] = name
    best = max((k for k in card["variants"]), key=lambda k: card["validation_ndcg@10"].get(k, -1))
    card["best_llm"] = best
    why = (f"validation NDCG@10 {val['NDCG@10']} vs retriever {retr}, paired p {val['p_vs_retriever']}"
           + f", features only {only}" + ("" if wins else ": the default stays"))  # fmt: skip
    path.write_text(json.dumps(card, indent=2) + "\n")
    return {"default": card["default"], "best_llm": card["best_llm"], "why": why}


if __name__ == "__main__":
    main()
