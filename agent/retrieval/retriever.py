"""The fused retriever: every source's ranking for a query, fused by weighted RRF, as one component.

>>> r = Retriever(ItemIndex(IndexConfig(path="chroma-db"))).fit(TrainData.from_dataset(ds))
>>> top = r(Query(user_id="42", history=tuple(ds.interactions.history("42"))), n=20)
>>> [(i, s) for i, s in zip(top.ids[:3], top.field("sources"))]
[('2571', {'cf': 1, 'knowledge': 4}), ...]
>>> r(Query(history=("1", "2"), text="something like Toy Story but darker", filters={...}), n=10)

``fit(data)`` makes the index hold ``data.catalog`` (only new or changed items are embedded),
trains the CF model(s) on ``data`` and stores their item vectors in Chroma, and builds the
sequence graph and popularity from ``data``'s timelines: ``TrainData.from_dataset`` when serving,
``split.train_data(stage)`` in evaluation. Called with ``items``, every source is restricted to
those items (the retriever scores a given candidate list).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field, field_validator, model_validator

from ..components import Component, ComponentConfig, ItemList, Query
from ..data import Catalog, TrainData
from ..errors import ConfigError, EmptyInputError
from ..store import ItemIndex
from . import sources as S
from .attributes import AttributeTable
from .context import resolve
from .fusion import COLD_START_WEIGHTS, DEFAULT_WEIGHTS, RRFFusion, union
from .registry import DEFAULT_SOURCES, SOURCES
from .sequence import graph_from_codes

__all__ = ["RetrieverConfig", "Retriever"]

log = logging.getLogger(__name__)


class RetrieverConfig(ComponentConfig):
    """Retrieval and fusion settings; defaults tuned on the validation stage of ml-latest-small."""

    k: int = Field(20, ge=1)
    """Candidates returned when the caller does not say."""
    depth: int = Field(100, ge=1)
    """Items each source contributes to the fusion (at least the number asked for)."""
    rrf_k: float = Field(60.0, ge=0)
    weights: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    cold_start_weights: dict[str, float] = Field(default_factory=lambda: dict(COLD_START_WEIGHTS))
    default_weight: float = Field(1.0, ge=0)
    recent: int = Field(10, ge=1)
    """Newest history items used by the sequence and knowledge sources."""
    content_recent: int = Field(5, ge=1)
    """Newest history items whose mean vector the content source searches with."""
    recency_decay: float = Field(0.8, gt=0, le=1)
    knowledge_attributes: dict[str, float] | None = None
    """Attribute → weight in the knowledge graph; None = every list/categorical attribute."""
    sequence_window: int = Field(20, ge=1)
    """Items on each side of an item in a timeline that count as co-occurring."""
    sequence_backward: float = Field(0.5, ge=0)
    """Weight of items seen *before* an item relative to those after it."""
    sequence_distance_power: float = Field(0.5, ge=0)
    """Co-occurrence at distance d weighs 1 / d**power."""
    sequence_top_k: int | None = Field(1000, ge=1)
    """Neighbours kept per item in the sequence graph (None = all): bounds it to 8 bytes × items
    × k. 1000 had the best validation NDCG@10 of {200, 500, 1000, all}, averaged over seeds 0-4
    on all 610 users of ml-latest-small (bench/results/scale_data.md, ``--k-sweep ... --seeds 5``)."""
    cf_models: dict[str, dict[str, Any]] = Field(default_factory=lambda: {"cf": {"name": "als"}})
    """CF collection name → CF model spec (``name`` of a baseline + its options); one source each."""
    sources: list[str] = Field(default_factory=lambda: list(DEFAULT_SOURCES))
    """The other sources, by registered name or ``module:Factory`` (:mod:`recagent.retrieval.registry`)."""
    seed: int = 0

    @field_validator("sources")
    @classmethod
    def _registered(cls, v: list[str]) -> list[str]:
        return [SOURCES.check(s) for s in v]  # a ValueError, so pydantic names the key

    def stray_weights(self, names: Iterable[str]) -> tuple[str, list[str]] | None:
        """(``weights`` or ``cold_start_weights``, the names in it that are no source among ``names``
        nor a default source), or None when every weight names one."""
        known = set(names) | set(DEFAULT_WEIGHTS)
        for key in ("weights", "cold_start_weights"):
            if stray := sorted(set(getattr(self, key)) - known):
                return key, stray
        return None

    @model_validator(mode="after")
    def _weights_name_sources(self) -> RetrieverConfig:
        if any(":" in s for s in self.sources):
            return self  # a source of one's own is named by its class: checked when the retriever is built
        names = sorted(set(self.sources) | set(self.cf_models))
        if found := self.stray_weights(names):
            raise ValueError(f"{found[0]} names unknown source(s) {found[1]}; sources: {names}")
        return self


class Retriever(Component):
    """Fused multi-source candidate retrieval over an :class:`~recagent.store.ItemIndex`."""

    name = "retriever"
    Config = RetrieverConfig

    def __init__(self, index: ItemIndex, config: RetrieverConfig | dict | None = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.index = index
        self._lock = threading.Lock()
        self._state: S.RetrievalState | None = None
        self.cf_models: dict[str, Any] = {}
        self.data: TrainData | None = None
        c = self.config
        self.fusion = RRFFusion(weights=c.weights, cold_start_weights=c.cold_start_weights, rrf_k=c.rrf_k,
                                default_weight=c.default_weight)  # fmt: skip
        state = self._current
        self.sources: list[S.Source] = [S.CFSource(state, name) for name in c.cf_models]
        self.sources += [SOURCES.make(spec, state, c) for spec in c.sources]
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ConfigError(f"duplicate source names {names}", hint="give every CF collection its own name")
        if found := c.stray_weights(names):  # sources of one's own are known by name only now
            raise ConfigError(f"retriever.{found[0]} names unknown source(s) {found[1]}", param=f"retriever.{found[0]}",
                              hint=f"weigh the retriever's sources: {names}")  # fmt: skip

    # --- state --------------------------------------------------------------------------------

    def _current(self) -> S.RetrievalState:
        if self._state is None:
            raise ConfigError(
                "the retriever is not fitted", hint="call fit(data) first, e.g. fit(TrainData.from_dataset(ds))"
            )
        return self._state

    @property
    def state(self) -> S.RetrievalState:
        """What the sources search now (index, attribute table, CF encoders, graphs)."""
        return self._current()

    @property
    def catalog(self) -> Catalog:
        return self._current().table.catalog

    def fit(self, data: TrainData) -> Retriever:
        """Index ``data.catalog``, train the CF models, build the sequence graph and popularity."""
        from recagent.cf import BASELINES, make_baseline

        c = self.config
        catalog = data.catalog
        self.index.build(catalog)
        item_ids = [str(i) for i in data.item_ids]
        cf = {}
        for cname, spec in c.cf_models.items():
            opts = dict(spec)
            kind = opts.pop("name", "als")
            if kind in BASELINES and "seed" in BASELINES[kind].Config.model_fields:
                opts.setdefault("seed", c.seed)
            model = make_baseline(kind, **opts).fit(data)
            enc = S.CFUserEncoder(model, item_ids)
            self.index.set_cf_vectors(
                catalog, item_ids, enc.item_factors(), name=cname, space="ip", show_progress=False
            )
            self.cf_models[cname], cf[cname] = model, enc
        pop = dict(zip(item_ids, data.popularity().tolist(), strict=True))
        with self._lock:
            self.data = data
            self._build_state(catalog, cf, data, pop)
        return self

    def fitted_state(self) -> dict[str, Any]:
        """What :meth:`fit` learned, without the index (picklable): ship it to other processes (Ray
        actors) and attach it there with :meth:`from_fitted`, so nothing is fitted twice."""
        st = self._current()
        return {"config": self.config.model_dump(), "cf_models": self.cf_models, "data": self.data,
                "pop_counts": self._pop_counts, "table": st.table, "cf": st.cf, "sequence": st.sequence,
                "popularity": st.popularity}  # fmt: skip

    @classmethod
    def from_fitted(cls, index: ItemIndex, fitted: dict[str, Any]) -> Retriever:
        """A retriever on ``index`` (which holds the fitting process's collections: a copy of its
        folder or the same server) from :meth:`fitted_state`: no CF fit, no graph build, no write."""
        r = cls(index, fitted["config"])
        r.cf_models, r.data, r._pop_counts = dict(fitted["cf_models"]), fitted["data"], fitted["pop_counts"]
        r._state = S.RetrievalState(index, fitted["table"], r.config.depth, dict(fitted["cf"]), fitted["sequence"],
                                    fitted["popularity"])  # fmt: skip
        return r

    def _build_state(self, catalog: Catalog, cf: dict, data: TrainData | None, pop: dict | None) -> None:
        c = self.config
        table = AttributeTable(catalog, c.knowledge_attributes)
        seq = None
        if data is not None:
            code_pos = np.array([table.pos.get(str(i), -1) for i in data.item_ids], dtype=np.int64)
            seq = graph_from_codes(data.sequences, code_pos, len(table.ids), c.sequence_window, c.sequence_backward,
                                   c.sequence_distance_power, top_k=c.sequence_top_k)  # fmt: skip
        self._pop_counts = pop
        self._state = S.RetrievalState(self.index, table, c.depth, cf, seq, S.popularity_array(table, pop))

    # --- item cold start ----------------------------------------------------------------------

    def upsert_items(self, items: pd.DataFrame) -> int:
        """Add or replace catalog items (index = item id, catalog columns); they are embedded at
        once and retrievable by content, knowledge and filters (CF and sequence after the next fit)."""
        if len(items) == 0:
            raise EmptyInputError("no items to upsert", hint="pass a DataFrame with at least one row")
        items = items.copy()
        items.index = items.index.astype(str)
        with self._lock:
            old = self._current()
            cat = old.table.catalog
            unknown = sorted(set(items.columns) - set(cat.items.columns))
            if unknown:
                raise ConfigError(
                    f"new items have columns the catalog lacks: {unknown}",
                    hint=f"use columns of {list(cat.items.columns)}",
                )
            merged = pd.concat(
                [cat.items.drop(index=items.index, errors="ignore"), items.reindex(columns=cat.items.columns)]
            )
            for col in cat.list_attributes:
                merged[col] = merged[col].map(lambda v: v if isinstance(v, (list, tuple, np.ndarray)) else [])
            catalog = Catalog(merged, cat.list_attributes, cat.item_noun)
            self.index.upsert_items(catalog, list(items.index))
            self._rebuild(catalog)
        return len(items)

    def delete_items(self, item_ids: Iterable[str]) -> int:
        """Remove items from the catalog view and the index."""
        with self._lock:
            cat = self._current().table.catalog
            ids = cat.require(item_ids)
            rest = cat.items.drop(index=ids)
            if len(rest) == 0:
                raise EmptyInputError("deleting these items would empty the catalog", hint="keep at least one item")
            self.index.delete_items(ids)
            self._rebuild(Catalog(rest, cat.list_attributes, cat.item_noun))
        return len(ids)

    def _rebuild(self, catalog: Catalog) -> None:
        self._build_state(catalog, self._current().cf, self.data, self._pop_counts)

    # --- retrieval ----------------------------------------------------------------------------

    def source_lists(self, query: Query, n: int | None = None, items: ItemList | None = None,
                     sources: Iterable[str] | None = None) -> dict[str, ItemList]:  # fmt: skip
        """Each source's own ranking for ``query`` (sources with weight 0 for this query are
        skipped unless named in ``sources``), with per-source milliseconds in ``timings_ms``."""
        st = self._current()
        n = self.config.k if n is None else int(n)
        if n < 1:
            raise ConfigError(f"n={n} must be >= 1", param="k")
        ctx = resolve(query, st.table, max(st.depth, n), items)
        if not (ctx.history or ctx.profile or ctx.text or st.popularity is not None):
            self.check(query)
        wanted = set(sources) if sources is not None else None
        if wanted is not None and wanted - {s.name for s in self.sources}:
            raise ConfigError(f"unknown source(s) {sorted(wanted - {s.name for s in self.sources})}",
                              hint=f"sources: {[s.name for s in self.sources]}")  # fmt: skip
        weights, default = self.fusion.weights_for(query)
        out: dict[str, ItemList] = {}
        for source in self.sources:
            if wanted is not None and source.name not in wanted:
                continue
            if wanted is None and weights.get(source.name, default) <= 0:
                continue  # a source with weight 0 would not change the fused order: skip its query
            t0 = time.perf_counter()
            lst = ItemList.of(source.rank(ctx))
            lst.timings_ms[source.name] = (time.perf_counter() - t0) * 1000
            if len(lst):
                out[source.name] = lst
        return out

    def check(self, query: Query) -> None:
        """Raise the error :meth:`batch` would raise for this query (unknown history item, bad
        filter, nothing to retrieve from), without running the sources."""
        st = self._current()
        ctx = resolve(query, st.table, st.depth)
        if not (ctx.history or ctx.profile or ctx.text or st.popularity is not None):
            raise EmptyInputError("nothing to retrieve from: no history, profile or request text",
                                  hint="pass a user with history, a profile or a request text")  # fmt: skip

    def score_one(self, query: Query, items: ItemList | None, n: int | None) -> ItemList:
        n = self.config.k if n is None else n
        lists = self.source_lists(query, n, items)
        t0 = time.perf_counter()
        fused = self.fusion(query, union(lists), n)
        if items is not None:  # a given list: items no source found follow, in the given order
            rest = [i for i in items.ids if i not in set(fused.ids)]
            floor = min(fused.scores, default=0.0)
            fused = ItemList(fused.ids + rest, fused.scores + [floor - 1.0 - j for j in range(len(rest))],
                             {"sources": fused.field("sources", {}) + [{} for _ in rest]})  # fmt: skip
            fused = fused.head(n)
        fused.fields["retrieval_score"] = list(fused.scores)
        fused.fields["retrieval_rank"] = list(range(1, len(fused) + 1))
        fused.timings_ms = {name: t for lst in lists.values() for name, t in lst.timings_ms.items()}
        fused.timings_ms["fusion"] = (time.perf_counter() - t0) * 1000
        return fused
