"""Real streaming: the chat reply's lines go out as they are composed, each pick's line as soon
as the LLM has chosen its reason; over HTTP, /v1/chat/completions sends them as SSE chunks."""

from __future__ import annotations

import json

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


@pytest.fixture()
def events(agent_pipeline, monkeypatch):
    """One ordered log: "engine done" when a streamed generation of the engine ends, beside
    whatever the test appends as the pieces reach it."""
    log: list[str] = []
    llm, real = agent_pipeline.llm, agent_pipeline.llm.generate_stream

    def recorded(*args, **kwargs):
        yield from real(*args, **kwargs)
        log.append("engine done")

    monkeypatch.setattr(llm, "generate_stream", recorded)
    return log


def test_streamed_pieces_join_to_the_reply_and_reasons_come_from_the_llm(explaining_chat, events):
    from recagent.chat import ChatTurn

    pieces: list[tuple[int, str]] = []  # (position in the event log, piece)

    def sink(piece: str) -> None:
        pieces.append((len(events), piece))
        events.append("piece")

    (reply,) = explaining_chat.respond_many([ChatTurn(message=MESSAGE)], sinks=[sink])
    assert "".join(p for _, p in pieces) == reply.reply
    assert len(reply.items) == 4 and len(pieces) == 4 + 2  # before the picks, one per pick, after
    assert any(it.reason_source == "llm" for it in reply.items), reply.fallback
    for (_, piece), it in zip(pieces[1:5], reply.items, strict=True):
        assert piece.startswith(f"{reply.items.index(it) + 1}. {it.title} — {it.reason}")
    # the first pick's line came while the LLM still wrote: not all at once after it finished
    assert "engine done" in events and pieces[1][0] < events.index("engine done"), events


@pytest.fixture(scope="module")
def explaining_server(agent_pipeline, explaining_chat):
    from recagent.server import ServerConfig, ServerThread, create_app

    app = create_app(explaining_chat.pipeline, explaining_chat, ServerConfig(max_batch=8, max_wait_ms=20))
    with ServerThread(app) as srv:
        yield srv


def _stream(base_url: str, body: dict, log: list[str]) -> list[tuple[int, dict]]:
    """The SSE chunks, each with its position in ``log`` when it reached the client."""
    got: list[tuple[int, str]] = []
    with httpx.Client(base_url=base_url, timeout=300) as c, c.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line:
                got.append((len(log), line))
                log.append("chunk")
    assert got[-1][1] == "data: [DONE]"
    return [(at, json.loads(e[6:])) for at, e in got[:-1]]


def test_sse_chunks_arrive_as_produced_and_join_to_the_plain_answer(agent_pipeline, explaining_chat, explaining_server,
                                                                   events):  # fmt: skip
    body = {"model": "recagent", "messages": [{"role": "user", "content": MESSAGE}]}
    agent_pipeline.llm.reset_prefix_cache()  # cold both times: bf16 prefix-cached prefills may flip near-ties
    chunks = _stream(explaining_server.base_url, {**body, "stream": True}, events)
    streamed_done = events.index("engine done")  # the streamed answer's generation (the plain one comes next)
    agent_pipeline.llm.reset_prefix_cache()
    plain = httpx.post(f"{explaining_server.base_url}/v1/chat/completions", json=body, timeout=300).json()
    texts = [(t, c["choices"][0]["delta"].get("content")) for t, c in chunks if c["choices"]]
    content = [(t, x) for t, x in texts if x]
    assert "".join(x for _, x in content) == plain["choices"][0]["message"]["content"]
    assert len(content) >= 6  # header, one line per pick, footer
    # real streaming: the header and the first pick's line reached the client while the engine still
    # generated the reasons (a replay would send everything after it finished)
    assert content[1][0] < streamed_done, events
    assert any(it["reason_source"] == "llm" for it in plain["recagent"]["items"])
