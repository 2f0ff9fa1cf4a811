"""Benchmark: tokens per ranked user against quality and speed, and the server under mixed load.

    flock /tmp/recagent-heavy.lock .venv/bin/python bench/speed.py              # ~35 min on 2 CPU cores
    .venv/bin/python bench/speed.py --skip-sweep --skip-server                  # the rank section only
    .venv/bin/python bench/speed.py --users 60 --skip-server                    # a quick sample (labelled)

Three parts, one JSON (bench/results/speed.json, keys as issue 25 asks) and its .md:

1. ``prompt_sweep`` (validation stage, LlamaRec protocol, all users): for each prompt variant
   ``<template>:h<N>`` (``rank``: the earlier prompt; ``rank_compact``: short titles, ratings as
   "(4)"; ``rank_compact_year``: with candidate years as "'99"; N history items) the zero-shot verbalizer re-ranks the retriever's top 20; NDCG@10 of the label
   log-probability alone, paired t-test against the baseline variant, mean prompt tokens per user.
   Only users whose validation item is among the 20 are sent to the LLM: any order of a list
   without it scores 0, so the NDCG is that of ranking every user.
2. ``rank`` (test stage, all users): the chosen variant (the shipped default prompt,
   ``VerbalizerConfig``) and the baseline (``rank:h20``) each rank every user's top 20, timed
   after a warm-up with an emptied prefix cache; users/s counts the ranking stage alone (the
   retriever's lists are computed first), in batches of ``--batch`` users per engine call.
3. ``server``: our HTTP server on loopback with the default config (the shipped card; chat with
   the rules-first parse): ``/recommend`` p95 alone and under mixed load (streamed chat,
   ``/recommend``, ``/v1/chat/completions``), the first streamed token, the server process's
   peak RSS. It runs in a child process (``--server-only``) so the RSS is the server's alone.
   ``--server-adapter none`` puts the zero-shot LLM ranker on every ``/recommend`` instead.

Also ``engine`` (``--knobs``): users/s of the chosen prompt on a sample of users for engine
settings (dtype, ``max_num_batched_tokens``), each in its own process (one engine per process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import RESULTS, command, fitted_retriever, load_split, machine

BASELINE = "rank:h20"
SWEEP = "rank:h20,rank:h10,rank_compact:h20,rank_compact:h10,rank_compact:h5,rank_compact_year:h10,rank_compact_year:h5"


def cpu_model() -> str:
    """``lscpu``'s model name (the CPU changes between machines: only same-run ratios compare)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    import platform

    return platform.processor() or "unknown"


def variant_templates() -> Path:
    """A template folder holding the bench-only variant ``rank_compact_year`` (the shipped
    compact prompt with candidate years as "'99"); the shipped templates are found behind it."""
    from recagent.prompts.render import PROMPTS_DIR

    d = Path(tempfile.mkdtemp(prefix="recagent-speed-tmpl-"))
    text = (PROMPTS_DIR / "rank_compact.jinja").read_text()
    line = "{{ c.label }}. {{ c.title | short }}"
    if line not in text:
        raise SystemExit("rank_compact.jinja changed: update bench/speed.py's year variant")
    (d / "rank_compact_year.jinja").write_text(
        text.replace(line, line + "{% if c.year %} {{ c.year | yy }}{% endif %}")
    )
    return d


def parse_variant(spec: str) -> dict:
    tmpl, _, h = spec.partition(":h")
    if not tmpl or not h.isdigit():
        raise SystemExit(f"bad variant {spec!r}: use <template>:h<N>, e.g. rank_compact:h10")
    return {"template": tmpl, "history_len": int(h)}


def ndcg_at_10(lists: list[list[str]], targets: list[str]) -> np.ndarray:
    out = np.zeros(len(lists))
    for i, (ids, t) in enumerate(zip(lists, targets, strict=True)):
        if t in ids[:10]:
            out[i] = 1.0 / np.log2(ids.index(t) + 2)
    return out


