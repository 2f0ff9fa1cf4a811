"""Prometheus metrics and the access log, in one outermost middleware that also turns any
unexpected exception into a 500 envelope (so the connection survives and the client can read
what went wrong). The access log has method, path, status and time: never query strings or
bodies, so no message text reaches the logs."""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..agent import Recommendation
from .errors import error_response

__all__ = ["Metrics", "Observe"]

log = logging.getLogger("recagent.server")
access_log = logging.getLogger("recagent.access")


class Metrics:
    """The server's Prometheus collectors (one registry per app: several apps in one process do not clash)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
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

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


class Observe:
    """ASGI middleware: count and time every request by route, log it, and answer 500 in the
    envelope for an exception nothing else handled."""

    def __init__(self, app: ASGIApp, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500
        started = False

        async def watch(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as e:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not started:
                await error_response(500, f"internal error: {type(e).__name__}", "server_error")(scope, receive, send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")  # raw paths would let clients add label values
            dt = time.perf_counter() - t0
            self.metrics.requests.labels(path, str(status)).inc()
            self.metrics.latency.labels(path).observe(dt)
            access_log.info("%s %s %d %.0f ms", scope["method"], path if route else "(unmatched)", status, dt * 1000)
