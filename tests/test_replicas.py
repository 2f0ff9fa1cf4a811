"""Chat sessions shared by `recagent serve` replicas through one SQLite store (issue 15, point 3):
real server processes on 127.0.0.1, restarted mid-conversation, and two at once on one file.

The servers run without the LLM (``--no-llm-rank --no-explain``, rule-based chat parsing) on a
250-movie slice of ml-latest-small, both on one `chroma run` server (the layout of
docs/deploy.md): what is under test is the session store, which every chat turn reads and writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from local_servers import free_port, http_ok, start_chroma
from waiting import wait_until

pytestmark = pytest.mark.slow


class Server:
    """``recagent serve`` in a subprocess; ``url`` once /health answers."""

    def __init__(self, data: Path, chroma_port: int, store: str, log: Path):
        self.args = [sys.executable, "-m", "recagent.cli", "serve", "--data", str(data), "--chroma-host", "127.0.0.1",
                     "--chroma-port", str(chroma_port), "--no-llm-rank", "--no-explain", "--cf-model", "none",
                     "--session-store", store]  # fmt: skip
        self.log = log
        self.proc: subprocess.Popen | None = None
        self.url = ""

    def start(self, timeout: float = 240) -> Server:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        with self.log.open("a") as f:
            self.proc = subprocess.Popen([*self.args, "--port", str(port)], stdout=f, stderr=subprocess.STDOUT,
                                         env={**os.environ, "COLUMNS": "200"})  # fmt: skip

        def up() -> bool:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            return http_ok(f"{self.url}/health")

        wait_until(up, timeout, lambda: f"the server to come up: {self.log.read_text()[-3000:]}", every_s=0.5)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def chat(self, message: str, session_id: str | None = None, user_id: str | None = None) -> dict:
        body = {
            "message": message,
            **({"session_id": session_id} if session_id else {}),
            **({"user_id": user_id} if user_id else {}),
        }
        r = httpx.post(f"{self.url}/chat", json=body, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, retr_data_folder):
    """The deployment of docs/deploy.md on loopback: one Chroma server, two stateless replicas on it,
    one session store file."""
    tmp = tmp_path_factory.mktemp("replicas")
    store = str(tmp / "sessions.db")
    port = free_port()
    chroma = start_chroma(tmp / "chroma-server", port, tmp / "chroma.log")
    servers = [Server(retr_data_folder, port, store, tmp / f"server-{n}.log") for n in ("a", "b")]
    try:
        # one at a time: both would otherwise fight for the 2 cores while loading (the second finds the index built)
        for s in servers:
            s.start()
        yield servers
    finally:
        for s in servers:
            s.stop()
        chroma.terminate()
        chroma.wait(30)


def test_two_replicas_continue_each_others_conversation(replicas):
    a, b = replicas
    first = a.chat("something like Toy Story, an animated movie", user_id="7")
    sid, shown1 = first["session_id"], [it["item_id"] for it in first["items"]]
    assert first["session_status"] == "new" and shown1
    second = b.chat("more", session_id=sid)
    assert second["session_status"] == "continued", second
    shown2 = [it["item_id"] for it in second["items"]]
    assert shown2 and not set(shown2) & set(shown1)  # b knew what a had shown
    assert set(shown1) | set(shown2) <= set(second["memory"]["shown"])
    third = a.chat("more", session_id=sid)  # and a sees what b added
    assert third["session_status"] == "continued"
    assert not {it["item_id"] for it in third["items"]} & (set(shown1) | set(shown2))
    # forgetting the user on one replica removes the conversation for both
    r = httpx.delete(f"{b.url}/users/7", timeout=30)
    assert r.status_code == 200 and r.json()["removed"]["chat_sessions"] >= 1, r.text
    assert a.chat("more", session_id=sid)["session_status"] == "unknown"


def test_restart_mid_conversation_keeps_the_session(replicas):
    a, _ = replicas
    first = a.chat("a funny movie from the 90s")
    sid, shown1 = first["session_id"], {it["item_id"] for it in first["items"]}
    assert shown1
    a.stop()
    assert a.proc.returncode is not None
    a.start()  # a new process: nothing of the conversation is left in memory
    after = a.chat("more", session_id=sid)
    assert after["session_status"] == "continued", after
    assert after["items"] and not {it["item_id"] for it in after["items"]} & shown1
    assert shown1 <= set(after["memory"]["shown"])
