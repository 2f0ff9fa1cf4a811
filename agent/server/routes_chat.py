"""``POST /chat``: one message of a conversation (``session_id`` keeps its memory)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response

from ..chat import ChatAgent, ChatReply, ChatTurn
from .errors import ERROR_RESPONSES
from .state import SESSION_HEADER, ServerState, get_state, session_status

__all__ = ["router", "chat_handler"]

router = APIRouter(responses=ERROR_RESPONSES)


def chat_handler(chat: ChatAgent):
    """The batch job: several turns answered in one chat call (runs in the engine thread)."""

    def run_chat(turns: list[ChatTurn]) -> list[Any]:
        return chat.respond_many(turns, return_exceptions=True)

    return run_chat


@router.post("/chat", response_model=ChatReply)
async def chat_route(turn: ChatTurn, response: Response, state: ServerState = Depends(get_state)) -> ChatReply:
    """Answer one message. The header ``X-Recagent-Session-Status`` says whether the session was
    new, continued, unknown (an id this server never saw) or expired."""
    state.log_message("/chat", turn.session_id, turn.message)
    reply = await state.submit("chat", turn)
    if status := session_status(reply):
        response.headers[SESSION_HEADER] = status
    return reply
