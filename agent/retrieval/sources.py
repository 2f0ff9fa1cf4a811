"""Retrieval sources: each ranks unseen items that pass the query's filter, best first.

* ``cf`` — the user's CF vector, recomputed from the query's history (the newest interactions
  count without retraining) → nearest items in the CF collection;
* ``content`` — the newest history items' MiniLM vectors → their content neighbours;
* ``profile`` / ``query`` — the profile text / the request text → content search;
* ``knowledge`` — items sharing attributes (genres, tags, ...) with the user's recent items;
* ``sequence`` — an item–item graph of what other users interacted with around each item:
  neighbours of the newest history items (the strongest single source on MovieLens);
* ``popularity`` — interaction counts (cold start).

Every source is a :class:`~recagent.components.Component` over the retriever's shared
:class:`RetrievalState`; called alone it returns its own ranking as an ItemList (scores are
``-rank``); the fused retriever calls :meth:`Source.rank` with one resolved context for all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from ..components import Component, ComponentConfig, ItemList, Query
from ..embeddings import encode
from ..errors import ConfigError
from ..store import ItemIndex
from .attributes import AttributeTable, top_items
from .context import Context, resolve

__all__ = [
    "RetrievalState",
    "Source",
    "CFUserEncoder",
    "CFSource",
    "ContentSource",
    "TextSource",
    "KnowledgeSource",
    "SequenceSource",
    "PopularitySource",
]


@dataclass
class RetrievalState:
    """What the sources search: the index, the catalog's attribute table, and what was learned
    from interactions (CF encoders, the sequence graph, popularity). Replaced as a whole when
    the retriever is refitted or the catalog changes, so a query never sees half an update."""

    index: ItemIndex
    table: AttributeTable
    depth: int = 100
    cf: dict[str, Callable[[Sequence[str]], np.ndarray | None]] = field(default_factory=dict)
    sequence: sp.csr_matrix | None = None
    popularity: np.ndarray | None = None  # per catalog position


class Source(Component):
    """Base of the sources: ``rank(ctx)`` on a resolved context; the component call resolves one."""

    def __init__(self, state: Callable[[], RetrievalState], config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self._state = state

    @property
    def state(self) -> RetrievalState:
        return self._state()

    def rank(self, ctx: Context) -> list[str]:
        raise NotImplementedError

    def score_one(self, query: Query, items: ItemList | None, n: int | None) -> ItemList:
        st = self.state
        ctx = resolve(query, st.table, n or st.depth, items)
        return ItemList.of(self.rank(ctx)[: ctx.depth])


def _recent_positions(table: AttributeTable, history: Sequence[str], recent: int) -> list[int]:
    """Catalog positions of the newest distinct history items, newest first."""
    return [table.pos[i] for i in dict.fromkeys(reversed(history)) if i in table.pos][:recent]


class RecentConfig(ComponentConfig):
    recent: int = Field(10, ge=1)
    """Newest history items used."""
    decay: float = Field(0.8, gt=0, le=1)
    """Weight of the i-th newest item: decay**i."""


class CFUserEncoder:
    """User vector from a fitted CF model with ``user_factors_for(codes)`` (the CF baselines).

    History items the model does not know (added after training) are skipped; ``None`` when
    none is known."""

    def __init__(self, model: Any, item_ids: Sequence[str]):
        if not hasattr(model, "user_factors_for") or not hasattr(model, "item_factors"):
            raise ConfigError(
                f"{type(model).__name__} cannot encode users",
                hint="use a factor model with item_factors() and user_factors_for() (ALS, BPR, SASRec)",
            )
        self.model = model
        self.item_ids = [str(i) for i in item_ids]
        self.code = {i: c for c, i in enumerate(self.item_ids)}

    def item_factors(self) -> np.ndarray:
        return np.asarray(self.model.item_factors(), dtype=np.float32)

    def __call__(self, history: Sequence[str]) -> np.ndarray | None:
        codes = [self.code[i] for i in history if i in self.code]
        if not codes:
            return None
        return np.asarray(self.model.user_factors_for(np.asarray(codes, dtype=np.int64)), dtype=np.float32)


class CFSource(Source):
    """Nearest items to the user's CF vector in the CF collection ``name``."""

    name = "cf"

    def __init__(self, state: Callable[[], RetrievalState], name: str = "cf", config: Any = None, **overrides: Any):
        super().__init__(state, config, **overrides)
        self.name = name

    def rank(self, ctx: Context) -> list[str]:
        encoder = self.state.cf.get(self.name)
        if not ctx.history or encoder is None:
            return []
        v = encoder(ctx.history)
        if v is None:
            return []
        hits = self.state.index.query_cf(
            v[None, :], k=ctx.depth, where=ctx.where, allowed=ctx.allowed, exclude=ctx.seen, name=self.name
        )[0]
        return [h.item_id for h in hits]


