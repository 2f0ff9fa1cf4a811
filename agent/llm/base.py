"""The backend interface, its config and errors; shared helpers of the backends.

On CPU the in-process engine uses the settings measured in FACTS.md: single process
(``VLLM_ENABLE_V1_MULTIPROCESSING=0``), eager mode, a 1 GiB KV cache and OpenMP threads bound
to every allowed core. Environment variables already set by the user are left alone.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, EmptyInputError, RecAgentError
from ..models import cache_dir

__all__ = ["LLMConfig", "LLMBackend", "LLMBackendError", "PromptTooLongError", "cpu_env_defaults", "MAX_LOGPROBS"]

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
    enable_chunked_prefill: bool = True
    """Split long prefills across engine steps (vLLM's default). Off: every prompt is prefilled whole
    in one step (``max_num_batched_tokens`` is then raised to the context window)."""
    max_num_batched_tokens: int | None = Field(None, ge=1)
    """Tokens per engine step; ``None`` = vLLM's default (4096 on CPU)."""
    max_num_seqs: int | None = Field(None, ge=1)
    """Sequences per engine step; ``None`` = vLLM's default (256)."""
    batch_invariant: bool = False
    """Label scores (LLM ranking) are computed one prompt at a time, each from no cached prefix:
    a prompt's scores are then the same bits whichever prompts share its call or came before it,
    which batch jobs need to give one process's answers on Ray (bench/results/scale_causes.md:
    with vLLM's batching 1 in 9 rankings change with the batch). Generated text (reasons, chat
    parsing) stays batched: serial decoding would be many times slower, so its wording may
    differ between batch shapes. In-process engine only; batch jobs turn it on."""
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
    transient_failures: bool = False
    """True where an :class:`LLMBackendError` may pass (a server's timeout or 5xx), so a caller may
    try again; an in-process engine that fails is dead."""

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
        json_schema: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None,
        adapter: str | None = None,
        stop: Sequence[str] | None = None,
        seed: int | None = None,
        compact: bool = False,
    ) -> list[str]:
        """Generate text for each prompt (one batch). ``json_schema`` constrains the output to it:
        one schema for all prompts, or a list with one per prompt (None = unconstrained);
        ``compact`` forbids whitespace between JSON tokens (a small model may otherwise spend
        its token budget on newlines)."""
        ids, rest = self._gen_inputs(prompts, max_tokens, temperature, json_schema, adapter, stop, seed, compact)
        return self._generate(ids, *rest) if ids else []

    def generate_stream(self, prompts: Sequence[Prompt], **options: Any) -> Iterator[tuple[int, str]]:
        """Like :meth:`generate` (same keywords), but yields ``(prompt index, new text)`` as the
        engine produces it; the pieces of a prompt joined equal its :meth:`generate` text.
        Backends that cannot stream yield each prompt's whole text once it is done."""
        ids, rest = self._gen_inputs(prompts, **options)
        if ids:
            yield from self._generate_stream(ids, *rest)

    def _gen_inputs(self, prompts, max_tokens=256, temperature=0.0, json_schema=None, adapter=None, stop=None, seed=None, compact=False):  # fmt: skip
        """Checked token ids, and the rest of the arguments of ``_generate`` (one schema per prompt)."""
        if max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}", param="max_tokens")
        ids = self._prepare(prompts, reserve=max_tokens)
        self._check_adapter(adapter)
        if json_schema is None or isinstance(json_schema, Mapping):
            schemas = [dict(json_schema) if json_schema else None] * len(ids)
        else:
            schemas = [dict(s) if s else None for s in json_schema]
            if len(schemas) != len(ids):
                raise ConfigError(
                    f"{len(schemas)} JSON schemas for {len(ids)} prompts", hint="pass one, or one per prompt"
                )
        return ids, (max_tokens, temperature, schemas, adapter, stop, seed, compact)

    def _generate_stream(self, ids, *rest) -> Iterator[tuple[int, str]]:
        yield from enumerate(self._generate(ids, *rest))

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
        schemas: list[dict[str, Any] | None],
        adapter: str | None,
        stop: Sequence[str] | None,
        seed: int | None,
        compact: bool = False,
    ) -> list[str]: ...
