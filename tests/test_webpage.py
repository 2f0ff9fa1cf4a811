"""The built-in chat page in a real headless Chromium, driven over the DevTools protocol:
the page loads from our server, sends a message, renders the picks, and keeps the session.

Needs Debian's chromium: ``apt-get install -y --no-install-recommends chromium``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from waiting import wait_until

pytestmark = [pytest.mark.server, pytest.mark.slow]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


class _Page:
    """A minimal DevTools-protocol client for one page target (websocket-client)."""

    def __init__(self, ws_url: str):
        import websocket

        # no Origin header: Chromium refuses DevTools websockets from unknown origins
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self.next_id = 0

    def call(self, method: str, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(msg["error"])
                return msg["result"]

    def eval(self, expr: str):
        res = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise RuntimeError(res["exceptionDetails"])
        return res["result"].get("value")

    def wait_for(self, expr: str, timeout_s: float = 600.0):
        return wait_until(lambda: self.eval(expr), timeout_s,
                          lambda: f"{expr}; page text: {self.eval('document.body.innerText')!r}", every_s=0.5)  # fmt: skip

    def close(self):
        self.ws.close()


@pytest.fixture()
def browser(tmp_path: Path):
    if CHROMIUM is None:
        pytest.skip("chromium not installed (apt-get install -y --no-install-recommends chromium)")
    profile = tmp_path / "profile"
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        port_file = profile / "DevToolsActivePort"

        def started() -> bool:
            assert proc.poll() is None, f"chromium did not start (exit code {proc.poll()})"
            return port_file.exists() and bool(port_file.read_text().strip())

        wait_until(started, 60, "chromium's DevToolsActivePort")
        port = int(port_file.read_text().splitlines()[0])
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_chat_page_answers_in_headless_chromium(agent_server, browser):
    page_url = f"{agent_server.base_url}/?q=something+like+Toy+Story+for+kids"
    target = httpx.put(f"{browser}/json/new?{page_url}", timeout=30).json()
    page = _Page(target["webSocketDebuggerUrl"])
    try:
        base = json.dumps(agent_server.base_url)
        page.wait_for(f"location.href.startsWith({base}) && document.readyState === 'complete'", 60)
        assert page.eval("document.title") == "recagent — chat"
        # ?q= asked the first question on load: wait for the rendered answer
        page.wait_for("document.querySelectorAll('.msg.agent[data-done]').length >= 1")
        first = page.eval("[...document.querySelectorAll('.msg.agent[data-done] li')].map(li => li.dataset.itemId)")
        assert first, page.eval("document.body.innerText")
        text = page.eval("document.querySelector('.msg.agent').innerText")
        assert "Here are" in text and "parsed by" in text
        # type a second message like a user: same conversation, new picks
        page.eval(
            "document.getElementById('input').value = 'more'; document.getElementById('form').requestSubmit(); true"
        )
        page.wait_for("document.querySelectorAll('.msg.agent[data-done]').length >= 2")
        second = page.eval(
            "[...document.querySelectorAll('.msg.agent[data-done]')[1].querySelectorAll('li')].map(li => li.dataset.itemId)"
        )
        assert second and not set(first) & set(second)
        assert page.eval("document.querySelectorAll('.msg.user').length") == 2
        assert not page.eval("document.querySelector('.msg.agent.error')")
    finally:
        page.close()


def test_chat_page_asks_for_the_api_key(chat_agent, browser):
    """On a server with --api-key the page gets 401, asks for the key, and sends the message again with it."""
    from recagent.server import ServerConfig, ServerThread, create_app

    key = "page-key-0123456789"
    with ServerThread(create_app(chat_agent.pipeline, chat_agent, ServerConfig(api_keys=[key]))) as srv:
        target = httpx.put(f"{browser}/json/new?{srv.base_url}/?q=a+funny+animated+movie", timeout=30).json()
        page = _Page(target["webSocketDebuggerUrl"])
        try:
            page.wait_for(
                f"location.href.startsWith({json.dumps(srv.base_url)}) && document.readyState === 'complete'", 60
            )
            page.wait_for("document.getElementById('keybox').classList.contains('shown')", 120)
            assert "needs an API key" in page.eval("document.querySelector('.msg.agent.error').innerText")
            page.eval(f"document.getElementById('key').value = {json.dumps(key)}; "
                      "document.getElementById('keybox').requestSubmit(); true")  # fmt: skip
            page.wait_for("document.querySelectorAll('.msg.agent[data-done] li').length >= 1")
            assert page.eval("sessionStorage.getItem('recagent-key')") == key
            assert not page.eval("document.getElementById('keybox').classList.contains('shown')")
        finally:
            page.close()