class ContentSource(Source):
    """Content neighbours of the newest history items: one search with their recency-weighted
    mean vector (as good as one search per item on the validation stage, and one query)."""

    name = "content"

    class Config(RecentConfig):
        recent: int = Field(5, ge=1)

    def rank(self, ctx: Context) -> list[str]:
        recent = list(dict.fromkeys(reversed(ctx.history)))[: self.config.recent]  # newest first, unique
        if not recent:
            return []
        index = self.state.index
        vecs = index.vectors(recent)
        w = [(self.config.decay**age, vecs[i]) for age, i in enumerate(recent) if i in vecs]
        if not w:
            return []
        q = np.sum([a * v for a, v in w], axis=0)
        q /= max(float(np.linalg.norm(q)), 1e-12)
        hits = index.query_content(
            embeddings=q[None, :], k=ctx.depth, where=ctx.where, allowed=ctx.allowed, exclude=ctx.seen
        )
        return [h.item_id for h in hits[0]]


class TextSource(Source):
    """Content search with the profile text (``profile``) or the request text (``query``)."""

    def __init__(self, state: Callable[[], RetrievalState], name: str, config: Any = None, **overrides: Any):
        if name not in ("profile", "query"):
            raise ConfigError(f"a text source is 'profile' or 'query', not {name!r}")
        super().__init__(state, config, **overrides)
        self.name = name

    def rank(self, ctx: Context) -> list[str]:
        text = ctx.profile if self.name == "profile" else ctx.text
        if not text or not text.strip():
            return []
        index = self.state.index
        v = encode([text], index.config.model)
        hits = index.query_content(embeddings=v, k=ctx.depth, where=ctx.where, allowed=ctx.allowed, exclude=ctx.seen)
        return [h.item_id for h in hits[0]]


class KnowledgeSource(Source):
    """Items linked to the user's recent items through shared attributes (weighted overlap)."""

    name = "knowledge"
    Config = RecentConfig

    def rank(self, ctx: Context) -> list[str]:
        t = self.state.table
        if t.graph is None or not ctx.history:
            return []
        recent = _recent_positions(t, ctx.history, self.config.recent)
        if not recent:
            return []
        w = self.config.decay ** np.arange(len(recent))
        profile = sp.csr_matrix(w[None, :]) @ t.graph[recent]  # 1 × attribute values
        scores = np.asarray((t.graph @ profile.T).todense()).ravel()
        scores[scores <= 0] = -np.inf  # no shared attribute: no link in the graph
        return top_items(scores, ctx, t)


class SequenceSource(Source):
    """Neighbours of the newest history items in the co-occurrence graph, recency-weighted."""

    name = "sequence"
    Config = RecentConfig

    def rank(self, ctx: Context) -> list[str]:
        st = self.state
        t, g = st.table, st.sequence
        if g is None or not ctx.history:
            return []
        recent = _recent_positions(t, ctx.history, self.config.recent)
        if not recent:
            return []
        w = self.config.decay ** np.arange(len(recent))
        scores = np.asarray((sp.csr_matrix(w[None, :]) @ g[recent]).todense()).ravel()
        scores[scores <= 0] = -np.inf
        return top_items(scores, ctx, t)


class PopularitySource(Source):
    """Most interacted-with items (what is popular serves a user without history)."""

    name = "popularity"

    def rank(self, ctx: Context) -> list[str]:
        st = self.state
        if st.popularity is None:
            return []
        return top_items(st.popularity, ctx, st.table)


def popularity_array(table: AttributeTable, counts: Mapping[str, float] | None) -> np.ndarray | None:
    """Counts per catalog position (0 for items without interactions)."""
    if counts is None:
        return None
    return np.array([float(counts.get(i, 0.0)) for i in table.ids])
