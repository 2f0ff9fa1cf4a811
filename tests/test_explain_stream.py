"""Real streaming: the chat reply's lines go out as they are composed, each pick's line as soon
as the LLM has chosen its reason; over HTTP, /v1/chat/completions sends them as SSE chunks."""

from __future__ import annotations

import json
import time

import httpx
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.server]

MESSAGE = "Something like Toy Story, animated, from the 90s"


@pytest.fixture(scope="module")
def explaining_chat(agent_pipeline):
    """A chat agent whose replies carry LLM reasons (the session fixture's chat has them off)."""
    from recagent.agent import RecAgent
    from recagent.chat import ChatAgent, ChatConfig

    p = agent_pipeline
    explaining = RecAgent(p.dataset, p.retriever, p.llm, p.config.model_copy(update={"explain": True}))
    explaining.lock = p.lock  # one engine, one lock
    return ChatAgent(explaining, ChatConfig(k=4))


def test_streamed_pieces_join_to_the_reply_and_reasons_come_from_the_llm(explaining_chat):
    from recagent.chat import ChatTurn

    pieces: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    (reply,) = explaining_chat.respond_many(
        [ChatTurn(message=MESSAGE)], sinks=[lambda p: pieces.append((time.perf_counter() - t0, p))]
    )
    assert "".join(p for _, p in pieces) == reply.reply
    assert len(reply.items) == 4 and len(pieces) == 4 + 2  # before the picks, one per pick, after
    assert any(it.reason_source == "llm" for it in reply.items), reply.fallback
    for (_, piece), it in zip(pieces[1:5], reply.items, strict=True):
        assert piece.startswith(f"{reply.items.index(it) + 1}. {it.title} — {it.reason}")
    # the picks' lines came while the LLM wrote: not all at once after it finished
    assert pieces[4][0] - pieces[0][0] > 0.2, pieces


@pytest.fixture(scope="module")
def explaining_server(agent_pipeline, explaining_chat):
    from recagent.server import ServerConfig, ServerThread, create_app

    app = create_app(explaining_chat.pipeline, explaining_chat, ServerConfig(max_batch=8, max_wait_ms=20))
    with ServerThread(app) as srv:
        yield srv


def _stream(base_url: str, body: dict) -> tuple[list[tuple[float, dict]], float]:
    t0 = time.perf_counter()
    with httpx.Client(base_url=base_url, timeout=300) as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        events = [(time.perf_counter() - t0, line) for line in r.iter_lines() if line]
    assert events[-1][1] == "data: [DONE]"
    return [(t, json.loads(e[6:])) for t, e in events[:-1]], time.perf_counter() - t0


def test_sse_chunks_arrive_as_produced_and_join_to_the_plain_answer(agent_pipeline, explaining_chat, explaining_server):
    body = {"model": "recagent", "messages": [{"role": "user", "content": MESSAGE}]}
    agent_pipeline.llm.reset_prefix_cache()  # cold both times: bf16 prefix-cached prefills may flip near-ties
    chunks, _ = _stream(explaining_server.base_url, {**body, "stream": True})
    agent_pipeline.llm.reset_prefix_cache()
    plain = httpx.post(f"{explaining_server.base_url}/v1/chat/completions", json=body, timeout=300).json()
    texts = [(t, c["choices"][0]["delta"].get("content")) for t, c in chunks if c["choices"]]
    content = [(t, x) for t, x in texts if x]
    assert "".join(x for _, x in content) == plain["choices"][0]["message"]["content"]
    assert len(content) >= 6  # header, one line per pick, footer
    # real streaming: the first text came well before the last pick's line (a replay sends all at once)
    assert content[-2][0] - content[0][0] > 0.2, [round(t, 2) for t, _ in content]
    assert any(it["reason_source"] == "llm" for it in plain["recagent"]["items"])
