"""The ``recagent`` command line. Every option also reads a ``RECAGENT_*`` environment variable.

    recagent demo                      # the whole agent on the shipped data and bundled model
    recagent eval --systems popularity,ease,sasrec
    recagent data-info --data path/to/folder
"""

from __future__ import annotations

import logging
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from .errors import ConfigError, RecAgentError

__all__ = ["app", "main"]

app = typer.Typer(
    help="recagent: a local-first LLM recommendation agent (Chroma retrieval → LLM ranking on vLLM) "
    "and an evaluation harness against classic CF baselines.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)

DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        envvar="RECAGENT_DATA",
        help="Data set: 'ml-latest-small' (shipped), a MovieLens folder/zip (100k, 1m, 20m, 32m, latest), "
        "or a folder with interactions.* + catalog.* (+ users.*) in CSV/JSONL/Parquet.",
    ),
]


def _parse_sets(sets: list[str]) -> dict[str, dict[str, Any]]:
    """``--set sasrec.epochs=50`` → {"sasrec": {"epochs": 50}}; values parsed as int/float/bool/str."""
    out: dict[str, dict[str, Any]] = {}
    for s in sets:
        key, eq, raw = s.partition("=")
        system, dot, opt = key.partition(".")
        if not eq or not dot or not opt:
            raise ConfigError(f"cannot read --set {s!r}", hint="write --set SYSTEM.OPTION=VALUE, e.g. --set ease.l2=300")
        val: Any = raw
        for conv in (int, float):
            try:
                val = conv(raw)
                break
            except ValueError:
                continue
        if raw.lower() in ("true", "false"):
            val = raw.lower() == "true"
        out.setdefault(system, {})[opt] = val
    return out


@app.command("data-info")
def data_info(data: DataOpt = "ml-latest-small") -> None:
    """Load a data set, check it, and print its size before and after the LlamaRec filtering."""
    from rich.table import Table

    from recagent.eval.splits import llamarec_split

    from .data import load_dataset

    ds = load_dataset(data)
    split = llamarec_split(ds)
    t = Table(title=f"data set {ds.name}")
    t.add_column("")
    t.add_column("raw", justify="right")
    t.add_column("LlamaRec 5-core", justify="right")
    t.add_row("users", str(len(ds.interactions.users)), str(split.n_users))
    t.add_row("items", str(len(ds.catalog)), str(split.n_items))
    t.add_row("interactions", str(len(ds.interactions)), str(split.n_interactions))
    t.add_row("attributes", ", ".join(ds.catalog.attributes), "")
    Console().print(t)


@app.command("eval")
def eval_cmd(
    data: DataOpt = "ml-latest-small",
    systems: Annotated[
        str,
        typer.Option(
            envvar="RECAGENT_SYSTEMS",
            help="Comma-separated systems: popularity, itemknn, bpr, als, ease, sasrec, retriever, llm.",
        ),
    ] = "popularity,itemknn,bpr,als,ease",
    stage: Annotated[str, typer.Option(envvar="RECAGENT_STAGE", help="'test' (last item) or 'val' (second to last).")] = "test",
    out: Annotated[
        Path | None, typer.Option(envvar="RECAGENT_OUT", help="Run folder (default runs/eval-<time>).")
    ] = None,
    users: Annotated[
        int | None, typer.Option(envvar="RECAGENT_USERS", help="Evaluate a seeded random sample of this many users.")
    ] = None,
    seed: Annotated[int, typer.Option(envvar="RECAGENT_SEED", help="Seed for user sampling and models.")] = 0,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="Model option, repeatable: --set sasrec.epochs=50 --set ease.l2=300."),
    ] = None,
    adapter: Annotated[
        Path | None, typer.Option(envvar="RECAGENT_ADAPTER", help="LoRA adapter (or merged model) for the 'llm' system.")
    ] = None,
) -> None:
    """Evaluate systems under the LlamaRec protocol (5-core, leave-one-out, full ranking).

    Writes a run folder with results.json, results.md, per_user.csv, significance.md and PNG plots.
    """
    import numpy as np

    from recagent.eval.harness import run_experiment, write_run
    from recagent.eval.splits import llamarec_split
    from recagent.eval.systems import build_system

    from .data import load_dataset

    options = _parse_sets(set_ or [])
    names = [s.strip() for s in systems.split(",") if s.strip()]
    unknown_opts = set(options) - set(names)
    if unknown_opts:
        raise ConfigError(f"--set names systems not being evaluated: {sorted(unknown_opts)}", hint=f"evaluated: {names}")
    split = llamarec_split(load_dataset(data))
    built = [build_system(n, split=split, seed=seed, adapter=adapter, **options.get(n, {})) for n in names]
    sample = None
    if users is not None:
        if users <= 0:
            raise ConfigError("--users must be positive", hint="omit it to evaluate every user")
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(split.n_users, size=min(users, split.n_users), replace=False))
    report = run_experiment(built, split, stage, users=sample)
    out = out or Path("runs") / f"eval-{time.strftime('%Y%m%d-%H%M%S')}"
    command = "recagent " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_run(report, out, title=f"recagent eval on {split.dataset.name}", command=command,
              config={"data": data, "systems": names, "stage": stage, "users": users, "seed": seed, "options": options})  # fmt: skip
    Console().print((out / "results.md").read_text())
    console.print(f"[green]run folder:[/green] {out}")


def main() -> None:
    """Entry point: bad input prints what was wrong and what to pass, never a traceback."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        app()
    except RecAgentError as e:
        console.print(f"[bold red]error:[/bold red] {e.message}")
        if e.hint:
            console.print(f"[yellow]hint:[/yellow] {e.hint}")
        sys.exit(2)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
