"""The HTTP server: recommend, chat, an OpenAI-compatible chat endpoint, health, metrics, a web page.

    recagent serve --port 8000                 # or: uvicorn-style, create_app(pipeline, chat)

Routes:

* ``POST /recommend`` — body :class:`~recagent.agent.RecommendRequest` → a Recommendation;
* ``POST /chat`` — body :class:`~recagent.chat.ChatTurn` (``session_id`` keeps the memory) → a ChatReply;
* ``POST /v1/chat/completions`` — OpenAI-compatible, non-streaming or SSE streaming. The
  conversation's memory comes from ``user`` (or the extension field ``session_id``) when given,
  else it is rebuilt from the earlier messages. The answer's structured picks are in the
  extension field ``recagent`` of the non-streamed response;
* ``GET /v1/models``, ``GET /health`` (503 when the engine is dead), ``GET /items/{id}``,
  ``GET /items?q=title``, ``GET /metrics`` (Prometheus), ``GET /`` (the chat page).

Errors on every route use the OpenAI envelope ``{"error": {"message", "type", "param",
"code"}}`` with a 4xx status for bad input (request validation included: 400, not FastAPI's
422), 404 for unknown ids/models, 503 when the engine is down, 504 on timeouts. A streamed
answer that fails after it started ends with a ``data: {"error": ...}`` event, then
``data: [DONE]``.

One engine serves everything: requests that arrive together are collected by a small asyncio
micro-batcher (up to ``max_batch`` within ``max_wait_ms``) and run in one worker thread, so
their prompts go to vLLM in one batch per stage and the engine is never called concurrently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from .agent import RecAgent, Recommendation, RecommendRequest
from .chat import ChatAgent, ChatConfig, ChatReply, ChatTurn
from .errors import RecAgentError

__all__ = [
    "ServerConfig",
    "MicroBatcher",
    "ChatCompletionRequest",
    "create_app",
    "ServerThread",
    "serve",
    "error_body",
]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"


class ServerConfig(BaseModel):
    """HTTP settings (``recagent serve`` flags / ``RECAGENT_*`` env)."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    model_name: str = "recagent"
    """The model id the OpenAI-compatible endpoint answers to (``/v1/models``)."""
    max_batch: int = Field(8, ge=1, le=256)
    """Requests batched into one engine call per stage."""
    max_wait_ms: float = Field(10.0, ge=0)
    """How long the batcher waits for more requests after the first one."""
    request_timeout_s: float = Field(300.0, gt=0)
    """A request waiting longer than this gets 504 (or an error event when streaming)."""
    log_level: str = "info"


# ------------------------------------------------------------------------------------------
# errors


_TYPE_BY_STATUS = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                   405: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
                   503: "service_unavailable", 504: "timeout"}  # fmt: skip


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI error envelope."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _error_response(status: int, message: str, type_: str | None = None, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, type_ or _TYPE_BY_STATUS.get(status, "server_error"), param, code), status_code=status)


def _rec_error(e: RecAgentError) -> tuple[int, dict[str, Any]]:
    msg = e.message + (f" Hint: {e.hint}" if e.hint else "")
    return e.status_code, error_body(msg, e.error_type, e.param, getattr(e, "code", None))


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """A readable message and the ``param`` for pydantic/FastAPI validation errors."""
    parts, param = [], None
    for err in exc.errors()[:4]:
        loc = [str(x) for x in err.get("loc", ()) if x != "body"]
        where = ".".join(loc)
        if param is None and where:
            param = where
        if err.get("type") == "json_invalid":
            parts.append(f"the request body is not valid JSON ({err.get('msg')}); send a JSON object")
        elif err.get("type") == "missing" and not loc:
            parts.append("the request body is missing; send a JSON object (Content-Type: application/json)")
        elif err.get("type") == "missing":
            parts.append(f"{where}: field required")
        elif err.get("type") == "extra_forbidden":
            parts.append(f"{where}: unknown field; check the spelling against the API docs (/docs)")
        else:
            got = err.get("input")
            shown = f" (got {json.dumps(got)[:60]})" if got is not None and not isinstance(got, dict) else ""
            parts.append(f"{where or 'body'}: {err.get('msg')}{shown}")
    return "; ".join(parts) or "invalid request", param


