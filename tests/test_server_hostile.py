"""Hostile but fair input against the real server on 127.0.0.1 (issue 13): bodies that are not
JSON, too large, or hold broken Unicode; messages over the length limit on both chat routes;
broken JSON; the session status header; logs without message text; /recommend not waiting
behind chat. Each case answers 4xx in the OpenAI envelope and the server keeps serving."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading

import httpx
import openai
import pytest
from fixtures_fake import on_fake_backend
from waiting import wait_until

from recagent.chat import ChatReply
from recagent.server.state import MAX_MESSAGE_CHARS, SESSION_HEADER

pytestmark = [pytest.mark.server]

# routing, validation, limits and access: on the fake LLM backend (tests/fixtures_fake.py)
agent_server, agent_pipeline, chat_agent = on_fake_backend("agent_server", "agent_pipeline", "chat_agent")


MSG = [{"role": "user", "content": "Something animated from the 90s please"}]


@pytest.fixture(scope="module")
def web(agent_server):
    with httpx.Client(base_url=agent_server.base_url, timeout=300) as c:
        yield c


def _envelope(status: int, body: bytes | str, want: int) -> dict:
    assert status == want, body
    err = json.loads(body)["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


def _raw(srv, request: bytes, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send raw bytes on a fresh connection; read one response (status, body)."""
    with socket.create_connection((srv.host, srv.port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0
        )
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
    return int(head.split(b" ")[1]), body


def test_non_json_bodies_get_415_and_the_keep_alive_connection_keeps_working(agent_server):
    """`curl --data user_id=42` (form encoding), text/plain and a body without Content-Type were
    500s that also reset the connection; now 415 in the envelope, on the same connection."""
    conn = http.client.HTTPConnection(agent_server.host, agent_server.port, timeout=60)
    try:
        cases = [
            ("/recommend", b"user_id=42", {"Content-Type": "application/x-www-form-urlencoded"}),
            ("/v1/chat/completions", b'{"model": "recagent"}', {"Content-Type": "text/plain"}),
            ("/chat", b'{"message": "hi"}', {}),  # no Content-Type at all
        ]
        ports = set()
        for path, body, headers in cases:
            conn.request("POST", path, body=body, headers=headers)
            r = conn.getresponse()
            err = _envelope(r.status, r.read(), 415)
            assert "application/json" in err["message"] and err["type"] == "invalid_request_error"
            ports.add(conn.sock.getsockname()[1])
        conn.request("GET", "/health")
        r = conn.getresponse()
        assert r.status == 200 and json.loads(r.read())["engine"] is True
        ports.add(conn.sock.getsockname()[1])
        assert len(ports) == 1  # one TCP connection served every request
    finally:
        conn.close()


def test_a_large_declared_body_gets_413_before_it_is_sent(agent_server):
    """Content-Length over the limit: answered from the headers alone (the body never comes)."""
    head = (f"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {8 * 1024 * 1024}\r\n\r\n").encode()  # fmt: skip
    status, body = _raw(agent_server, head)
    err = _envelope(status, body, 413)
    assert "larger than" in err["message"] and err["code"] == "request_too_large"


def test_a_large_streamed_body_gets_413(agent_server):
    """A chunked body without Content-Length is counted while it arrives."""
    limit = 1_000_000  # ServerConfig.max_body_bytes default
    chunk = b'{"user_id": "1", "query": "' + b"x" * 60_000
    n = limit // len(chunk) + 2
    payload = b"".join(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(n)) + b"0\r\n\r\n"
    head = (
        b"POST /recommend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    status, body = _raw(agent_server, head + payload)
    _envelope(status, body, 413)
    assert httpx.get(f"{agent_server.base_url}/health").status_code == 200


def test_long_messages_get_the_same_400_on_chat_and_v1(web, agent_server):
    """/v1 answered a 2,001-character message with a 500 (and the openai client retried it);
    both routes now share one limit, taken from ChatTurn."""
    long = "x" * (MAX_MESSAGE_CHARS + 1)
    err = _envelope(*_resp(web.post("/chat", json={"message": long})), 400)
    assert err["param"] == "message" and str(MAX_MESSAGE_CHARS) in err["message"]
    body = {"model": "recagent", "messages": [{"role": "user", "content": long}]}
    err = _envelope(*_resp(web.post("/v1/chat/completions", json=body)), 400)
    assert err["param"] == "messages[0].content" and str(MAX_MESSAGE_CHARS) in err["message"]
    oai = openai.OpenAI(base_url=f"{agent_server.base_url}/v1", api_key="unused", max_retries=2, timeout=60)
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="recagent", messages=body["messages"])


def _resp(r: httpx.Response) -> tuple[int, bytes]:
    return r.status_code, r.content


def test_broken_json_names_no_character_offset_as_param(web):
    r = web.post("/recommend", content=b'{"user_id": "1",,}', headers={"content-type": "application/json"})
    err = _envelope(r.status_code, r.content, 400)
    assert err["param"] is None and "not valid JSON" in err["message"] and "character" in err["message"]


@pytest.mark.parametrize("path", ["/recommend", "/chat", "/v1/chat/completions"])
def test_lone_surrogates_are_400_not_500(web, path):
    text = '"I like \\ud83d movies"'  # half of an emoji's UTF-16 pair: no tokenizer takes it
    body = {"/recommend": '{"query": %s}', "/chat": '{"message": %s}',
            "/v1/chat/completions": '{"model": "recagent", "messages": [{"role": "user", "content": %s}]}'}[path] % text  # fmt: skip
    r = web.post(path, content=body.encode(), headers={"content-type": "application/json"})
    err = _envelope(r.status_code, r.content, 400)
    assert "surrogate" in err["message"]


def test_paired_surrogates_are_fine(web):
    body = b'{"user_id": "1", "query": "cartoons \\ud83d\\ude00", "k": 2, "explain": false}'  # a whole emoji
    r = web.post("/recommend", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


def test_chat_routes_report_the_session_status(web):
    """The header (and the field) say new / continued / unknown / expired, when the chat agent reports it."""
    r = web.post("/chat", json={"message": "a feel-good animated movie", "session_id": "never-seen-before"})
    assert r.status_code == 200, r.text
    reported = "session_status" in ChatReply.model_fields
    assert (SESSION_HEADER in r.headers) == reported
    if reported:
        assert r.headers[SESSION_HEADER] == r.json()["session_status"] == "unknown"
        again = web.post("/chat", json={"message": "more", "session_id": r.json()["session_id"]})
        assert again.headers[SESSION_HEADER] == "continued"


def test_logs_never_hold_message_text_unless_asked(agent_pipeline, chat_agent, caplog):
    from recagent.server import ServerConfig, ServerThread, create_app

    caplog.set_level(logging.DEBUG)
    secret = "my-secret-taste-qwxz"
    for log_messages in (False, True):
        caplog.clear()
        app = create_app(agent_pipeline, chat_agent, ServerConfig(log_messages=log_messages))
        with ServerThread(app) as srv, httpx.Client(base_url=srv.base_url, timeout=300) as c:
            assert c.post("/chat", json={"message": f"I loved Toy Story {secret}"}).status_code == 200
            body = {"model": "recagent", "messages": [{"role": "user", "content": f"more like Alien {secret}"}]}
            assert c.post("/v1/chat/completions", json=body).status_code == 200
        text = "\n".join(rec.getMessage() for rec in caplog.records)
        assert ("/chat" in text) and ("POST" in text)  # the access log did record the requests
        assert (secret in text) == log_messages, text[-2000:]


def test_recommend_does_not_wait_behind_a_chat_batch(web, agent_pipeline):
    """The engine is held (as a long chat generation would hold it) while a chat turn and then a
    recommendation arrive: the recommendation gets the engine first. With one queue (the old
    batcher) it waited for the whole chat batch."""
    lock = agent_pipeline.lock
    finished: list[str] = []

    def call(name: str, path: str, body: dict) -> None:
        with httpx.Client(base_url=web.base_url, timeout=300) as c:
            r = c.post(path, json=body)
            finished.append(name if r.status_code == 200 else f"{name}:{r.status_code}")

    chat = threading.Thread(target=call, args=("chat", "/chat", {"message": "a funny 90s movie"}))
    rec = threading.Thread(target=call, args=("recommend", "/recommend", {"user_id": "1", "k": 2, "explain": False}))
    with lock:  # this test thread is a normal (chat-like) holder
        chat.start()
        wait_until(lambda: lock.waiting()["normal"] == 1, 60, "the chat turn to wait for the engine")
        rec.start()
        wait_until(lambda: lock.waiting()["urgent"] == 1, 60, "the recommendation to wait for the engine")
    chat.join(300)
    rec.join(300)
    assert finished == ["recommend", "chat"]


@pytest.mark.parametrize(
    "body",
    [
        {"user_id": "1", "filters": {"ranges": [1990, 1999]}},
        {"user_id": "1", "filters": {"include": ["Comedy"]}},
        {"user_id": "1", "filters": {"include": {"genres": {"a": 1}}}},
        {"user_id": "1", "filters": {"ranges": {"year": ["a", "b"]}}},
        {"user_id": "1", "filters": {"exclude": {"genres": [None]}}},
        {"profile": {"text": ["nested", {"x": 1}]}, "query": "x", "k": 1},
        {"history": [], "k": 2},
        {"user_id": "1", "exclude": ["1"] * 3, "k": 100, "n_candidates": 1},
        {"user_id": "1", "new_items": [{"id": 1}]},
    ],
)
def test_odd_but_valid_json_shapes_are_4xx_or_answered(web, body):
    """Shapes a schema-driven fuzz rarely hits: never a 5xx."""
    r = web.post("/recommend", json={**body, "explain": False})
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        _envelope(r.status_code, r.content, r.status_code)


def test_v1_rebuilds_memory_from_turns_the_server_has_not_seen(web):
    """A known conversation id, resent with a user turn the server never saw (a restart, another
    replica): the likes in that turn are rebuilt from the messages. The old server rebuilt only
    conversations it had never seen at all."""
    first = {"model": "recagent", "user": "rebuild-me", "messages": [{"role": "user", "content": "something animated"}]}
    r1 = web.post("/v1/chat/completions", json=first)
    assert r1.status_code == 200 and "1" not in r1.json()["recagent"]["memory"]["likes"]
    unseen = [
        {"role": "assistant", "content": r1.json()["choices"][0]["message"]["content"]},
        {"role": "user", "content": "I loved Toy Story"},  # never sent to this server
        {"role": "assistant", "content": "Noted."},
        {"role": "user", "content": "more"},
    ]
    r2 = web.post("/v1/chat/completions", json={**first, "messages": first["messages"] + unseen})
    assert r2.status_code == 200, r2.text
    assert "1" in r2.json()["recagent"]["memory"]["likes"]
    # the next request resends it all again: nothing is unseen now, the conversation just continues
    again = first["messages"] + unseen + [{"role": "assistant", "content": "ok"}, {"role": "user", "content": "more"}]
    r3 = web.post("/v1/chat/completions", json={**first, "messages": again})
    assert r3.status_code == 200 and "1" in r3.json()["recagent"]["memory"]["likes"]
    if "session_status" in ChatReply.model_fields:  # the chat package reports how the memory came about
        assert r2.headers[SESSION_HEADER] == "rebuilt" and r3.headers[SESSION_HEADER] == "continued"
