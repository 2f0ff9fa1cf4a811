"""Our HTTP server, really listening on 127.0.0.1 and driven over HTTP: recommend, chat with
memory, the OpenAI-compatible endpoint (plain and streamed, through the `openai` client too),
validation errors in the OpenAI envelope, health, metrics, micro-batching."""

from __future__ import annotations

import json
import threading

import httpx
import openai
import pytest

pytestmark = [pytest.mark.server, pytest.mark.slow]


@pytest.fixture(scope="module")
def http(agent_server):
    with httpx.Client(base_url=agent_server.base_url, timeout=300) as c:
        yield c


@pytest.fixture(scope="module")
def oai(agent_server):
    return openai.OpenAI(base_url=f"{agent_server.base_url}/v1", api_key="unused", timeout=300, max_retries=0)


def _assert_envelope(r: httpx.Response, status: int, param: str | None = None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err


# ---- plain routes ----------------------------------------------------------------------------


def test_health_models_items_metrics(http):
    h = http.get("/health")
    assert h.status_code == 200 and h.json()["engine"] is True
    assert http.get("/v1/models").json()["data"][0]["id"] == "recagent"
    item = http.get("/items/1").json()
    assert item["title"] == "Toy Story (1995)" and "Animation" in item["genres"]
    assert http.get("/items", params={"q": "toy story"}).json()["items"][0]["item_id"] == "1"
    _assert_envelope(http.get("/items/no-such-item"), 404, "item_id")
    _assert_envelope(http.get("/no/such/route"), 404)
    m = http.get("/metrics").text
    assert "recagent_requests_total" in m and "recagent_engine_up 1.0" in m


def test_recommend_over_http(http, agent_pipeline):
    r = http.post("/recommend", json={"user_id": "1", "k": 3, "filters": {"exclude": {"genres": ["Drama"]}}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 3 and all("Drama" not in it["genres"] for it in body["items"])
    assert all(it["reason"] and it["sources"] for it in body["items"])
    assert set(body["timings_ms"]) >= {"retrieve", "rank", "diversify", "explain", "total"}


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"user_id": "no-such-user"}, 404, "user_id"),
        ({"user_id": "1", "k": 0}, 400, "k"),
        ({"user_id": "1", "k": "many"}, 400, "k"),
        ({"user": "1"}, 400, "user"),  # unknown field (typo) is an error
        ({"history": ["1", "nope"]}, 404, "item_id"),
        ({"user_id": "1", "filters": {"include": {"colour": ["red"]}}}, 400, "filters"),
        ({"user_id": "1", "filters": {"ranges": {"year": [1990]}}}, 400, "filters"),
        ({"user_id": "1", "mmr_lambda": 2}, 400, "mmr_lambda"),
    ],
)
def test_bad_recommend_requests_are_4xx_envelopes(http, body, status, param):
    err = _assert_envelope(http.post("/recommend", json=body), status, param)
    assert "Hint" in err["message"] or status == 400


def test_malformed_bodies_are_400(http):
    err = _assert_envelope(
        http.post("/recommend", content=b"{not json", headers={"content-type": "application/json"}), 400
    )
    assert "not valid JSON" in err["message"]
    _assert_envelope(http.post("/recommend"), 400)
    _assert_envelope(http.post("/chat", json={"message": "   "}), 400, "message")
    _assert_envelope(http.get("/recommend"), 405)
    assert http.get("/health").status_code == 200  # still answering


PARSE_KEYS = ["message", "include", "exclude", "year_min", "year_max", "liked", "disliked"]


def test_parse_route_is_what_the_chat_agent_understands(http, chat_agent):
    msg = "like The Matrix but no horror, from the 90s"
    r = http.post("/v1/parse", json={"message": msg})
    assert r.status_code == 200, r.text
    body = r.json()
    assert list(body) == PARSE_KEYS and body == chat_agent.understand([msg])[0]
    assert body["exclude"] == ["Horror"] and (body["year_min"], body["year_max"]) == (1990, 1999)
    assert body["liked"] == ["2571"] and body["include"] == []  # the liked film's genres are not a request
    merged = http.post("/v1/parse", json={"message": msg, "llm": True})  # the engine's parse merged in
    assert merged.status_code == 200 and list(merged.json()) == PARSE_KEYS, merged.text
    assert merged.json()["exclude"] == ["Horror"]  # the merge never drops a refusal the rules found


@pytest.mark.parametrize(
    ("body", "param"),
    [({"message": "   "}, "message"), ({"message": "x" * 2001}, "message"), ({"message": "a comedy", "lang": "en"}, "lang"),
     ({"text": "a comedy"}, "message")],
)  # fmt: skip
def test_bad_parse_requests_are_400_envelopes(http, body, param):
    _assert_envelope(http.post("/v1/parse", json=body), 400, param)


def test_chat_over_several_turns_keeps_memory(http):
    r1 = http.post("/chat", json={"message": "I loved Toy Story, something animated"}).json()
    sid = r1["session_id"]
    assert r1["items"] and "1" in r1["memory"]["likes"]
    r2 = http.post("/chat", json={"message": "more", "session_id": sid}).json()
    first = {it["item_id"] for it in r1["items"]}
    assert r2["items"] and not first & {it["item_id"] for it in r2["items"]}
    r3 = http.post("/chat", json={"message": "I loved the first one", "session_id": sid}).json()
    assert r2["items"][0]["item_id"] in r3["memory"]["likes"]
    assert r3["session_id"] == sid and len(r3["memory"]["shown"]) >= len(first) + len(r2["items"])


