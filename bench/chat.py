"""Benchmark: how well chat requests are parsed — rules alone, the LLM alone, and merged.

    .venv/bin/python bench/chat.py                     # ~1-2 min on 2 CPU cores (bundled 135M model)
    .venv/bin/python bench/chat.py --record tests/data/chat_llm_outputs.jsonl   # also keep the raw model answers
    .venv/bin/python bench/chat.py --replay tests/data/chat_llm_outputs.jsonl   # score recorded answers, no engine

Reads the labelled requests in tests/data/chat_fixtures.jsonl (English, French, German, Spanish;
the expected parse on the shipped ml-latest-small catalog) and writes bench/results/chat.json and
bench/results/chat.md: field-level accuracy (liked, disliked, include, exclude, year_min,
year_max; right or wrong as a whole) for

* ``rules`` — the rule parser alone;
* ``llm`` — the LLM's JSON (vLLM structured outputs) after grounding, without the rules;
* ``merged`` — what the chat agent uses (rules first, grounded LLM fields added),

plus what the LLM adds that the rules missed, and "inversions": a refused value ("no horror")
parsed as wanted — which must be zero on every path.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
FIXTURES = ROOT / "tests" / "data" / "chat_fixtures.jsonl"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fixtures", type=Path, default=FIXTURES)
    ap.add_argument("--record", type=Path, help="write the model's raw JSON answers here (JSONL: id, raw)")
    ap.add_argument("--replay", type=Path, help="score these recorded answers instead of running the model")
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--out", type=Path, default=RESULTS / "chat")
    args = ap.parse_args(argv)

    from recagent.chat import ChatQuery
    from recagent.chat.llm_parse import LLMParser
    from recagent.chat.parse_eval import FIELDS, accuracy, field_errors, inversions, load_fixtures, run_parsers
    from recagent.chat.rules import RuleParser
    from recagent.chat.titles import TitleResolver
    from recagent.chat.vocab import CatalogVocab
    from recagent.data import load_dataset

    load_start = os.getloadavg()
    fixtures = load_fixtures(args.fixtures)
    ds = load_dataset("ml-latest-small")
    pop = ds.interactions.df["item_id"].value_counts().to_dict()
    rules = RuleParser(TitleResolver(catalog=ds.catalog, popularity=pop), CatalogVocab.from_catalog(ds.catalog))
    parser = LLMParser(rules, item_noun="movie")
    messages = [f["message"] for f in fixtures]

    t0 = time.perf_counter()
    if args.replay:
        recorded = {r["id"]: r["raw"] for r in map(json.loads, args.replay.read_text(encoding="utf-8").splitlines())}
        run = run_parsers(parser, messages, raw=[recorded.get(f["id"]) for f in fixtures])
        model, engine_s = f"replayed from {args.replay}", 0.0
    else:
        from recagent.llm import LLMConfig, VLLMEngine
        from recagent.prompts.render import PromptRenderer

        engine = VLLMEngine(LLMConfig())
        engine_s = time.perf_counter() - t0
        model = str(getattr(engine, "model_path", "bundled SmolLM2-135M-Instruct"))
        t0 = time.perf_counter()
        run = run_parsers(
            parser, messages, llm=engine, renderer=PromptRenderer(engine.tokenizer), max_tokens=args.max_tokens
        )
        engine.close()
    parse_s = time.perf_counter() - t0

    if args.record:
        with args.record.open("w", encoding="utf-8") as fh:
            for f, raw in zip(fixtures, run.raw, strict=True):
                fh.write(json.dumps({"id": f["id"], "message": f["message"], "raw": raw}, ensure_ascii=False) + "\n")

    paths = {"rules": run.rules, "llm": run.llm, "merged": run.merged}
    per_field = {
        name: {
            f: round(1 - sum(f in field_errors(q, fx) for q, fx in zip(qs, fixtures, strict=True)) / len(fixtures), 4)
            for f in FIELDS
        }
        for name, qs in paths.items()
    }
    added = [
        {
            "id": fx["id"],
            "fields": sorted(set(m.contributions.get("llm", [])) - set(m.contributions.get("rules", [])) - {"mood"}),
        }
        for fx, m in zip(fixtures, run.merged, strict=True)
    ]
    added = [a for a in added if a["fields"]]
    fixed = [
        fx["id"]
        for fx, r, m in zip(fixtures, run.rules, run.merged, strict=True)
        if len(field_errors(m, fx)) < len(field_errors(r, fx))
    ]
    broke = [
        fx["id"]
        for fx, r, m in zip(fixtures, run.rules, run.merged, strict=True)
        if len(field_errors(m, fx)) > len(field_errors(r, fx))
    ]
    negated = [fx for fx in fixtures if fx.get("exclude")]
    report = {
        "fixtures": len(fixtures),
        "accuracy": {name: round(accuracy(qs, fixtures), 4) for name, qs in paths.items()},
        # what a parse that finds nothing scores: most requests leave most fields empty
        "empty_parse_accuracy": round(accuracy([ChatQuery() for _ in fixtures], fixtures), 4),
        "per_field": per_field,
        "languages": {lang: sum(f["lang"] == lang for f in fixtures) for lang in sorted({f["lang"] for f in fixtures})},
        "negated_fixtures": len(negated),
        "inversions": {name: inversions(qs, fixtures) for name, qs in paths.items()},
        "llm_asked": sum(r is not None for r in run.raw),
        "llm_valid_json": sum(r is not None and "LLM JSON invalid" not in " ".join(m.notes) for r, m in zip(run.raw, run.merged, strict=True)),
        "llm_grounded_any": sum(bool(m.contributions.get("llm")) for m in run.merged),
        "llm_added_beyond_rules": added,
        "merged_better_than_rules": fixed,
        "merged_worse_than_rules": broke,
        "rules_misses": {fx["id"]: {k: list(v) for k, v in field_errors(r, fx).items()} for fx, r in zip(fixtures, run.rules, strict=True) if field_errors(r, fx)},
        "merged_misses": {fx["id"]: {k: list(v) for k, v in field_errors(m, fx).items()} for fx, m in zip(fixtures, run.merged, strict=True) if field_errors(m, fx)},
        "model": model,
        "seconds": {"engine_start": round(engine_s, 1), "parse_all": round(parse_s, 1)},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_at_start": [round(x, 2) for x in load_start],
                    "load_avg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(
        _markdown(report, " ".join([".venv/bin/python bench/chat.py", *(argv if argv is not None else sys.argv[1:])])),
        encoding="utf-8",
    )
    print(json.dumps({k: report[k] for k in ("fixtures", "accuracy", "inversions", "llm_grounded_any")}, indent=1))
    return 0


def _markdown(r: dict, command: str) -> str:
    acc, pf = r["accuracy"], r["per_field"]
    lines = [
        command,
        "",
        f"# Chat parsing: {r['fixtures']} labelled requests ({', '.join(f'{k} {v}' for k, v in r['languages'].items())})",
        "",
        f"Date: {r['date']}; {r['machine']['cpus']} CPUs; load average at start {r['machine']['load_avg_at_start']}, at end {r['machine']['load_avg_at_end']}; model: {r['model']}.",
        "",
        "| path | accuracy | " + " | ".join(pf["rules"]) + " | inversions |",
        "|---|---|" + "---|" * len(pf["rules"]) + "---|",
    ]
    for name in ("rules", "llm", "merged"):
        lines.append(
            f"| {name} | {acc[name]:.3f} | "
            + " | ".join(f"{v:.2f}" for v in pf[name].values())
            + f" | {len(r['inversions'][name])} |"
        )
    lines += [
        "",
        f"Field-level accuracy: six fields per request, each right or wrong as a whole. \"llm\" is the model's JSON after grounding alone; "
        f"\"merged\" is what the agent uses; a parse that finds nothing scores {r['empty_parse_accuracy']:.3f}. Inversions: a refused value (\"no horror\") parsed as wanted, over {r['negated_fixtures']} requests with a refusal.",
        "",
        f"The model was asked on {r['llm_asked']} requests; {r['llm_valid_json']} answers were valid JSON, {r['llm_grounded_any']} carried at least one grounded field; "
        f"it added fields the rules missed on {len(r['llm_added_beyond_rules'])} ({', '.join(a['id'] for a in r['llm_added_beyond_rules']) or 'none'}). "
        f"Merged better than rules on {len(r['merged_better_than_rules'])}, worse on {len(r['merged_worse_than_rules'])}.",
        "",
        f"Rules misses: {', '.join(r['rules_misses']) or 'none'}. Merged misses: {', '.join(r['merged_misses']) or 'none'}.",
        f"Time: engine start {r['seconds']['engine_start']} s, parsing all {r['fixtures']} requests {r['seconds']['parse_all']} s.",
        "",
    ]  # fmt: skip
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
