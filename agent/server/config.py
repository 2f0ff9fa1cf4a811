"""Server settings: one typed model, filled once from ``recagent serve`` flags / ``RECAGENT_*`` env."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..errors import ConfigError

__all__ = ["ServerConfig", "is_loopback"]


class ServerConfig(BaseModel):
    """HTTP settings (``recagent serve`` flags / ``RECAGENT_*`` env). Defaults suit one machine:
    loopback only, no key, generous limits."""

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
    # --- hostile input ---
    max_body_bytes: int = Field(1_000_000, ge=1024)
    """Largest request body; larger ones get 413 before they are read."""
    # --- access control ---
    api_keys: list[str] = Field(default_factory=list, repr=False)
    """Bearer keys; when set, every route but /health and the chat page needs one."""
    allow_unauthenticated: bool = False
    """Listen on a non-loopback address without keys (refused otherwise)."""
    rate_limit_per_min: float = Field(600.0, ge=0)
    """Requests per minute per client (API key, or address without keys); 0 = no limit."""
    rate_burst: int = Field(60, ge=1)
    """Requests a client may send at once before the per-minute rate applies."""
    max_concurrent_per_client: int = Field(32, ge=0)
    """Requests one client may have in flight; 0 = no cap."""
    cors_origins: list[str] = Field(default_factory=list)
    """Origins allowed to call from a browser (CORS); empty = CORS off."""
    log_messages: bool = False
    """Log the text of chat messages (off: logs carry sizes and ids, never what people wrote)."""

    @field_validator("api_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for key in v:
            if not key or any(c.isspace() for c in key):
                raise ValueError("an API key is empty or contains whitespace")
        return v

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        for o in v:
            if o != "*" and not o.startswith(("http://", "https://")):
                raise ValueError(f"CORS origin {o!r} is not an origin like https://app.example.com")
        return v

    def check_exposure(self) -> None:
        """Refuse a non-loopback address without keys, unless ``allow_unauthenticated``."""
        if self.api_keys or self.allow_unauthenticated or is_loopback(self.host):
            return
        raise ConfigError(
            f"refusing to listen on {self.host} without an API key: anyone who can reach it could use every route",
            hint="pass --api-key KEY (or RECAGENT_API_KEY), or --allow-unauthenticated on a trusted network",
            param="host",
        )


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``; any other name counts as reachable."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
