"""Candidate retrieval: several sources over the Chroma item index, fused by weighted RRF.

Modules: :mod:`.sources` (cf, content, profile, query, knowledge, sequence, popularity),
:mod:`.fusion` (weighted RRF), :mod:`.retriever` (the fused retriever component),
:mod:`.attributes` (filter masks and the attribute graph in memory), :mod:`.sequence`
(the co-occurrence graph), :mod:`.context` (a query resolved once for all sources).
"""

from __future__ import annotations

from .attributes import AttributeTable
from .context import Context
from .fusion import COLD_START_WEIGHTS, DEFAULT_WEIGHTS, RRFFusion, fuse, rrf_fuse, union
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
    "PopularitySource", "RetrievalState", "AttributeTable", "Context",
]  # fmt: skip
