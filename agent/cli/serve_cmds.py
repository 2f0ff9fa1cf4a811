"""Server commands: ``serve`` and ``forget`` (remove what a running server keeps about a user)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import typer
from rich.markup import escape
from rich.text import Text

from ..errors import ConfigError
from .agent_cmds import build_agent
from .main import app
from .options import (
    SESSION_STORE_DEFAULT,
    AgentOptions,
    ServerOptions,
    UserOpt,
    agent_options,
    chat_config,
    server_options,
)
from .render import console, out

__all__ = ["serve_cmd", "forget_cmd"]


@app.command("serve")
@agent_options()
@server_options()
def serve_cmd(opts: AgentOptions = None, server: ServerOptions = None) -> None:  # type: ignore[assignment]
    """Serve /recommend, /chat, the OpenAI-compatible /v1/chat/completions, /health, /metrics and a
    chat page at /. With --api-key every route but /health and the page needs 'Authorization:
    Bearer KEY'; a host other than loopback needs a key (or --allow-unauthenticated)."""
    from ..chat import ChatAgent
    from ..server import serve

    cfg = opts.config()  # every config error before any file is opened or model loaded
    scfg = server.config()
    scfg.check_exposure()  # before the engine loads: a refusal costs nothing
    chat_cfg = opts.chat_config(server.session_store_spec(), k_from_flag=False)
    agent = build_agent(cfg)
    keys = f"{len(scfg.api_keys)} API key(s)" if scfg.api_keys else "no API key"
    console.print(
        f"[green]recagent[/green] on http://{escape(scfg.host)}:{scfg.port}  ({keys}; chat page at /, API docs at /docs; "
        f"chat sessions in {escape(chat_cfg.session_store)})"
    )
    try:
        serve(agent, scfg, chat=ChatAgent(agent, chat_cfg))
    finally:
        agent.close()


@app.command("forget")
def forget_cmd(
    user: UserOpt,
    url: Annotated[
        str, typer.Option("--url", envvar="RECAGENT_URL", help="The running server.")
    ] = "http://127.0.0.1:8000",
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="RECAGENT_API_KEY",
            help="API key, when the server wants one (the first, if several are listed).",
        ),
    ] = None,
    session_store: Annotated[
        str,
        typer.Option(
            "--session-store",
            envvar="RECAGENT_SESSION_STORE",
            help="Forget in this SQLite session store directly (no server needed) instead of calling --url.",
        ),
    ] = SESSION_STORE_DEFAULT,
) -> None:
    """Remove what recagent keeps about a user (chat sessions: likes, dislikes, what was shown):
    calls DELETE /users/ID on the running server, or edits --session-store directly."""
    if not user.strip():
        raise ConfigError("--user is empty", hint="pass the id to forget, e.g. --user 42")
    user = user.strip()
    if session_store != "memory":
        removed = _forget_in_store(session_store, user)
        where = f" in {session_store}"
    else:
        removed = _forget_on_server(url, api_key, user)
        where = ""
    what = ", ".join(f"{n} {kind}" for kind, n in removed.items() if n) or "nothing was stored for this user"
    out.print(Text(f"forgot user {user}{where}: {what}"), soft_wrap=True)  # one line, whatever the width


def _forget_on_server(url: str, api_key: str | None, user: str) -> dict[str, int]:
    import httpx

    key = (api_key or "").replace(",", " ").split()
    headers = {"Authorization": f"Bearer {key[0]}"} if key else {}
    try:
        r = httpx.delete(f"{url.rstrip('/')}/users/{quote(user, safe='')}", headers=headers, timeout=60)
    except httpx.HTTPError as e:
        raise ConfigError(f"cannot reach a recagent server at {url} ({type(e).__name__})",
                          hint="start one with `recagent serve`, or pass --url") from None  # fmt: skip
    if r.status_code == 401:
        raise ConfigError(f"the server at {url} wants an API key", hint="pass --api-key KEY (or RECAGENT_API_KEY)")
    if r.status_code != 200:
        try:
            msg = r.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            msg = r.text[:200]
        raise ConfigError(f"the server answered {r.status_code}: {msg}", hint=f"is {url} a recagent server?")
    return r.json().get("removed", {})


def _forget_in_store(spec: str, user: str) -> dict[str, int]:
    """A user's sessions removed from a session store file, without a server."""
    from ..chat import ChatConfig
    from ..server.privacy import openai_session_id

    chat_config({"session_store": spec})  # checks the path before opening it for deletion
    from ..chat import open_session_store  # type: ignore[attr-defined]

    store = open_session_store(spec, ttl_s=ChatConfig().session_ttl_s)
    try:
        return {"chat_sessions": int(store.delete_user(user)) + int(bool(store.delete(openai_session_id(user))))}
    finally:
        store.close()
