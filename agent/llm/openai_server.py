"""A running OpenAI-compatible vLLM server as a backend, used through ``/v1/completions``."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from ..errors import ConfigError
from ..models import resolve_llm_path
from .base import LLMBackend, LLMBackendError, LLMConfig

__all__ = ["OpenAIServerBackend"]

log = logging.getLogger(__name__)


class OpenAIServerBackend(LLMBackend):
    """A running ``vllm serve`` (OpenAI-compatible) server, used through ``/v1/completions``.

    Prompts are sent as token ids so that both backends see identical inputs. Start the
    server with ``--logprobs-mode processed_logprobs --max-logprobs 64`` (what
    :class:`VLLMServer` does); logprobs are renormalised over the labels either way.
    """

    transient_failures = True

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

    def _generate(self, ids, max_tokens, temperature, schemas, adapter, stop, seed, compact):
        body: dict[str, Any] = dict(
            max_tokens=max_tokens, temperature=temperature, seed=self.config.seed if seed is None else seed
        )
        if stop:
            body["stop"] = list(stop)
        # one request per distinct schema (the completions API takes one per request)
        groups: dict[str, list[int]] = {}
        for i, schema in enumerate(schemas):
            groups.setdefault(json.dumps(schema, sort_keys=True), []).append(i)
        out: list[str] = [""] * len(ids)
        for key, members in groups.items():
            schema = json.loads(key)
            so = {"json": schema, "disable_any_whitespace": True} if compact else {"json": schema}
            b = {**body, "structured_outputs": so} if schema else body
            for i, c in zip(members, self._completions([ids[i] for i in members], b, adapter), strict=True):
                out[i] = c["text"]
        return out

    def check_label_logprobs(self) -> None:
        """Fail with a clear error unless the server returns log-probabilities of exactly the allowed
        tokens, normalised over them (``--logprobs-mode processed_logprobs``): otherwise every
        verbalizer score would be wrong or missing, silently."""
        prompt = self.encode(self.chat_prompt([{"role": "user", "content": "Answer with one letter: A or B?"}]))
        allowed = [self.single_token_id("A"), self.single_token_id("B")]
        raw = self._score([prompt], [allowed], None)[0]
        vals = [raw.get(t) for t in allowed]
        total = sum(math.exp(v) for v in vals if v is not None and math.isfinite(v))
        if any(v is None or not math.isfinite(v) for v in vals) or abs(total - 1.0) > 0.02:
            raise ConfigError(
                f"the server at {self.base_url} does not return log-probabilities of the allowed tokens only "
                f"(got {raw}); the verbalizer ranker cannot score with it",
                hint="start vLLM with --logprobs-mode processed_logprobs --max-logprobs 64 "
                "(python -m vllm.entrypoints.openai.api_server ... on the CPU build)",
                param="llm_url",
            )

    def health(self) -> bool:
        try:
            return self._client.get("/health").status_code == 200
        except Exception:
            return False

    def close(self) -> None:
        self._client.close()
