"""The agent and server options, declared once. Defaults come from the config classes
(:class:`~recagent.agent.AgentConfig`, :class:`~recagent.chat.ChatConfig`,
:class:`~recagent.server.ServerConfig`); every option reads its ``RECAGENT_*`` variable.

A command takes them as one parameter::

    @app.command("recommend")
    @agent_options()                       # k defaults to AgentConfig.k
    def recommend_cmd(user: ..., opts: AgentOptions) -> None:
        cfg = opts.config()
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any

import typer
from typer._click.globals import get_current_context  # typer 0.29 carries its own click (typer is pinned)

from ..agent import AgentConfig
from ..chat import ChatConfig
from ..errors import ConfigError
from ..server.config import ServerConfig

__all__ = [
    "AgentOptions",
    "ServerOptions",
    "agent_options",
    "server_options",
    "chat_config",
    "DataOpt",
    "ModelOpt",
    "UserOpt",
    "LLMUrlOpt",
    "LLMModelOpt",
    "AdapterOpt",
    "RayOpt",
    "RayWorkersOpt",
    "RayCpusOpt",
    "pydantic_error",
    "ConfigOpt",
]

_A = AgentConfig.model_fields
_S = ServerConfig.model_fields
SERVE_SESSION_FILE = "chat-sessions.db"  # `recagent serve` keeps chat sessions here unless told otherwise
SESSION_STORE_DEFAULT = getattr(ChatConfig.model_fields.get("session_store"), "default", "memory")


def _default(model_fields: dict, name: str) -> Any:
    return model_fields[name].get_default(call_default_factory=True)


DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        envvar="RECAGENT_DATA",
        help="Data set: 'ml-latest-small' (shipped), a MovieLens folder/zip (100k, 1m, 20m, 32m, latest), "
        "or a folder with interactions.* + catalog.* (+ users.*) in CSV/JSONL/Parquet.",
    ),
]


UserOpt = Annotated[
    str | None,
    typer.Option(
        "--user",
        envvar="RECAGENT_USER",
        help="A user id of the data set (recommend: omit for a new user with --query; chat: adds their history; "
        "forget: the id to forget, as in /chat user_id or the OpenAI 'user' field).",
    ),
]
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        envvar="RECAGENT_MODEL",
        help="Local HF model folder for the LLM (default: the bundled SmolLM2-135M-Instruct); with --llm-url, "
        "the served model's folder (its tokenizer encodes the prompts).",
    ),
]
LLMUrlOpt = Annotated[
    list[str],
    typer.Option(
        "--llm-url",
        envvar="RECAGENT_LLM_URL",
        help="Use a running `vllm serve` at this URL instead of the in-process engine (batch --ray: repeat to "
        "balance over several).",
    ),
]
LLMModelOpt = Annotated[
    str | None,
    typer.Option(
        "--llm-model",
        envvar="RECAGENT_LLM_MODEL",
        help="Model name on the --llm-url server (default: the first base model in its /v1/models).",
    ),
]
AdapterOpt = Annotated[
    str,
    typer.Option(
        "--adapter",
        envvar="RECAGENT_ADAPTER",
        help="Ranker: 'auto' = the ranker card shipped for the data set (finetune/adapters/<data>: fine-tuned LoRA, "
        "fusion weight, or the retriever order when no LLM ranker beat it on validation), 'none' = the base model "
        "zero-shot, a ranker card folder, a PEFT LoRA folder or a merged model folder; with --llm-url, a served "
        "adapter name.",
    ),
]
ConfigOpt = Annotated[
    str | None,
    typer.Option(
        "--config",
        envvar="RECAGENT_CONFIG",
        help="A TOML/YAML/JSON file with sections [agent], [chat], [server] (every key of AgentConfig, ChatConfig, "
        "ServerConfig; see `recagent config show`). Flags and RECAGENT_* variables override it.",
    ),
]
RayOpt = Annotated[
    str | None,
    typer.Option(
        "--ray",
        envvar="RECAGENT_RAY",
        help="Run on Ray: alone (or 'local') starts a local Ray; or a cluster address, e.g. 10.0.0.5:6379, ray://HOST:10001, auto.",
    ),
]
RayWorkersOpt = Annotated[
    int,
    typer.Option(
        "--ray-workers", envvar="RECAGENT_RAY_WORKERS", help="Ray actors, each with its own agent.", min=1, max=1024
    ),
]
RayCpusOpt = Annotated[
    int | None,
    typer.Option("--ray-cpus", envvar="RECAGENT_RAY_CPUS", help="CPUs of a local Ray (default: all).", min=1),
]


def _invalid_flag(flag: str, msg: str, param: str | None) -> ConfigError:
    return ConfigError(f"invalid {flag}: {msg}", hint=f"see --help for what {flag} takes", param=param)


def pydantic_error(e: Any, names: dict[str, str] | None = None) -> ConfigError:
    """A pydantic ValidationError as a one-line ConfigError naming the option (``names``: field → flag)."""
    err = e.errors()[0]
    loc = ".".join(str(x) for x in err.get("loc", ()))
    flag = (names or {}).get(str(err["loc"][0]) if err.get("loc") else "", f"--{loc.replace('_', '-')}")
    return _invalid_flag(flag, err["msg"], loc or None)


# option → AgentConfig field; a flag or RECAGENT_* variable given wins over the config file
_AGENT_FIELDS = {"data": "data", "chroma_path": "chroma_path", "chroma_host": "chroma_host", "chroma_port": "chroma_port",
                 "k": "k", "candidates": "n_candidates", "mmr_lambda": "mmr_lambda", "explain": "explain",
                 "llm_rank": "llm_rank", "cf_model": "cf_model", "templates": "template_dir", "adapter": "adapter"}  # fmt: skip
_SERVER_FIELDS = {"host": "host", "port": "port", "model_name": "model_name", "max_batch": "max_batch",
                  "max_wait_ms": "max_wait_ms", "request_timeout": "request_timeout_s", "max_body_bytes": "max_body_bytes",
                  "allow_unauthenticated": "allow_unauthenticated", "rate_limit": "rate_limit_per_min",
                  "rate_burst": "rate_burst", "max_concurrent": "max_concurrent_per_client",
                  "log_messages": "log_messages"}  # fmt: skip


def _over(opts: Any, fields: dict[str, str], sect: dict[str, Any]) -> dict[str, Any]:
    """Option values for the config: those given, and defaults where the file is silent."""
    return {f: getattr(opts, o) for o, f in fields.items() if o in opts.given or f not in sect}


def _flags(fields: dict[str, str], given: frozenset[str]) -> dict[str, str]:
    """Config field → the flag that set it, for the options given."""
    return {f: "--" + o.replace("_", "-") for o, f in fields.items() if o in given}


def _flag_error(e: Any, flags: dict[str, str], section: str, source: str, *, alone: bool = False) -> ConfigError:
    """A validation error named by the flag that caused it, or by the file key (``alone``: the
    section was validated by itself, so its locations lack the section name)."""
    from .settings import settings_error

    err = e.errors()[0]
    loc = (section, *err.get("loc", ())) if alone else tuple(err.get("loc", ()))
    if len(loc) > 1 and loc[0] == section and str(loc[1]) in flags:
        return _invalid_flag(flags[str(loc[1])], err["msg"], str(loc[1]))
    return settings_error(e, source, section if alone else None)


class _FromFile:
    """What both option sets read from ``--config``: the file, read once per command."""

    config_file: str | None

    @functools.cached_property
    def raw(self) -> dict[str, Any]:
        """The file's sections ({} without ``--config``); cached_property writes past the frozen dataclass."""
        from .settings import read_config_file

        return read_config_file(self.config_file)

    def section(self, name: str, within: dict[str, Any] | None = None) -> dict[str, Any]:
        """A copy of section ``name`` of the file (or of ``within``); {} when absent or not a table."""
        sect = (self.raw if within is None else within).get(name, {})
        return dict(sect) if isinstance(sect, dict) else {}

    @property
    def source(self) -> str:
        return self.config_file or "config"


