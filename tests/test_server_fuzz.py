"""Property-based fuzz of the HTTP API from its own OpenAPI schema (schemathesis) against our
real server on 127.0.0.1, over the fake LLM backend (tests/fixtures_fake.py: routing and
validation are the point here; the engine keeps its own contract tests), with an API key: valid
and invalid requests for every documented route, a fixed number of examples each. No answer is
a 5xx; every status and every body is the documented one (errors: the OpenAI envelope); /health
answers 200 afterwards."""

from __future__ import annotations

import httpx
import pytest
import schemathesis
from fixtures_fake import on_fake_backend
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = [pytest.mark.server]


(chat_agent,) = on_fake_backend("chat_agent")  # routing and validation: the fake backend (tests/fixtures_fake.py)


KEY = "fuzz-key-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
OPERATIONS = ["GET /health", "GET /v1/models", "GET /items/{item_id}", "GET /items", "POST /recommend",
              "DELETE /users/{user_id}", "POST /chat", "POST /v1/parse", "POST /v1/chat/completions"]  # fmt: skip
EXAMPLES = 40  # per route and mode: bounded (the fake answers in milliseconds; the real engine took 4 s a chat)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection, ignored_auth]  # fmt: skip


@pytest.fixture(scope="module")
def fuzz_server(chat_agent):
    """A server over the chat agent's pipeline (templated reasons: cheap valid requests), with a
    key and no rate limit (the fuzz sends hundreds of requests)."""
    from recagent.server import ServerConfig, ServerThread, create_app

    cfg = ServerConfig(api_keys=[KEY], rate_limit_per_min=0, max_concurrent_per_client=0, request_timeout_s=120)
    with ServerThread(create_app(chat_agent.pipeline, chat_agent, cfg)) as srv:
        yield srv


@pytest.fixture(scope="module")
def api_schema(fuzz_server):
    """The server's own OpenAPI schema, fetched over HTTP with the key."""
    return schemathesis.openapi.from_url(f"{fuzz_server.base_url}/openapi.json", headers=AUTH)


def test_schema_documents_every_route(api_schema):
    found = {f"{op.ok().method.upper()} {op.ok().path}" for op in api_schema.get_all_operations()}
    assert found == set(OPERATIONS)


# schemathesis' pytest loader (`from_fixture`) does not run on pytest 9 (it sets node._nodeid),
# so each route's Hypothesis strategy is driven here directly: same cases, same checks.
@pytest.mark.parametrize(
    ("operation", "mode"),
    [(op, GenerationMode.POSITIVE) for op in OPERATIONS]
    # invalid input for every route that takes input (the others have none to break)
    + [(op, GenerationMode.NEGATIVE) for op in OPERATIONS if op not in ("GET /health", "GET /v1/models")],
)
def test_fuzz_route(api_schema, fuzz_server, operation, mode):
    method, path = operation.split(" ", 1)
    op = api_schema[path][method]

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))  # fmt: skip
    @given(case=op.as_strategy(generation_mode=mode))
    def fuzz(case):
        case.call_and_validate(base_url=fuzz_server.base_url, headers=AUTH, checks=CHECKS, timeout=180)

    fuzz()


def test_server_is_healthy_after_the_fuzz(fuzz_server, fake_llm):
    """Runs after the fuzz (file order): the server still answers and the engine is up."""
    r = httpx.get(f"{fuzz_server.base_url}/health", timeout=30)
    assert r.status_code == 200 and r.json()["engine"] is True
    assert fake_llm.calls > 0  # valid requests went through to the (fake) engine
