"""The ``recagent`` command line. Every option also reads a ``RECAGENT_*`` environment variable.

    recagent demo                      # the whole agent on the shipped data and bundled model
    recagent recommend --user 1        # top 10 with reasons
    recagent chat                      # interactive
    recagent serve --port 8000         # HTTP API, OpenAI-compatible endpoint, chat page at /
    recagent batch requests.jsonl      # prompt sets in vLLM batches, resumable
    recagent eval --systems popularity,ease,sasrec
    recagent data-info --data path/to/folder
"""

from __future__ import annotations

import logging
import os
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
    from recagent.eval.systems import build_systems

    from .data import load_dataset

    options = _parse_sets(set_ or [])
    names = [s.strip() for s in systems.split(",") if s.strip()]
    unknown_opts = set(options) - set(names)
    if unknown_opts:
        raise ConfigError(f"--set names systems not being evaluated: {sorted(unknown_opts)}", hint=f"evaluated: {names}")
    split = llamarec_split(load_dataset(data))
    from recagent.eval.systems import LLMOptions

    built = build_systems(names, split=split, seed=seed, llm=LLMOptions(adapter=str(adapter) if adapter else None), options=options)
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
    _print_report(report)
    console.print(f"[green]run folder:[/green] {out} (results.md, results.json, per_user.csv, significance.md, PNG plots)")


def _print_report(report) -> None:
    from rich.table import Table

    from recagent.eval.harness import HEADLINE

    t = Table(title=f"stage {report.stage}, {len(report.users)} users, full ranking")
    t.add_column("system")
    for m in (*HEADLINE, "Coverage@10", "PopBias@10"):
        t.add_column(m, justify="right")
    best = report.best("NDCG@10").name
    for r in report.results:
        vals = [f"{r.means[m]:.4f}" for m in HEADLINE] + [f"{r.beyond.get(b, float('nan')):.3f}" for b in ("Coverage@10", "PopBias@10")]
        t.add_row(f"[bold]{r.name}[/bold]" if r.name == best else r.name, *vals)
    Console().print(t)


# ------------------------------------------------------------------------------------------
# the agent: shared options


ModelOpt = Annotated[
    str | None,
    typer.Option("--model", envvar="RECAGENT_MODEL", help="Local HF model folder for the LLM (default: the bundled SmolLM2-135M-Instruct)."),
]
LLMUrlOpt = Annotated[
    str | None,
    typer.Option("--llm-url", envvar="RECAGENT_LLM_URL", help="Use a running `vllm serve` at this URL instead of the in-process engine."),
]
ChromaPathOpt = Annotated[
    str | None,
    typer.Option("--chroma-path", envvar="RECAGENT_CHROMA_PATH", help="Embedded Chroma folder (default: <cache dir>/chroma)."),
]
ChromaHostOpt = Annotated[
    str | None,
    typer.Option("--chroma-host", envvar="RECAGENT_CHROMA_HOST", help="Chroma server host (`chroma run`); unset = embedded."),
]
ChromaPortOpt = Annotated[int, typer.Option("--chroma-port", envvar="RECAGENT_CHROMA_PORT", help="Chroma server port.")]
KOpt = Annotated[int, typer.Option("--k", envvar="RECAGENT_K", help="Items per answer.", min=1, max=100)]
CandOpt = Annotated[
    int, typer.Option("--candidates", envvar="RECAGENT_CANDIDATES", help="Candidates retrieved and LLM-ranked.", min=1, max=200)
]
LambdaOpt = Annotated[
    float,
    typer.Option("--mmr-lambda", envvar="RECAGENT_MMR_LAMBDA", help="Diversity: 1 = ranker order, lower = more variety.", min=0.0, max=1.0),
]
ExplainOpt = Annotated[
    bool, typer.Option("--explain/--no-explain", envvar="RECAGENT_EXPLAIN", help="LLM-written reasons (templated otherwise).")
]
RankOpt = Annotated[
    bool, typer.Option("--llm-rank/--no-llm-rank", envvar="RECAGENT_LLM_RANK", help="LLM re-ranking (retriever order otherwise).")
]
CFOpt = Annotated[
    str, typer.Option("--cf-model", envvar="RECAGENT_CF_MODEL", help="CF model for the retriever's cf source: als, bpr or none.")
]
TemplatesOpt = Annotated[
    str | None, typer.Option("--templates", envvar="RECAGENT_TEMPLATES", help="Folder of .jinja prompt templates overriding the shipped ones.")
]


