"""The Typer app and the entry point: bad input prints one line — what was wrong and what to
pass — and exits 2, never with a traceback."""

from __future__ import annotations

import os
import sys

import typer

# typer 0.29 carries its own copy of click; its exceptions live here (typer is pinned)
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from ..errors import RecAgentError
from .quiet import VERBOSE_FLAG, say_where, setup_output
from .render import console, print_error

__all__ = ["app", "main"]

app = typer.Typer(
    help="recagent: a local-first LLM recommendation agent (Chroma retrieval → LLM ranking on vLLM) "
    "and an evaluation harness against classic CF baselines. Every option also reads a RECAGENT_* "
    "environment variable (shown in each command's --help). Engine logs and warnings go to a log "
    "file (its path is printed at exit); --verbose (anywhere on the line) or RECAGENT_VERBOSE=1 shows them.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _usage_error(e: UsageError) -> tuple[str, str]:
    where = e.ctx.command_path if e.ctx is not None else "recagent"
    return e.format_message(), f"see '{where} --help'"


def _ray_default(args: list[str]) -> list[str]:
    """``--ray`` without an address means ``--ray local`` (a click option always takes a value)."""
    out: list[str] = []
    for i, a in enumerate(args):
        out.append(a)
        if a == "--ray" and (i + 1 == len(args) or args[i + 1].startswith("-")):
            out.append("local")
    return out


def main(argv: list[str] | None = None) -> None:
    """Entry point (``recagent``)."""
    # Set before torch loads OpenMP. With other jobs on the CPU, spinning OpenMP threads made
    # vLLM's decode ~9x slower (0.8 vs 7.8 tokens/s measured with one competing process).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = VERBOSE_FLAG in args or os.environ.get("RECAGENT_VERBOSE", "").lower() in ("1", "true", "yes")
    args = [a for a in args if a != VERBOSE_FLAG]
    # quiet: results, progress bars and stage lines here; engine logs and warnings to a file
    setup_output(next((a for a in args if not a.startswith("-")), "recagent"), verbose=verbose)
    command = typer.main.get_command(app)
    args = _ray_default(args)
    try:
        code = command.main(args=args, prog_name="recagent", standalone_mode=False)
    except NoArgsIsHelpError as e:
        typer.echo(e.ctx.get_help() if e.ctx is not None else "")
        sys.exit(0)
    except UsageError as e:  # unknown option, bad value, missing argument
        print_error(*_usage_error(e))
        sys.exit(2)
    except ClickException as e:  # e.g. a file option that cannot be opened
        print_error(e.format_message(), "check the value and try again")
        sys.exit(e.exit_code)
    except RecAgentError as e:
        print_error(e.message, e.hint)
        sys.exit(2)
    except OSError as e:
        if e.filename is None:
            raise
        print_error(f"{e.strerror or type(e).__name__}: {e.filename}", "check the path and its permissions")
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        console.print("interrupted")
        sys.exit(130)
    code = code if isinstance(code, int) else 0
    if code == 0:
        say_where()
    sys.exit(code)