@dataclass(frozen=True)
class AgentOptions(_FromFile):
    """The agent options of recommend, chat, serve, batch and demo (and ``--config``)."""

    data: str
    model: str | None
    llm_url: list[str]
    chroma_path: str | None
    chroma_host: str | None
    chroma_port: int
    k: int
    candidates: int
    mmr_lambda: float
    explain: bool
    llm_rank: bool
    cf_model: str
    templates: str | None
    adapter: str
    config_file: str | None = None
    given: frozenset[str] = frozenset()
    """Options set on the command line or by a RECAGENT_* variable (they win over the file)."""

    def settings(self, *, several_llm_urls: bool = False) -> Any:
        """The whole typed config (:class:`~recagent.cli.settings.Settings`): defaults, then the
        ``--config`` file, then the options given; nothing is parsed at import."""
        from pydantic import ValidationError

        from .settings import Settings, check_paths, merge

        if not several_llm_urls:
            one_llm_url(self.llm_url)
        agent = self.section("agent")
        over = _over(self, _AGENT_FIELDS, agent)
        if self.llm_url:
            over["llm"] = {
                "backend": "openai",
                "base_url": self.llm_url[0],
                "model": self.model,
                "tokenizer": self.model,
            }
        elif "model" in self.given or "model" not in self.section("llm", agent):
            over["llm"] = {"model": self.model}
        merged = merge(self.raw, {"agent": over})
        a = merged["agent"]
        if isinstance(a.get("k"), int) and isinstance(a.get("n_candidates"), int):
            a["n_candidates"] = max(a["n_candidates"], a["k"])  # never fewer candidates than answers
        flags = _flags(_AGENT_FIELDS, self.given)
        if {"model", "llm_url"} & self.given:
            flags["llm"] = "--model"
        try:
            settings = Settings.model_validate(merged)
        except ValidationError as e:
            raise _flag_error(e, flags, "agent", self.source) from None
        paths = {f"agent.{f}": flag for f, flag in flags.items()}
        if "model" in self.given:
            paths["agent.llm.model"] = paths["agent.llm.tokenizer"] = "--model"
        check_paths(settings.agent, self.source, paths)
        return settings

    def config(self, *, several_llm_urls: bool = False) -> AgentConfig:
        """The typed agent config; with several ``--llm-url`` (only ``batch --ray`` balances
        them) it names the first."""
        return self.settings(several_llm_urls=several_llm_urls).agent

    def chat_config(self, session_store: str | None = None, *, k_from_flag: bool = True) -> ChatConfig:
        """The chat section; ``--k`` sets the picks per answer when ``k_from_flag`` (the chat
        command; ``serve`` keeps ``--k`` for /recommend)."""
        chat = self.section("chat")
        if k_from_flag and ("k" in self.given or "k" not in chat):
            chat["k"] = self.k
        if session_store is not None:
            chat["session_store"] = session_store
        return chat_config(chat, source=self.source)


