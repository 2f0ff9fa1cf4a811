"""The item store: Chroma collections (content and CF vectors) and the filter language.

>>> index = ItemIndex(IndexConfig(path="~/.cache/recagent/chroma"))   # or host="127.0.0.1", port=8000
>>> index.build(dataset.catalog)                  # idempotent: only new/changed items are embedded
>>> index.query_content(texts=["feel-good animated film"], k=5, filters=ItemFilter(include={"genres": ["Animation"]}))
"""

from __future__ import annotations

from .cache import vector_cache
from .chroma import BuildReport, IndexConfig, ItemIndex
from .filters import AttrKind, ItemFilter, attribute_schema, coerce, item_metadata, operands
from .search import Hit

__all__ = [
    "IndexConfig", "ItemIndex", "BuildReport", "Hit", "vector_cache",
    "AttrKind", "ItemFilter", "attribute_schema", "coerce", "operands", "item_metadata",
]  # fmt: skip