def _agent_config(
    data: str, model: str | None, llm_url: str | None, chroma_path: str | None, chroma_host: str | None, chroma_port: int,
    k: int, candidates: int, mmr_lambda: float, explain: bool, llm_rank: bool, cf_model: str, templates: str | None,
):  # fmt: skip
    """One place that turns flags into the typed config (nothing is parsed at import)."""
    from pydantic import ValidationError

    from .agent import AgentConfig
    from .llm import LLMConfig

    try:
        llm = LLMConfig(backend="openai", base_url=llm_url, model=model, tokenizer=model) if llm_url else LLMConfig(model=model)
        return AgentConfig(
            data=data, chroma_path=chroma_path, chroma_host=chroma_host, chroma_port=chroma_port, llm=llm, k=k,
            n_candidates=max(candidates, k), mmr_lambda=mmr_lambda, explain=explain, llm_rank=llm_rank,
            cf_model=cf_model, template_dir=templates,
        )  # fmt: skip
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"invalid option {'.'.join(map(str, err['loc']))}: {err['msg']}") from None


def _build(cfg):
    from .agent import RecAgent

    with console.status("starting the agent (index, CF model, LLM engine)…"):
        return RecAgent.from_config(cfg)


def _print_recommendation(rec, title: str) -> None:
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    t.add_column("#", justify="right")
    t.add_column("item")
    t.add_column("why")
    t.add_column("sources", style="dim")
    for n, it in enumerate(rec.items, start=1):
        why = (it.reason or "") + (" [dim](template)[/dim]" if it.reason_source == "template" else "")
        t.add_row(str(n), f"{it.title} [dim]({it.item_id})[/dim]", why, ", ".join(it.sources))
    Console().print(t)
    if rec.message:
        console.print(f"[yellow]{rec.message}[/yellow]")
    for stage, why in rec.fallback.items():
        console.print(f"[dim]fallback {stage}: {why}[/dim]")
    console.print(f"[dim]timings (ms): {', '.join(f'{k} {v:.0f}' for k, v in rec.timings_ms.items() if '.' not in k)}[/dim]")


def _parse_filters(filters: str | None) -> dict | None:
    if not filters:
        return None
    import json

    try:
        f = json.loads(filters)
    except json.JSONDecodeError as e:
        raise ConfigError(
            f"--filters is not valid JSON ({e.msg})",
            hint='e.g. --filters \'{"exclude": {"genres": ["Horror"]}, "ranges": {"year": [1990, 1999]}}\'',
        ) from None
    if not isinstance(f, dict):
        raise ConfigError("--filters must be a JSON object", hint='e.g. {"include": {"genres": ["Comedy"]}}')
    return f


@app.command("recommend")
def recommend_cmd(
    user: Annotated[str | None, typer.Option("--user", envvar="RECAGENT_USER", help="User id from the data (omit for a new user with --query).")] = None,
    query: Annotated[str | None, typer.Option("--query", envvar="RECAGENT_QUERY", help="What the user asks for, in words (cold start or a steer).")] = None,
    filters: Annotated[str | None, typer.Option("--filters", envvar="RECAGENT_FILTERS", help='JSON filter, e.g. \'{"exclude": {"genres": ["Horror"]}}\'.')] = None,
    as_json: Annotated[bool, typer.Option("--json", envvar="RECAGENT_JSON", help="Print the result as JSON.")] = False,
    data: DataOpt = "ml-latest-small",
    model: ModelOpt = None,
    llm_url: LLMUrlOpt = None,
    chroma_path: ChromaPathOpt = None,
    chroma_host: ChromaHostOpt = None,
    chroma_port: ChromaPortOpt = 8000,
    k: KOpt = 10,
    candidates: CandOpt = 20,
    mmr_lambda: LambdaOpt = 0.7,
    explain: ExplainOpt = True,
    llm_rank: RankOpt = True,
    cf_model: CFOpt = "als",
    templates: TemplatesOpt = None,
) -> None:
    """Recommend items for one user: retrieve → LLM rank → diversify → explain."""
    from .agent import RecommendRequest

    if user is None and not query:
        raise ConfigError("pass --user ID, or --query TEXT for a new user", hint="e.g. recagent recommend --user 1")
    cfg = _agent_config(data, model, llm_url, chroma_path, chroma_host, chroma_port, k, candidates, mmr_lambda, explain, llm_rank, cf_model, templates)
    req = RecommendRequest(user_id=user, query=query, filters=_parse_filters(filters), k=k)
    pipe = _build(cfg)
    try:
        rec = pipe.recommend(req)
    finally:
        pipe.close()
    if as_json:
        print(rec.model_dump_json(indent=2))
    else:
        _print_recommendation(rec, f"recommendations for user {user}" if user else f"recommendations for “{query}”")