def one_llm_url(urls: list[str]) -> str | None:
    """The one ``--llm-url`` a command other than ``batch --ray`` takes (None: the in-process engine)."""
    if len(urls) > 1:
        raise ConfigError("several --llm-url given; only `recagent batch --ray` spreads work over several servers",
                          hint="pass one --llm-url")  # fmt: skip
    return urls[0] if urls else None


def _agent_params(k_default: int) -> list[inspect.Parameter]:
    opt = typer.Option
    spec: list[tuple[str, Any, Any]] = [
        ("data", DataOpt, _default(_A, "data")),
        ("model", ModelOpt, None),
        ("llm_url", LLMUrlOpt, []),
        ("chroma_path", Annotated[str | None, opt("--chroma-path", envvar="RECAGENT_CHROMA_PATH", help="Embedded Chroma folder (default: <cache dir>/chroma).")], _default(_A, "chroma_path")),
        ("chroma_host", Annotated[str | None, opt("--chroma-host", envvar="RECAGENT_CHROMA_HOST", help="Chroma server host (`chroma run`); unset = embedded.")], _default(_A, "chroma_host")),
        ("chroma_port", Annotated[int, opt("--chroma-port", envvar="RECAGENT_CHROMA_PORT", help="Chroma server port.")], _default(_A, "chroma_port")),
        ("k", Annotated[int, opt("--k", envvar="RECAGENT_K", help="Items per answer.", min=1, max=100)], k_default),
        ("candidates", Annotated[int, opt("--candidates", envvar="RECAGENT_CANDIDATES", help="Candidates retrieved and LLM-ranked.", min=1, max=200)], _default(_A, "n_candidates")),
        ("mmr_lambda", Annotated[float, opt("--mmr-lambda", envvar="RECAGENT_MMR_LAMBDA", help="Diversity: 1 = ranker order, lower = more variety.", min=0.0, max=1.0)], _default(_A, "mmr_lambda")),
        ("explain", Annotated[bool, opt("--explain/--no-explain", envvar="RECAGENT_EXPLAIN", help="Let the LLM choose what each reason cites (slower; templated choice otherwise, equally grounded).")], _default(_A, "explain")),
        ("llm_rank", Annotated[bool, opt("--llm-rank/--no-llm-rank", envvar="RECAGENT_LLM_RANK", help="LLM re-ranking (retriever order otherwise).")], _default(_A, "llm_rank")),
        ("cf_model", Annotated[str, opt("--cf-model", envvar="RECAGENT_CF_MODEL", help="CF model for the retriever's cf source: als, bpr or none.")], _default(_A, "cf_model")),
        ("templates", Annotated[str | None, opt("--templates", envvar="RECAGENT_TEMPLATES", help="Folder of .jinja prompt templates overriding the shipped ones.")], _default(_A, "template_dir")),
        ("adapter", AdapterOpt, _default(_A, "adapter")),
        ("config_file", ConfigOpt, None),
    ]  # fmt: skip
    assert [n for n, _, _ in spec] == [f.name for f in fields(AgentOptions) if f.name != "given"]
    return [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a, default=d) for n, a, d in spec]


