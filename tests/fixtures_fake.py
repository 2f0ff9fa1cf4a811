"""Session fixtures on the fake LLM backend (:class:`recagent.llm.FakeBackend`): the same agent,
chat agent and HTTP server as fixtures_agent.py, over the same Chroma index, with deterministic
scores and schema-valid answers instead of the vLLM engine.

Tests of routing, validation, errors, access and limits use these (milliseconds per request);
what the engine itself does (label log-probabilities, LoRA, streaming of real tokens, LLM
reasons) keeps its tests on ``llm_engine`` and the ``agent_*`` fixtures. A test module switches
by overriding the fixture names it uses, e.g. ``chat_agent = pytest.fixture(fake_chat_agent)``.
"""

from __future__ import annotations

import pytest

__all__ = ["fake_llm", "fake_pipeline", "fake_chat_agent", "fake_server"]


@pytest.fixture(scope="session")
def fake_llm():
    from recagent.llm import FakeBackend

    return FakeBackend()


@pytest.fixture(scope="session")
def fake_pipeline(fake_llm, retr_split, retr_system):
    """As ``agent_pipeline`` (same config, index and retriever), ranked and explained by the fake."""
    from recagent.agent import AgentConfig, RecAgent

    cfg = AgentConfig(data=retr_split.dataset.name, k=5, n_candidates=10, explain_tokens_per_item=30, cf_model="none")
    return RecAgent(retr_split.dataset, retr_system, fake_llm, cfg)


@pytest.fixture(scope="session")
def fake_chat_agent(fake_pipeline):
    """As ``chat_agent``: templated reasons, k=4, one lock with ``fake_pipeline``."""
    from recagent.agent import RecAgent
    from recagent.chat import ChatAgent, ChatConfig

    p = fake_pipeline
    quick = RecAgent(p.dataset, p.retriever, p.llm, p.config.model_copy(update={"explain": False}))
    quick.lock = p.lock
    return ChatAgent(quick, ChatConfig(k=4))


@pytest.fixture(scope="session")
def fake_server(fake_pipeline, fake_chat_agent):
    """As ``agent_server``, on the fake backend."""
    from recagent.server import ServerConfig, ServerThread, create_app

    app = create_app(fake_pipeline, fake_chat_agent, ServerConfig(max_batch=8, max_wait_ms=20))
    with ServerThread(app) as srv:
        yield srv
