"""vLLM's offline engine inside this process (the default backend)."""

from __future__ import annotations

import logging
import os
import time
import uuid
from typing import Any

from ..errors import ConfigError, RecAgentError
from ..models import resolve_adapter_path, resolve_llm_path
from .base import MAX_LOGPROBS, LLMBackend, LLMBackendError, LLMConfig, _on_cuda, cpu_env_defaults

__all__ = ["VLLMEngine"]

log = logging.getLogger(__name__)


def _context_window(model_path: Any) -> int:
    """The model's own context window, from its config.json (vLLM's default max_model_len)."""
    import json
    from pathlib import Path

    cfg = json.loads((Path(model_path) / "config.json").read_text())
    return int(cfg.get("max_position_embeddings") or cfg.get("n_positions") or 2048)


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
        if cfg.max_num_batched_tokens is not None:
            kwargs["max_num_batched_tokens"] = cfg.max_num_batched_tokens
        if cfg.max_num_seqs is not None:
            kwargs["max_num_seqs"] = cfg.max_num_seqs
        if not cfg.enable_chunked_prefill:
            # vLLM refuses a step smaller than the context window without chunking
            window = cfg.max_model_len or _context_window(self.model_path)
            kwargs.update(enable_chunked_prefill=False,
                          max_num_batched_tokens=max(window, cfg.max_num_batched_tokens or 0))  # fmt: skip
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

    def _run(self, ids: list[list[int]], params: Any, adapter: str | None, *, salt: str | None = None) -> list[Any]:
        if self._closed:
            raise LLMBackendError("the vLLM engine was closed", hint="create a new backend with make_backend(config)")
        prompts: list[Any] = [{"prompt_token_ids": p} for p in ids]
        if salt is not None:  # a prefix cached under this salt is reused by no other request
            for p in prompts:
                p["cache_salt"] = salt
        try:
            return self._llm.generate(prompts, params, use_tqdm=False, lora_request=self._lora(adapter))
        except Exception as e:
            raise self._failure(e) from e

    def _failure(self, e: Exception) -> RecAgentError:
        """Our error for what vLLM raised: its request validation, or a failed / dead engine."""
        if isinstance(e, (ValueError, TypeError)):
            return ConfigError(f"vLLM rejected the request: {e}")
        self._closed = type(e).__name__ == "EngineDeadError"
        return LLMBackendError(
            f"the vLLM engine failed: {type(e).__name__}: {e}",
            hint="restart the engine; see the log above for the cause",
        )

    def _score(self, ids, allowed, adapter):
        from vllm import SamplingParams

        params = [
            SamplingParams(max_tokens=1, temperature=0.0, allowed_token_ids=a, logprobs=len(a), seed=self.config.seed)
            for a in allowed
        ]
        if self.config.batch_invariant:
            # Alone in the engine step (nothing shares its batch) and from no cached prefix: the
            # logprobs are then the same bits whatever came before or beside it. Costs little on
            # CPU, where prefill is compute-bound and batching prompts gains almost nothing.
            outs = [self._run([i], [p], adapter, salt=uuid.uuid4().hex)[0] for i, p in zip(ids, params, strict=True)]
        else:
            outs = self._run(ids, params, adapter)
        result = []
        for out in outs:
            lps = out.outputs[0].logprobs
            first = lps[0] if lps else {}
            result.append({int(t): float(lp.logprob) for t, lp in first.items()})
        return result

    def _params(self, max_tokens, temperature, schemas, stop, seed, compact=False, **extra: Any) -> list[Any]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        return [
            SamplingParams(
                max_tokens=max_tokens,
                temperature=temperature,
                stop=list(stop) if stop else None,
                seed=self.config.seed if seed is None else seed,
                structured_outputs=StructuredOutputsParams(json=schema, disable_any_whitespace=compact)
                if schema
                else None,
                **extra,
            )
            for schema in schemas
        ]

    def _generate(self, ids, max_tokens, temperature, schemas, adapter, stop, seed, compact):
        params = self._params(max_tokens, temperature, schemas, stop, seed, compact)
        return [o.outputs[0].text for o in self._run(ids, params, adapter)]

    def _generate_stream(self, ids, max_tokens, temperature, schemas, adapter, stop, seed, compact):
        """Text as it is decoded, by stepping the engine ourselves.

        ``LLM.generate`` returns only finished outputs (it forces ``FINAL_ONLY``), and vLLM's
        streaming engine, ``AsyncLLM``, would be a second engine (a second copy of the model and
        KV cache) beside this one. So the requests go to the same ``LLMEngine`` with
        ``output_kind=DELTA`` and we call ``step()`` until they finish: each step is one decoding
        step of the whole batch, and each output carries the new text of one request. The
        caller holds the engine lock for the whole stream (other calls would step our requests).
        """
        from vllm.sampling_params import RequestOutputKind

        if self._closed:
            raise LLMBackendError("the vLLM engine was closed", hint="create a new backend with make_backend(config)")
        engine = self._llm.llm_engine
        params = self._params(
            max_tokens, temperature, schemas, stop, seed, compact, output_kind=RequestOutputKind.DELTA
        )
        lora = self._lora(adapter)
        tag = uuid.uuid4().hex[:12]
        index: dict[str, int] = {}
        try:
            for i, (p, sp) in enumerate(zip(ids, params, strict=True)):
                # outputs carry this id (the engine's internal one gets a random suffix)
                index[f"stream-{tag}-{i}"] = i
                engine.add_request(f"stream-{tag}-{i}", {"prompt_token_ids": p}, sp, lora_request=lora)
            left = set(index)
            while left and engine.has_unfinished_requests():
                for out in engine.step():
                    i = index.get(out.request_id)
                    if i is None:
                        continue
                    if out.outputs and out.outputs[0].text:
                        yield i, out.outputs[0].text
                    if out.finished:
                        left.discard(out.request_id)
        except GeneratorExit:  # the consumer stopped listening: free the engine for others
            self._abort(list(index))
            raise
        except Exception as e:
            self._abort(list(index))
            raise self._failure(e) from e

    def _abort(self, request_ids: list[str]) -> None:
        try:
            self._llm.llm_engine.abort_request(request_ids)
        except Exception as e:  # best effort: finished requests are gone already
            log.debug("abort: %s", e)

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
