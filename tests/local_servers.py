"""Servers the tests start on 127.0.0.1: a free port, and a `chroma run` that answers its heartbeat."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx
from waiting import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str) -> bool:
    """True when GET ``url`` answers 200; False while nothing (or an error) answers."""
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start_chroma(path: Path, port: int, log: Path) -> subprocess.Popen:
    """`chroma run` on ``port`` storing in ``path``, output appended to ``log``; returns once it answers."""
    chroma = Path(sys.executable).with_name("chroma")
    with log.open("a") as out:  # the child keeps its own copy of the handle
        proc = subprocess.Popen([str(chroma), "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip

    def up() -> bool:
        assert proc.poll() is None, log.read_text()[-2000:]
        return http_ok(f"http://127.0.0.1:{port}/api/v2/heartbeat")

    wait_until(up, 60, lambda: f"the Chroma server: {log.read_text()[-2000:]}", every_s=0.3)
    return proc