def test_concurrent_requests_are_batched(agent_server):
    results = []

    def call(u):
        with httpx.Client(base_url=agent_server.base_url, timeout=300) as c:
            results.append(c.post("/recommend", json={"user_id": u, "k": 2, "explain": False}).json())

    threads = [threading.Thread(target=call, args=(u,)) for u in ("1", "5", "7", "10")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(len(r["items"]) == 2 for r in results)
    assert max(r["batch_size"] for r in results) >= 2


# ---- OpenAI-compatible endpoint --------------------------------------------------------------

MESSAGES = [
    {"role": "system", "content": "You are a movie recommender."},
    {"role": "user", "content": "I loved Toy Story."},
    {"role": "assistant", "content": "Noted."},
    {"role": "user", "content": "Something animated from the 90s please"},
]


def test_openai_client_plain_and_streamed_answers_match(oai):
    plain = oai.chat.completions.create(model="recagent", messages=MESSAGES)
    text = plain.choices[0].message.content
    assert plain.choices[0].finish_reason == "stop" and text.startswith("Here are")
    assert plain.usage.completion_tokens > 0
    extra = plain.model_extra["recagent"]
    assert "1" in extra["memory"]["likes"]  # the earlier user turn was remembered
    stream = oai.chat.completions.create(
        model="recagent", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for ch in chunk.choices:
            pieces.append(ch.delta.content or "")
            finish = ch.finish_reason or finish
    assert "".join(pieces) == text
    assert finish == "stop" and usage.completion_tokens == plain.usage.completion_tokens


def test_openai_user_field_keeps_the_conversation(oai):
    first = oai.chat.completions.create(model="recagent", messages=MESSAGES, user="u-memory")
    shown = {it["item_id"] for it in first.model_extra["recagent"]["items"]}
    assert shown and "1" in first.model_extra["recagent"]["memory"]["likes"]  # earlier turns replayed once
    more = oai.chat.completions.create(
        model="recagent", user="u-memory",
        messages=[*MESSAGES, {"role": "assistant", "content": first.choices[0].message.content}, {"role": "user", "content": "more"}],
    )  # fmt: skip
    again = {it["item_id"] for it in more.model_extra["recagent"]["items"]}
    assert again and not again & shown


def test_raw_sse_framing(http):
    with http.stream(
        "POST", "/v1/chat/completions", json={"model": "recagent", "messages": MESSAGES[-1:], "stream": True}
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = [line for line in r.iter_lines() if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [json.loads(e[6:]) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["recagent"]["session_id"]  # the last chunk names the conversation (and its status)


def test_max_tokens_cuts_the_answer(oai):
    r = oai.chat.completions.create(model="recagent", messages=MESSAGES[-1:], max_tokens=5)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens <= 5


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        (dict(messages=[]), openai.BadRequestError),
        (dict(messages=MESSAGES, n=2), openai.BadRequestError),
        (dict(messages=MESSAGES, temperature=5), openai.BadRequestError),
        (dict(messages=[{"role": "assistant", "content": "hi"}]), openai.BadRequestError),
        (dict(messages=[{"role": "robot", "content": "hi"}]), openai.BadRequestError),
        (dict(messages=MESSAGES, model="gpt-9"), openai.NotFoundError),
        (dict(messages=MESSAGES, max_tokens=0), openai.BadRequestError),
    ],
)
def test_openai_client_raises_on_bad_input(oai, kwargs, exc):
    kwargs = {"model": "recagent", **kwargs}
    with pytest.raises(exc) as e:
        oai.chat.completions.create(**kwargs)
    assert e.value.body["message"]  # the envelope's message reaches the client
    with pytest.raises(exc):
        oai.chat.completions.create(**kwargs, stream=True)  # rejected before the stream starts


def test_error_after_the_stream_started_is_an_event(agent_pipeline, chat_agent):
    """A server whose requests time out at once: the role chunk goes out, then the error event."""
    from recagent.server import ServerConfig, ServerThread, create_app

    app = create_app(agent_pipeline, chat_agent, ServerConfig(request_timeout_s=0.001))
    with ServerThread(app) as srv, httpx.Client(base_url=srv.base_url, timeout=60) as c:
        body = {"model": "recagent", "messages": MESSAGES[-1:], "stream": True}
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            events = [line for line in r.iter_lines() if line]
        assert json.loads(events[0][6:])["choices"][0]["delta"]["role"] == "assistant"
        err = json.loads(events[-2][6:])["error"]
        assert err["type"] == "timeout" and events[-1] == "data: [DONE]"
        _assert_envelope(c.post("/v1/chat/completions", json={**body, "stream": False}), 504)


def test_health_is_503_when_the_engine_is_dead(agent_pipeline, vllm_server):
    """A pipeline on a remote vLLM server whose connection is gone reports 503."""
    from recagent.agent import RecAgent
    from recagent.llm import LLMConfig, OpenAIServerBackend
    from recagent.server import ServerThread, create_app

    remote = OpenAIServerBackend(LLMConfig(backend="openai", base_url=vllm_server.base_url, max_model_len=4096))
    pipe = RecAgent(agent_pipeline.dataset, agent_pipeline.retriever, remote, agent_pipeline.config)
    with ServerThread(create_app(pipe)) as srv:
        assert httpx.get(f"{srv.base_url}/health").status_code == 200
        remote.close()  # the engine is gone
        r = httpx.get(f"{srv.base_url}/health")
        assert r.status_code == 503 and r.json()["engine"] is False
