"""Forgetting a user: everything the server keeps about them, removed and counted.

What the server keeps per person is conversation state (chat sessions: likes, dislikes, what was
shown). The chat agent removes a user's sessions (``ChatAgent.forget_user``); conversations of
the OpenAI-compatible endpoint are keyed by its ``user`` field (session ``openai-<user>``) and are
dropped here too. A pipeline that keeps per-user state of its own may offer ``forget_user`` as well.
"""

from __future__ import annotations

from typing import Any

__all__ = ["forget_user", "openai_session_id"]


def openai_session_id(user: str) -> str:
    """The chat session behind ``/v1/chat/completions`` requests with ``user=<user>``."""
    return f"openai-{user}"


def _merge(into: dict[str, int], more: Any) -> None:
    for kind, n in dict(more or {}).items():
        into[str(kind)] = into.get(str(kind), 0) + int(n)


def forget_user(pipeline: Any, chat: Any, user_id: str) -> dict[str, int]:
    """Remove what the chat agent and the pipeline hold about ``user_id``; counts by kind."""
    removed: dict[str, int] = {}
    by_user = getattr(chat, "forget_user", None)
    if callable(by_user):
        _merge(removed, by_user(user_id))
    before = chat.n_sessions
    chat.drop_session(openai_session_id(user_id))
    if before - chat.n_sessions > 0:
        _merge(removed, {"chat_sessions": before - chat.n_sessions})
    by_pipeline = getattr(pipeline, "forget_user", None)
    if callable(by_pipeline):
        _merge(removed, by_pipeline(user_id))
    return {kind: n for kind, n in removed.items() if n}  # only what was really removed