@app.command("chat")
def chat_cmd(
    user: Annotated[str | None, typer.Option("--user", envvar="RECAGENT_USER", help="Chat as this known user (adds their history).")] = None,
    message: Annotated[str | None, typer.Option("--message", "-m", envvar="RECAGENT_MESSAGE", help="Send this message (several turns: one per line) and exit, instead of the interactive prompt.")] = None,
    data: DataOpt = "ml-latest-small",
    model: ModelOpt = None,
    llm_url: LLMUrlOpt = None,
    chroma_path: ChromaPathOpt = None,
    chroma_host: ChromaHostOpt = None,
    chroma_port: ChromaPortOpt = 8000,
    k: KOpt = 5,
    candidates: CandOpt = 20,
    mmr_lambda: LambdaOpt = 0.7,
    explain: ExplainOpt = True,
    llm_rank: RankOpt = True,
    cf_model: CFOpt = "als",
    templates: TemplatesOpt = None,
) -> None:
    """Chat with the agent in the terminal: ask in words, say "more", tell it what you liked."""
    from rich.markdown import Markdown
    from rich.prompt import Prompt

    from .chat import ChatAgent, ChatConfig

    cfg = _agent_config(data, model, llm_url, chroma_path, chroma_host, chroma_port, k, candidates, mmr_lambda, explain, llm_rank, cf_model, templates)
    pipe = _build(cfg)
    agent = ChatAgent(pipe, ChatConfig(k=k))
    out = Console()
    session = None
    try:
        messages = [m for m in (message or "").splitlines() if m.strip()]
        if not messages:
            out.print("[bold]recagent chat[/bold] — ask for something to watch; empty line or Ctrl-D to quit.")
        while True:
            if messages:
                text = messages.pop(0)
                out.print(f"[bold cyan]you>[/bold cyan] {text}")
            elif message:
                break
            else:
                try:
                    text = Prompt.ask("[bold cyan]you[/bold cyan]")
                except EOFError:
                    break
            if not text.strip():
                break
            with console.status("thinking…"):
                reply = agent.respond(text, session_id=session, user_id=user)
            session = reply.session_id
            out.print(Markdown(reply.reply.replace("\n", "  \n")))
            out.print(f"[dim]parsed by {reply.query.parse_path}; {reply.timings_ms.get('total', 0):.0f} ms[/dim]")
    finally:
        pipe.close()


