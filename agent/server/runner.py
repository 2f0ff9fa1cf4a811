"""Running the app: in the foreground (``recagent serve``) or in a background thread (tests,
notebooks, benchmarks). uvicorn's access log is off: ours (recagent.access) leaves out query
strings and ids."""

from __future__ import annotations

import logging
import socket
import threading
import time

from fastapi import FastAPI

from ..agent import RecAgent
from ..chat import ChatAgent
from ..errors import RecAgentError
from .app import create_app
from .config import ServerConfig

__all__ = ["ServerThread", "serve"]

log = logging.getLogger("recagent.server")


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
        self.server = uvicorn.Server(
            uvicorn.Config(app, host=self.host, port=self.port, log_level=log_level, lifespan="on", access_log=False)
        )
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
    """Run the server in the foreground until interrupted (``recagent serve``).

    Refuses a non-loopback host without API keys unless ``allow_unauthenticated`` is set."""
    import uvicorn

    cfg = config or ServerConfig()
    cfg.check_exposure()
    app = create_app(pipeline, chat, cfg)
    log.info("recagent serving on http://%s:%d (model id %r, %s)", cfg.host, cfg.port, cfg.model_name,
             f"{len(cfg.api_keys)} API key(s)" if cfg.api_keys else "no API key")  # fmt: skip
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level=cfg.log_level, access_log=False)
