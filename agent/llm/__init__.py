"""LLM backends behind one small interface: vLLM in-process (default) or an OpenAI-compatible vLLM server.

Both backends take prompts as text (already rendered with the chat template) or token ids, and
offer the two operations the agent needs:

* :meth:`LLMBackend.score_labels` — one forward pass, ``max_tokens=1``, sampling restricted to
  ``allowed_token_ids``; returns the log-probability of every allowed token, normalised over
  the allowed set (the verbalizer ranker's scores);
* :meth:`LLMBackend.generate` — greedy or sampled text, optionally constrained to a JSON schema.

>>> from recagent.llm import LLMConfig, make_backend
>>> llm = make_backend(LLMConfig())                     # bundled SmolLM2, vLLM in-process
>>> prompt = llm.chat_prompt([{"role": "user", "content": "Pick A or B."}])
>>> ids = [llm.single_token_id("A"), llm.single_token_id("B")]
>>> llm.score_labels([prompt], ids)                     # [{ids[0]: -0.3, ids[1]: -1.4}]
>>> with VLLMServer() as server:                        # `vllm serve` on 127.0.0.1, free port
...     remote = make_backend(LLMConfig(backend="openai", base_url=server.base_url))

Modules: :mod:`.base` (config, interface, errors), :mod:`.vllm_engine` (in-process),
:mod:`.openai_server` (a server as backend), :mod:`.launcher` (start a server).
"""

from __future__ import annotations

from .base import LLMBackend, LLMBackendError, LLMConfig, PromptTooLongError, cpu_env_defaults
from .fake import FakeBackend
from .launcher import VLLMServer
from .openai_server import OpenAIServerBackend
from .vllm_engine import VLLMEngine

__all__ = [
    "LLMConfig",
    "LLMBackend",
    "VLLMEngine",
    "FakeBackend",
    "OpenAIServerBackend",
    "VLLMServer",
    "LLMBackendError",
    "PromptTooLongError",
    "make_backend",
    "cpu_env_defaults",
]


def make_backend(config: LLMConfig | None = None) -> LLMBackend:
    """The backend ``config.backend`` names: ``"vllm"`` (in-process) or ``"openai"`` (a vllm server)."""
    config = config or LLMConfig()
    if config.backend == "vllm":
        return VLLMEngine(config)
    return OpenAIServerBackend(config)
