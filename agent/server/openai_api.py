"""``POST /v1/chat/completions``: OpenAI-compatible, plain or streamed (Server-Sent Events).

The conversation's memory comes from ``user`` (or the extension field ``session_id``) when
given, else it is rebuilt from the earlier messages. The answer's structured picks are in the
extension field ``recagent`` of the plain response; a streamed answer carries the session in
``recagent`` of its last chunk. A user message holds at most as many characters as on /chat.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ..agent import RecAgent
from ..chat import ChatAgent, ChatReply, ChatTurn
from ..errors import RecAgentError
from .errors import ERROR_RESPONSES, RequestTimeout, error_body, error_response, rec_error_body
from .privacy import openai_session_id
from .state import MAX_MESSAGE_CHARS, SESSION_HEADER, ServerState, get_state, session_status

__all__ = ["router", "ChatCompletionRequest", "ChatMessage", "openai_handler", "MAX_OTHER_MESSAGE_CHARS"]

log = logging.getLogger("recagent.server")

MAX_OTHER_MESSAGE_CHARS = 20_000
"""Longest system/assistant/tool message (earlier answers are replayed to rebuild memory)."""

router = APIRouter(responses=ERROR_RESPONSES)


class _ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_call_id, ... are accepted and ignored
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[_ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type in ("text", "input_text"))
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    """The subset of OpenAI's chat completion request recagent reads; other fields are accepted
    and ignored (the answer is deterministic, so temperature/top_p do not apply)."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(..., min_length=1)
    messages: list[ChatMessage] = Field(..., min_length=1, max_length=200)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    n: int = Field(1, ge=1, le=1, description="recagent writes one answer: n must be 1")
    max_tokens: int | None = Field(None, ge=1, le=100_000)
    max_completion_tokens: int | None = Field(None, ge=1, le=100_000)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    user: str | None = Field(None, max_length=200)
    session_id: str | None = Field(None, max_length=100, description="recagent extension: conversation id")
    k: int | None = Field(None, ge=1, le=50, description="recagent extension: picks per answer")


