"""Benchmark: the recagent HTTP server under a bounded local load (loopback only).

    .venv/bin/python bench/server.py                                   # ~5-10 min on 2 CPU cores
    .venv/bin/python bench/server.py --requests 24 --concurrency 4 --duration 300

Builds the agent on the embedded defaults (shipped ml-latest-small, bundled MiniLM and
SmolLM2, Chroma and vLLM in-process; the index is reused from the cache dir), serves it on
127.0.0.1 in this process, and for each endpoint sends a fixed number of requests with a fixed
concurrency, stopping early at the duration cap. Two warm-up requests per endpoint are not
counted. Writes bench/results/server.json and bench/results/server.md: p50/p95 latency,
requests per second, error count, and the mean engine batch size the micro-batcher formed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
CHAT_MESSAGES = [
    "something like Alien but funnier, from the 90s, no horror",
    "a feel-good animated movie for the family",
    "I loved The Matrix, more sci-fi please",
    "a romantic comedy from the 2000s",
    "a tense thriller, nothing older than 1990",
    "movies like Toy Story",
]


async def _load(base_url: str, make_body, path: str, n: int, concurrency: int, duration_s: float) -> dict:
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    sent = 0
    t0 = time.perf_counter()
    lock = asyncio.Lock()

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal sent
        while True:
            async with lock:
                if sent >= n or time.perf_counter() - t0 > duration_s:
                    return
                i = sent
                sent += 1
            t = time.perf_counter()
            try:
                r = await client.post(path, json=make_body(i))
                if r.status_code != 200:
                    errors.append(f"{r.status_code}: {r.text[:120]}")
                else:
                    latencies.append(time.perf_counter() - t)
            except Exception as e:  # a failed request is counted, the load goes on
                errors.append(f"{type(e).__name__}: {e}")

    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {
        "requests": sent,
        "ok": len(latencies),
        "errors": len(errors),
        "error_samples": errors[:3],
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 3) if wall > 0 else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
        "mean_ms": round(float(lat.mean()), 1) if len(lat) else None,
    }


def _batch_means(metrics_text: str) -> dict[str, float]:
    out = {}
    for kind in ("recommend", "openai"):
        s = re.search(rf'recagent_batch_size_sum{{kind="{kind}"}} ([0-9.e+]+)', metrics_text)
        c = re.search(rf'recagent_batch_size_count{{kind="{kind}"}} ([0-9.e+]+)', metrics_text)
        if s and c and float(c.group(1)) > 0:
            out[kind] = round(float(s.group(1)) / float(c.group(1)), 2)
    return out


def main() -> None:
    # before torch loads OpenMP: spinning threads collapse decode speed when the CPU is shared
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    ap = argparse.ArgumentParser(description="recagent HTTP server benchmark (loopback)")
    ap.add_argument("--requests", type=int, default=24, help="counted requests per endpoint")
    ap.add_argument("--concurrency", type=int, default=4, help="clients sending at once")
    ap.add_argument("--duration", type=float, default=300.0, help="cap in seconds per endpoint")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--explain", choices=["on", "off", "both"], default="both",
                    help="LLM-written reasons: they dominate latency on CPU, so both settings are measured")  # fmt: skip
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import httpx

    from recagent.agent import AgentConfig, RecAgent
    from recagent.server import ServerConfig, ServerThread, create_app

    t0 = time.perf_counter()
    pipe = RecAgent.from_config(AgentConfig(k=args.k))
    startup_s = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    users = [str(u) for u in rng.choice(pipe.dataset.interactions.users, size=args.requests + 2, replace=False)]
    rec_body = lambda i: {"user_id": users[i % len(users)], "k": args.k}  # noqa: E731
    chat_body = lambda i: {"model": "recagent", "messages": [{"role": "user", "content": CHAT_MESSAGES[i % len(CHAT_MESSAGES)]}]}  # noqa: E731
    load_avg_start = os.getloadavg()
    results: dict[str, dict] = {}
    batch: dict[str, dict[str, float]] = {}
    settings = {"on": [True], "off": [False], "both": [True, False]}[args.explain]
    for explain in settings:
        pipe.config = pipe.config.model_copy(update={"explain": explain})  # read per request
        tag = "explain on" if explain else "explain off"
        # a fresh app per setting: its own metrics and conversations
        with ServerThread(create_app(pipe, config=ServerConfig(max_batch=8, max_wait_ms=10))) as srv:
            for name, path, body in (("/recommend", "/recommend", rec_body), ("/v1/chat/completions", "/v1/chat/completions", chat_body)):
                asyncio.run(_load(srv.base_url, lambda i, b=body: b(args.requests + i), path, 2, 1, args.duration))  # warm-up
                results[f"{name} ({tag})"] = r = asyncio.run(_load(srv.base_url, body, path, args.requests, args.concurrency, args.duration))
                print(name, tag, r, flush=True)
            batch[tag] = _batch_means(httpx.get(f"{srv.base_url}/metrics").text)
    pipe.close()
    command = "python bench/server.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = {
        "command": command.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_at_start": [round(x, 2) for x in load_avg_start]},
        "setup": {"data": "ml-latest-small", "llm": "SmolLM2-135M-Instruct (vLLM in-process, CPU, eager)", "k": args.k,
                  "n_candidates": pipe.config.n_candidates, "explain": args.explain, "concurrency": args.concurrency,
                  "requests_per_endpoint": args.requests, "duration_cap_s": args.duration, "agent_startup_s": round(startup_s, 1)},  # fmt: skip
        "endpoints": results,
        "mean_engine_batch": batch,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "server.json").write_text(json.dumps(report, indent=2))
    rows = [
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}; {report['machine']['cpus']} CPUs; load average at start {report['machine']['load_avg_at_start']} "
        "(other jobs shared the machine: treat numbers as lower bounds).  ",
        f"Setup: ml-latest-small, SmolLM2-135M-Instruct on vLLM CPU in-process, k={args.k}, "
        f"{pipe.config.n_candidates} candidates, LLM explanations {args.explain}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}, "
        f"{args.concurrency} concurrent clients, {args.requests} counted requests per endpoint (cap {args.duration:g} s), loopback only.",
        "",
        "| endpoint | requests | errors | p50 ms | p95 ms | req/s | mean engine batch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    kinds = {"/recommend": "recommend", "/v1/chat/completions": "openai"}
    for name, r in results.items():
        path, tag = name.split(" (")
        tag = tag.rstrip(")")
        rows.append(f"| `{path}` ({tag}) | {r['requests']} | {r['errors']} | {r['p50_ms']} | {r['p95_ms']} | {r['requests_per_s']} | {batch[tag].get(kinds[path], '')} |")
    (RESULTS / "server.md").write_text("# recagent server benchmark\n\n" + "\n".join(rows) + "\n")
    print((RESULTS / "server.md").read_text())


if __name__ == "__main__":
    main()
