"""Benchmark: the recagent HTTP server alone and under a mixed load (loopback only).

    flock /tmp/recagent-heavy.lock .venv/bin/python bench/server.py          # ~6 min on 2 CPU cores
    .venv/bin/python bench/server.py --window 90 --explain on

Builds the agent on the embedded defaults (shipped ml-latest-small, bundled MiniLM and
SmolLM2, Chroma and vLLM in-process; the index is reused from the cache dir) and serves it on
127.0.0.1 in this process. Phases, each with two uncounted warm-up requests per endpoint:

1. solo: ``/recommend`` alone, then ``/v1/chat/completions`` alone (``--concurrency`` clients);
2. mixed: ``--clients`` clients at once for ``--window`` seconds, half on ``/recommend`` and half
   on ``/v1/chat/completions`` (the chat clients start first; requests started in the window count);
3. the same mixed load with every route in one batcher lane (the old single-queue server).

Writes bench/results/server.json and .md: p50/p95 per endpoint and phase, the /recommend p95
under mixed load over its solo p95 (target: at most 3), engine batch sizes, the load average.
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
REC, CHAT = "/recommend", "/v1/chat/completions"
KINDS = {REC: "recommend", CHAT: "openai"}  # batcher job kinds


def _stats(lat_s: list[float], errors: list[str], wall: float) -> dict:
    lat = np.array(lat_s) * 1000
    pct = lambda p: round(float(np.percentile(lat, p)), 1) if len(lat) else None  # noqa: E731
    return {"ok": len(lat), "errors": len(errors), "error_samples": errors[:3], "wall_s": round(wall, 2),
            "requests_per_s": round(len(lat) / wall, 3) if wall > 0 else 0.0,
            "p50_ms": pct(50), "p95_ms": pct(95), "mean_ms": round(float(lat.mean()), 1) if len(lat) else None}  # fmt: skip


async def _clients(base_url: str, plan: list[tuple[str, int]], bodies: dict, *, n: int | None = None,
                   window_s: float | None = None, stagger_s: float = 0.0) -> dict[str, dict]:  # fmt: skip
    """Run ``plan`` = [(path, clients)]: each client sends requests back to back, until ``n``
    requests per path were sent or the ``window_s`` (from the first client's start) is over."""
    import httpx

    lat: dict[str, list[float]] = {p: [] for p, _ in plan}
    err: dict[str, list[str]] = {p: [] for p, _ in plan}
    sent = dict.fromkeys(lat, 0)
    t0 = time.perf_counter()

    async def client(c: httpx.AsyncClient, path: str, delay: float) -> None:
        await asyncio.sleep(delay)
        while True:
            if (n is not None and sent[path] >= n) or (window_s is not None and time.perf_counter() - t0 > window_s):
                return
            i = sent[path]
            sent[path] += 1
            t = time.perf_counter()
            try:
                r = await c.post(path, json=bodies[path](i))
                if r.status_code == 200:
                    lat[path].append(time.perf_counter() - t)
                else:
                    err[path].append(f"{r.status_code}: {r.text[:120]}")
            except Exception as e:  # a failed request is counted, the load goes on
                err[path].append(f"{type(e).__name__}: {e}")

    async with httpx.AsyncClient(base_url=base_url, timeout=900) as c:
        tasks = [client(c, path, k * stagger_s) for k, (path, m) in enumerate(plan) for _ in range(m)]
        await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    return {p: {"sent": sent[p], **_stats(lat[p], err[p], wall)} for p in lat}


async def _ttft(base_url: str, n: int, body) -> dict:
    """``n`` streamed chat completions, one at a time: seconds to the first text chunk (ttft) and
    to the last one, p50/p95."""
    import httpx

    first, last, errors = [], [], []
    async with httpx.AsyncClient(base_url=base_url, timeout=900) as c:
        for i in range(n):
            t, t_first, t_last = time.perf_counter(), None, None
            async with c.stream("POST", CHAT, json={**body(i), "stream": True}) as r:
                async for line in r.aiter_lines():
                    if not line.startswith("data: {"):
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        errors.append(str(chunk["error"])[:120])
                    elif any(ch["delta"].get("content") for ch in chunk.get("choices", [])):
                        t_last = time.perf_counter() - t
                        t_first = t_first if t_first is not None else t_last
            if t_first is not None:
                first.append(t_first)
                last.append(t_last)
    pct = lambda v, p: round(float(np.percentile(np.array(v) * 1000, p)), 1) if v else None  # noqa: E731
    return {"requests": n, "errors": len(errors), "error_samples": errors[:3],
            "ttft_p50_ms": pct(first, 50), "ttft_p95_ms": pct(first, 95),
            "last_text_p50_ms": pct(last, 50), "last_text_p95_ms": pct(last, 95)}  # fmt: skip


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
    ap.add_argument("--requests", type=int, default=24, help="counted requests per endpoint in the solo phase")
    ap.add_argument("--concurrency", type=int, default=4, help="clients in the solo phase")
    ap.add_argument("--clients", type=int, default=8, help="clients in the mixed phase (half per endpoint)")
    ap.add_argument("--window", type=float, default=60.0, help="seconds of mixed load")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--explain", choices=["on", "off"], default="off",
                    help="LLM-written reasons on /recommend and chat (on CPU they dominate latency)")  # fmt: skip
    ap.add_argument("--adapter", default="none",
                    help="ranker: 'none' = the zero-shot LLM ranks every /recommend (the load that matters for "
                    "fairness); 'auto' = the shipped card (retriever order on ml-latest-small, no LLM call)")  # fmt: skip
    ap.add_argument("--no-single-lane", action="store_true", help="skip phase 3 (the old single-queue server)")
    ap.add_argument("--stream-requests", type=int, default=12, help="streamed chat completions for the ttft figures")
    ap.add_argument("--ttft-only", action="store_true",
                    help="measure only streaming ttft (one client) and add it to the existing server.json/.md")  # fmt: skip
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import httpx

    import recagent.server.app as server_app
    from recagent.agent import AgentConfig, RecAgent
    from recagent.server import ServerConfig, ServerThread, create_app

    load_start = [round(x, 2) for x in os.getloadavg()]
    t0 = time.perf_counter()
    pipe = RecAgent.from_config(AgentConfig(k=args.k, explain=args.explain == "on", adapter=args.adapter))
    startup_s = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    users = [str(u) for u in rng.choice(pipe.dataset.interactions.users, size=200, replace=False)]
    bodies = {
        REC: lambda i: {"user_id": users[i % len(users)], "k": args.k},
        CHAT: lambda i: {"model": "recagent", "messages": [{"role": "user", "content": CHAT_MESSAGES[i % len(CHAT_MESSAGES)]}]},
    }  # fmt: skip
    # no rate limit or concurrency cap: every client shares the loopback address
    scfg = ServerConfig(max_batch=8, max_wait_ms=10, rate_limit_per_min=0, max_concurrent_per_client=0)
    half = max(1, args.clients // 2)
    phases: dict[str, dict[str, dict]] = {}
    batches: dict[str, dict[str, float]] = {}

    def run_phase(tag: str, plan: list[tuple[str, int]], **load) -> None:
        """A fresh server (its own metrics), two warm-up requests per endpoint, then the load."""
        with ServerThread(create_app(pipe, config=scfg)) as srv:
            for path in (REC, CHAT):  # warm-up, not counted
                asyncio.run(_clients(srv.base_url, [(path, 1)], {path: lambda i, p=path: bodies[p](1000 + i)}, n=2))
            r = asyncio.run(_clients(srv.base_url, plan, bodies, **load))
            phases.setdefault(tag, {}).update(r)
            kinds = {KINDS[path] for path, _ in plan}  # the warm-up batches of other routes do not count
            means = _batch_means(httpx.get(f"{srv.base_url}/metrics").text)
            batches.setdefault(tag, {}).update({k: v for k, v in means.items() if k in kinds})
            print(tag, r, flush=True)

    def run_mixed(tag: str) -> None:
        # chat clients first, then the recommend clients: every counted /recommend meets chat load
        run_phase(tag, [(CHAT, half), (REC, args.clients - half)], window_s=args.window, stagger_s=2.0)

    def run_ttft() -> dict:
        with ServerThread(create_app(pipe, config=scfg)) as srv:
            asyncio.run(_ttft(srv.base_url, 2, lambda i: bodies[CHAT](1000 + i)))  # warm-up
            r = asyncio.run(_ttft(srv.base_url, args.stream_requests, bodies[CHAT]))
        r.update(explain=args.explain, load_avg=[round(x, 2) for x in os.getloadavg()],
                 command="flock /tmp/recagent-heavy.lock .venv/bin/python bench/server.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]))  # fmt: skip
        print("ttft", r, flush=True)
        return r

    if args.ttft_only:
        ttft = run_ttft()
        pipe.close()
        report = json.loads((RESULTS / "server.json").read_text())
        report.setdefault("streaming_ttft", {})[f"explain {args.explain}"] = {**ttft, "load_avg_at_start": load_start}
        (RESULTS / "server.json").write_text(json.dumps(report, indent=2))
        _append_ttft_md(report["streaming_ttft"])
        return
    for path in (REC, CHAT):
        run_phase("solo", [(path, args.concurrency)], n=args.requests)
    ttft = run_ttft()
    run_mixed("mixed")
    if not args.no_single_lane:
        lanes = server_app.LANES
        server_app.LANES = dict.fromkeys(lanes, "engine")  # the old server: one queue for every route
        try:
            run_mixed("mixed, one lane (old server)")
        finally:
            server_app.LANES = lanes
    pipe.close()
    load_end = [round(x, 2) for x in os.getloadavg()]
    solo_p95, mixed_p95 = phases["solo"][REC]["p95_ms"], phases["mixed"][REC]["p95_ms"]
    ratio = round(mixed_p95 / solo_p95, 2) if solo_p95 and mixed_p95 else None
    command = "python bench/server.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = {
        "command": command.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_avg_at_start": load_start,
            "load_avg_at_end": load_end,
        },  # fmt: skip
        "setup": {
            "data": "ml-latest-small",
            "llm": "SmolLM2-135M-Instruct (vLLM in-process, CPU, eager)",
            "k": args.k,
            "n_candidates": pipe.config.n_candidates,
            "explain": args.explain,
            "solo_concurrency": args.concurrency,
            "solo_requests_per_endpoint": args.requests,
            "mixed_clients": args.clients,
            "mixed_window_s": args.window,
            "agent_startup_s": round(startup_s, 1),
        },  # fmt: skip
        "phases": phases,
        "recommend_p95_mixed_over_solo": ratio,
        "target_ratio": 3.0,
        "mean_engine_batch": batches,
        "streaming_ttft": {f"explain {args.explain}": ttft},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "server.json").write_text(json.dumps(report, indent=2))
    rows = [
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}; {report['machine']['cpus']} CPUs; load average at start {load_start}, at end {load_end} "
        "(nothing else of ours ran; the load is this benchmark's own).  ",
        f"Setup: ml-latest-small, SmolLM2-135M-Instruct on vLLM CPU in-process, k={args.k}, "
        f"{pipe.config.n_candidates} candidates, LLM explanations {args.explain}, ranker adapter {args.adapter!r}, OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}. "
        f"Solo: {args.concurrency} clients, {args.requests} requests per endpoint. Mixed: {args.clients} clients "
        f"({half} chat, {args.clients - half} recommend) for {args.window:g} s. Loopback only.",
        "",
        f"**/recommend p95 under mixed load / alone: {ratio}** (target ≤ 3).",
        "",
        "| phase | endpoint | ok | errors | p50 ms | p95 ms | req/s | mean engine batch |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for phase, res in phases.items():
        for path, r in res.items():
            b = batches.get(phase, {}).get(KINDS[path], "")
            rows.append(
                f"| {phase} | `{path}` | {r['ok']} | {r['errors']} | {r['p50_ms']} | {r['p95_ms']} | {r['requests_per_s']} | {b} |"
            )
    (RESULTS / "server.md").write_text("# recagent server benchmark\n\n" + "\n".join(rows) + "\n")
    _append_ttft_md(report["streaming_ttft"])
    print((RESULTS / "server.md").read_text())


def _append_ttft_md(ttft: dict) -> None:
    """The streaming section of server.md (replaced on each run)."""
    md = (RESULTS / "server.md").read_text().split("\n## Streaming")[0].rstrip("\n")
    rows = ["", "", "## Streaming: time to first text token",
            "", "`/v1/chat/completions` with stream=true, one client, sequential requests. "
            "ttft = first chunk with text; last = the last text chunk.", "",
            "| setting | requests | errors | ttft p50 ms | ttft p95 ms | last text p50 ms | last text p95 ms | load avg | command |",
            "|---|---:|---:|---:|---:|---:|---:|---|---|"]  # fmt: skip
    for name, r in ttft.items():
        rows.append(f"| {name} | {r['requests']} | {r['errors']} | {r['ttft_p50_ms']} | {r['ttft_p95_ms']} | "
                    f"{r['last_text_p50_ms']} | {r['last_text_p95_ms']} | {r.get('load_avg', '')} | `{r.get('command', '')}` |")  # fmt: skip
    (RESULTS / "server.md").write_text(md + "\n".join(rows) + "\n")


if __name__ == "__main__":
    main()
