"""Request bodies are bounded and JSON: 413 past ``max_body_bytes`` (from Content-Length before
anything is read, or while a chunked body streams in), 415 for a body not sent as JSON
(form-encoded, text/plain, no Content-Type), 400 for text with lone UTF-16 surrogates (no model
or tokenizer can take them). All answer in the error envelope; the connection stays usable (413
closes it, since the rest of the body was never read).

Requiring ``Content-Type: application/json`` also keeps web pages from posting to a local
server through a visitor's browser: such a request needs a CORS preflight, which fails unless
``--cors-origin`` allows that page.
"""

from __future__ import annotations

import json
import re
from email.message import Message
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from .errors import error_response

__all__ = ["BodyGuard", "is_json_type"]

_NO_BODY = frozenset({"GET", "HEAD", "OPTIONS"})


_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def is_json_type(content_type: str | None) -> bool:
    """application/json or application/*+json (a body without Content-Type is not JSON)."""
    if not content_type:
        return False
    m = Message()
    m["content-type"] = content_type
    sub = m.get_content_subtype()
    return m.get_content_maintype() == "application" and (sub == "json" or sub.endswith("+json"))


class BodyGuard:
    """ASGI middleware: read the body up to the limit, check its type, hand it on."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _NO_BODY:
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await error_response(400, f"invalid Content-Length {declared!r}")(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
        chunks, size, more = [], 0, True
        while more:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                return  # the client left: nobody to answer
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            more = msg.get("more_body", False)
        body = b"".join(chunks)
        ctype = headers.get("content-type")
        if body and not is_json_type(ctype):
            await error_response(
                415, f"the request body must be JSON (Content-Type: application/json), not {ctype!r}; "
                "with curl: --json '{...}' or -H 'Content-Type: application/json'",
                "invalid_request_error", code="unsupported_media_type",
            )(scope, receive, send)  # fmt: skip
            return
        if _SURROGATE_ESCAPE.search(body) and _has_lone_surrogate(body):
            await error_response(400, "the request body holds a lone UTF-16 surrogate escape (\\ud800-\\udfff); "
                                 "send valid Unicode text")(scope, receive, send)  # fmt: skip
            return
        replayed = False

        async def replay() -> ASGIMessage:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later calls wait for the disconnect, as usual

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await error_response(
            413, f"the request body is larger than {self.max_bytes} bytes (--max-body-bytes)",
            "invalid_request_error", code="request_too_large", headers={"Connection": "close"},
        )(scope, receive, send)  # fmt: skip


def _has_lone_surrogate(body: bytes) -> bool:
    """True when the JSON text decodes to a string with an unpaired surrogate (pairs are fine)."""
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return False  # not JSON: FastAPI says so

    def walk(o: Any) -> bool:
        if isinstance(o, str):
            return any("\ud800" <= c <= "\udfff" for c in o)
        if isinstance(o, dict):
            return any(walk(k) or walk(v) for k, v in o.items())
        if isinstance(o, list):
            return any(walk(v) for v in o)
        return False

    try:
        return walk(obj)
    except RecursionError:
        return False
