"""Candidate retrieval: several sources over the Chroma item index, fused by weighted RRF.

Modules: :mod:`.sources` (cf, content, profile, query, knowledge, sequence, popularity),
:mod:`.fusion` (weighted RRF), :mod:`.retriever` (the fused retriever component),
(:mod:`.registry` names the sources a config can list), :mod:`.attributes` (filter masks and the attribute graph in memory), :mod:`.sequence`
(the co-occurrence graph), :mod:`.context` (a query resolved once for all sources).
"""

from __future__ import annotations

from .attributes import AttributeTable
from .context import Context
from .fusion import COLD_START_WEIGHTS, DEFAULT_WEIGHTS, RRFFusion, fuse, rrf_fuse, union
from .registry import DEFAULT_SOURCES, register_source, source_names
from .retriever import Retriever, RetrieverConfig
from .sources import (
    CFSource,
    CFUserEncoder,
    ContentSource,
    KnowledgeSource,
    PopularitySource,
    RetrievalState,
    SequenceSource,
    Source,
    TextSource,
)

__all__ = [
    "Retriever", "RetrieverConfig", "RRFFusion", "fuse", "rrf_fuse", "union", "DEFAULT_WEIGHTS", "COLD_START_WEIGHTS",
    "Source", "CFSource", "CFUserEncoder", "ContentSource", "TextSource", "KnowledgeSource", "SequenceSource",
    "PopularitySource", "RetrievalState", "AttributeTable", "Context", "register_source", "source_names", "DEFAULT_SOURCES",
]  # fmt: skip
