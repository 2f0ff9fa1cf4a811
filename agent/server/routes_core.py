"""Routes over the recommend pipeline: /recommend, /items, /health, /metrics, /v1/models, and
``DELETE /users/{id}`` (forget a user)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from ..agent import Recommendation, RecommendRequest
from ..errors import ConfigError, RecAgentError
from ..store import ItemFilter
from .errors import ERROR_RESPONSES
from .privacy import forget_user
from .state import ServerState, get_state

__all__ = ["router", "STATIC_DIR", "ForgetReport"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
_STARTED = int(time.time())

router = APIRouter(responses=ERROR_RESPONSES)


class ForgetReport(BaseModel):
    """What ``DELETE /users/{id}`` removed: counts by kind of record."""

    user_id: str
    removed: dict[str, int] = Field(description="Records removed, by kind (chat_sessions, likes, ...).")


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/health")
async def health(state: ServerState = Depends(get_state)) -> JSONResponse:
    """200 while the engine answers, 503 when it is dead. Never needs a key."""
    p = state.pipeline
    up = await asyncio.to_thread(p.healthy)
    state.metrics.engine_up.set(1 if up else 0)
    body = {"status": "ok" if up else "engine_dead", "engine": up, "items": len(p.catalog),
            "data": p.dataset.name, "sessions": state.chat.n_sessions}  # fmt: skip
    return JSONResponse(body, status_code=200 if up else 503)


@router.get("/metrics", include_in_schema=False)
async def prom(state: ServerState = Depends(get_state)) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    state.metrics.sessions.set(state.chat.n_sessions)
    state.metrics.engine_up.set(1 if await asyncio.to_thread(state.pipeline.healthy) else 0)
    return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/models")
async def models(state: ServerState = Depends(get_state)) -> dict[str, Any]:
    name = state.config.model_name
    return {"object": "list", "data": [{"id": name, "object": "model", "created": _STARTED, "owned_by": "recagent"}]}


@router.get("/items/{item_id}")
async def get_item(item_id: str, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    return state.pipeline.catalog.get(item_id)


@router.get("/items")
async def search_items(q: str, limit: int = 10, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    if not q.strip():
        raise RecAgentError("q is empty", hint="pass part of a title, e.g. /items?q=toy+story", param="q")
    if not 1 <= limit <= 100:
        raise RecAgentError(f"limit={limit} is out of range", hint="use 1..100", param="limit")
    catalog = state.pipeline.catalog
    return {"query": q, "items": [catalog.get(i) for i in catalog.search_title(q, limit=limit)]}


def _check_filter_shape(filters: dict[str, Any] | None) -> None:
    """A malformed filter is a 400 here, not an exception deep in the pipeline (a 500)."""
    if not filters:
        return
    try:
        ItemFilter.parse(filters)
    except RecAgentError:
        raise
    except (TypeError, ValueError, AttributeError) as e:
        raise ConfigError(f"filters are malformed ({e})", param="filters",
                          hint='use {"include": {attr: [values]}, "exclude": {attr: [values]}, "ranges": {attr: [min, max]}}') from None  # fmt: skip


@router.post("/recommend", response_model=Recommendation)
async def recommend(req: RecommendRequest, state: ServerState = Depends(get_state)) -> Recommendation:
    _check_filter_shape(req.filters)
    return await state.submit("recommend", req)


@router.delete("/users/{user_id}", response_model=ForgetReport)
async def delete_user(
    user_id: str = PathParam(..., min_length=1, max_length=200), state: ServerState = Depends(get_state)
) -> ForgetReport:
    """Forget a user: their chat sessions (likes, dislikes, what was shown) and any state the
    server keeps for them. The data set's files are not touched (they are yours)."""
    removed = await asyncio.to_thread(forget_user, state.pipeline, state.chat, user_id)
    return ForgetReport(user_id=user_id, removed=removed)
