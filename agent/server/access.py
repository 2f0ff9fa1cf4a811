"""Who may call, and how much: API keys (401), a per-client rate limit and a cap on requests in
flight (429 with ``Retry-After``). A client is its API key when keys are set, else its address
(the peer address as seen by the server: behind a proxy, give each caller its own key)."""

from __future__ import annotations

import hmac
import math
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from ..errors import ConfigError
from .config import ServerConfig
from .errors import error_response

__all__ = ["AccessGuard", "KeyChecker", "RateLimiter", "load_api_keys", "OPEN_PATHS"]

OPEN_PATHS = frozenset({"/health", "/"})
"""Routes that never need a key: the health probe and the chat page (which asks for a key itself)."""


def load_api_keys(keys: Iterable[str] = (), files: Iterable[str | Path] = ()) -> list[str]:
    """Keys from values (each may hold several, comma-separated) and from files (one key per
    line, ``#`` comments and blank lines ignored). Duplicates are dropped, order kept."""
    out: list[str] = []
    for value in keys:
        out += [k.strip() for k in value.split(",") if k.strip()]
    for f in files:
        path = Path(f).expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ConfigError(f"cannot read the API key file {path}: {e.strerror or e}",
                              hint="pass a readable file with one key per line") from None  # fmt: skip
        found = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
        if not found:
            raise ConfigError(f"the API key file {path} holds no key", hint="write one key per line")
        out += found
    return list(dict.fromkeys(out))


class KeyChecker:
    """Matches ``Authorization: Bearer <key>`` against the keys in constant time per key."""

    def __init__(self, keys: Iterable[str]):
        self._keys = [k.encode("utf-8") for k in keys]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def match(self, authorization: str | None) -> int | None:
        """The index of the key presented, or None. Every key is compared (no early exit)."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        presented = token.strip().encode("utf-8", "surrogateescape")
        found = None
        for i, key in enumerate(self._keys):
            if hmac.compare_digest(presented, key) and found is None:
                found = i
        return found


class RateLimiter:
    """A token bucket per client: ``burst`` requests at once, refilled at ``per_min`` a minute."""

    MAX_CLIENTS = 10_000

    def __init__(self, per_min: float, burst: int):
        self.rate, self.burst = per_min / 60.0, float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """0 when the request may go ahead, else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                wait = 0.0
            else:
                self._buckets[client] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
            if len(self._buckets) > self.MAX_CLIENTS:  # a refilled bucket is as good as a new one
                full = [c for c, (t, a) in self._buckets.items() if t + (now - a) * self.rate >= self.burst]
                for c in full:
                    del self._buckets[c]
            return wait


class AccessGuard:
    """ASGI middleware: 401 without a valid key (when keys are set), 429 over the limits."""

    def __init__(self, app: ASGIApp, config: ServerConfig):
        self.app = app
        self.keys = KeyChecker(config.api_keys)
        self.limiter = (
            RateLimiter(config.rate_limit_per_min, config.rate_burst) if config.rate_limit_per_min > 0 else None
        )
        self.max_inflight = config.max_concurrent_per_client
        self._inflight: dict[str, int] = {}
        self._lock = threading.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        address = (scope.get("client") or ("unknown", 0))[0]
        client = f"addr:{address}"
        if self.keys:
            idx = self.keys.match(Headers(scope=scope).get("authorization"))
            if idx is None:
                # failed attempts use the address's budget too: guessing keys is throttled
                if self.limiter is not None and (wait := self.limiter.take(client)) > 0:
                    await self._too_many(wait, "too many requests without a valid API key")(scope, receive, send)
                    return
                await error_response(
                    401, "missing or wrong API key: send the header 'Authorization: Bearer <key>'",
                    "authentication_error", code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"},
                )(scope, receive, send)  # fmt: skip
                return
            client = f"key:{idx}"
        if self.limiter is not None and (wait := self.limiter.take(client)) > 0:
            await self._too_many(wait, "rate limit reached")(scope, receive, send)
            return
        with self._lock:
            n = self._inflight.get(client, 0)
            if self.max_inflight and n >= self.max_inflight:
                busy = True
            else:
                busy = False
                self._inflight[client] = n + 1
        if busy:
            msg = f"too many requests in flight from this client (at most {self.max_inflight} at once)"
            await self._too_many(1.0, msg)(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            with self._lock:
                left = self._inflight[client] - 1
                if left:
                    self._inflight[client] = left
                else:
                    del self._inflight[client]

    @staticmethod
    def _too_many(wait_s: float, what: str):
        retry = max(1, math.ceil(wait_s))
        return error_response(
            429, f"{what}; retry after {retry} s (limits: --rate-limit, --rate-burst, --max-concurrent)",
            "rate_limit_error", code="rate_limit_exceeded", headers={"Retry-After": str(retry)},
        )  # fmt: skip
