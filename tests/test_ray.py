"""Batch jobs on Ray (issues 15, 26): exactly the ranked lists (ids and scores) of the
single-process run on a local Ray with 2 CPUs, a worker killed mid-run and a driver killed mid-run lose and duplicate nothing, and an
unreachable Ray address is one line of error.

Real parts: Ray 2.60 started here (``ray.init(num_cpus=2)``), the 250-movie slice of
ml-latest-small as a data folder the driver loads and fits once (shipped to the actors),
embedded Chroma copied per actor, and the
bundled model on vLLM (one engine per actor) for the equivalence test."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from local_servers import free_port, start_chroma
from waiting import wait_until

from recagent.agent import AgentConfig
from recagent.batch import BatchConfig, read_rows


def _wait_for_rows(out: Path, n: int, proc: subprocess.Popen, died: Callable[[], object]) -> None:
    """Until the running batch ``proc`` has written ``n`` rows to ``out``; ``died()`` says why if it ended first."""

    def written() -> bool:
        assert proc.poll() is None, died()
        return out.exists() and len(_lines(out)) >= n

    wait_until(written, 300, f"{n} rows in the output")


def _cli(*args: str, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recagent.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"}, **kw)  # fmt: skip


def test_unreachable_ray_address_is_one_line_error(tmp_path):
    from cli_forks import run_forked

    rows = tmp_path / "in.jsonl"
    rows.write_text('{"id": "a", "user_id": "1"}\n')
    # the deadline is the behaviour: ray.init alone retries such an address for minutes
    unreachable, no_ray, ev, urls = run_forked([
        (["batch", str(rows), "--ray", "127.0.0.1:9", "--no-llm-rank", "--no-explain"], {}),
        (["batch", str(rows), "--ray-workers", "2"], {}),
        (["eval", "--systems", "popularity", "--ray", "127.0.0.1:9"], {}),
        (["recommend", "--user", "1", "--llm-url", "http://a:1", "--llm-url", "http://b:1"], {}),
    ], tmp_path / "runs", ("vllm",), env={"COLUMNS": "200"}, timeout=240)  # fmt: skip
    assert unreachable.returncode == 2, unreachable.stderr
    lines = [ln for ln in unreachable.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and "cannot reach a Ray cluster at '127.0.0.1:9'" in lines[0], unreachable.stderr
    assert "Traceback" not in unreachable.stderr and "ray start --head" in lines[0]
    assert no_ray.returncode == 2 and "--ray-workers and --ray-cpus need --ray" in no_ray.stderr
    assert ev.returncode == 2 and "cannot reach a Ray cluster" in ev.stderr and "Traceback" not in ev.stderr
    assert urls.returncode == 2 and "only `recagent batch --ray` spreads work" in urls.stderr


@pytest.fixture(scope="module")
def local_ray():
    import ray

    from recagent.distributed import RayConfig, init_ray

    cfg = RayConfig(num_cpus=2, workers=2)
    init_ray(cfg)
    yield cfg
    ray.shutdown()


def _rows(path: Path, split, n: int) -> list:
    rows = [{"id": f"u{u}", "user_id": str(split.user_ids[u]),
             "history": [str(split.item_ids[c]) for c in split.history(u, "test")],
             "expected": [str(split.item_ids[split.target(u, "test")])]} for u in range(n)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return read_rows(path)


def _lines(out: Path) -> list[dict]:
    return [json.loads(ln) for ln in out.read_text().splitlines() if ln.strip()]


@pytest.mark.slow
def test_ray_batch_gives_the_single_process_lists(tmp_path, retr_data_folder, retr_split, local_ray):
    """Exactly: the driver fits once and ships the state, every engine is batch-invariant, so other
    batches (4 rows on Ray, 5 in the single process) and other engines give the same ids and scores."""
    from recagent.distributed import run_batch_ray

    rows = _rows(tmp_path / "in.jsonl", retr_split, 12)
    cfg = AgentConfig(data=str(retr_data_folder), chroma_path=str(tmp_path / "chroma"), k=5, n_candidates=10,
                      explain=False, adapter="none")  # fmt: skip
    # Ray first: its driver builds the index and fits once, then every actor ranks on its own engine
    on_ray = run_batch_ray(
        cfg, rows, BatchConfig(out=tmp_path / "ray.jsonl", batch_size=4, k=5, progress=False), local_ray
    )
    assert on_ray.done_now == 12 and on_ray.failed == 0
    # `recagent batch` in its own process (its own engine: a second in-process engine, once closed,
    # would tear down the vLLM process groups the session's shared engine runs on)
    res = _cli("batch", str(tmp_path / "in.jsonl"), "--out", str(tmp_path / "one.jsonl"), "--data", str(retr_data_folder),
               "--chroma-path", str(tmp_path / "chroma"), "--k", "5", "--candidates", "10", "--no-explain",
               "--adapter", "none", "--batch-size", "5", timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    single = json.loads((tmp_path / "one.jsonl.summary.json").read_text())
    assert single["failed"] == 0
    a = {r["id"]: r for r in _lines(tmp_path / "one.jsonl")}
    b = {r["id"]: r for r in _lines(tmp_path / "ray.jsonl")}
    assert sorted(a) == sorted(b) == sorted(r.id for r in rows)
    for i in a:
        assert "rank" not in a[i]["fallback"] and "rank" not in b[i]["fallback"], (a[i]["fallback"], b[i]["fallback"])
        assert len(a[i]["items"]) == 5
        assert [(x["item_id"], x["score"]) for x in a[i]["items"]] == [
            (x["item_id"], x["score"]) for x in b[i]["items"]
        ]
    assert on_ray.metrics == single["metrics"]


@pytest.mark.slow
def test_ray_eval_gives_the_single_process_lists(retr_data_folder, local_ray):
    """`recagent eval --ray`: each actor builds and fits the system; the harness scores the same lists."""
    import numpy as np

    from recagent.data import load_dataset
    from recagent.eval.harness import evaluate
    from recagent.eval.on_ray import RayEvaluated
    from recagent.eval.splits import llamarec_split
    from recagent.eval.systems import build_systems

    split = llamarec_split(load_dataset(str(retr_data_folder)))
    users = np.arange(split.n_users)
    for name in ("popularity", "ease"):
        single = evaluate(build_systems([name], split=split)[0], split, "test", users)
        ray_sys = RayEvaluated(name, data=str(retr_data_folder), stage="test", users=users, ray_cfg=local_ray)
        on_ray = evaluate(ray_sys, split, "test", users)
        assert (single.topk == on_ray.topk).all() and (single.topk >= 0).any()
        assert single.means == on_ray.means


@pytest.mark.slow
def test_killed_worker_loses_and_duplicates_nothing(tmp_path, retr_data_folder, retr_split, local_ray):
    from recagent.distributed import run_batch_ray

    rows = _rows(tmp_path / "in.jsonl", retr_split, 60)
    cfg = AgentConfig(data=str(retr_data_folder), chroma_path=str(tmp_path / "chroma"), k=5, n_candidates=10,
                      explain=False, llm_rank=False, cf_model="none")  # fmt: skip
    pids = tmp_path / "pids"
    pids.mkdir()
    killed: list[int] = []

    def kill_one(_rec: dict) -> None:  # after the first written batch: one actor dies mid-run
        if not killed:
            pid = int(sorted(pids.glob("*.pid"))[0].stem)
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    out = tmp_path / "out.jsonl"
    s = run_batch_ray(cfg, rows, BatchConfig(out=out, batch_size=3, progress=False), local_ray, on_row=kill_one,
                      pid_dir=str(pids))  # fmt: skip
    assert killed
    ids = [r["id"] for r in _lines(out)]
    assert sorted(ids) == sorted(r.id for r in rows) and len(ids) == len(set(ids))  # all there, once
    assert s.done_now == 60 and s.failed == 0


@pytest.mark.slow
def test_killed_driver_resumes_without_redoing_rows(tmp_path, retr_data_folder, retr_split):
    inp = tmp_path / "in.jsonl"
    rows = _rows(inp, retr_split, 70)  # the split keeps 76 of the 80 users (5-core)
    out = tmp_path / "out.jsonl"
    args = ["batch", str(inp), "--out", str(out), "--data", str(retr_data_folder), "--chroma-path", str(tmp_path / "chroma"),
            "--no-llm-rank", "--no-explain", "--cf-model", "none", "--batch-size", "2", "--k", "5",
            "--ray", "--ray-cpus", "2", "--ray-workers", "2"]  # fmt: skip
    # its own process group, so the Ray it started goes with it
    proc = subprocess.Popen([sys.executable, "-m", "recagent.cli", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    _wait_for_rows(out, 4, proc, lambda: "the run ended before it could be interrupted")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = [r["id"] for r in _lines(out)]
    assert 4 <= len(before) < len(rows)
    res = _cli(*args, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    summary = json.loads((tmp_path / "out.jsonl.summary.json").read_text())
    ids = [r["id"] for r in _lines(out)]
    assert sorted(ids) == sorted(r.id for r in rows) and len(ids) == len(set(ids))
    assert summary["skipped_done_before"] == len(before) and summary["done_now"] == len(rows) - len(before)


@pytest.mark.slow
def test_chroma_server_down_mid_run_stops_cleanly_and_resumes(tmp_path, retr_data_folder, retr_split):
    port = free_port()
    chroma = start_chroma(tmp_path / "chroma-server", port, tmp_path / "chroma.log")
    inp = tmp_path / "in.jsonl"
    rows = _rows(inp, retr_split, 60)
    out = tmp_path / "out.jsonl"
    args = ["batch", str(inp), "--out", str(out), "--data", str(retr_data_folder), "--chroma-host", "127.0.0.1",
            "--chroma-port", str(port), "--no-llm-rank", "--no-explain", "--cf-model", "none", "--batch-size", "2",
            "--k", "5", "--ray", "--ray-cpus", "2"]  # fmt: skip
    try:
        proc = subprocess.Popen([sys.executable, "-m", "recagent.cli", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
        _wait_for_rows(out, 4, proc, proc.communicate)
        chroma.terminate()
        chroma.wait(30)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, err[-3000:]
        lines = [ln for ln in err.splitlines() if ln.startswith("error: ")]
        assert len(lines) == 1 and "the Ray batch stopped after" in lines[0] and "rerun" in lines[0], err[-3000:]
        assert "Traceback" not in err
        before = [r["id"] for r in _lines(out)]
        assert 4 <= len(before) < len(rows)
        chroma = start_chroma(tmp_path / "chroma-server", port, tmp_path / "chroma.log")
        res = _cli(*args, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        ids = [r["id"] for r in _lines(out)]
        assert sorted(ids) == sorted(r.id for r in rows) and len(ids) == len(set(ids))
        assert all(r["ok"] for r in _lines(out))
    finally:
        chroma.terminate()
        chroma.wait(30)
