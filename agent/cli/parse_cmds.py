"""``recagent parse``: how chat messages are understood, one JSON object per message."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import ConfigError, DataError
from . import checks
from .main import app
from .options import DataOpt
from .render import console, print_error

__all__ = ["parse_cmd", "read_messages"]

MAX_MESSAGE_CHARS = 10_000  # as the chat routes: a longer message is refused, not truncated


def read_messages(lines: list[str]) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    """(line number, message) of every good JSON line, and (line number, what is wrong) of the
    others; blank lines are skipped."""
    good, bad = [], []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append((n, f"not JSON ({e.msg} at column {e.colno})"))
            continue
        msg = obj.get("message") if isinstance(obj, dict) else None
        if not isinstance(msg, str):
            bad.append((n, 'expected an object with a "message" string, e.g. {"message": "a comedy from the 90s"}'))
        elif not msg.strip():
            bad.append((n, "the message is blank; write what you would like to watch"))
        elif len(msg) > MAX_MESSAGE_CHARS:
            bad.append((n, f"message of {len(msg)} characters; at most {MAX_MESSAGE_CHARS}"))
        else:
            good.append((n, msg))
    return good, bad


@app.command("parse")
def parse_cmd(
    message: Annotated[str | None, typer.Argument(help="One message to parse (or use --jsonl).")] = None,
    data: DataOpt = "ml-latest-small",
    jsonl: Annotated[
        str | None,
        typer.Option(
            "--jsonl",
            envvar="RECAGENT_PARSE_JSONL",
            help='JSON lines file, each {"message": "..."}; "-" reads stdin. One output line per good input line, in order.',
        ),  # fmt: skip
    ] = None,
    llm: Annotated[
        bool,
        typer.Option(
            "--llm",
            envvar="RECAGENT_PARSE_LLM",
            help="Merge the LLM's JSON parse into the rules' where they found no title, genre or year, as chat does (starts the engine).",
        ),
    ] = False,  # fmt: skip
) -> None:
    """Print how messages are understood: {"message", "include", "exclude", "year_min", "year_max",
    "liked", "disliked"} per message (genre names and item ids of the data set).

    \b
      recagent parse "a war film that's not too depressing, no musicals"
      recagent parse --data ml-latest-small --jsonl requests.jsonl
      echo '{"message": "like The Matrix but from the 90s"}' | recagent parse --jsonl -

    A malformed line is reported on stderr with its line number and skipped; the others are
    parsed, and the exit code is 1 when any line was skipped."""
    if (message is None) == (jsonl is None):
        raise ConfigError("pass one MESSAGE or --jsonl FILE", hint='e.g. recagent parse "a comedy from the 90s"')
    if jsonl is None:
        good, bad = read_messages([json.dumps({"message": message})])
    else:
        try:
            text = sys.stdin.read() if jsonl == "-" else Path(jsonl).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"cannot read the messages ({type(e).__name__})", file=jsonl,
                            hint='pass a UTF-8 JSON lines file, or "-" for stdin') from None  # fmt: skip
        good, bad = read_messages(text.splitlines())
    for n, why in bad:
        print_error(f"line {n}: {why}" if jsonl is not None else why, hint="this line is skipped" if jsonl else None)
    if good:
        for obj in _parse(data, [m for _, m in good], llm):
            sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
        sys.stdout.flush()
    if bad:
        raise typer.Exit(1)


def _parse(data: str, messages: list[str], llm: bool) -> list[dict[str, Any]]:
    from ..chat.understand import message_parser, understand

    ds = checks.load_data(data)
    pop = {str(k): int(v) for k, v in ds.interactions.df["item_id"].value_counts().items()}
    parser = message_parser(ds.catalog, pop, item_noun=ds.catalog.item_noun)
    if not llm:
        return understand(parser, messages)
    from ..llm import LLMConfig, VLLMEngine
    from ..prompts.render import PromptRenderer

    with console.status("starting the LLM engine…"):
        engine = VLLMEngine(LLMConfig())
    try:
        return understand(parser, messages, llm=engine, renderer=PromptRenderer(engine.tokenizer))
    finally:
        engine.close()
