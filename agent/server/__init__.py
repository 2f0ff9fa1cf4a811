"""The HTTP server: recommend, chat, an OpenAI-compatible chat endpoint, health, metrics, a web page.

    recagent serve --port 8000                 # or, in Python: ServerThread(create_app(pipeline))

Routes (docs/server.md has the whole story: keys, limits, CORS, what is stored):

* ``POST /recommend`` — body :class:`~recagent.agent.RecommendRequest` → a Recommendation;
* ``POST /chat`` — body :class:`~recagent.chat.ChatTurn` (``session_id`` keeps the memory) → a ChatReply;
* ``POST /v1/chat/completions`` — OpenAI-compatible, plain or SSE streaming (openai_api.py);
* ``DELETE /users/{id}`` — forget a user's conversations (privacy.py);
* ``GET /v1/models``, ``GET /health`` (503 when the engine is dead), ``GET /items/{id}``,
  ``GET /items?q=title``, ``GET /metrics`` (Prometheus), ``GET /`` (the chat page).

Layout: config.py (settings), errors.py (the OpenAI error envelope), body.py (413/415),
access.py (API keys, rate limit, concurrency cap), metrics.py (Prometheus, access log, 500s),
batcher.py + fairness.py (micro-batching in lanes over one engine), routes_core.py,
routes_chat.py, openai_api.py (routes), app.py (the factory), runner.py (running it).
"""

from __future__ import annotations

from .app import create_app
from .batcher import MicroBatcher
from .config import ServerConfig
from .errors import error_body
from .openai_api import ChatCompletionRequest
from .runner import ServerThread, serve

__all__ = [
    "ServerConfig",
    "MicroBatcher",
    "ChatCompletionRequest",
    "create_app",
    "ServerThread",
    "serve",
    "error_body",
]
