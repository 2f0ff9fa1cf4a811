"""What the routes share: the pipeline, the chat agent, the batcher, the settings, the metrics."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from ..agent import RecAgent
from ..chat import ChatAgent, ChatTurn
from .batcher import MicroBatcher
from .config import ServerConfig
from .errors import RequestTimeout
from .metrics import Metrics

__all__ = ["ServerState", "get_state", "MAX_MESSAGE_CHARS", "SESSION_HEADER", "session_status"]

log = logging.getLogger("recagent.server")

SESSION_HEADER = "X-Recagent-Session-Status"
"""Response header on /chat and /v1/chat/completions: new, continued, unknown, expired or rebuilt."""


def _max_length(model: type, field: str) -> int:
    for meta in model.model_fields[field].metadata:
        if getattr(meta, "max_length", None):
            return int(meta.max_length)
    raise AssertionError(f"{model.__name__}.{field} has no max_length")


MAX_MESSAGE_CHARS = _max_length(ChatTurn, "message")
"""Longest user message, on /chat and /v1 alike (taken from ChatTurn, so they cannot drift)."""


def session_status(reply: Any) -> str | None:
    """The chat reply's session status, when the chat agent reports one."""
    status = getattr(reply, "session_status", None)
    return str(status) if status else None


@dataclass
class ServerState:
    pipeline: RecAgent
    chat: ChatAgent
    batcher: MicroBatcher
    config: ServerConfig
    metrics: Metrics

    async def submit(self, kind: str, payload: Any) -> Any:
        """Queue a job on the batcher; 504 (``RequestTimeout``) past ``request_timeout_s``."""
        try:
            return await asyncio.wait_for(self.batcher.submit(kind, payload), self.config.request_timeout_s)
        except TimeoutError:
            raise RequestTimeout(f"the request took longer than {self.config.request_timeout_s:g} s") from None

    def log_message(self, route: str, session_id: str | None, text: str) -> None:
        """A log line per chat message: its text only with ``--log-messages``."""
        if self.config.log_messages:
            log.info("%s session=%s message=%r", route, session_id, text)
        else:
            log.debug("%s session=%s message of %d chars", route, session_id, len(text))


def get_state(request: Request) -> ServerState:
    return request.app.state.recagent
