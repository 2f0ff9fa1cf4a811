"""Session fixtures for the agent tests (pipeline, chat, server, tools, batch, web page).

They reuse the session-wide real parts: the in-process vLLM engine (``llm_engine``) and the
small Chroma index of 250 popular movies (``retr_index``, ``retr_split``), so the agent tests
add no second engine and no second embedding pass. The HTTP server runs in a thread of the test
process (:class:`recagent.server.ServerThread`) and shares the same pipeline.
"""

from __future__ import annotations

import pytest

__all__ = ["agent_pipeline", "chat_agent", "agent_server", "build_test_agent", "templated_chat", "serve_in_thread"]


def build_test_agent(split, retriever, llm):
    """The recommend path on the small catalog over ``llm`` (the engine, or the fake)."""
    from recagent.agent import AgentConfig, RecAgent

    # small lists keep each engine call short on 2 CPU cores
    cfg = AgentConfig(data=split.dataset.name, k=5, n_candidates=10, explain_tokens_per_item=30, cf_model="none")
    return RecAgent(split.dataset, retriever, llm, cfg)


def templated_chat(pipeline):
    """A chat agent over ``pipeline``'s engine and index with templated reasons, k=4, one lock."""
    from recagent.agent import RecAgent
    from recagent.chat import ChatAgent, ChatConfig

    quick = RecAgent(
        pipeline.dataset, pipeline.retriever, pipeline.llm, pipeline.config.model_copy(update={"explain": False})
    )
    quick.lock = pipeline.lock  # one engine, one lock
    return ChatAgent(quick, ChatConfig(k=4))


@pytest.fixture(scope="session")
def agent_pipeline(llm_engine, retr_split, retr_index, retr_system):
    """The whole recommend path on the small catalog: fused retriever (ALS + all sources) →
    verbalizer ranker → MMR → explainer, on the shared engine."""
    return build_test_agent(retr_split, retr_system, llm_engine)


@pytest.fixture(scope="session")
def chat_agent(agent_pipeline):
    """Chat over the same engine and index; reasons templated (LLM reasons are tested in
    test_pipeline) so each turn costs one parse and one ranking call."""
    return templated_chat(agent_pipeline)


@pytest.fixture(scope="session")
def agent_server(agent_pipeline, chat_agent):
    """Our FastAPI server, really listening on 127.0.0.1 (a free port), in a background thread."""
    yield from serve_in_thread(agent_pipeline, chat_agent)


def serve_in_thread(pipeline, chat):
    """Our server over ``pipeline`` and ``chat`` on a free loopback port, for a fixture to yield."""
    from recagent.server import ServerConfig, ServerThread, create_app

    with ServerThread(create_app(pipeline, chat, ServerConfig(max_batch=8, max_wait_ms=20))) as srv:
        yield srv
