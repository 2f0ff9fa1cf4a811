"""``POST /chat``: one message of a conversation (``session_id`` keeps its memory);
``POST /v1/parse``: how a message is understood (what ``recagent parse`` prints)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from ..chat import ChatAgent, ChatReply, ChatTurn
from .errors import ERROR_RESPONSES
from .state import SESSION_HEADER, ServerState, get_state, session_status

__all__ = ["router", "chat_handler", "parse_handler", "ParseRequest", "ParseResult"]

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


class ParseRequest(BaseModel):
    """Body of ``POST /v1/parse``."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(..., min_length=1, max_length=2000, description="The message to parse.")
    llm: bool = Field(False, description="Merge the LLM's JSON parse into the rules' (uses the engine).")

    @field_validator("message")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("message is blank; write what you would like to watch")
        return v


class ParseResult(BaseModel):
    """How the message is understood: genre names and item ids of the data set."""

    message: str
    include: list[str]
    exclude: list[str]
    year_min: int | None
    year_max: int | None
    liked: list[str]
    disliked: list[str]


def parse_handler(chat: ChatAgent):
    """The batch job of ``/v1/parse`` with ``llm``: one engine call for the batch's messages."""

    def run_parse(messages: list[str]) -> list[Any]:
        return chat.understand(messages, llm=True)

    return run_parse


@router.post("/v1/parse", response_model=ParseResult)
async def parse_route(req: ParseRequest, state: ServerState = Depends(get_state)) -> dict[str, Any]:
    """What ``recagent parse`` prints for the message. Rules alone answer at once; ``"llm": true``
    queues the model's parse on the engine beside the chat routes."""
    state.log_message("/v1/parse", None, req.message)
    if req.llm:
        return await state.submit("parse", req.message)
    return (await run_in_threadpool(state.chat.understand, [req.message]))[0]
