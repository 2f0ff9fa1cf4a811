"""The config file: one TOML, YAML or JSON file with a section per part of the agent.

Precedence, lowest first: the embedded defaults, the file (``--config FILE`` or
``RECAGENT_CONFIG``), ``RECAGENT_*`` variables, command-line flags. Every key of a section is a
field of that part's typed config, so a file can set what has no flag (fusion weights, the
retrieval sources, ranker settings, chat behaviour)::

    [agent]                 # recagent.AgentConfig
    k = 8
    [agent.retriever]       # recagent.retrieval.RetrieverConfig
    sources = ["content", "query", "sequence", "knowledge", "popularity"]
    weights = { sequence = 1.2, cf = 0.4 }
    [agent.llm]             # recagent.llm.LLMConfig
    max_model_len = 4096
    [chat]                  # recagent.chat.ChatConfig
    k = 4
    [server]                # recagent.server.ServerConfig
    port = 8080

``recagent config show`` prints the resolved config in this form; a bad key or value is one line
naming the key and what it takes.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..agent import AgentConfig
from ..chat import ChatConfig
from ..errors import ConfigError
from ..server.config import ServerConfig

__all__ = [
    "Settings",
    "read_config_file",
    "eval_options",
    "settings_from",
    "settings_error",
    "check_paths",
    "to_toml",
    "merge",
]

SUFFIXES = (".toml", ".yaml", ".yml", ".json")


class Settings(BaseModel):
    """The whole config: what ``--config FILE`` holds and ``recagent config show`` prints."""

    model_config = ConfigDict(extra="forbid")

    agent: AgentConfig = Field(default_factory=AgentConfig)
    chat: ChatConfig = Field(default_factory=ChatConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)


def read_config_file(path: str | Path | None) -> dict[str, Any]:
    """The file's raw sections ({} without a file); a missing or unreadable file is one ConfigError."""
    if path is None or str(path) == "":
        return {}
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}", hint="pass a .toml, .yaml or .json file to --config",
                          param="config")  # fmt: skip
    if p.suffix.lower() not in SUFFIXES:
        raise ConfigError(
            f"config file {p} is not .toml, .yaml or .json", hint="rename it or convert it", param="config"
        )
    text = p.read_text(encoding="utf-8", errors="replace")
    try:
        if p.suffix.lower() == ".toml":
            raw: Any = tomllib.loads(text)
        elif p.suffix.lower() == ".json":
            raw = json.loads(text)
        else:
            import yaml

            raw = yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as e:
        raise ConfigError(f"config file {p} does not parse: {str(e).splitlines()[0]}", param="config") from None
    except Exception as e:  # yaml.YAMLError and its kin: one line, no traceback
        raise ConfigError(f"config file {p} does not parse: {' '.join(str(e).split())}", param="config") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {p} holds a {type(raw).__name__}, not sections",
                          hint=f"write sections {list(Settings.model_fields)}", param="config")  # fmt: skip
    return raw


def _fields_at(loc: tuple[Any, ...]) -> list[str] | None:
    """The keys the model at ``loc`` (a path into Settings) accepts, for an unknown-key error."""
    model: Any = Settings
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = field.annotation
    fields = getattr(model, "model_fields", None)
    return sorted(fields) if fields else None


def settings_error(e: ValidationError, source: str, section: str | None = None) -> ConfigError:
    """The first error of a Settings validation as one line: the dotted key, what is wrong
    (``section``: the error came from validating that section alone)."""
    err = e.errors()[0]
    loc = (*((section,) if section else ()), *err.get("loc", ()))
    key = ".".join(str(x) for x in loc)
    if err["type"] == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        where = ".".join(str(x) for x in loc[:-1]) or "the top level"
        return ConfigError(f"{source}: unknown key {key}", param=key,
                           hint=f"keys of {where}: {allowed}" if allowed else "remove it")  # fmt: skip
    msg = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or got is None else f" (got {got!r})"
    return ConfigError(
        f"{source}: {key}: {msg}{shown}", param=key, hint="see `recagent config show` for the keys and defaults"
    )


def settings_from(raw: Mapping[str, Any], source: str = "config") -> Settings:
    """Validated Settings from raw sections (a file's, with flag values merged in)."""
    try:
        return Settings.model_validate(dict(raw))
    except ValidationError as e:
        raise settings_error(e, source) from None


def eval_options(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """``recagent eval``'s system options from a config file: ``[agent.retriever]`` for the
    retriever (and the llm system's first stage), ``[agent.ranker]`` and ``ranker_kind`` for the llm
    system; only the keys the file sets, after the whole file is validated."""
    raw = read_config_file(path)
    if not raw:
        return {}
    settings_from(raw, str(path))
    agent = raw.get("agent", {})
    llm = dict(agent.get("ranker", {}))
    if "ranker_kind" in agent:
        llm["kind"] = agent["ranker_kind"]
    picked = {"retriever": agent.get("retriever", {}), "llm": llm}
    return {name: dict(v) for name, v in picked.items() if v}


def check_paths(agent: AgentConfig, source: str, flags: Mapping[str, str]) -> None:
    """Fail now, before any index or engine work, on a model, adapter or template path that does
    not exist. The error names the flag that set it (``flags``: config key → flag) or the key in ``source``."""
    from ..errors import ModelPathError
    from ..models import resolve_llm_path

    def named(key: str) -> str:
        return flags.get(key) or f"{source}: {key}"

    llm = agent.llm
    if llm.backend == "vllm" and llm.model:
        try:
            resolve_llm_path(llm.model)
        except ModelPathError as e:
            raise ModelPathError(
                f"{named('agent.llm.model')}: {e.message}", hint=e.hint, param="agent.llm.model"
            ) from None
    adapter = agent.adapter if agent.adapter not in ("auto", "none") and llm.backend == "vllm" else None
    for key, value, exists, what, hint in (
        ("agent.llm.tokenizer", llm.tokenizer, Path.is_dir, "tokenizer folder", "pass the served model's local folder"),
        ("agent.embedding_model", agent.embedding_model, Path.is_dir, "embedding model folder",
         "pass a sentence-transformers folder, or leave it unset for the bundled all-MiniLM-L6-v2"),
        ("agent.template_dir", agent.template_dir, Path.is_dir, "template folder", "pass a folder of .jinja prompt templates"),
        ("agent.adapter", adapter, Path.exists, "adapter path",
         "pass 'auto', 'none', a ranker card folder, a PEFT LoRA folder or a merged model folder"),
    ):  # fmt: skip
        if value and not exists(Path(value).expanduser()):
            raise ModelPathError(f"{named(key)}: {what} does not exist: {value}", hint=hint, param=key)


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``over`` laid on top, nested mappings merged key by key."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, Mapping) and not v:
        return "{}"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _toml_key(k: str) -> str:
    return k if k and k.replace("_", "").replace("-", "").isalnum() and k.isascii() else json.dumps(k)


def to_toml(data: Mapping[str, Any], prefix: str = "") -> str:
    """TOML text of nested sections: values first, then one ``[table]`` per non-empty mapping
    (a None value is written as a comment: TOML has no null)."""
    lines: list[str] = []
    tables: list[str] = []
    for k, v in data.items():
        if isinstance(v, Mapping) and v:
            name = f"{prefix}.{_toml_key(k)}" if prefix else _toml_key(k)
            tables.append(f"[{name}]\n{to_toml(v, name)}".rstrip())
        elif v is None:
            lines.append(f"# {_toml_key(k)} = (unset)")
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v)}")
    return "\n\n".join(x for x in ["\n".join(lines), *tables] if x) + "\n"