@dataclass(frozen=True)
class ServerOptions(_FromFile):
    """The HTTP options of ``recagent serve`` (the ``[server]`` section of ``--config`` under them)."""

    host: str
    port: int
    model_name: str
    max_batch: int
    max_wait_ms: float
    request_timeout: float
    max_body_bytes: int
    api_key: list[str]
    api_key_file: list[str]
    allow_unauthenticated: bool
    rate_limit: float
    rate_burst: int
    max_concurrent: int
    cors_origin: list[str]
    log_messages: bool
    session_store: str | None
    config_file: str | None = None
    given: frozenset[str] = frozenset()

    def session_store_spec(self) -> str:
        """``--session-store``, else the file's ``chat.session_store``, else the shared SQLite file under the cache dir."""
        if self.session_store is not None:
            return self.session_store
        chat = self.section("chat")
        if isinstance(chat.get("session_store"), str):
            return chat["session_store"]
        from ..models import cache_dir

        return str(cache_dir() / SERVE_SESSION_FILE)

    def config(self) -> ServerConfig:
        from pydantic import ValidationError

        from ..server.access import load_api_keys

        sect = self.section("server")
        over = _over(self, _SERVER_FIELDS, sect)
        if {"api_key", "api_key_file"} & self.given or "api_keys" not in sect:
            over["api_keys"] = load_api_keys(self.api_key, self.api_key_file)
        if "cors_origin" in self.given or "cors_origins" not in sect:
            over["cors_origins"] = [o.strip() for v in self.cors_origin for o in v.split(",") if o.strip()]
        flags = _flags(_SERVER_FIELDS | {"api_key": "api_keys", "cors_origin": "cors_origins"}, self.given)
        try:
            return ServerConfig.model_validate({**sect, **over})
        except ValidationError as e:
            raise _flag_error(e, flags, "server", self.source, alone=True) from None


