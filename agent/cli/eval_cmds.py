"""Data and evaluation commands: ``data-info``, ``eval``, ``finetune``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from ..agent import AgentConfig
from ..errors import ConfigError
from ..finetune.config import FinetuneConfig
from . import checks
from .main import app
from .options import (
    AdapterOpt,
    ConfigOpt,
    DataOpt,
    LLMModelOpt,
    LLMUrlOpt,
    ModelOpt,
    RayCpusOpt,
    RayOpt,
    RayWorkersOpt,
    one_llm_url,
    pydantic_error,
)
from .render import console
from .render import out as stdout
from .settings import eval_options, merge

__all__ = ["data_info", "eval_cmd", "finetune_cmd"]

_DATA_DEFAULT = AgentConfig.model_fields["data"].default
_ADAPTER_DEFAULT = AgentConfig.model_fields["adapter"].default  # "auto": the shipped ranker card, as the agent


def _parse_sets(sets: list[str]) -> dict[str, dict[str, Any]]:
    """``--set sasrec.epochs=50`` → {"sasrec": {"epochs": 50}}; values parsed as int/float/bool/str."""
    out: dict[str, dict[str, Any]] = {}
    for s in sets:
        key, eq, raw = s.partition("=")
        system, dot, opt = key.partition(".")
        if not eq or not dot or not opt:
            raise ConfigError(
                f"cannot read --set {s!r}", hint="write --set SYSTEM.OPTION=VALUE, e.g. --set ease.l2=300"
            )
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
def data_info(data: DataOpt = _DATA_DEFAULT) -> None:
    """Load a data set, check it, and print its size before and after the LlamaRec filtering."""
    from rich.table import Table

    from recagent.eval.splits import llamarec_split

    from ..data import load_dataset

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
    from ..data.readers import FILE_ORDER_ENV, file_order_allowed

    order = f"row order where a file has no timestamp ({FILE_ORDER_ENV}=1)" if file_order_allowed() else "timestamps"
    t.add_row("time order", order, "")
    stdout.print(t)


@app.command("eval")
def eval_cmd(
    data: DataOpt = _DATA_DEFAULT,
    systems: Annotated[
        str,
        typer.Option(
            envvar="RECAGENT_SYSTEMS",
            help="Comma-separated systems: popularity, itemknn, bpr, als, ease, sasrec, random, retriever, llm.",
        ),
    ] = "popularity,itemknn,bpr,als,ease",
    protocol: Annotated[
        str,
        typer.Option(
            envvar="RECAGENT_PROTOCOL",
            help="'llamarec': full ranking over all items (the LLM re-ranks the retriever's top 20); 'llmrank': "
            "every system ranks the true item among --n-candidates (the same lists for all).",
        ),
    ] = "llamarec",
    stage: Annotated[
        str, typer.Option(envvar="RECAGENT_STAGE", help="'test' (last item) or 'val' (second to last).")
    ] = "test",
    n_candidates: Annotated[
        int,
        typer.Option(
            "--n-candidates",
            envvar="RECAGENT_N_CANDIDATES",
            help="LLMRank: candidates per user, the true item + N-1 items the user never interacted with.",
        ),
    ] = 20,
    candidates: Annotated[
        Path | None,
        typer.Option(
            "--candidates-file",
            envvar="RECAGENT_CANDIDATES_FILE",
            help="LLMRank: candidate lists from a file in LLMRank's format (user_id<TAB>item item ...; the first "
            "N-1 are used, the true item added) instead of seeded random ones.",
        ),
    ] = None,
    skip_unknown: Annotated[
        bool,
        typer.Option(
            "--skip-unknown",
            envvar="RECAGENT_SKIP_UNKNOWN",
            help="Skip users and items of --candidates-file that the data set lacks (counted) instead of stopping.",
        ),
    ] = False,
    permutations: Annotated[
        int,
        typer.Option(
            envvar="RECAGENT_PERMUTATIONS",
            help="The llm system scores K rotations of each candidate list and averages them (position bias; K x cost).",
        ),
    ] = 1,
    model: ModelOpt = None,
    llm_url: LLMUrlOpt = [],  # noqa: B006 - typer reads the default, it is never mutated
    llm_model: LLMModelOpt = None,
    adapter: AdapterOpt = _ADAPTER_DEFAULT,
    out: Annotated[
        Path | None, typer.Option(envvar="RECAGENT_OUT", help="Run folder (default runs/eval-<time>).")
    ] = None,
    users: Annotated[
        int | None, typer.Option(envvar="RECAGENT_USERS", help="Evaluate a seeded random sample of this many users.")
    ] = None,
    seed: Annotated[
        int, typer.Option(envvar="RECAGENT_SEED", help="Seed for user sampling, candidate lists and models.")
    ] = 0,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            envvar="RECAGENT_SET",
            help="Model option, repeatable: --set sasrec.epochs=50 --set ease.l2=300 (env: space-separated).",
        ),
    ] = None,
    ray: RayOpt = None,
    ray_workers: RayWorkersOpt = 1,
    ray_cpus: RayCpusOpt = None,
    config_file: ConfigOpt = None,
) -> None:
    """Evaluate systems under the LlamaRec or LLMRank protocol (5-core, leave-one-out).

    With --config, the file's [agent.retriever] and [agent.ranker] are the retriever's and the llm
    system's settings (as for serving; --set retriever.KEY / llm.KEY win over them).

    Shows a progress bar with users/s per system; writes a run folder with results.json (schema in
    the README, section Evaluate), results.md, per_user.csv, significance.md, PNG plots and, for LLMRank, candidates.tsv.
    """
    from recagent.eval.runner import EvalSettings, run_eval
    from recagent.eval.systems import LLMOptions

    settings = EvalSettings(
        data=data, systems=[s.strip() for s in systems.split(",") if s.strip()], protocol=protocol, stage=stage,
        n_candidates=n_candidates, candidates=str(candidates) if candidates else None, skip_unknown=skip_unknown,
        permutations=permutations, users=users, seed=seed,
        options=merge(eval_options(config_file), _parse_sets(set_ or [])),
        llm=LLMOptions(model=model, adapter=adapter, url=one_llm_url(llm_url), served_model=llm_model), out=out,
        ray=checks.ray_config(ray, ray_workers, ray_cpus, []),
    )  # fmt: skip
    command = "recagent " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report, folder = run_eval(settings, command=command)
    _print_report(report)
    console.print(
        f"[green]run folder:[/green] {escape(str(folder))} (results.md, results.json, per_user.csv, significance.md, PNG plots)"
    )


def _print_report(report) -> None:
    from rich.table import Table

    from recagent.eval.report import HEADLINE, protocol_text

    t = Table(title=f"stage {report.stage}, {len(report.users)} users, {protocol_text(report.protocol)}")
    t.add_column("system")
    for m in (*HEADLINE, "Coverage@10", "PopBias@10", "users/s"):
        t.add_column(m, justify="right")
    best = report.best("NDCG@10").name
    for r in report.results:
        vals = [f"{r.means[m]:.4f}" for m in HEADLINE] + [
            f"{r.beyond.get(b, float('nan')):.3f}" for b in ("Coverage@10", "PopBias@10")
        ]
        vals.append(f"{r.users_per_s:.1f}")
        t.add_row(f"[bold]{r.name}[/bold]" if r.name == best else r.name, *vals)
    stdout.print(t)
    floor = report.protocol.get("random_order")
    if floor:
        console.print(f"a random order scores NDCG@10 {floor['NDCG@10']:.4f} in expectation")
    for r in report.results:
        if r.fallbacks:
            console.print(f"[yellow]{r.name}: fell back for {r.fallbacks} users (see results.json)[/yellow]")


_FT = FinetuneConfig()  # the command's defaults are the config's


@app.command("finetune")
def finetune_cmd(
    out: Annotated[
        Path, typer.Option(envvar="RECAGENT_FT_OUT", help="Run folder: checkpoints/, adapter/, merged/, curves.png.")
    ] = Path(_FT.out),
    data: DataOpt = _DATA_DEFAULT,
    model: Annotated[
        str | None,
        typer.Option(envvar="RECAGENT_MODEL", help="Base HF model folder (default: bundled SmolLM2-135M-Instruct)."),
    ] = None,
    train_users: Annotated[
        int, typer.Option(envvar="RECAGENT_FT_TRAIN_USERS", help="Users to train on (0 = every user not held out).")
    ] = 0,
    val_users: Annotated[
        int, typer.Option(envvar="RECAGENT_FT_VAL_USERS", help="Users held out to measure validation NDCG@10.")
    ] = _FT.val_users,
    cuts: Annotated[
        int, typer.Option(envvar="RECAGENT_FT_CUTS", help="Training targets per user (its last N training items).")
    ] = _FT.cuts_per_user,
    history_len: Annotated[
        int, typer.Option(envvar="RECAGENT_FT_HISTORY_LEN", help="History items in the prompt.")
    ] = _FT.history_len,
    template: Annotated[
        str,
        typer.Option(envvar="RECAGENT_FT_TEMPLATE", help="Ranking prompt: prompts/<NAME>.jinja (rank, rank_compact)."),
    ] = _FT.template,
    epochs: Annotated[
        float, typer.Option(envvar="RECAGENT_FT_EPOCHS", help="Passes over the training examples.")
    ] = _FT.epochs,
    max_steps: Annotated[int, typer.Option(envvar="RECAGENT_FT_MAX_STEPS", help="> 0 overrides --epochs.")] = -1,
    time_budget_min: Annotated[
        float,
        typer.Option(
            envvar="RECAGENT_FT_TIME_BUDGET_MIN", help="Stop training after this many minutes (0 = no limit)."
        ),
    ] = _FT.time_budget_min or 0.0,
    lr: Annotated[float, typer.Option(envvar="RECAGENT_FT_LR", help="Learning rate.")] = _FT.lr,
    lora_r: Annotated[int, typer.Option(envvar="RECAGENT_FT_LORA_R", help="LoRA rank.")] = _FT.lora_r,
    lora_alpha: Annotated[
        int, typer.Option(envvar="RECAGENT_FT_LORA_ALPHA", help="LoRA alpha (scale = alpha / r).")
    ] = _FT.lora_alpha,
    target_modules: Annotated[
        str, typer.Option(envvar="RECAGENT_FT_TARGETS", help="Comma-separated module names.")
    ] = ",".join(_FT.target_modules),
    evidence: Annotated[
        bool,
        typer.Option(
            envvar="RECAGENT_FT_EVIDENCE",
            help="Candidate lines carry the retriever's evidence: the sources that proposed each one and their ranks.",
        ),
    ] = _FT.evidence,
    shuffle: Annotated[
        bool,
        typer.Option(
            envvar="RECAGENT_FT_SHUFFLE",
            help="Permute each candidate list (augmentation; serving keeps the retriever order).",
        ),
    ] = _FT.shuffle,
    qlora: Annotated[
        bool, typer.Option(envvar="RECAGENT_FT_QLORA", help="4-bit base weights (bitsandbytes); CUDA only.")
    ] = False,
    resume: Annotated[
        bool, typer.Option(envvar="RECAGENT_FT_RESUME", help="Continue from the newest checkpoint in OUT.")
    ] = False,
    seed: Annotated[int, typer.Option(envvar="RECAGENT_SEED", help="Seed for sampling and initialisation.")] = 0,
) -> None:
    """Fine-tune the ranker with LoRA (verbalizer loss), then export adapter/ and merged/.

    The defaults are the recipe of the ranker shipped for ml-latest-small (finetune/adapters/ml-latest-small,
    ~72 min on 2 CPU cores). Then fit the fusion weight and compare on all users:
    python bench/finetune.py --run OUT
    """
    from pydantic import ValidationError

    from recagent.finetune.train import finetune

    try:
        cfg = FinetuneConfig(
        model=model, out=str(out), data=data, train_users=train_users or None, val_users=val_users, cuts_per_user=cuts,
        history_len=history_len, template=template, epochs=epochs, max_steps=max_steps, time_budget_min=time_budget_min or None, lr=lr,
        lora_r=lora_r, lora_alpha=lora_alpha, target_modules=[t.strip() for t in target_modules.split(",") if t.strip()],
        evidence=evidence, shuffle=shuffle, qlora=qlora, resume=resume, seed=seed,
    )  # fmt: skip
    except ValidationError as e:
        raise pydantic_error(e, {"cuts_per_user": "--cuts", "target_modules": "--target-modules"}) from None
    summary = finetune(cfg)
    console.print(
        f"[green]done[/green]: {summary['steps']} steps in {summary['train_seconds']} s; validation NDCG@10 "
        f"{summary['val_after']['eval_ndcg@10']:.4f}; adapter {summary['adapter']}, merged {summary['merged']}"
    )
