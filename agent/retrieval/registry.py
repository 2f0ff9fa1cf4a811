"""The retrieval sources a config can name: registered here once, built by the retriever.

``RetrieverConfig.sources`` lists source names (besides one ``cf`` source per CF collection in
``cf_models``). A name is a built-in registered below, a name registered by
:func:`register_source`, or ``"package.module:Name"``: a :class:`Source` subclass (called with
the state getter) or a function ``(state, retriever_config) -> Source``, imported when the config
is validated, so a source in a file of one's own needs no change here:

>>> RetrieverConfig(sources=[*DEFAULT_SOURCES, "mysources:RecentGenres"], weights={...})
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..components import Registry
from . import sources as S

if TYPE_CHECKING:
    from .retriever import RetrieverConfig

__all__ = ["SOURCES", "register_source", "source_names", "DEFAULT_SOURCES", "SourceFactory"]

SourceFactory = Callable[[Callable[[], S.RetrievalState], "RetrieverConfig"], S.Source]

SOURCES = Registry("retrieval source", "retriever.sources", S.Source, lambda cls: lambda state, _config: cls(state))
"""name → factory ``(state, retriever_config) -> Source``."""

#: The non-CF sources of the default retriever, in the order they run.
DEFAULT_SOURCES: tuple[str, ...] = ("content", "profile", "query", "sequence", "knowledge", "popularity")


def register_source(name: str, factory: SourceFactory) -> SourceFactory:
    """Make ``name`` usable in ``RetrieverConfig.sources``; ``factory(state, config)`` builds it."""
    return SOURCES.register(name, factory)


def source_names() -> list[str]:
    """The registered source names (``cf`` sources come from ``cf_models``)."""
    return SOURCES.names()


register_source("content", lambda st, c: S.ContentSource(st, recent=c.content_recent, decay=c.recency_decay))
register_source("profile", lambda st, c: S.TextSource(st, "profile"))
register_source("query", lambda st, c: S.TextSource(st, "query"))
register_source("sequence", lambda st, c: S.SequenceSource(st, recent=c.recent, decay=c.recency_decay))
register_source("knowledge", lambda st, c: S.KnowledgeSource(st, recent=c.recent, decay=c.recency_decay))
register_source("popularity", lambda st, c: S.PopularitySource(st))
