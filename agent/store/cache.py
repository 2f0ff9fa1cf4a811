"""One request's vector fetches share what was already fetched.

The content source (the newest history items), MMR (the candidates) and the explainer (liked
history items and the picks) each need item vectors; within :func:`vector_cache` — the pipeline
opens one per ``batch`` call — :meth:`ItemIndex.vectors` fetches each id from Chroma at most
once. The cache lives in a context variable: one per thread and request, gone when it closes, so
an item re-embedded later is read fresh by the next request.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np

__all__ = ["vector_cache", "current_cache"]

_CACHE: ContextVar[dict[tuple[str, str], np.ndarray] | None] = ContextVar("recagent_vector_cache", default=None)


@contextmanager
def vector_cache() -> Iterator[None]:
    """Share vector fetches until the block ends (a nested block joins the outer one)."""
    if _CACHE.get() is not None:
        yield
        return
    token = _CACHE.set({})
    try:
        yield
    finally:
        _CACHE.reset(token)


def current_cache() -> dict[tuple[str, str], np.ndarray] | None:
    """The open cache, keyed by (collection name, item id); None outside :func:`vector_cache`."""
    return _CACHE.get()