# ------------------------------------------------------------------------------------------
# micro-batching


class MicroBatcher:
    """Collect concurrent jobs for a moment, then run each kind's handler on the whole batch in
    one worker thread. ``handlers[kind](payloads) -> results`` returns one result or exception
    per payload, in order."""

    def __init__(self, handlers: dict[str, Callable[[list[Any]], Sequence[Any]]], *, max_batch: int = 8,
                 max_wait_ms: float = 10.0, on_batch: Callable[[str, int], None] | None = None):  # fmt: skip
        self.handlers = handlers
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.on_batch = on_batch
        self._queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None
        # one thread: the engine is never called from two threads at once
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="recagent-engine")

    async def start(self) -> None:
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._run(), name="recagent-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, kind: str, payload: Any) -> Any:
        """Queue one job; returns its result or raises its exception."""
        if kind not in self.handlers:
            raise ValueError(f"unknown job kind {kind!r}")
        await self.start()
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((kind, payload, fut))
        return await fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except TimeoutError:
                    break
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            groups: dict[str, list[tuple[Any, asyncio.Future]]] = {}
            for kind, payload, fut in batch:
                if not fut.cancelled():
                    groups.setdefault(kind, []).append((payload, fut))
            for kind, jobs in groups.items():
                if self.on_batch:
                    self.on_batch(kind, len(jobs))
                try:
                    results = await loop.run_in_executor(self._executor, self.handlers[kind], [p for p, _ in jobs])
                except BaseException as e:  # the handler itself failed: every job in it gets the error
                    results = [e] * len(jobs)
                for (_, fut), res in zip(jobs, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(res, BaseException):
                        fut.set_exception(res)
                    else:
                        fut.set_result(res)


# ------------------------------------------------------------------------------------------
# OpenAI-compatible request


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


# ------------------------------------------------------------------------------------------
# the app


class _Metrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()  # per app: several apps in one process (tests) do not clash
        self.requests = Counter("recagent_requests_total", "HTTP requests", ["route", "status"], registry=self.registry)
        self.latency = Histogram("recagent_request_seconds", "HTTP request latency", ["route"], registry=self.registry,
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))  # fmt: skip
        self.batch = Histogram("recagent_batch_size", "Jobs per engine batch", ["kind"], registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64))  # fmt: skip
        self.stage = Histogram("recagent_stage_seconds", "Pipeline stage time", ["stage"], registry=self.registry,
                               buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30))  # fmt: skip
        self.fallbacks = Counter("recagent_fallbacks_total", "Stages that fell back", ["stage"], registry=self.registry)
        self.engine_up = Gauge("recagent_engine_up", "1 while the LLM engine answers", registry=self.registry)
        self.sessions = Gauge("recagent_chat_sessions", "Conversations in memory", registry=self.registry)

    def record(self, rec: Recommendation) -> None:
        for stage in ("retrieve", "rank", "diversify", "explain"):
            if stage in rec.timings_ms:
                self.stage.labels(stage).observe(rec.timings_ms[stage] / 1000)
        for stage in rec.fallback:
            self.fallbacks.labels(stage).inc()


