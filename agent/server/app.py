"""The app factory: one pipeline and chat agent, one batcher, the routes and the guards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from ..agent import RecAgent, Recommendation, RecommendRequest
from ..chat import ChatAgent, ChatConfig
from . import openai_api, routes_chat, routes_core
from .access import AccessGuard
from .batcher import MicroBatcher
from .body import BodyGuard
from .config import ServerConfig
from .errors import install_error_handlers
from .fairness import share_priority_lock
from .metrics import Metrics, Observe
from .state import ServerState

__all__ = ["create_app", "LANES"]

LANES = {"recommend": "recommend", "chat": "chat", "openai": "chat", "parse": "chat"}
"""Batcher lanes: /recommend runs beside the chat routes, not behind them (see batcher.py)."""


def create_app(pipeline: RecAgent, chat: ChatAgent | None = None, config: ServerConfig | None = None) -> FastAPI:
    """The FastAPI app over one pipeline (and its chat agent); the engine is shared by all routes."""
    cfg = config or ServerConfig()
    chat = chat or ChatAgent(pipeline, ChatConfig())
    metrics = Metrics()
    # one engine lock for the pipeline and the chat agent's pipeline, with a fast lane
    lock = share_priority_lock(pipeline, chat.pipeline)

    def run_recommend(reqs: list[RecommendRequest]) -> list[Any]:
        with lock.urgent():
            out = pipeline.recommend_many(reqs, return_exceptions=True)
        for r in out:
            if isinstance(r, Recommendation):
                metrics.record(r)
        return out

    batcher = MicroBatcher(
        {"recommend": run_recommend, "chat": routes_chat.chat_handler(chat), "openai": openai_api.openai_handler(chat),
         "parse": routes_chat.parse_handler(chat)},
        max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms, lanes=LANES,
        on_batch=lambda kind, n: metrics.batch.labels(kind).observe(n),
    )  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="recagent",
        version="0.1.0",
        description="Local-first LLM recommendation agent: recommend, chat, OpenAI-compatible chat completions. "
        + ("Every route but /health needs `Authorization: Bearer <key>`." if cfg.api_keys else ""),
        lifespan=lifespan,
    )
    app.state.recagent = ServerState(pipeline, chat, batcher, cfg, metrics)
    install_error_handlers(app)
    for module in (routes_core, routes_chat, openai_api):
        app.include_router(module.router)
    if cfg.api_keys:
        _document_bearer_auth(app)
    # added inner → outer: body checks, then keys and limits, then CORS (so 401/429 carry its
    # headers and preflights need no key), then metrics/logging/500s around everything
    app.add_middleware(BodyGuard, max_bytes=cfg.max_body_bytes)
    app.add_middleware(AccessGuard, config=cfg)
    if cfg.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=cfg.cors_origins, allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"], expose_headers=["Retry-After", "X-Recagent-Session-Status"],
        )  # fmt: skip
    app.add_middleware(Observe, metrics=metrics)
    return app


def _document_bearer_auth(app: FastAPI) -> None:
    """Declare the bearer scheme in the OpenAPI schema (/docs gets an Authorize button)."""
    from .access import OPEN_PATHS

    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = original()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearer"] = {
            "type": "http", "scheme": "bearer", "description": "an API key given to `recagent serve --api-key`",
        }  # fmt: skip
        for path, ops in schema.get("paths", {}).items():
            if path in OPEN_PATHS:
                continue
            for op in ops.values():
                op["security"] = [{"bearer": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
