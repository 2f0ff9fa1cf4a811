"""The retrieval sources a config can name: registered here once, built by the retriever.

``RetrieverConfig.sources`` lists source names (besides one ``cf`` source per CF collection in
``cf_models``). A name is a built-in registered below, a name registered by
:func:`register_source`, or ``"package.module:factory"``: a :class:`Source` subclass (called with
the state getter) or a function ``(state, retriever_config) -> Source``, imported when the config
is validated, so a source in a file of one's own needs no change here:

>>> RetrieverConfig(sources=[*DEFAULT_SOURCES, "mysources:RecentGenres"], weights={"recent_genres": 0.5})
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from . import sources as S

if TYPE_CHECKING:
    from .retriever import RetrieverConfig

__all__ = ["register_source", "source_names", "make_source", "check_source", "DEFAULT_SOURCES", "SourceFactory"]

SourceFactory = Callable[[Callable[[], S.RetrievalState], "RetrieverConfig"], S.Source]
_REGISTRY: dict[str, SourceFactory] = {}

#: The non-CF sources of the default retriever, in the order they run.
DEFAULT_SOURCES: tuple[str, ...] = ("content", "profile", "query", "sequence", "knowledge", "popularity")


def register_source(name: str, factory: SourceFactory) -> SourceFactory:
    """Make ``name`` usable in ``RetrieverConfig.sources``; ``factory(state, config)`` builds it."""
    if name in _REGISTRY or name == "cf":
        raise ConfigError(f"retrieval source {name!r} is already registered", hint="pick another name")
    _REGISTRY[name] = factory
    return factory


def source_names() -> list[str]:
    """The registered source names (``cf`` sources come from ``cf_models``)."""
    return sorted(_REGISTRY)


def _unknown(spec: str, why: str = "") -> ConfigError:
    return ConfigError(
        f"unknown retrieval source {spec!r}{why}",
        hint=f"use one of {source_names()} or 'package.module:Factory' of a Source subclass",
        param="retriever.sources",
    )


def _resolve(spec: str) -> SourceFactory:
    if spec in _REGISTRY:
        return _REGISTRY[spec]
    if ":" not in spec:
        raise _unknown(spec)
    mod_name, _, attr = spec.partition(":")
    try:
        obj: Any = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise _unknown(spec, f" ({type(e).__name__}: {e})") from None
    if isinstance(obj, type) and issubclass(obj, S.Source):
        return lambda state, _config: obj(state)
    if callable(obj) and not isinstance(obj, type):
        return obj
    raise _unknown(spec, f" ({attr} is neither a Source subclass nor a factory function)")


def check_source(spec: str) -> str:
    """``spec`` if it names a source (imports a ``module:factory``); ConfigError otherwise."""
    _resolve(spec)
    return spec


def make_source(spec: str, state: Callable[[], S.RetrievalState], config: RetrieverConfig) -> S.Source:
    """Build the source ``spec`` names over the retriever's state."""
    src = _resolve(spec)(state, config)
    if not isinstance(src, S.Source):
        raise ConfigError(f"retrieval source {spec!r} built a {type(src).__name__}, not a Source",
                          hint="return a recagent.retrieval.Source from the factory")  # fmt: skip
    return src


register_source("content", lambda st, c: S.ContentSource(st, recent=c.content_recent, decay=c.recency_decay))
register_source("profile", lambda st, c: S.TextSource(st, "profile"))
register_source("query", lambda st, c: S.TextSource(st, "query"))
register_source("sequence", lambda st, c: S.SequenceSource(st, recent=c.recent, decay=c.recency_decay))
register_source("knowledge", lambda st, c: S.KnowledgeSource(st, recent=c.recent, decay=c.recency_decay))
register_source("popularity", lambda st, c: S.PopularitySource(st))