def _as_dicts(messages: list[ChatMessage]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": m.text()} for m in messages]


def _after_user_turns(messages: list[ChatMessage], n: int) -> list[ChatMessage]:
    """The messages after the first ``n`` user turns."""
    if n <= 0:
        return messages
    seen = 0
    for i, m in enumerate(messages):
        seen += m.role == "user"
        if seen == n:
            return messages[i + 1 :]
    return []


def openai_handler(chat: ChatAgent, max_tracked: int = 10_000):
    """The batch job: rebuild or continue each conversation, then answer all in one chat call.

    The client's messages are the conversation. Per session the server counts the user turns
    it holds (answered or rebuilt); user turns beyond those — after a restart, an expired
    session, another replica, or turns sent elsewhere — are rebuilt from the messages, once."""
    held: OrderedDict[str, int] = OrderedDict()  # session id -> user turns the server holds

    # a `user` seen for the first time starts a conversation: "new", not "unknown"
    new_ok = "new_ok" in inspect.signature(chat.session).parameters

    def run_openai(jobs: list[tuple[Any, ...]]) -> list[Any]:
        """Jobs are (messages, session id, k, session from `user`[, sink for a streamed answer])."""
        turns, ephemeral = [], []
        sinks = [job[4] if len(job) > 4 else None for job in jobs]
        for messages, session, k, by_user, *_ in jobs:
            earlier = messages[:-1]
            if session is None:
                s = chat.session_from_messages(_as_dicts(earlier))
                ephemeral.append(s.id)
            else:
                s = chat.session(session, new_ok=True) if by_user and new_ok else chat.session(session)
                users = sum(m.role == "user" for m in earlier)
                known = 0 if s.turns == 0 else min(held.get(s.id, s.turns), users)  # turns 0: memory is gone
                if users > known:
                    chat.session_from_messages(_as_dicts(_after_user_turns(earlier, known)), session_id=s.id)
                held[s.id] = users + 1
                held.move_to_end(s.id)
                while len(held) > max_tracked:
                    held.popitem(last=False)
            turns.append(ChatTurn(message=messages[-1].text(), session_id=s.id, k=k))
        try:
            return chat.respond_many(turns, return_exceptions=True, sinks=sinks)
        finally:
            for sid in ephemeral:
                chat.drop_session(sid)

    return run_openai


def _check_messages(req: ChatCompletionRequest) -> JSONResponse | None:
    """The same message limits as /chat; None when the request may go ahead."""
    last = req.messages[-1]
    if last.role != "user" or not last.text().strip():
        return error_response(400, "the last message must be a non-empty user message (what the user asks for now)",
                              "invalid_request_error", "messages")  # fmt: skip
    for i, m in enumerate(req.messages):
        limit = MAX_MESSAGE_CHARS if m.role == "user" else MAX_OTHER_MESSAGE_CHARS
        n = len(m.text())
        if n > limit:
            return error_response(
                400, f"messages[{i}] ({m.role}) has {n} characters; at most {limit} are accepted"
                + (" (the same limit as /chat)" if m.role == "user" else ""),
                "invalid_request_error", f"messages[{i}].content", "message_too_long",
            )  # fmt: skip
    return None


def _count_tokens(pipeline: RecAgent, text: str) -> int:
    if pipeline.llm is None or not text:
        return len(text.split())
    return len(pipeline.llm.encode(text))


def _truncate(pipeline: RecAgent, text: str, limit: int | None) -> tuple[str, str]:
    """Cut the answer to ``limit`` tokens (OpenAI's max_tokens); finish_reason says whether it was."""
    if limit is None or pipeline.llm is None:
        return text, "stop"
    ids = pipeline.llm.encode(text)
    if len(ids) <= limit:
        return text, "stop"
    return pipeline.llm.tokenizer.decode(ids[:limit]), "length"


@router.post("/v1/chat/completions")
async def chat_completions(req: ChatCompletionRequest, state: ServerState = Depends(get_state)):
    """OpenAI-compatible chat completion (``stream=true`` for Server-Sent Events)."""
    cfg, pipeline = state.config, state.pipeline
    if req.model != cfg.model_name:
        return error_response(
            404, f"The model `{req.model}` does not exist; this server serves `{cfg.model_name}` (see /v1/models).",
            "invalid_request_error", "model", "model_not_found",
        )  # fmt: skip
    if (bad := _check_messages(req)) is not None:
        return bad
    session = req.session_id or (openai_session_id(req.user) if req.user else None)
    state.log_message("/v1/chat/completions", session, req.messages[-1].text())
    job = (req.messages, session, req.k, req.session_id is None)  # from `user`, not an explicit session id
    limit = req.max_completion_tokens or req.max_tokens
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    prompt_tokens = sum(_count_tokens(pipeline, m.text()) for m in req.messages)

    def usage(text: str) -> dict[str, int]:
        completion = _count_tokens(pipeline, text)
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion,
        }

    if not req.stream:
        reply: ChatReply = await state.submit("openai", job)
        text, finish = _truncate(pipeline, reply.reply, limit)
        body = {
            "id": cid, "object": "chat.completion", "created": created, "model": cfg.model_name,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": None}],
            "usage": usage(text), "recagent": reply.model_dump(mode="json"),
        }  # fmt: skip
        status = session_status(reply)
        return JSONResponse(body, headers={SESSION_HEADER: status} if status else None)
    include_usage = bool((req.stream_options or {}).get("include_usage"))

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": cfg.model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}  # fmt: skip
        return f"data: {json.dumps(body)}\n\n"

    async def events() -> AsyncIterator[str]:
        # the role goes out at once: the client sees the stream start while the agent works
        yield chunk({"role": "assistant", "content": ""})
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        def sink(piece: str) -> None:  # called by the batcher's thread as the reply is composed
            try:
                loop.call_soon_threadsafe(pieces.put_nowait, piece)
            except RuntimeError:  # the server stopped meanwhile; the answer is still finished and kept
                pass

        answer = asyncio.ensure_future(state.submit("openai", (*job, sink)))
        answer.add_done_callback(lambda _: pieces.put_nowait(None))  # after every piece sent before it
        sent, finish = "", "stop"
        try:
            while (piece := await pieces.get()) is not None:
                if finish == "length" or not piece:
                    continue
                if limit is not None:  # OpenAI's max_tokens: cut the stream where the whole answer would be cut
                    cut, finish = _truncate(pipeline, sent + piece, limit)
                    piece = cut[len(sent) :] if cut.startswith(sent) else ""
                if piece:
                    sent += piece
                    yield chunk({"content": piece})
            reply: ChatReply = await answer
        except Exception as e:  # after the stream started, errors travel as an event
            if isinstance(e, RecAgentError):
                body = rec_error_body(e)[1]
            elif isinstance(e, RequestTimeout):
                body = error_body(str(e), "timeout")
            else:
                log.exception("streamed chat completion failed")
                body = error_body(f"internal error: {type(e).__name__}", "server_error")
            yield f"data: {json.dumps(body)}\n\n"
            yield "data: [DONE]\n\n"
            return
        finally:
            if not answer.done():  # the client went away: the answer still completes (its session is kept)
                answer.add_done_callback(lambda a: a.exception())
        text, finish = _truncate(pipeline, reply.reply, limit)
        if text.startswith(sent) and len(text) > len(sent):  # a reply not sent piece by piece
            yield chunk({"content": text[len(sent) :]})
        yield chunk({}, finish, recagent={"session_id": reply.session_id, "session_status": session_status(reply)})
        if include_usage:
            body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": cfg.model_name,
                    "choices": [], "usage": usage(text)}  # fmt: skip
            yield f"data: {json.dumps(body)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
