"""A deterministic stand-in for the LLM engine: the same interface, no model weights, no vLLM.

It has the real tokenizer (so prompts, labels and context limits are checked exactly as with the
engine), scores each allowed token by a hash of the prompt's tail and the token, and answers a
JSON-schema request with the schema's smallest valid instance (the first enum value, the
required keys only). Tests of routing, validation, errors and limits run on it in milliseconds;
the real engine keeps its own contract tests. Integrators can use it the same way:

>>> llm = FakeBackend()                       # the bundled model's tokenizer
>>> llm.score_labels(["Pick: A or B?"], [llm.single_token_id("A"), llm.single_token_id("B")])
"""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

from ..models import resolve_llm_path
from .base import LLMBackend, LLMBackendError, LLMConfig

__all__ = ["FakeBackend", "smallest_instance"]

_TEXT = "A deterministic answer from the fake backend."


class FakeBackend(LLMBackend):
    """Deterministic scores and answers; ``calls`` counts engine calls, ``healthy`` drives ``health()``."""

    def __init__(self, config: LLMConfig | None = None, *, max_model_len: int = 8192, text: str = _TEXT):
        from transformers import AutoTokenizer

        self.config = config or LLMConfig()
        self.model_path = resolve_llm_path(self.config.model)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_path))
        self.max_model_len = self.config.max_model_len or max_model_len
        self.text = text
        self.calls = 0
        self.healthy = True
        self._count = threading.Lock()

    def _tick(self) -> None:
        if not self.healthy:
            raise LLMBackendError("the fake engine was set unhealthy", hint="set healthy = True")
        with self._count:
            self.calls += 1

    def _score(self, ids: list[list[int]], allowed: list[list[int]], adapter: str | None) -> list[dict[int, float]]:
        self._tick()
        out = []
        for prompt, tokens in zip(ids, allowed, strict=True):
            tail = ",".join(map(str, prompt[-32:])) + f"|{adapter}"
            out.append({t: -(zlib.crc32(f"{tail}|{t}".encode()) % 10_000) / 1_000 for t in tokens})
        return out

    def _generate(self, ids, max_tokens, temperature, schemas, adapter, stop, seed, compact=False) -> list[str]:  # noqa: ANN001
        self._tick()
        sep = (",", ":") if compact else (", ", ": ")
        return [self.text if s is None else json.dumps(smallest_instance(s), separators=sep) for s in schemas]

    def _generate_stream(self, ids, *rest) -> Iterator[tuple[int, str]]:  # noqa: ANN001
        """Each answer in word-sized pieces, so streaming consumers see several chunks."""
        for i, text in enumerate(self._generate(ids, *rest)):
            *words, last = text.split(" ")
            for word in words:
                yield i, word + " "
            yield i, last

    def health(self) -> bool:
        return self.healthy


def smallest_instance(schema: Mapping[str, Any], defs: Mapping[str, Any] | None = None) -> Any:
    """The smallest value valid under the JSON-schema subset structured output uses
    (type, enum, const, properties/required, items/minItems, anyOf/oneOf, $ref into $defs)."""
    defs = defs if defs is not None else schema.get("$defs", {})
    if "$ref" in schema:
        return smallest_instance(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if schema.get(key):
            return smallest_instance(schema[key][0], defs)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = "null" if "null" in kind else kind[0]
    if kind == "object":
        props = schema.get("properties", {})
        return {k: smallest_instance(props.get(k, {}), defs) for k in schema.get("required", [])}
    if kind == "array":
        return [smallest_instance(schema.get("items", {}), defs) for _ in range(int(schema.get("minItems", 0)))]
    if kind == "string":
        return "x" * int(schema.get("minLength", 0))
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    return {"boolean": False, "null": None}[kind]