def rank_all(
    ranker, queries, cands, batch: int, progress: str | None = None
) -> tuple[list[list[str]], float, list[int]]:
    """Every query's candidates ranked, in engine calls of ``batch`` users: (lists, seconds, prompt tokens)."""
    from tqdm import tqdm

    lists, tokens = [], []
    t0 = time.perf_counter()
    for s in tqdm(range(0, len(queries), batch), desc=progress, disable=progress is None, leave=False):
        for res in ranker.batch(queries[s : s + batch], cands[s : s + batch]):
            if "rank" in res.notes:
                raise SystemExit(f"the ranker fell back: {res.notes['rank']}")
            lists.append(list(res.ids))
            tokens.append(int(res.info["prompt_tokens"]))
    return lists, time.perf_counter() - t0, tokens


def stage_lists(split, stage: str, seed: int, users: list[int]):
    """The retriever's top 20 of each user (what the LLM re-ranks) and the targets."""
    retriever = fitted_retriever(split, stage, tempfile.mkdtemp(prefix="recagent-speed-"), seed)
    queries = [split.query(u, stage) for u in users]
    cands = [retriever(q, n=20) for q in queries]
    targets = [str(split.item_ids[split.target(u, stage)]) for u in users]
    return queries, cands, targets


def run_sweep(args, split, engine, tmpl_dir: Path, users: list[int]) -> list[dict]:
    from recagent.eval import metrics as M
    from recagent.ranking import VerbalizerRanker

    queries, cands, targets = stage_lists(split, "val", args.seed, users)
    hits = [i for i, (c, t) in enumerate(zip(cands, targets, strict=True)) if t in c.ids]
    logging.warning("sweep: %d of %d validation users have their item in the top 20", len(hits), len(users))
    rows, per_user = [], {}
    for spec in args.sweep.split(","):
        ranker = VerbalizerRanker(engine, split.catalog("val"), template_dir=str(tmpl_dir), **parse_variant(spec))
        tokens = [len(ranker.prepare(q, c).prompts[0]) for q, c in zip(queries, cands, strict=True)]
        engine.reset_prefix_cache()
        ranked, secs, _ = rank_all(ranker, [queries[i] for i in hits], [cands[i] for i in hits], args.batch, spec)
        lists = [list(c.ids) for c in cands]
        for i, lst in zip(hits, ranked, strict=True):
            lists[i] = lst
        per_user[spec] = ndcg_at_10(lists, targets)
        rows.append({"variant": spec, **parse_variant(spec), "prompt_tokens_per_user": round(float(np.mean(tokens)), 1),
                     "NDCG@10": round(float(per_user[spec].mean()), 4), "ranked_users": len(hits),
                     "users_per_s": round(len(hits) / secs, 2)})  # fmt: skip
        logging.warning("sweep %s: %s", spec, rows[-1])
    base = per_user.get(BASELINE)
    retr = ndcg_at_10([list(c.ids) for c in cands], targets)
    for r in rows:
        if base is not None and r["variant"] != BASELINE:
            t = M.paired_test(per_user[r["variant"]], base)
            r["p_value_vs_baseline"] = round(t["t_p"], 4)
        r["p_value_vs_retriever"] = round(M.paired_test(per_user[r["variant"]], retr)["t_p"], 4)
    rows.append(
        {"variant": "retriever order (no LLM)", "prompt_tokens_per_user": 0, "NDCG@10": round(float(retr.mean()), 4)}
    )
    return rows


