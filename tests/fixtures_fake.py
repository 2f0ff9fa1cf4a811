"""Session fixtures on the fake LLM backend (:class:`recagent.llm.FakeBackend`): the same agent,
chat agent and HTTP server as fixtures_agent.py, over the same Chroma index, with deterministic
scores and schema-valid answers instead of the vLLM engine.

Tests of routing, validation, errors, access and limits use these (milliseconds per request);
what the engine itself does (label log-probabilities, LoRA, streaming of real tokens, LLM
reasons) keeps its tests on ``llm_engine`` and the ``agent_*`` fixtures. A test module switches
by overriding the fixture names it uses (:func:`on_fake_backend`).
"""

from __future__ import annotations

import pytest
from fixtures_agent import build_test_agent, serve_in_thread, templated_chat

__all__ = ["fake_llm", "fake_pipeline", "fake_chat_agent", "fake_server", "on_fake_backend"]


@pytest.fixture(scope="session")
def fake_llm():
    from recagent.llm import FakeBackend

    return FakeBackend()


@pytest.fixture(scope="session")
def fake_pipeline(fake_llm, retr_split, retr_system):
    """As ``agent_pipeline`` (same config, index and retriever), ranked and explained by the fake."""
    return build_test_agent(retr_split, retr_system, fake_llm)


@pytest.fixture(scope="session")
def fake_chat_agent(fake_pipeline):
    """As ``chat_agent``: templated reasons, k=4, one lock with ``fake_pipeline``."""
    return templated_chat(fake_pipeline)


@pytest.fixture(scope="session")
def fake_server(fake_pipeline, fake_chat_agent):
    """As ``agent_server``, on the fake backend."""
    yield from serve_in_thread(fake_pipeline, fake_chat_agent)


def on_fake_backend(*names: str) -> list:
    """Module fixtures that put a test module's ``agent_server``, ``agent_pipeline`` and
    ``chat_agent`` (those named) on the fake backend: ``agent_server, chat_agent = on_fake_backend(
    "agent_server", "chat_agent")`` at module level."""
    target = {"agent_server": "fake_server", "agent_pipeline": "fake_pipeline", "chat_agent": "fake_chat_agent"}

    def alias(name: str):
        @pytest.fixture(name=name, scope="module")
        def fixture(request):
            return request.getfixturevalue(target[name])

        return fixture

    return [alias(n) for n in names]
