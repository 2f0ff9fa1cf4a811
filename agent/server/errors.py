"""Every error the server sends is the OpenAI envelope ``{"error": {"message", "type", "param",
"code"}}`` with a matching status: request validation is 400 (not FastAPI's 422), unknown ids
404, oversized bodies 413, non-JSON bodies 415, limits 429, a dead engine 503, timeouts 504."""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import RecAgentError

__all__ = [
    "ErrorEnvelope",
    "ERROR_RESPONSES",
    "RequestTimeout",
    "error_body",
    "error_response",
    "rec_error_body",
    "validation_message",
    "install_error_handlers",
]

log = logging.getLogger("recagent.server")

TYPE_BY_STATUS = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                  405: "invalid_request_error", 413: "invalid_request_error", 415: "invalid_request_error",
                  422: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable",
                  504: "timeout"}  # fmt: skip


class _ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorEnvelope(BaseModel):
    """The body of every error answer (OpenAI's shape, so the `openai` client raises the usual exceptions)."""

    error: _ErrorDetail


# documented on every route, so /docs and the schema fuzz know the error shape
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorEnvelope, "description": desc}
    for status, desc in (
        (400, "invalid request"), (401, "missing or wrong API key"), (404, "unknown id, model or route"),
        (405, "method not allowed"), (413, "request body too large"), (415, "request body is not JSON"),
        (429, "rate limit or concurrency cap reached (see Retry-After)"), (500, "internal error"),
        (503, "the engine is down or the server is stopping"), (504, "the request timed out"),
    )
}  # fmt: skip


class RequestTimeout(Exception):
    """A request waited longer than ``request_timeout_s``."""


def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """The OpenAI error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(status: int, message: str, type_: str | None = None, param: str | None = None,
                   code: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    """The envelope as a response (type taken from the status when not given)."""
    body = error_body(message, type_ or TYPE_BY_STATUS.get(status, "server_error"), param, code)
    return JSONResponse(body, status_code=status, headers=headers)


def rec_error_body(e: RecAgentError) -> tuple[int, dict[str, Any]]:
    """Status and envelope of a :class:`RecAgentError` (its hint joins the message)."""
    msg = e.message + (f" Hint: {e.hint}" if e.hint else "")
    return e.status_code, error_body(msg, e.error_type, e.param, getattr(e, "code", None))


def _shown(value: Any) -> str:
    """A short, always printable rendering of a rejected input (bytes, odd objects included)."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """A readable message and the ``param`` (a field path, never a character offset)."""
    parts: list[str] = []
    param: str | None = None
    for err in exc.errors()[:4]:
        kind = err.get("type")
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        if kind == "json_invalid":
            # FastAPI puts the character offset in loc: it goes into the message, not into param
            where = f" at character {loc[0]}" if loc else ""
            reason = (err.get("ctx") or {}).get("error") or err.get("msg")
            parts.append(f"the request body is not valid JSON ({reason}{where}); send a JSON object")
            continue
        where = ".".join(loc)
        if param is None and where:
            param = where
        if kind == "missing" and not loc:
            parts.append("the request body is missing; send a JSON object (Content-Type: application/json)")
        elif kind == "missing":
            parts.append(f"{where}: field required")
        elif kind == "extra_forbidden":
            parts.append(f"{where}: unknown field; check the spelling against the API docs (/docs)")
        else:
            got = err.get("input")
            shown = f" (got {_shown(got)})" if got is not None and not isinstance(got, dict) else ""
            parts.append(f"{where or 'body'}: {err.get('msg')}{shown}")
    return "; ".join(parts) or "invalid request", param


def install_error_handlers(app: FastAPI) -> None:
    """Map recagent errors, validation errors, HTTP errors and timeouts to envelopes."""

    @app.exception_handler(RecAgentError)
    async def _on_rec_error(request: Request, exc: RecAgentError) -> JSONResponse:
        status, body = rec_error_body(exc)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestTimeout)
    async def _on_timeout(request: Request, exc: RequestTimeout) -> JSONResponse:
        return error_response(504, f"{exc}; try again, or raise --request-timeout", "timeout")

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        msg, param = validation_message(exc)
        return error_response(400, msg, "invalid_request_error", param)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else _shown(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}; see /docs for the API"
        elif exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path}; see /docs"
        return error_response(exc.status_code, detail, headers=getattr(exc, "headers", None))