def create_app(pipeline: RecAgent, chat: ChatAgent | None = None, config: ServerConfig | None = None) -> FastAPI:
    """The FastAPI app over one pipeline (and its chat agent); the engine is shared by all routes."""
    cfg = config or ServerConfig()
    chat = chat or ChatAgent(pipeline, ChatConfig())
    metrics = _Metrics()

    def run_recommend(reqs: list[RecommendRequest]) -> list[Any]:
        out = pipeline.recommend_many(reqs, return_exceptions=True)
        for r in out:
            if isinstance(r, Recommendation):
                metrics.record(r)
        return out

    def run_chat(turns: list[ChatTurn]) -> list[Any]:
        return chat.respond_many(turns, return_exceptions=True)

    def run_openai(jobs: list[tuple[list[ChatMessage], str | None, int | None]]) -> list[Any]:
        turns, ephemeral = [], []
        for messages, session, k in jobs:
            last = messages[-1].text()
            earlier = [{"role": m.role, "content": m.text()} for m in messages[:-1]]
            if session is None:
                s = chat.session_from_messages(earlier)
                ephemeral.append(s.id)
            else:
                s = chat.session(session)
                if s.turns == 0 and earlier:  # a known conversation id we have not seen yet
                    chat.session_from_messages(earlier, session_id=s.id)
            turns.append(ChatTurn(message=last, session_id=s.id, k=k))
        try:
            return chat.respond_many(turns, return_exceptions=True)
        finally:
            for sid in ephemeral:
                chat.drop_session(sid)

    batcher = MicroBatcher(
        {"recommend": run_recommend, "chat": run_chat, "openai": run_openai},
        max_batch=cfg.max_batch, max_wait_ms=cfg.max_wait_ms,
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
        description="Local-first LLM recommendation agent: recommend, chat, OpenAI-compatible chat completions.",
        lifespan=lifespan,
    )
    app.state.pipeline, app.state.chat, app.state.batcher, app.state.config = pipeline, chat, batcher, cfg
    app.state.metrics = metrics

    async def submit(kind: str, payload: Any) -> Any:
        try:
            return await asyncio.wait_for(batcher.submit(kind, payload), cfg.request_timeout_s)
        except TimeoutError:
            raise _Timeout(f"the request took longer than {cfg.request_timeout_s:g} s") from None

    # --- errors ---------------------------------------------------------------------------

    @app.exception_handler(RecAgentError)
    async def _on_rec_error(request: Request, exc: RecAgentError) -> JSONResponse:
        status, body = _rec_error(exc)
        return JSONResponse(body, status_code=status)

    @app.exception_handler(_Timeout)
    async def _on_timeout(request: Request, exc: _Timeout) -> JSONResponse:
        return _error_response(504, str(exc) + "; try again, or raise --request-timeout", "timeout")

    @app.exception_handler(RequestValidationError)
    async def _on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        msg, param = _validation_message(exc)
        return _error_response(400, msg, "invalid_request_error", param)

    @app.exception_handler(StarletteHTTPException)
    async def _on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no route {request.method} {request.url.path}; see /docs for the API"
        elif exc.status_code == 405:
            detail = f"method {request.method} is not allowed on {request.url.path}; see /docs"
        return _error_response(exc.status_code, detail)

    @app.exception_handler(Exception)
    async def _on_error(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _error_response(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")

    @app.middleware("http")
    async def _observe(request: Request, call_next):
        t0 = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.requests.labels(path, str(response.status_code)).inc()
        metrics.latency.labels(path).observe(time.perf_counter() - t0)
        return response

    # --- routes ---------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/health")
    async def health() -> JSONResponse:
        up = await asyncio.to_thread(pipeline.healthy)
        metrics.engine_up.set(1 if up else 0)
        body = {"status": "ok" if up else "engine_dead", "engine": up, "items": len(pipeline.catalog),
                "data": pipeline.dataset.name, "sessions": chat.n_sessions}  # fmt: skip
        return JSONResponse(body, status_code=200 if up else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prom() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        metrics.sessions.set(chat.n_sessions)
        metrics.engine_up.set(1 if pipeline.healthy() else 0)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": cfg.model_name, "object": "model", "created": _STARTED, "owned_by": "recagent"}]}

    @app.get("/items/{item_id}")
    async def get_item(item_id: str) -> dict[str, Any]:
        return pipeline.catalog.get(item_id)

    @app.get("/items")
    async def search_items(q: str, limit: int = 10) -> dict[str, Any]:
        if not q.strip():
            raise RecAgentError("q is empty", hint="pass part of a title, e.g. /items?q=toy+story", param="q")
        if not 1 <= limit <= 100:
            raise RecAgentError(f"limit={limit} is out of range", hint="use 1..100", param="limit")
        ids = pipeline.catalog.search_title(q, limit=limit)
        return {"query": q, "items": [pipeline.catalog.get(i) for i in ids]}

    @app.post("/recommend", response_model=Recommendation)
    async def recommend(req: RecommendRequest) -> Recommendation:
        return await submit("recommend", req)

    @app.post("/chat", response_model=ChatReply)
    async def chat_route(turn: ChatTurn) -> ChatReply:
        return await submit("chat", turn)

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatCompletionRequest):
        if req.model != cfg.model_name:
            return _error_response(
                404, f"The model `{req.model}` does not exist; this server serves `{cfg.model_name}` (see /v1/models).",
                "invalid_request_error", "model", "model_not_found",
            )  # fmt: skip
        last = req.messages[-1]
        if last.role != "user" or not last.text().strip():
            return _error_response(
                400, "the last message must be a non-empty user message (what the user asks for now)",
                "invalid_request_error", "messages",
            )  # fmt: skip
        session = req.session_id or (f"openai-{req.user}" if req.user else None)
        job = (req.messages, session, req.k)
        limit = req.max_completion_tokens or req.max_tokens
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        prompt_tokens = sum(_count_tokens(pipeline, m.text()) for m in req.messages)
        if not req.stream:
            reply: ChatReply = await submit("openai", job)
            text, finish = _truncate(pipeline, reply.reply, limit)
            completion = _count_tokens(pipeline, text)
            return {
                "id": cid, "object": "chat.completion", "created": created, "model": cfg.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish, "logprobs": None}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion},
                "recagent": reply.model_dump(mode="json"),
            }  # fmt: skip
        include_usage = bool((req.stream_options or {}).get("include_usage"))

        async def events() -> AsyncIterator[str]:
            def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
                body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": cfg.model_name,
                        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}  # fmt: skip
                return f"data: {json.dumps(body)}\n\n"

            # the role goes out at once: the client sees the stream start while the agent works
            yield chunk({"role": "assistant", "content": ""})
            try:
                reply: ChatReply = await submit("openai", job)
            except Exception as e:  # after the stream started, errors travel as an event
                if isinstance(e, RecAgentError):
                    body = _rec_error(e)[1]
                elif isinstance(e, _Timeout):
                    body = error_body(str(e), "timeout")
                else:
                    log.exception("streamed chat completion failed")
                    body = error_body(f"internal error: {type(e).__name__}: {e}", "server_error")
                yield f"data: {json.dumps(body)}\n\n"
                yield "data: [DONE]\n\n"
                return
            text, finish = _truncate(pipeline, reply.reply, limit)
            for piece in _pieces(text):
                yield chunk({"content": piece})
            yield chunk({}, finish)
            if include_usage:
                completion = _count_tokens(pipeline, text)
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion, "total_tokens": prompt_tokens + completion}
                body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": cfg.model_name,
                        "choices": [], "usage": usage}  # fmt: skip
                yield f"data: {json.dumps(body)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


