"""Agent commands: ``recommend``, ``chat``, ``batch``, ``demo``. Each checks its input (ids,
filters, lengths) against the data before the agent starts, so a typo costs no model loading."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.text import Text

from ..chat import ChatConfig
from ..errors import ConfigError
from . import checks
from .main import app
from .options import AgentOptions, RayCpusOpt, RayOpt, RayWorkersOpt, UserOpt, agent_options
from .render import console, out, print_error, print_recommendation

__all__ = ["recommend_cmd", "chat_cmd", "batch_cmd", "demo_cmd", "build_agent"]


def build_agent(cfg, dataset=None):
    """Start the agent (index, CF model, LLM engine) with a status line; ``dataset``: the one the
    command already loaded for its id checks (loaded once per run)."""
    from ..agent import RecAgent

    with console.status("starting the agent (index, CF model, LLM engine)…"):
        return RecAgent.from_config(cfg, dataset=dataset)


@app.command("recommend")
@agent_options()
def recommend_cmd(
    user: UserOpt = None,
    query: Annotated[
        str | None,
        typer.Option(
            "--query", envvar="RECAGENT_QUERY", help="What the user asks for, in words (cold start or a steer)."
        ),
    ] = None,
    filters: Annotated[
        str | None,
        typer.Option(
            "--filters", envvar="RECAGENT_FILTERS", help='JSON filter, e.g. \'{"exclude": {"genres": ["Horror"]}}\'.'
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", envvar="RECAGENT_JSON", help="Print the result as JSON.")] = False,
    opts: AgentOptions = None,  # type: ignore[assignment]  (filled by @agent_options)
) -> None:
    """Recommend items for one user: retrieve → LLM rank → diversify → explain."""
    if user is None and not (query or "").strip():
        raise ConfigError("pass --user ID, or --query TEXT for a new user", hint="e.g. recagent recommend --user 1")
    cfg = opts.config()
    flt = checks.parse_filters(filters)
    req = checks.recommend_request(user_id=user, query=query, filters=flt, k=cfg.k)
    ds = checks.load_data(cfg.data)
    checks.check_user(ds, user, new_ok=bool(req.query), alt=", or add --query TEXT for a new user")
    checks.check_filters(ds, flt)
    agent = build_agent(cfg, ds)
    try:
        rec = agent.recommend(req)
    finally:
        agent.close()
    if as_json:
        print(rec.model_dump_json(indent=2))
    else:
        print_recommendation(
            rec, f"recommendations for user {req.user_id}" if req.user_id else f"recommendations for “{req.query}”"
        )


@app.command("chat")
@agent_options(k_from=ChatConfig)
def chat_cmd(
    user: UserOpt = None,
    message: Annotated[
        str | None,
        typer.Option(
            "--message",
            "-m",
            envvar="RECAGENT_MESSAGE",
            help="Send this message (several turns: one per line) and exit, instead of the interactive prompt.",
        ),
    ] = None,
    opts: AgentOptions = None,  # type: ignore[assignment]
) -> None:
    """Chat with the agent in the terminal: ask in words, say "more", tell it what you liked."""
    from rich.markdown import Markdown
    from rich.prompt import Prompt

    from ..chat import ChatAgent

    cfg = opts.config()
    messages = checks.chat_turns(message)
    if message is not None and not messages:
        raise ConfigError("--message is empty", hint='write what you would like, e.g. -m "a funny 90s movie"')
    ds = checks.load_data(cfg.data)
    user = checks.check_user(ds, user)
    agent = build_agent(cfg, ds)
    chat = ChatAgent(agent, opts.chat_config())
    session = None
    try:
        if not messages:
            out.print("[bold]recagent chat[/bold] — ask for something to watch; empty line or Ctrl-D to quit.")
        while True:
            if messages:
                text = messages.pop(0)
                out.print(Text.assemble(("you> ", "bold cyan"), text))
            elif message:
                break
            else:
                try:
                    text = Prompt.ask("[bold cyan]you[/bold cyan]")
                except EOFError:
                    break
            if not text.strip():
                break
            try:
                checks.chat_turns(text)
            except ConfigError as e:  # a line too long: say so and keep the conversation going
                print_error(e.message.replace("--message line 1", "your message"), "write a shorter request")
                continue
            with console.status("thinking…"):
                reply = chat.respond(text, session_id=session, user_id=user)
            session = reply.session_id
            out.print(Markdown(reply.reply.replace("\n", "  \n")))
            out.print(
                Text(f"parsed by {reply.query.parse_path}; {reply.timings_ms.get('total', 0):.0f} ms", style="dim")
            )
    finally:
        agent.close()


@app.command("batch")
@agent_options()
def batch_cmd(
    input: Annotated[
        Path, typer.Argument(help='JSONL: one request per line: {"id", "user_id" or "message", "expected": [ids]}.')
    ],
    out_path: Annotated[
        Path | None,
        typer.Option(
            "--out",
            envvar="RECAGENT_BATCH_OUT",
            help="Output JSONL (append-only; default INPUT.out.jsonl). Rerun to resume.",
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", envvar="RECAGENT_BATCH_SIZE", help="Rows per engine batch.", min=1, max=512)
    ] = 16,
    llm_retries: Annotated[
        int,
        typer.Option(
            "--llm-retries",
            envvar="RECAGENT_LLM_RETRIES",
            min=0,
            max=10,
            help="Tries again of a batch the --llm-url server failed, then of each row alone; rows that "
            "still fail are written failed (retry: true) and a rerun does them again.",
        ),  # fmt: skip
    ] = 2,
    ray: RayOpt = None,
    ray_workers: RayWorkersOpt = 1,
    ray_cpus: RayCpusOpt = None,
    parquet: Annotated[
        Path | None,
        typer.Option(
            "--parquet", envvar="RECAGENT_BATCH_PARQUET", help="Also write the finished output as Parquet here."
        ),
    ] = None,
    opts: AgentOptions = None,  # type: ignore[assignment]
) -> None:
    """Run a file of requests through the pipeline in engine batches; writes outputs, per-row
    metrics (hit/NDCG when expected items are given) and a summary. Resumable. With --ray the
    batches run on a Ray actor pool (retrieval per actor, ranking on an engine per actor or on
    the --llm-url servers); this process alone writes the output, so the run stays resumable."""
    from ..batch import BatchConfig, pending_rows, read_rows, run_batch, strict_config, write_parquet

    cfg = strict_config(opts.config(several_llm_urls=ray is not None))
    ray_cfg = checks.ray_config(ray, ray_workers, ray_cpus, opts.llm_url)
    rows = read_rows(input)  # bad input fails before the engine starts
    target = out_path or input.with_suffix(".out.jsonl")
    bcfg = BatchConfig(out=target, batch_size=batch_size, k=cfg.k, llm_retries=llm_retries)
    if not pending_rows(rows, target):
        console.print(Text(f"nothing to do: all {len(rows)} rows of {input} are already in {target} "
                           "(move it away to run them again)"), soft_wrap=True)  # fmt: skip
    elif ray_cfg is not None:
        from ..distributed import run_batch_ray

        with console.status(f"running on Ray ({ray_cfg.workers} worker(s) at {ray_cfg.address})…"):
            summary = run_batch_ray(cfg, rows, bcfg, ray_cfg)
        out.print_json(summary.model_dump_json())
    else:
        agent = build_agent(cfg)
        try:
            summary = run_batch(agent, rows, bcfg)
        finally:
            agent.close()
        out.print_json(summary.model_dump_json())
    if parquet is not None:
        console.print(Text(f"parquet: {write_parquet(target, parquet, [r.id for r in rows])}"), soft_wrap=True)


@app.command("demo")
@agent_options(k_from=ChatConfig)
def demo_cmd(
    users: Annotated[
        str, typer.Option("--users", envvar="RECAGENT_DEMO_USERS", help="Comma-separated user ids to recommend for.")
    ] = "1,414",
    message: Annotated[
        str, typer.Option("--message", envvar="RECAGENT_DEMO_MESSAGE", help="The chat request of the demo.")
    ] = "something like Alien but funnier, from the 90s, no horror",
    opts: AgentOptions = None,  # type: ignore[assignment]
) -> None:
    """The whole agent on the embedded defaults: shipped data, bundled models, Chroma and vLLM
    in-process. Recommends with reasons for a couple of users, then answers one chat request.
    The first run builds the item index under the cache dir (a few minutes); later runs reuse it."""
    from ..agent import RecommendRequest
    from ..chat import ChatAgent

    cfg = opts.config()
    if len(checks.chat_turns(message)) != 1:
        raise ConfigError("--message must be one line of text", hint="e.g. --message 'a funny 90s movie'")
    text = message.strip()
    ds = checks.load_data(cfg.data)
    ids = checks.check_users(ds, users.split(","), flag="--users")
    t0 = time.perf_counter()
    console.print("[bold]recagent demo[/bold]: building the agent (first run embeds the catalog once; cached after)")
    agent = build_agent(cfg, ds)
    console.print(f"[green]agent ready[/green] in {time.perf_counter() - t0:.0f} s: {len(agent.catalog)} items, "
                  f"{len(agent.dataset.interactions.users)} users, LLM {escape(agent.llm.model_path.name) if agent.llm else 'off'}")  # fmt: skip
    try:
        recs = agent.recommend_many([RecommendRequest(user_id=u, k=cfg.k) for u in ids])
        for u, rec in zip(ids, recs, strict=True):
            hist = agent.dataset.interactions.history(u)[-3:]
            console.print(
                Text.assemble(
                    "\n", (f"user {u}", "bold"), " recently: ", "; ".join(agent.catalog.title(i) for i in hist)
                )
            )
            print_recommendation(rec, f"top {cfg.k} for user {u}")
        chat = ChatAgent(agent, opts.chat_config())
        console.print(Text.assemble("\n", ("chat> ", "bold cyan"), text))
        reply = chat.respond(text)
        out.print(Text(reply.reply))
        q = reply.query
        console.print(Text(f"structured query ({q.parse_path}): liked={q.liked_titles} include={q.include} "
                           f"exclude={q.exclude} years={q.year_min}-{q.year_max} mood={q.mood!r}", style="dim"))  # fmt: skip
    finally:
        agent.close()
    console.print(
        f"\n[green]demo done[/green] in {time.perf_counter() - t0:.0f} s. Next: `recagent serve` and open http://127.0.0.1:8000/"
    )
