"""``recagent config show``: the config a command would run with, as a file ``--config`` reads."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from .main import app
from .options import AgentOptions, ServerOptions, agent_options, server_options
from .render import console, out

__all__ = ["config_app", "show_cmd", "resolved"]

config_app = typer.Typer(
    help="The resolved config: embedded defaults, then the --config file, then RECAGENT_* variables, then flags.",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")


def resolved(opts: AgentOptions, server: ServerOptions) -> tuple[dict[str, Any], list[str]]:
    """The resolved sections as plain data (the retriever's settings in full), and the secrets left out."""
    from ..agent import retriever_config

    settings = opts.settings()
    agent = settings.agent.model_dump(mode="json")
    # every retriever setting, so the file shows what can be tuned; cf_model and seed stay the one knob each
    agent["retriever"] = retriever_config(settings.agent).model_dump(mode="json", exclude={"cf_models", "seed"})
    srv = server.config().model_dump(mode="json")
    hidden = []
    if srv.get("api_keys"):
        hidden.append(f"server.api_keys ({len(srv['api_keys'])} set)")
    srv.pop("api_keys", None)
    if agent["llm"].get("api_key") not in (None, "EMPTY"):
        hidden.append("agent.llm.api_key")
        agent["llm"].pop("api_key")
    chat = opts.chat_config(server.session_store_spec(), k_from_flag=False).model_dump(mode="json")
    return {"agent": agent, "chat": chat, "server": srv}, hidden


@config_app.command("show")
@agent_options()
@server_options()
def show_cmd(
    fmt: Annotated[
        str,
        typer.Option(
            "--format", envvar="RECAGENT_CONFIG_FORMAT", help="toml (what --config reads back), yaml or json."
        ),
    ] = "toml",
    opts: AgentOptions = None,  # type: ignore[assignment]
    server: ServerOptions = None,  # type: ignore[assignment]
) -> None:
    """Print the config a command would use with these flags, variables and --config file.

    Save it, edit it and pass it back: ``recagent config show > my.toml; recagent serve --config my.toml``.
    Unset values are comments (TOML has no null); API keys are never printed."""
    from ..errors import ConfigError
    from .settings import to_toml

    if fmt not in ("toml", "yaml", "json"):
        raise ConfigError(f"unknown --format {fmt!r}", hint="use toml, yaml or json", param="format")
    data, hidden = resolved(opts, server)
    if fmt == "json":
        out.print_json(json.dumps(data))
    elif fmt == "yaml":
        import yaml

        typer.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)
    else:
        typer.echo(to_toml(data), nl=False)
    if hidden:
        console.print(f"not shown: {', '.join(hidden)}")