class _Timeout(Exception):
    pass


_STARTED = int(time.time())


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


def _pieces(text: str) -> list[str]:
    """Stream pieces: each word with the whitespace before it; joined they give ``text`` back."""
    return re.findall(r"\s*\S+|\s+$", text) or ([text] if text else [])


# ------------------------------------------------------------------------------------------
# running it


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ServerThread:
    """Our server on ``host:port`` in a background thread of this process (tests, notebooks,
    benchmarks): the engine already loaded here is shared, nothing is started twice.

    >>> with ServerThread(create_app(pipeline)) as srv:
    ...     httpx.post(f"{srv.base_url}/recommend", json={"user_id": "1"})
    """

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int | None = None, log_level: str = "warning"):
        import uvicorn

        self.host, self.port = host, port or _free_port(host)
        self.server = uvicorn.Server(uvicorn.Config(app, host=self.host, port=self.port, log_level=log_level, lifespan="on"))
        self.thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout_s: float = 30.0) -> ServerThread:
        self.thread = threading.Thread(target=self.server.run, name=f"recagent-http-{self.port}", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RecAgentError(f"the HTTP server did not start on {self.base_url}", hint="is the port free?")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(15)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(pipeline: RecAgent, config: ServerConfig | None = None, chat: ChatAgent | None = None) -> None:
    """Run the server in the foreground until interrupted (``recagent serve``)."""
    import uvicorn

    cfg = config or ServerConfig()
    app = create_app(pipeline, chat, cfg)
    log.info("recagent serving on http://%s:%d (model id %r)", cfg.host, cfg.port, cfg.model_name)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level)