@app.command("serve")
def serve_cmd(
    host: Annotated[str, typer.Option("--host", envvar="RECAGENT_HOST", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", envvar="RECAGENT_PORT", help="TCP port.")] = 8000,
    model_name: Annotated[str, typer.Option("--model-name", envvar="RECAGENT_MODEL_NAME", help="Model id of the OpenAI-compatible endpoint.")] = "recagent",
    max_batch: Annotated[int, typer.Option("--max-batch", envvar="RECAGENT_MAX_BATCH", help="Requests batched into one engine call.")] = 8,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", envvar="RECAGENT_MAX_WAIT_MS", help="Wait for more requests to batch (ms).")] = 10.0,
    request_timeout: Annotated[float, typer.Option("--request-timeout", envvar="RECAGENT_REQUEST_TIMEOUT", help="Seconds before a request gets 504.")] = 300.0,
    data: DataOpt = "ml-latest-small",
    model: ModelOpt = None,
    llm_url: LLMUrlOpt = None,
    chroma_path: ChromaPathOpt = None,
    chroma_host: ChromaHostOpt = None,
    chroma_port: ChromaPortOpt = 8000,
    k: KOpt = 10,
    candidates: CandOpt = 20,
    mmr_lambda: LambdaOpt = 0.7,
    explain: ExplainOpt = True,
    llm_rank: RankOpt = True,
    cf_model: CFOpt = "als",
    templates: TemplatesOpt = None,
) -> None:
    """Serve /recommend, /chat, the OpenAI-compatible /v1/chat/completions, /health, /metrics and a chat page at /."""
    from pydantic import ValidationError

    from .server import ServerConfig, serve

    try:
        scfg = ServerConfig(host=host, port=port, model_name=model_name, max_batch=max_batch, max_wait_ms=max_wait_ms,
                            request_timeout_s=request_timeout)  # fmt: skip
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"invalid option {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    cfg = _agent_config(data, model, llm_url, chroma_path, chroma_host, chroma_port, k, candidates, mmr_lambda, explain, llm_rank, cf_model, templates)
    pipe = _build(cfg)
    console.print(f"[green]recagent[/green] on http://{host}:{port}  (chat page at /, API docs at /docs)")
    try:
        serve(pipe, scfg)
    finally:
        pipe.close()


@app.command("batch")
def batch_cmd(
    input: Annotated[Path, typer.Argument(help="JSONL: one request per line: {\"id\", \"user_id\" or \"message\", \"expected\": [ids]}.")],
    out: Annotated[Path | None, typer.Option("--out", envvar="RECAGENT_BATCH_OUT", help="Output JSONL (append-only; default INPUT.out.jsonl). Rerun to resume.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", envvar="RECAGENT_BATCH_SIZE", help="Rows per engine batch.", min=1, max=512)] = 16,
    data: DataOpt = "ml-latest-small",
    model: ModelOpt = None,
    llm_url: LLMUrlOpt = None,
    chroma_path: ChromaPathOpt = None,
    chroma_host: ChromaHostOpt = None,
    chroma_port: ChromaPortOpt = 8000,
    k: KOpt = 10,
    candidates: CandOpt = 20,
    mmr_lambda: LambdaOpt = 0.7,
    explain: ExplainOpt = True,
    llm_rank: RankOpt = True,
    cf_model: CFOpt = "als",
    templates: TemplatesOpt = None,
) -> None:
    """Run a file of requests through the pipeline in engine batches; writes outputs, per-row
    metrics (hit/NDCG when expected items are given) and a summary. Resumable."""
    from .batch import BatchConfig, read_rows, run_batch

    rows = read_rows(input)  # bad input fails before the engine starts
    cfg = _agent_config(data, model, llm_url, chroma_path, chroma_host, chroma_port, k, candidates, mmr_lambda, explain, llm_rank, cf_model, templates)
    pipe = _build(cfg)
    try:
        summary = run_batch(pipe, rows, BatchConfig(out=out or input.with_suffix(".out.jsonl"), batch_size=batch_size, k=k))
    finally:
        pipe.close()
    Console().print_json(summary.model_dump_json())


@app.command("demo")
def demo_cmd(
    users: Annotated[str, typer.Option("--users", envvar="RECAGENT_DEMO_USERS", help="Comma-separated user ids to recommend for.")] = "1,414",
    message: Annotated[str, typer.Option("--message", envvar="RECAGENT_DEMO_MESSAGE", help="The chat request of the demo.")] = "something like Alien but funnier, from the 90s, no horror",
    data: DataOpt = "ml-latest-small",
    model: ModelOpt = None,
    llm_url: LLMUrlOpt = None,
    chroma_path: ChromaPathOpt = None,
    chroma_host: ChromaHostOpt = None,
    chroma_port: ChromaPortOpt = 8000,
    k: KOpt = 5,
    candidates: CandOpt = 20,
    mmr_lambda: LambdaOpt = 0.7,
    explain: ExplainOpt = True,
    llm_rank: RankOpt = True,
    cf_model: CFOpt = "als",
    templates: TemplatesOpt = None,
) -> None:
    """The whole agent on the embedded defaults: shipped data, bundled models, Chroma and vLLM
    in-process. Recommends with reasons for a couple of users, then answers one chat request.
    The first run builds the item index under the cache dir (a few minutes); later runs reuse it."""
    from .chat import ChatAgent, ChatConfig

    cfg = _agent_config(data, model, llm_url, chroma_path, chroma_host, chroma_port, k, candidates, mmr_lambda, explain, llm_rank, cf_model, templates)
    t0 = time.perf_counter()
    console.print("[bold]recagent demo[/bold]: building the agent (first run embeds the catalog once; cached after)")
    pipe = _build(cfg)
    console.print(f"[green]agent ready[/green] in {time.perf_counter() - t0:.0f} s: {len(pipe.catalog)} items, "
                  f"{len(pipe.dataset.interactions.users)} users, LLM {pipe.llm.model_path.name if pipe.llm else 'off'}")  # fmt: skip
    try:
        from .agent import RecommendRequest

        ids = [u.strip() for u in users.split(",") if u.strip()]
        recs = pipe.recommend_many([RecommendRequest(user_id=u, k=k) for u in ids])
        for u, rec in zip(ids, recs, strict=True):
            hist = pipe.dataset.interactions.history(u)[-3:]
            console.print(f"\n[bold]user {u}[/bold] recently: " + "; ".join(pipe.catalog.title(i) for i in hist))
            _print_recommendation(rec, f"top {k} for user {u}")
        agent = ChatAgent(pipe, ChatConfig(k=k))
        console.print(f"\n[bold cyan]chat>[/bold cyan] {message}")
        reply = agent.respond(message)
        Console().print(reply.reply)
        q = reply.query
        console.print(f"[dim]structured query ({q.parse_path}): liked={q.liked_titles} include={q.include} "
                      f"exclude={q.exclude} years={q.year_min}-{q.year_max} mood={q.mood!r}[/dim]")  # fmt: skip
    finally:
        pipe.close()
    console.print(f"\n[green]demo done[/green] in {time.perf_counter() - t0:.0f} s. Next: `recagent serve` and open http://127.0.0.1:8000/")


@app.command("finetune")
def finetune_cmd(
    out: Annotated[Path, typer.Option(envvar="RECAGENT_FT_OUT", help="Run folder: checkpoints/, adapter/, merged/, curves.png.")] = Path("runs/finetune"),
    data: DataOpt = "ml-latest-small",
    model: Annotated[str | None, typer.Option(envvar="RECAGENT_MODEL", help="Base HF model folder (default: bundled SmolLM2-135M-Instruct).")] = None,
    train_users: Annotated[int | None, typer.Option(envvar="RECAGENT_FT_TRAIN_USERS", help="Users to train on (default 200; 0 = all not held out).")] = 200,
    val_users: Annotated[int, typer.Option(envvar="RECAGENT_FT_VAL_USERS", help="Users held out to measure validation NDCG@10.")] = 48,
    cuts: Annotated[int, typer.Option(envvar="RECAGENT_FT_CUTS", help="Training targets per user (its last N training items).")] = 1,
    epochs: Annotated[float, typer.Option(envvar="RECAGENT_FT_EPOCHS")] = 1.0,
    max_steps: Annotated[int, typer.Option(envvar="RECAGENT_FT_MAX_STEPS", help="> 0 overrides --epochs.")] = -1,
    lr: Annotated[float, typer.Option(envvar="RECAGENT_FT_LR")] = 1e-4,
    lora_r: Annotated[int, typer.Option(envvar="RECAGENT_FT_LORA_R")] = 8,
    lora_alpha: Annotated[int, typer.Option(envvar="RECAGENT_FT_LORA_ALPHA")] = 32,
    target_modules: Annotated[str, typer.Option(envvar="RECAGENT_FT_TARGETS", help="Comma-separated module names.")] = "q_proj,v_proj",
    qlora: Annotated[bool, typer.Option(envvar="RECAGENT_FT_QLORA", help="4-bit base weights (bitsandbytes); CUDA only.")] = False,
    resume: Annotated[bool, typer.Option(envvar="RECAGENT_FT_RESUME", help="Continue from the newest checkpoint in OUT.")] = False,
    seed: Annotated[int, typer.Option(envvar="RECAGENT_SEED")] = 0,
) -> None:
    """Fine-tune the ranker with LoRA (verbalizer loss), then export adapter/ and merged/.

    Then evaluate: recagent eval --systems retriever,llm --adapter OUT/merged
    """
    from recagent.finetune.train import FinetuneConfig, finetune

    cfg = FinetuneConfig(
        model=model, out=str(out), data=data, train_users=train_users or None, val_users=val_users, cuts_per_user=cuts,
        epochs=epochs, max_steps=max_steps, lr=lr, lora_r=lora_r, lora_alpha=lora_alpha,
        target_modules=[t.strip() for t in target_modules.split(",") if t.strip()],
        qlora=qlora, resume=resume, seed=seed,
    )  # fmt: skip
    summary = finetune(cfg)
    console.print(
        f"[green]done[/green]: {summary['steps']} steps in {summary['train_seconds']} s; validation NDCG@10 "
        f"{summary['val_after']['eval_ndcg@10']:.4f}; adapter {summary['adapter']}, merged {summary['merged']}"
    )



def main() -> None:
    """Entry point: bad input prints what was wrong and what to pass, never a traceback."""
    # Set before torch loads OpenMP. With other jobs on the CPU, spinning OpenMP threads made
    # vLLM's decode ~9x slower (0.8 vs 7.8 tokens/s measured with one competing process).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # vLLM logs to stdout; keep it for results
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
