"""Access control against the real server on 127.0.0.1 (issue 17): API keys (401 in the
envelope, the openai client with a key), the rate limit and the concurrency cap (429 with
Retry-After), CORS off and on, refusing a public address without a key, and forgetting a user
(over HTTP and with `recagent forget`), whose next conversation starts empty."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import httpx
import openai
import pytest
from fixtures_fake import on_fake_backend
from waiting import wait_until

from recagent.errors import ConfigError
from recagent.server import ServerConfig, ServerThread, create_app

pytestmark = [pytest.mark.server]

# routing, validation, limits and access: on the fake LLM backend (tests/fixtures_fake.py)
agent_server, agent_pipeline, chat_agent = on_fake_backend("agent_server", "agent_pipeline", "chat_agent")


KEYS = ["key-one-0123456789", "key-two-0123456789"]
ORIGIN = "https://app.example.com"


@pytest.fixture(scope="module")
def keyed(chat_agent):
    """A server with two keys and CORS for one origin, over the chat agent's pipeline."""
    cfg = ServerConfig(api_keys=KEYS, cors_origins=[ORIGIN])
    with ServerThread(create_app(chat_agent.pipeline, chat_agent, cfg)) as srv:
        yield srv


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _envelope(r: httpx.Response, status: int) -> dict:
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    return err


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/v1/models"), ("GET", "/items/1"), ("POST", "/recommend"), ("POST", "/chat"),
     ("POST", "/v1/chat/completions"), ("GET", "/metrics"), ("GET", "/openapi.json"), ("DELETE", "/users/1")],
)  # fmt: skip
def test_every_route_but_health_and_page_needs_a_key(keyed, method, path):
    for headers in ({}, _auth("wrong-key"), {"Authorization": KEYS[0]}, {"Authorization": f"Basic {KEYS[0]}"}):
        err = _envelope(httpx.request(method, keyed.base_url + path, headers=headers, json={}), 401)
        assert err["type"] == "authentication_error" and "Bearer" in err["message"]


def test_right_keys_pass_and_open_routes_stay_open(keyed):
    for key in KEYS:
        r = httpx.get(f"{keyed.base_url}/v1/models", headers=_auth(key))
        assert r.status_code == 200 and r.json()["data"][0]["id"] == "recagent"
    r = httpx.get(f"{keyed.base_url}/items/1", headers={"authorization": f"bearer {KEYS[1]}"})  # scheme is case-blind
    assert r.status_code == 200 and r.json()["title"] == "Toy Story (1995)"
    assert httpx.get(f"{keyed.base_url}/health").status_code == 200
    page = httpx.get(f"{keyed.base_url}/")
    assert page.status_code == 200 and "Authorization" in page.text  # the page can send a key