def _server_params() -> list[inspect.Parameter]:
    opt = typer.Option
    spec: list[tuple[str, Any, Any]] = [
        ("host", Annotated[str, opt("--host", envvar="RECAGENT_HOST", help="Address to listen on; other than loopback needs --api-key (or --allow-unauthenticated).")], _default(_S, "host")),
        ("port", Annotated[int, opt("--port", envvar="RECAGENT_PORT", help="TCP port.")], _default(_S, "port")),
        ("model_name", Annotated[str, opt("--model-name", envvar="RECAGENT_MODEL_NAME", help="Model id of the OpenAI-compatible endpoint.")], _default(_S, "model_name")),
        ("max_batch", Annotated[int, opt("--max-batch", envvar="RECAGENT_MAX_BATCH", help="Requests batched into one engine call.")], _default(_S, "max_batch")),
        ("max_wait_ms", Annotated[float, opt("--max-wait-ms", envvar="RECAGENT_MAX_WAIT_MS", help="Wait for more requests to batch (ms).")], _default(_S, "max_wait_ms")),
        ("request_timeout", Annotated[float, opt("--request-timeout", envvar="RECAGENT_REQUEST_TIMEOUT", help="Seconds before a request gets 504.")], _default(_S, "request_timeout_s")),
        ("max_body_bytes", Annotated[int, opt("--max-body-bytes", envvar="RECAGENT_MAX_BODY_BYTES", help="Largest request body; larger ones get 413.")], _default(_S, "max_body_bytes")),
        ("api_key", Annotated[list[str], opt("--api-key", envvar="RECAGENT_API_KEY", help="API key clients must send as 'Authorization: Bearer KEY'; repeat or comma-separate for several.")], []),
        ("api_key_file", Annotated[list[str], opt("--api-key-file", envvar="RECAGENT_API_KEY_FILE", help="File of API keys, one per line (# comments).")], []),
        ("allow_unauthenticated", Annotated[bool, opt("--allow-unauthenticated", envvar="RECAGENT_ALLOW_UNAUTHENTICATED", help="Allow a non-loopback --host without an API key.")], _default(_S, "allow_unauthenticated")),
        ("rate_limit", Annotated[float, opt("--rate-limit", envvar="RECAGENT_RATE_LIMIT", help="Requests per minute per client (API key, or address); 0 = no limit.", min=0)], _default(_S, "rate_limit_per_min")),
        ("rate_burst", Annotated[int, opt("--rate-burst", envvar="RECAGENT_RATE_BURST", help="Requests a client may send at once before --rate-limit applies.", min=1)], _default(_S, "rate_burst")),
        ("max_concurrent", Annotated[int, opt("--max-concurrent", envvar="RECAGENT_MAX_CONCURRENT", help="Requests in flight per client; 0 = no cap.", min=0)], _default(_S, "max_concurrent_per_client")),
        ("cors_origin", Annotated[list[str], opt("--cors-origin", envvar="RECAGENT_CORS_ORIGIN", help="Browser origin allowed to call the API (CORS), e.g. https://app.example.com; repeatable. Default: CORS off.")], []),
        ("log_messages", Annotated[bool, opt("--log-messages", envvar="RECAGENT_LOG_MESSAGES", help="Write chat message text to the log (off: logs never hold what people wrote).")], _default(_S, "log_messages")),
        ("session_store", Annotated[str | None, opt("--session-store", envvar="RECAGENT_SESSION_STORE", show_default=False, help="Where chat sessions live: an SQLite file that every replica on this machine shares and a restart keeps (default: <cache dir>/chat-sessions.db), or 'memory' (this process only).")], None),
    ]  # fmt: skip
    assert [n for n, _, _ in spec] == [f.name for f in fields(ServerOptions) if f.name not in ("config_file", "given")]
    return [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, annotation=a, default=d) for n, a, d in spec]


def _with_options(param: str, cls: type, params: list[inspect.Parameter]) -> Callable[[Callable], Callable]:
    """Replace the command's parameter ``param`` by the option parameters, and rebuild ``cls`` from them."""
    names = [p.name for p in params]

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != param]
        assert len(own) == len(sig.parameters) - 1, f"{fn.__name__} needs a parameter {param!r}"
        merged = own[:]
        for p in params:
            if p.name in sig.parameters and p.name != param:
                raise AssertionError(f"{fn.__name__} already has a parameter {p.name!r}")
            merged.append(p)

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
            ctx = get_current_context(silent=True)
            given = frozenset(n for n in names if ctx is not None and _given(ctx, n))
            file = values.get("config_file", ctx.params.get("config_file") if ctx is not None else None)
            values["config_file"] = file
            return fn(**kwargs, **{param: cls(**values, given=given)})

        wrapper.__signature__ = sig.replace(parameters=merged)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in merged}  # real objects, no strings to resolve
        return wrapper

    return decorate


def _given(ctx: Any, name: str) -> bool:
    """Whether option ``name`` came from the command line or its RECAGENT_* variable."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def agent_options(k_from: type = AgentConfig) -> Callable[[Callable], Callable]:
    """Add the 13 agent options; ``--k`` defaults to ``k_from.k`` (AgentConfig: 10, ChatConfig: 5)."""
    if k_from not in (AgentConfig, ChatConfig):
        raise TypeError("k_from is AgentConfig or ChatConfig")
    return _with_options("opts", AgentOptions, _agent_params(k_from.model_fields["k"].default))


def server_options() -> Callable[[Callable], Callable]:
    """Add the HTTP options of ``recagent serve`` (parameter ``server``)."""
    return _with_options("server", ServerOptions, _server_params())


def chat_config(fields: dict[str, Any] | None = None, *, source: str = "config") -> ChatConfig:
    """A ChatConfig from ``fields`` (the ``[chat]`` section and flags); a session store other than
    memory is opened now, so a bad path fails before the engine loads."""
    from pydantic import ValidationError

    from .settings import settings_error

    try:
        cfg = ChatConfig.model_validate(dict(fields or {}))
    except ValidationError as e:
        raise settings_error(e, source, "chat") from None
    if cfg.session_store != "memory":
        from ..chat import open_session_store

        open_session_store(cfg.session_store).close()
    return cfg