def run_rank(args, split, engine, tmpl_dir: Path, users: list[int]) -> dict:
    from recagent.eval import metrics as M
    from recagent.ranking import VerbalizerConfig, VerbalizerRanker

    queries, cands, targets = stage_lists(split, "test", args.seed, users)
    shipped = VerbalizerConfig()
    choice = f"{shipped.template}:h{shipped.history_len}" if args.choice is None else args.choice
    out: dict = {}
    for name, spec in (("choice", choice), ("baseline", BASELINE)):
        ranker = VerbalizerRanker(engine, split.catalog("test"), template_dir=str(tmpl_dir), **parse_variant(spec))
        ranker.batch(queries[: args.batch], cands[: args.batch])  # warm-up (not timed)
        engine.reset_prefix_cache()
        lists, secs, tokens = rank_all(ranker, queries, cands, args.batch, f"rank {name} {spec}")
        out[name] = {"variant": spec, "users_per_s": round(len(users) / secs, 3), "seconds": round(secs, 1),
                     "prompt_tokens_per_user": round(float(np.mean(tokens)), 1), "ndcg": ndcg_at_10(lists, targets)}  # fmt: skip
        logging.warning("rank %s %s: %.2f users/s, %.0f tokens", name, spec, len(users) / secs, np.mean(tokens))
    c, b = out["choice"], out["baseline"]
    return {"users": len(users), "candidates": 20, "users_per_s": c["users_per_s"],
            "prompt_tokens_per_user": c["prompt_tokens_per_user"], "baseline_users_per_s": b["users_per_s"],
            "baseline_prompt_tokens_per_user": b["prompt_tokens_per_user"], "NDCG@10": round(float(c["ndcg"].mean()), 4),
            "baseline_NDCG@10": round(float(b["ndcg"].mean()), 4),
            "p_value_vs_baseline": round(M.paired_test(c["ndcg"], b["ndcg"])["t_p"], 4),
            "variant": c["variant"], "baseline_variant": b["variant"], "batch_users": args.batch,
            "seconds": c["seconds"], "baseline_seconds": b["seconds"],
            "retriever_NDCG@10": round(float(ndcg_at_10([list(x.ids) for x in cands], targets).mean()), 4)}  # fmt: skip


def run_knob(args) -> None:
    """One engine setting (``--knob KEY=VALUE``): users/s of the chosen prompt on ``--users`` test users; prints JSON."""
    from recagent.llm import LLMConfig, VLLMEngine
    from recagent.ranking import VerbalizerRanker

    key, _, value = args.knob.partition("=")
    cfg = {"dtype": value} if key == "dtype" else {key: int(value)} if value else {}
    split = load_split(args.data)
    users = list(range(min(args.users or split.n_users, split.n_users)))
    queries, cands, _ = stage_lists(split, "test", args.seed, users)
    engine = VLLMEngine(LLMConfig(max_model_len=4096, **cfg))
    ranker = VerbalizerRanker(engine, split.catalog("test"), **parse_variant(args.choice or "rank_compact:h10"))
    ranker.batch(queries[: args.batch], cands[: args.batch])
    engine.reset_prefix_cache()
    _, secs, tokens = rank_all(ranker, queries, cands, args.batch)
    print("KNOB " + json.dumps({"knob": args.knob or "default", "users": len(users), "users_per_s": round(len(users) / secs, 3),
                                "prompt_tokens_per_user": round(float(np.mean(tokens)), 1)}), flush=True)  # fmt: skip
    engine.close()