def test_openai_client_with_api_key(keyed):
    client = openai.OpenAI(base_url=f"{keyed.base_url}/v1", api_key=KEYS[0], max_retries=0, timeout=300)
    assert [m.id for m in client.models.list()] == ["recagent"]
    reply = client.chat.completions.create(
        model="recagent", messages=[{"role": "user", "content": "a funny animated movie"}]
    )
    assert reply.choices[0].message.content and reply.model_extra["recagent"]["items"]
    wrong = openai.OpenAI(base_url=f"{keyed.base_url}/v1", api_key="not-a-key", max_retries=0, timeout=60)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_rate_limit_answers_429_with_retry_after_per_key(chat_agent):
    cfg = ServerConfig(api_keys=KEYS, rate_limit_per_min=6, rate_burst=3)
    with (
        ServerThread(create_app(chat_agent.pipeline, chat_agent, cfg)) as srv,
        httpx.Client(base_url=srv.base_url) as c,
    ):
        codes = [c.get("/v1/models", headers=_auth(KEYS[0])).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        r = c.get("/v1/models", headers=_auth(KEYS[0]))
        err = _envelope(r, 429)
        assert err["type"] == "rate_limit_error" and 1 <= int(r.headers["Retry-After"]) <= 10
        assert c.get("/v1/models", headers=_auth(KEYS[1])).status_code == 200  # another key, its own budget
        assert c.get("/health").status_code == 200  # health checks are never limited
        # wrong keys spend the address's budget: guessing keys is throttled too
        wrong = [c.get("/v1/models", headers=_auth("guess")).status_code for _ in range(4)]
        assert wrong[:3] == [401, 401, 401] and wrong[3] == 429


def test_concurrency_cap_per_client(chat_agent):
    """With one request in flight allowed, a second from the same client gets 429 at once."""
    cfg = ServerConfig(max_concurrent_per_client=1)
    with ServerThread(create_app(chat_agent.pipeline, chat_agent, cfg)) as srv:
        lock = chat_agent.pipeline.lock
        results: list[int] = []

        def slow():
            results.append(
                httpx.post(f"{srv.base_url}/recommend", json={"user_id": "1", "k": 2}, timeout=300).status_code
            )

        t = threading.Thread(target=slow)
        with lock:  # hold the engine: the first request stays in flight
            t.start()
            wait_until(lambda: lock.waiting()["urgent"] == 1, 60, "the first request to wait for the engine")
            r = httpx.get(f"{srv.base_url}/v1/models", timeout=30)
            err = _envelope(r, 429)
            assert "in flight" in err["message"] and r.headers["Retry-After"] == "1"
        t.join(300)
        assert results == [200]
        assert httpx.get(f"{srv.base_url}/v1/models", timeout=30).status_code == 200  # the slot is free again


def test_cors_is_off_by_default_and_on_for_named_origins(agent_server, keyed):
    pre = {
        "Origin": ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    # off (the default server): no CORS headers, a preflight is not approved
    r = httpx.options(f"{agent_server.base_url}/recommend", headers=pre)
    assert "access-control-allow-origin" not in r.headers and r.status_code >= 400
    assert (
        "access-control-allow-origin"
        not in httpx.get(f"{agent_server.base_url}/health", headers={"Origin": ORIGIN}).headers
    )
    # on: the named origin's preflight passes without a key, and answers (401 included) carry the header
    r = httpx.options(f"{keyed.base_url}/recommend", headers=pre)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    r = httpx.get(f"{keyed.base_url}/v1/models", headers={"Origin": ORIGIN})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == ORIGIN
    other = httpx.options(f"{keyed.base_url}/recommend", headers={**pre, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_public_address_without_key_is_refused(agent_pipeline):
    from recagent.server import serve

    for host in ("0.0.0.0", "192.0.2.10", "example.com"):
        with pytest.raises(ConfigError, match="without an API key"):
            ServerConfig(host=host).check_exposure()
    ServerConfig(host="0.0.0.0", api_keys=["k-123456"]).check_exposure()
    ServerConfig(host="0.0.0.0", allow_unauthenticated=True).check_exposure()
    for host in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        ServerConfig(host=host).check_exposure()
    with pytest.raises(ConfigError, match="--allow-unauthenticated"):
        serve(agent_pipeline, ServerConfig(host="0.0.0.0", port=1))  # refused before anything binds


def _v1(base: str, user: str, text: str, key: str = KEYS[0]) -> dict:
    body = {"model": "recagent", "user": user, "messages": [{"role": "user", "content": text}]}
    r = httpx.post(f"{base}/v1/chat/completions", json=body, headers=_auth(key), timeout=300)
    assert r.status_code == 200, r.text
    return r.json()["recagent"]


def test_forget_a_user_over_http_and_with_the_cli(keyed):
    base = keyed.base_url
    shown = {}
    for user in ("forget-http", "forget-cli"):
        first = _v1(base, user, "I loved Toy Story, something animated")
        assert "1" in first["memory"]["likes"]
        again = _v1(base, user, "more")
        assert "1" in again["memory"]["likes"]  # the conversation is remembered
        shown[user] = again["memory"]["shown"]
    _envelope(httpx.delete(f"{base}/users/forget-http"), 401)  # forgetting needs a key too
    r = httpx.delete(f"{base}/users/forget-http", headers=_auth(KEYS[1]))
    assert r.status_code == 200 and r.json()["removed"].get("chat_sessions", 0) >= 1
    env = {**os.environ, "RECAGENT_API_KEY": KEYS[0]}
    cli = subprocess.run([sys.executable, "-m", "recagent.cli", "forget", "--user", "forget-cli", "--url", base],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert cli.returncode == 0 and "forgot user forget-cli" in cli.stdout and "chat_sessions" in cli.stdout, cli.stderr
    for user in ("forget-http", "forget-cli"):
        fresh = _v1(base, user, "something animated")
        # starts empty: no likes, and only this answer's picks shown (not the two answers before)
        assert fresh["memory"]["likes"] == [] and len(fresh["memory"]["shown"]) < len(shown[user])
    r = httpx.delete(f"{base}/users/never-seen", headers=_auth(KEYS[0]))
    assert r.status_code == 200 and r.json()["removed"] == {}  # nothing stored, nothing removed


def test_forget_removes_chat_sessions_of_a_known_user(keyed):
    """/chat sessions carry the data set's user id; the chat agent removes them (forget_user)."""
    base = keyed.base_url
    r = httpx.post(
        f"{base}/chat", json={"message": "I loved Toy Story", "user_id": "7"}, headers=_auth(KEYS[0]), timeout=300
    )
    assert r.status_code == 200 and "1" in r.json()["memory"]["likes"]
    gone = httpx.delete(f"{base}/users/7", headers=_auth(KEYS[0]), timeout=60).json()["removed"]
    assert sum(gone.values()) >= 1
    body = {"message": "more", "session_id": r.json()["session_id"], "user_id": "7"}
    after = httpx.post(f"{base}/chat", json=body, headers=_auth(KEYS[0]), timeout=300).json()
    assert "1" not in after["memory"]["likes"]