def run_server(args) -> dict:
    """The server part in this process (``--server-only``): the numbers of the JSON's ``server`` key."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import httpx
    from server import CHAT, REC, _clients, _ttft

    from recagent.agent import AgentConfig, RecAgent
    from recagent.server import ServerConfig, ServerThread, create_app

    agent = RecAgent.from_config(AgentConfig(adapter=args.server_adapter))
    rng = np.random.default_rng(args.seed)
    users = [str(u) for u in rng.choice(agent.dataset.interactions.users, size=200, replace=False)]
    messages = ["something like Alien but funnier, from the 90s, no horror", "a feel-good animated movie for the family",
                "I loved The Matrix, more sci-fi please", "a romantic comedy from the 2000s",
                "a tense thriller, nothing older than 1990", "movies like Toy Story", "something heartwarming for tonight"]  # fmt: skip
    bodies = {REC: lambda i: {"user_id": users[i % len(users)]},
              CHAT: lambda i: {"model": "recagent", "messages": [{"role": "user", "content": messages[i % len(messages)]}]}}  # fmt: skip
    scfg = ServerConfig(rate_limit_per_min=0, max_concurrent_per_client=0)  # every client shares one loopback address
    with ServerThread(create_app(agent, config=scfg)) as srv:
        url = srv.base_url
        asyncio.run(_clients(url, [(REC, 1), (CHAT, 1)], bodies, n=3))  # warm-up
        solo = asyncio.run(_clients(url, [(REC, 4)], bodies, n=args.solo_requests))[REC]
        ttft = asyncio.run(_ttft(url, args.stream_requests, bodies[CHAT]))
        mixed, streamed = asyncio.run(_mixed(url, bodies, args))
        health = httpx.get(f"{url}/health").status_code
    rss = _peak_rss_gib()
    agent.close()
    requests = sum(r["ok"] + r["errors"] for r in mixed.values()) + streamed["requests"]
    errors = sum(r["errors"] for r in mixed.values()) + streamed["errors"]
    return {"recommend_p95_solo_ms": solo["p95_ms"], "recommend_p95_mixed_ms": mixed[REC]["p95_ms"],
            "recommend_p95_mixed_over_solo": round(mixed[REC]["p95_ms"] / solo["p95_ms"], 2),
            "stream_first_token_p50_ms": ttft["ttft_p50_ms"], "requests": requests, "errors": errors + solo["errors"] + ttft["errors"],
            "stream_first_token_p95_ms": ttft["ttft_p95_ms"], "stream_requests": ttft["requests"],
            "mixed": {**mixed, "streamed chat": streamed}, "solo_recommend": solo, "peak_rss_gib": rss,
            "adapter": args.server_adapter, "health_after": health}  # fmt: skip


async def _mixed(url: str, bodies: dict, args) -> tuple[dict, dict]:
    """Bounded loopback load for ``--window`` s: 2 /recommend clients, 2 /v1/chat/completions
    clients and 2 streamed chat clients, back to back."""
    import httpx
    from server import CHAT, REC, _clients

    streamed = {"requests": 0, "errors": 0, "first_token_ms": []}
    t_end = time.perf_counter() + args.window

    async def stream_client(k: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=900) as c:
            i = k
            while time.perf_counter() < t_end:
                i += 2
                t = time.perf_counter()
                streamed["requests"] += 1
                first = None
                try:
                    async with c.stream("POST", CHAT, json={**bodies[CHAT](i), "stream": True}) as r:
                        async for line in r.aiter_lines():
                            if not line.startswith("data: {"):
                                continue
                            chunk = json.loads(line[6:])
                            if "error" in chunk:
                                streamed["errors"] += 1
                            elif first is None and any(ch["delta"].get("content") for ch in chunk.get("choices", [])):
                                first = time.perf_counter() - t
                        if r.status_code != 200:
                            streamed["errors"] += 1
                except httpx.HTTPError:
                    streamed["errors"] += 1
                if first is not None:
                    streamed["first_token_ms"].append(first * 1000)

    plain = asyncio.create_task(_clients(url, [(REC, 2), (CHAT, 2)], bodies, window_s=args.window))
    await asyncio.gather(stream_client(0), stream_client(1))
    res = await plain
    ft = streamed.pop("first_token_ms")
    streamed["first_token_p50_ms"] = round(float(np.percentile(ft, 50)), 1) if ft else None
    return res, streamed


def _peak_rss_gib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 2**20, 2)
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="ml-latest-small")
    ap.add_argument("--users", type=int, default=0, help="first N users only (a sample, labelled as such); 0 = all")
    ap.add_argument("--sweep", default=SWEEP, help="prompt variants <template>:h<N>, comma-separated")
    ap.add_argument("--choice", default=None, help="the variant the rank section measures (default: the shipped one)")
    ap.add_argument("--batch", type=int, default=64, help="users per engine call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--skip-rank", action="store_true")
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument(
        "--knobs", default="", help="engine settings to time, e.g. dtype=float32,max_num_batched_tokens=8192"
    )
    ap.add_argument("--knob", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--server-only", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--server-adapter", default="auto,none",
                    help="server runs: 'auto' = the shipped card (the default config, reported as 'server'); "
                    "'none' = zero-shot LLM ranking on every /recommend (reported as 'server_adapter_none')")  # fmt: skip
    ap.add_argument("--window", type=float, default=60.0, help="seconds of mixed server load")
    ap.add_argument("--solo-requests", type=int, default=40)
    ap.add_argument("--stream-requests", type=int, default=20)
    ap.add_argument("--out", type=Path, default=RESULTS / "speed")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    for name in ("vllm", "chromadb", "httpx", "recagent"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if args.knob is not None:
        return run_knob(args)
    if args.server_only:
        print("SERVER " + json.dumps(run_server(args)), flush=True)
        return None

    from threadpoolctl import threadpool_limits

    threadpool_limits(1, "blas")
    load_start = [round(x, 2) for x in os.getloadavg()]
    old = json.loads(args.out.with_suffix(".json").read_text()) if args.out.with_suffix(".json").exists() else {}
    report = {"cpu": cpu_model(), "load_average": load_start}
    split = load_split(args.data)
    users = list(range(min(args.users or split.n_users, split.n_users)))
    sample = f"the first {len(users)} of {split.n_users} users: a sample" if len(users) < split.n_users else None
    if not (args.skip_sweep and args.skip_rank):
        from recagent.llm import LLMConfig, VLLMEngine

        tmpl_dir = variant_templates()
        engine = VLLMEngine(LLMConfig(max_model_len=4096))
        if not args.skip_sweep:
            report["prompt_sweep"] = {
                "stage": "val",
                "users": len(users),
                "sample": sample,
                "rows": run_sweep(args, split, engine, tmpl_dir, users),
            }
        if not args.skip_rank:
            rank = run_rank(args, split, engine, tmpl_dir, users)
            report["rank"] = {**rank, "sample": sample}
        engine.close()
    if args.knobs:
        rows = []
        for knob in ["", *args.knobs.split(",")]:
            cmd = [
                sys.executable,
                __file__,
                "--knob",
                knob,
                "--users",
                str(args.users or 120),
                "--batch",
                str(args.batch),
            ]
            res = subprocess.run(cmd, capture_output=True, text=True)
            line = [ln for ln in res.stdout.splitlines() if ln.startswith("KNOB ")]
            rows.append(json.loads(line[0][5:]) if line else {"knob": knob or "default", "error": res.stderr[-500:]})
            logging.warning("knob %s", rows[-1])
        report["engine"] = {"stage": "test", "note": "a sample of users; each setting in its own process", "rows": rows}
    for n, adapter in enumerate([] if args.skip_server else args.server_adapter.split(",")):
        cmd = [sys.executable, __file__, "--server-only", "--server-adapter", adapter, "--window", str(args.window),
               "--solo-requests", str(args.solo_requests), "--stream-requests", str(args.stream_requests)]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True)
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("SERVER ")]
        if not line:
            raise SystemExit(f"the server part failed:\n{res.stderr[-3000:]}")
        report["server" if n == 0 else f"server_adapter_{adapter}"] = json.loads(line[0][7:])
    for key in (
        "prompt_sweep",
        "rank",
        "engine",
        "server",
        "server_adapter_none",
    ):  # a part skipped keeps its last numbers
        if key not in report and key in old:
            report[key] = old[key]
    report["load_average"] = load_start
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["command"] = command()
    report["machine"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    args.out.with_suffix(".md").write_text(md)
    print(md)
    return None


def markdown(r: dict) -> str:
    lines = [f"`{r['command']}`", "", "# Serving speed", "",
             f"CPU: {r['cpu']}; load average at start {r['load_average']}, at end {r.get('load_average_at_end')}. "
             "Only ratios measured in the same run compare (the CPU model changes between machines).", ""]  # fmt: skip
    if "rank" in r:
        k = r["rank"]
        lines += ["## Ranking (test stage, LlamaRec protocol: retriever top 20 re-ranked by the zero-shot 135M verbalizer)", "",
                  f"{k['users']} users{' (' + k['sample'] + ')' if k.get('sample') else ''}, {k['batch_users']} users per engine call; "
                  "users/s counts the ranking stage (prompt rendering + engine), timed from an emptied prefix cache.", "",
                  "| prompt | tokens/user | users/s | seconds | NDCG@10 |", "|---|---:|---:|---:|---:|",
                  f"| {k['baseline_variant']} (baseline, today's format) | {k['baseline_prompt_tokens_per_user']} | {k['baseline_users_per_s']} | {k['baseline_seconds']} | {k['baseline_NDCG@10']} |",
                  f"| {k['variant']} (shipped) | {k['prompt_tokens_per_user']} | {k['users_per_s']} | {k['seconds']} | {k['NDCG@10']} |",
                  "", f"Speed-up {k['users_per_s'] / k['baseline_users_per_s']:.2f}×; paired t-test p = {k['p_value_vs_baseline']} "
                  f"(NDCG@10 per user, shipped vs baseline). Retriever order alone: {k['retriever_NDCG@10']}.", ""]  # fmt: skip
    if "prompt_sweep" in r:
        s = r["prompt_sweep"]
        lines += [f"## Prompt variants (validation stage, {s['users']} users{', ' + s['sample'] if s.get('sample') else ''})", "",
                  "| variant | tokens/user | NDCG@10 | p vs rank:h20 | p vs retriever | ranked users/s |", "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        for row in s["rows"]:
            lines.append(f"| {row['variant']} | {row['prompt_tokens_per_user']} | {row['NDCG@10']} | {row.get('p_value_vs_baseline', '')} | "
                         f"{row.get('p_value_vs_retriever', '')} | {row.get('users_per_s', '')} |")  # fmt: skip
        lines += ["", "Only the users whose validation item is in the top 20 are ranked (the others score 0 in any order); "
                  "`ranked users/s` is their ranking speed.", ""]  # fmt: skip
    if "engine" in r:
        lines += [
            "## Engine settings (a sample; each in its own process)",
            "",
            "| setting | users | users/s | tokens/user |",
            "|---|---:|---:|---:|",
        ]
        for row in r["engine"]["rows"]:
            lines.append(
                f"| {row['knob']} | {row.get('users', '')} | {row.get('users_per_s', row.get('error', ''))} | {row.get('prompt_tokens_per_user', '')} |"
            )
        lines.append("")
    for key in ("server", "server_adapter_none"):
        if key not in r:
            continue
        v = r[key]
        lines += [f"## Server (loopback; adapter {v['adapter']!r}: {'the shipped card, the default config' if v['adapter'] == 'auto' else 'zero-shot LLM ranking on every /recommend'})", "",
                  f"/recommend p95 alone {v['recommend_p95_solo_ms']} ms, under mixed load {v['recommend_p95_mixed_ms']} ms: "
                  f"**{v['recommend_p95_mixed_over_solo']}×**. First streamed token p50 **{v['stream_first_token_p50_ms']} ms** "
                  f"(p95 {v['stream_first_token_p95_ms']} ms, {v['stream_requests']} sequential streams, nothing else running). "
                  f"Mixed load: {v['requests']} requests, {v['errors']} errors; peak RSS of the server process {v['peak_rss_gib']} GiB.", "",
                  "| mixed load | ok | errors | p50 ms | p95 ms |", "|---|---:|---:|---:|---:|"]  # fmt: skip
        for name, m in v["mixed"].items():
            if "ok" in m:
                lines.append(f"| `{name}` | {m['ok']} | {m['errors']} | {m['p50_ms']} | {m['p95_ms']} |")
            else:
                lines.append(
                    f"| {name} | {m['requests'] - m['errors']} | {m['errors']} | first token {m['first_token_p50_ms']} |  |"
                )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
