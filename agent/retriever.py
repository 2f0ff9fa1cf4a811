"""Candidate retrieval: several sources over the Chroma item index, fused by weighted RRF.

Sources (each returns a ranked list of unseen items that pass the filter):

* ``cf`` — the user's CF vector (recomputed from the history given with the request, so the
  newest interactions count without retraining) → nearest items in the CF collection;
* ``content`` — the newest history items' MiniLM vectors → their content neighbours;
* ``profile`` — profile / stated-preference text → content search;
* ``query`` — the chat request text → content search;
* ``knowledge`` — an item–attribute graph built from the catalog (genres, tags, any list or
  categorical attribute, idf-weighted): items sharing attributes with the user's recent items;
* ``sequence`` — an item–item graph of what other users interacted with shortly before or
  after each item (co-occurrence within a window of their timelines): neighbours of the newest
  history items. The strongest single source on MovieLens, where ratings come in sessions;
* ``popularity`` — interaction counts: with ``profile`` and ``query`` it serves users without
  history (:data:`COLD_START_WEIGHTS`); for users with history it lowered recall, weight 0.

Fusion is weighted reciprocal-rank fusion, ``score(i) = Σ_s w_s / (rrf_k + rank_s(i))``.

>>> index = ItemIndex(IndexConfig(path="chroma-db")); index.build(ds.catalog)
>>> r = Retriever.from_dataset(index, ds, cf={"cf": CFUserEncoder(als, item_ids)})
>>> res = r.retrieve("42", k=20, filters={"exclude": {"genres": ["Horror"]}})
>>> [(c.item_id, c.sources) for c in res.candidates[:3]]
[('2571', {'cf': 1, 'knowledge': 4}), ...]
>>> r.retrieve(history=["1", "2"], query="something like Toy Story but darker", k=10)

:class:`RetrieverSystem` wraps it in the harness interface (``name``, ``fit``, ``topk``) so the
retriever is evaluated under the LlamaRec protocol next to the CF baselines.
"""

from __future__ import annotations

import logging
import math
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .data import Catalog, Dataset, Interactions
from .embeddings import encode
from .errors import ConfigError, EmptyInputError, UnknownIdError
from .store import AttrKind, IndexConfig, ItemFilter, ItemIndex, attribute_schema, coerce, operands

if TYPE_CHECKING:
    from .eval.splits import Split

__all__ = [
    "RetrieverConfig",
    "Retriever",
    "Retrieval",
    "Candidate",
    "Context",
    "Source",
    "CFUserEncoder",
    "rrf_fuse",
    "RetrieverSystem",
    "DEFAULT_WEIGHTS",
    "COLD_START_WEIGHTS",
]

log = logging.getLogger(__name__)

#: Fusion weights tuned on the LlamaRec validation stage of ml-latest-small (bench/retriever.py).
DEFAULT_WEIGHTS: dict[str, float] = {
    "cf": 0.5,
    "sequence": 1.0,
    "content": 0.5,
    "knowledge": 0.3,
    "profile": 1.0,
    "query": 2.0,
    "popularity": 0.0,  # lowered recall of users with a history in every setting tried
}

#: Weights for a user without history: the request text, the profile and what is popular.
COLD_START_WEIGHTS: dict[str, float] = {"query": 2.0, "profile": 1.0, "popularity": 0.5}


@dataclass
class RetrieverConfig:
    """Retrieval and fusion settings; defaults tuned on the validation stage."""

    k: int = 20  # candidates returned when the request does not say
    depth: int = 100  # items each source contributes to the fusion (≥ k is enforced)
    rrf_k: float = 60.0  # RRF damping: larger flattens the rank discount
    weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    cold_start_weights: dict[str, float] = field(default_factory=lambda: dict(COLD_START_WEIGHTS))  # no history
    default_weight: float = 1.0  # weight of a source not named in ``weights`` (extra CF collections)
    recent: int = 10  # newest history items used by the sequence and knowledge sources
    content_recent: int = 5  # newest history items whose mean vector the content source searches with
    recency_decay: float = 0.8  # weight of the i-th newest item: decay**i
    knowledge_attributes: dict[str, float] | None = None  # attribute → weight; None = all list/categorical
    sequence_window: int = 20  # items on each side of an item in a timeline that count as co-occurring
    sequence_backward: float = 0.5  # weight of items seen *before* an item relative to those after it
    sequence_distance_power: float = 0.5  # co-occurrence at distance d weighs 1 / d**power
    exclude_seen: bool = True  # drop items in the history from every source

    def __post_init__(self) -> None:
        if self.k < 1 or self.depth < 1:
            raise ConfigError("k and depth must be ≥ 1", hint="e.g. k=20, depth=100")
        if self.rrf_k < 0:
            raise ConfigError("rrf_k must be ≥ 0", param="rrf_k")
        if self.sequence_window < 1:
            raise ConfigError("sequence_window must be ≥ 1", param="sequence_window")
        if self.sequence_backward < 0 or self.sequence_distance_power < 0:
            raise ConfigError("sequence_backward and sequence_distance_power must be ≥ 0", param="sequence_backward")
        if self.recent < 1 or self.content_recent < 1:
            raise ConfigError("recent and content_recent must be ≥ 1", param="recent")
        if not 0 < self.recency_decay <= 1:
            raise ConfigError("recency_decay must be in (0, 1]", param="recency_decay")
        both = [*self.weights.items(), *self.cold_start_weights.items()]
        bad = {s: w for s, w in both if not (isinstance(w, (int, float)) and w >= 0 and math.isfinite(w))}
        if bad:
            raise ConfigError(f"source weights must be finite and ≥ 0, got {bad}", param="weights")


@dataclass
class Candidate:
    """One retrieved item: fused score and its 1-based rank in each source that found it."""

    item_id: str
    score: float
    sources: dict[str, int]


@dataclass
class Retrieval:
    """Fused candidates (best first) and each source's own ranking."""

    candidates: list[Candidate]
    rankings: dict[str, list[str]]
    cold_start: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)  # per source, and "fusion"

    @property
    def ids(self) -> list[str]:
        return [c.item_id for c in self.candidates]


@dataclass
class Context:
    """What a source sees: the request, resolved (history validated, filter translated)."""

    history: list[str]  # oldest first, includes the newest interactions of the request
    seen: set[str]  # excluded from every source
    profile: str | None
    query: str | None
    filters: ItemFilter | None
    where: dict[str, Any] | None  # Chroma translation of ``filters``
    mask: np.ndarray | None  # boolean over catalog positions, same semantics as ``where``
    allowed: frozenset[str] | None  # ids passing the filter (lets the index filter in memory)
    depth: int


class Source(Protocol):
    """A retrieval source: ranked unseen item ids passing the filter, best first (≤ depth)."""

    name: str

    def rank(self, ctx: Context) -> list[str]: ...


def rrf_fuse(
    rankings: Mapping[str, Sequence[str]],
    weights: Mapping[str, float],
    *,
    rrf_k: float = 60.0,
    default_weight: float = 1.0,
) -> list[Candidate]:
    """Weighted reciprocal-rank fusion: ``Σ_s w_s / (rrf_k + rank_s)``, ranks from 1.

    Ties break by the best single rank, then by item id, so the order is deterministic.
    """
    scores: dict[str, float] = {}
    found: dict[str, dict[str, int]] = {}
    for name, ids in rankings.items():
        w = float(weights.get(name, default_weight))
        for r, i in enumerate(ids, start=1):
            if w > 0:
                scores[i] = scores.get(i, 0.0) + w / (rrf_k + r)
            else:
                scores.setdefault(i, 0.0)
            found.setdefault(i, {})[name] = r
    order = sorted(scores, key=lambda i: (-scores[i], min(found[i].values()), i))
    return [Candidate(i, scores[i], found[i]) for i in order]


# ----------------------------------------------------------------------------------------
# catalog side: attribute table (filter masks, knowledge graph), popularity


class _AttributeTable:
    """In-memory view of the catalog attributes: filter masks and the item–attribute graph."""

    def __init__(self, catalog: Catalog, knowledge: Mapping[str, float] | None):
        self.ids: list[str] = catalog.ids
        self.pos = {i: p for p, i in enumerate(self.ids)}
        self.schema: dict[str, AttrKind] = attribute_schema(catalog)
        n = len(self.ids)
        self._lists: dict[str, dict[str, np.ndarray]] = {}  # attr → value → positions
        self._scalars: dict[str, np.ndarray] = {}  # attr → object array (None = missing)
        for attr, kind in self.schema.items():
            col = catalog.items[attr]
            if kind == "list":
                inv: dict[str, list[int]] = {}
                for p, cell in enumerate(col.tolist()):
                    if isinstance(cell, (list, tuple, np.ndarray)):
                        for v in dict.fromkeys(str(x) for x in cell if str(x)):
                            inv.setdefault(v, []).append(p)
                self._lists[attr] = {v: np.asarray(ps, dtype=np.int64) for v, ps in inv.items()}
            else:
                self._scalars[attr] = np.array([coerce(v, kind) for v in col.tolist()], dtype=object)
        self._masks: dict[str, Any] = {}  # filter key → mask, "ids:" + key → allowed ids
        self._lock = threading.Lock()
        self.graph = self._graph(n, knowledge)

    def mask(self, f: ItemFilter | None) -> np.ndarray | None:
        """Boolean mask of items passing ``f`` (cached per filter); semantics of ``ItemFilter.to_where``."""
        if f is None:
            return None
        key = f.key()
        with self._lock:
            m = self._masks.get(key)
        if m is not None:
            return m
        f.validate(self.schema)
        n = len(self.ids)
        m = np.ones(n, dtype=bool)
        for attr, vals in f.include.items():
            m &= self._has_any(attr, vals, n)
        for attr, vals in f.exclude.items():
            m &= ~self._has_any(attr, vals, n)
        for attr, (lo, hi) in f.ranges.items():
            col = self._scalars[attr]
            present = np.array([v is not None for v in col])
            num = np.where(present, col, np.nan).astype(float)
            ok = present.copy()
            if lo is not None:
                ok &= num >= lo
            if hi is not None:
                ok &= num <= hi
            m &= ok
        with self._lock:
            if len(self._masks) > 256:  # bounded: filters come from users
                self._masks.clear()
            self._masks[key] = m
        return m

    def allowed(self, f: ItemFilter) -> frozenset[str]:
        """Ids passing ``f`` (cached with the mask)."""
        key = "ids:" + f.key()
        with self._lock:
            got = self._masks.get(key)
        if got is None:
            m = self.mask(f)
            got = frozenset(self.ids[p] for p in np.flatnonzero(m))
            with self._lock:
                self._masks[key] = got
        return got

    def _has_any(self, attr: str, vals: Sequence[Any], n: int) -> np.ndarray:
        out = np.zeros(n, dtype=bool)
        kind = self.schema[attr]
        if kind == "list":
            inv = self._lists[attr]
            for v in vals:
                ps = inv.get(str(v))
                if ps is not None:
                    out[ps] = True
        else:
            wanted = set(operands(vals, kind))
            col = self._scalars[attr]
            out[:] = [v is not None and v in wanted for v in col]
        return out

    def _graph(self, n: int, knowledge: Mapping[str, float] | None) -> sp.csr_matrix | None:
        """Items × attribute values, idf-weighted, rows L2-normalised; values of one item only are dropped."""
        if knowledge is None:
            # list attributes, plus categorical text attributes (repeated values: brand, director...)
            knowledge = {a: 1.0 for a in self._lists}
            for a, col in self._scalars.items():
                if self.schema[a] == "str":
                    vals = [v for v in col if v is not None]
                    if vals and len(set(vals)) < 0.5 * len(vals):
                        knowledge[a] = 1.0
        else:
            unknown = sorted(set(knowledge) - set(self.schema))
            if unknown:
                raise ConfigError(
                    f"knowledge_attributes names unknown attribute(s) {unknown}",
                    hint=f"choose from {sorted(self.schema)}",
                    param="knowledge_attributes",
                )
        rows: list[np.ndarray] = []
        cols: list[np.ndarray] = []
        vals: list[np.ndarray] = []
        ncol = 0
        for attr, weight in knowledge.items():
            if weight <= 0:
                continue
            if attr in self._lists:
                groups = self._lists[attr].values()
            else:
                s = pd.Series(self._scalars[attr])
                s = s[s.notna()]
                groups = [g.to_numpy() for _, g in s.index.to_series().groupby(s.values)]
            for ps in groups:
                if len(ps) < 2:
                    continue
                rows.append(np.asarray(ps))
                cols.append(np.full(len(ps), ncol))
                vals.append(np.full(len(ps), weight * math.log(n / len(ps) + 1.0)))
                ncol += 1
        if ncol == 0:
            return None
        x = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, ncol))
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return sp.csr_matrix(sp.diags(1.0 / norms) @ x)


def _top(scores: np.ndarray, ctx: Context, table: _AttributeTable) -> list[str]:
    """Best ``ctx.depth`` items by score among those passing the mask and not seen (score > -inf)."""
    s = scores.astype(np.float64, copy=True)
    if ctx.mask is not None:
        s[~ctx.mask] = -np.inf
    for i in ctx.seen:
        p = table.pos.get(i)
        if p is not None:
            s[p] = -np.inf
    ok = np.isfinite(s)
    n_ok = int(ok.sum())
    if n_ok == 0:
        return []
    d = min(ctx.depth, n_ok)
    part = np.argpartition(-s, d - 1)[:d]
    part = part[np.argsort(-s[part], kind="stable")]
    return [table.ids[p] for p in part if np.isfinite(s[p])]


# ----------------------------------------------------------------------------------------
# sources


class CFUserEncoder:
    """User vector from a fitted CF model with ``user_factors_for(codes)`` (the harness baselines).

    ``item_ids[code]`` maps the model's item codes to catalog ids. History items the model does
    not know (items added after training) are skipped; ``None`` when none is known.
    """

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


class _CFSource:
    def __init__(self, name: str, index: ItemIndex, encoder: Callable[[Sequence[str]], np.ndarray | None]):
        self.name, self.index, self.encoder = name, index, encoder

    def rank(self, ctx: Context) -> list[str]:
        if not ctx.history:
            return []
        v = self.encoder(ctx.history)
        if v is None:
            return []
        hits = self.index.query_cf(
            v[None, :], k=ctx.depth, where=ctx.where, allowed=ctx.allowed, exclude=ctx.seen, name=self.name
        )[0]
        return [h.item_id for h in hits]


class _ContentSource:
    """Content neighbours of the newest history items: one search with their recency-weighted
    mean vector (as good as one search per item on the validation stage, and one query)."""

    name = "content"

    def __init__(self, index: ItemIndex, recent: int, decay: float):
        self.index, self.recent, self.decay = index, recent, decay

    def rank(self, ctx: Context) -> list[str]:
        recent = list(dict.fromkeys(reversed(ctx.history)))[: self.recent]  # newest first, unique
        if not recent:
            return []
        vecs = self.index.vectors(recent)
        w = [(self.decay**age, vecs[i]) for age, i in enumerate(recent) if i in vecs]
        if not w:
            return []
        q = np.sum([a * v for a, v in w], axis=0)
        q /= max(float(np.linalg.norm(q)), 1e-12)
        hits = self.index.query_content(
            embeddings=q[None, :], k=ctx.depth, where=ctx.where, allowed=ctx.allowed, exclude=ctx.seen
        )[0]
        return [h.item_id for h in hits]


class _TextSource:
    """Content search with the profile text (``profile``) or the chat request (``query``)."""

    def __init__(self, name: str, index: ItemIndex):
        self.name, self.index = name, index

    def rank(self, ctx: Context) -> list[str]:
        text = ctx.profile if self.name == "profile" else ctx.query
        if not text or not text.strip():
            return []
        v = encode([text], self.index.config.model)
        hits = self.index.query_content(
            embeddings=v, k=ctx.depth, where=ctx.where, allowed=ctx.allowed, exclude=ctx.seen
        )
        return [h.item_id for h in hits[0]]


class _KnowledgeSource:
    """Items linked to the user's recent items through shared attributes (weighted overlap)."""

    name = "knowledge"

    def __init__(self, table: Callable[[], _AttributeTable], recent: int, decay: float):
        self.table, self.recent, self.decay = table, recent, decay

    def rank(self, ctx: Context) -> list[str]:
        t = self.table()
        if t.graph is None or not ctx.history:
            return []
        recent = [t.pos[i] for i in dict.fromkeys(reversed(ctx.history)) if i in t.pos][: self.recent]
        if not recent:
            return []
        w = self.decay ** np.arange(len(recent))
        profile = sp.csr_matrix(w[None, :]) @ t.graph[recent]  # 1 × attribute values
        scores = np.asarray((t.graph @ profile.T).todense()).ravel()
        scores[scores <= 0] = -np.inf  # no shared attribute: no link in the graph
        return _top(scores, ctx, t)


def _sequence_graph(
    sequences: Iterable[Sequence[str]], pos: Mapping[str, int], window: int, backward: float, power: float
) -> sp.csr_matrix | None:
    """Item × item co-occurrence within ``window`` steps of each timeline, rows normalised to sum 1.

    Row ``i`` says where users go around item ``i``: an item ``d`` steps after it adds
    ``1 / d**power``, one ``d`` steps before it ``backward / d**power`` (the next items matter
    more for "what comes next"; tuned on the validation stage).
    """
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for seq in sequences:
        codes = np.array([pos[i] for i in seq if i in pos], dtype=np.int64)
        for d in range(1, min(window, len(codes) - 1) + 1):
            rows.append(codes[:-d])
            cols.append(codes[d:])
            vals.append(np.full(len(codes) - d, 1.0 / d**power))
    if not rows:
        return None
    n = len(pos)
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    m = sp.csr_matrix(
        (np.concatenate([v, backward * v]), (np.concatenate([r, c]), np.concatenate([c, r]))), shape=(n, n)
    )
    m.setdiag(0)
    m.eliminate_zeros()
    sums = np.asarray(m.sum(axis=1)).ravel()
    sums[sums == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / sums) @ m)


class _SequenceSource:
    """Neighbours of the newest history items in the co-occurrence graph, recency-weighted."""

    name = "sequence"

    def __init__(self, retriever: Retriever, recent: int, decay: float):
        self.retriever, self.recent, self.decay = retriever, recent, decay

    def rank(self, ctx: Context) -> list[str]:
        t, g = self.retriever._table, self.retriever._sequence
        if g is None or not ctx.history:
            return []
        recent = [t.pos[i] for i in dict.fromkeys(reversed(ctx.history)) if i in t.pos][: self.recent]
        if not recent:
            return []
        w = self.decay ** np.arange(len(recent))
        scores = np.asarray((sp.csr_matrix(w[None, :]) @ g[recent]).todense()).ravel()
        scores[scores <= 0] = -np.inf
        return _top(scores, ctx, t)


class _PopularitySource:
    name = "popularity"

    def __init__(self, table: Callable[[], _AttributeTable], counts: Callable[[], np.ndarray | None]):
        self.table, self.counts = table, counts

    def rank(self, ctx: Context) -> list[str]:
        c = self.counts()
        if c is None:
            return []
        return _top(c, ctx, self.table())


# ----------------------------------------------------------------------------------------
# the retriever


class Retriever:
    """Fused multi-source candidate retrieval over an :class:`ItemIndex` and its catalog.

    ``cf`` maps CF collection names (as stored with :meth:`ItemIndex.set_cf_vectors`) to user
    encoders; each becomes a source of that name. ``interactions`` give stored histories for
    ``retrieve(user_id)`` and, unless given separately, the timelines of the ``sequence`` graph
    (``sequences``: item ids per user, oldest first) and the ``popularity`` counts.
    """

    def __init__(
        self,
        index: ItemIndex,
        catalog: Catalog,
        *,
        config: RetrieverConfig | None = None,
        cf: Mapping[str, Callable[[Sequence[str]], np.ndarray | None]] | None = None,
        interactions: Interactions | None = None,
        sequences: Iterable[Sequence[str]] | None = None,
        popularity: Mapping[str, float] | None = None,
        profiles: Callable[[str], Mapping[str, Any] | str | None] | None = None,
        extra_sources: Sequence[Source] = (),
    ):
        if catalog is None or len(catalog.items) == 0:
            raise EmptyInputError("the catalog is empty", hint="retrieve from a catalog with items")
        self.config = config or RetrieverConfig()
        self.index = index
        self.interactions = interactions
        self.profiles = profiles
        self._lock = threading.Lock()
        self._catalog = catalog
        self._table = _AttributeTable(catalog, self.config.knowledge_attributes)
        if popularity is None and interactions is not None and len(interactions):
            popularity = interactions.df["item_id"].value_counts().to_dict()
        self._popularity_map = dict(popularity) if popularity is not None else None
        self._pop = self._pop_array()
        if sequences is None and interactions is not None and len(interactions):
            sequences = (interactions.history(u) for u in interactions.users)
        self._sequences = [list(map(str, s)) for s in sequences] if sequences is not None else None
        self._sequence = self._sequence_graph()
        cfg = self.config
        self.sources: list[Source] = [_CFSource(name, index, enc) for name, enc in (cf or {}).items()]
        self.sources += [
            _ContentSource(index, cfg.content_recent, cfg.recency_decay),
            _TextSource("profile", index),
            _TextSource("query", index),
            _SequenceSource(self, cfg.recent, cfg.recency_decay),
            _KnowledgeSource(lambda: self._table, cfg.recent, cfg.recency_decay),
            _PopularitySource(lambda: self._table, lambda: self._pop),
            *extra_sources,
        ]
        names = [s.name for s in self.sources]
        if len(set(names)) != len(names):
            raise ConfigError(
                f"duplicate source names {names}", hint="give every CF collection / extra source its own name"
            )

    @classmethod
    def from_dataset(cls, index: ItemIndex, dataset: Dataset, **kw: Any) -> Retriever:
        """A retriever over ``dataset``'s catalog, its interactions and user profiles."""
        return cls(index, dataset.catalog, interactions=dataset.interactions, profiles=dataset.profile, **kw)

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    def _sequence_graph(self) -> sp.csr_matrix | None:
        if self._sequences is None:
            return None
        cfg = self.config
        return _sequence_graph(
            self._sequences, self._table.pos, cfg.sequence_window, cfg.sequence_backward, cfg.sequence_distance_power
        )

    def _pop_array(self) -> np.ndarray | None:
        if self._popularity_map is None:
            return None
        return np.array([float(self._popularity_map.get(i, 0.0)) for i in self._table.ids])

    # --- item cold start ---------------------------------------------------------------------

    def upsert_items(self, items: pd.DataFrame) -> int:
        """Add or replace catalog items (index = item id, catalog columns); they are embedded at
        once and retrievable by content, knowledge and filters (CF after the next training)."""
        if len(items) == 0:
            raise EmptyInputError("no items to upsert", hint="pass a DataFrame with at least one row")
        items = items.copy()
        items.index = items.index.astype(str)
        with self._lock:
            old = self._catalog.items
            unknown = sorted(set(items.columns) - set(old.columns))
            if unknown:
                raise ConfigError(
                    f"new items have columns the catalog lacks: {unknown}", hint=f"use columns of {list(old.columns)}"
                )
            merged = pd.concat([old.drop(index=items.index, errors="ignore"), items.reindex(columns=old.columns)])
            for col in self._catalog.list_attributes:
                merged[col] = merged[col].map(lambda v: v if isinstance(v, (list, tuple, np.ndarray)) else [])
            catalog = Catalog(merged, self._catalog.list_attributes)
            self.index.upsert_items(catalog, list(items.index))
            self._catalog = catalog
            self._table = _AttributeTable(catalog, self.config.knowledge_attributes)
            self._pop = self._pop_array()
            self._sequence = self._sequence_graph()
        return len(items)

    def delete_items(self, item_ids: Iterable[str]) -> int:
        """Remove items from the catalog view and the index."""
        ids = self._catalog.require(item_ids)
        with self._lock:
            self.index.delete_items(ids)
            rest = self._catalog.items.drop(index=ids)
            if len(rest) == 0:
                raise EmptyInputError("deleting these items would empty the catalog", hint="keep at least one item")
            self._catalog = Catalog(rest, self._catalog.list_attributes)
            self._table = _AttributeTable(self._catalog, self.config.knowledge_attributes)
            self._pop = self._pop_array()
            self._sequence = self._sequence_graph()
        return len(ids)

    # --- retrieval ---------------------------------------------------------------------------

    def retrieve(
        self,
        user_id: str | None = None,
        *,
        history: Sequence[str] | None = None,
        new_items: Sequence[str] = (),
        profile: str | Mapping[str, Any] | None = None,
        query: str | None = None,
        filters: ItemFilter | Mapping[str, Any] | None = None,
        k: int | None = None,
        exclude: Iterable[str] = (),
        sources: Iterable[str] | None = None,
    ) -> Retrieval:
        """Fused candidates for a user and/or a request.

        ``history`` (oldest first) replaces the stored history of ``user_id``; ``new_items`` are
        appended to it (the newest interactions, used without retraining). ``sources`` limits
        which sources run (default: all, weight > 0). A user with no history is served from
        ``profile`` (or the stored profile) and popularity.
        """
        cfg = self.config
        k = cfg.k if k is None else int(k)
        if k < 1:
            raise ConfigError(f"k={k} must be ≥ 1", param="k")
        hist = self._history(user_id, history, new_items, profile, query)
        if profile is None and user_id is not None and self.profiles is not None:
            profile = self.profiles(str(user_id)) or None
        profile_text = _profile_text(profile)
        f = ItemFilter.parse(filters)
        table = self._table
        mask = table.mask(f)  # validates the filter against the catalog attributes
        where = f.to_where(table.schema) if f is not None else None
        allowed = table.allowed(f) if f is not None else None
        seen = set(hist) | {str(i) for i in exclude} if cfg.exclude_seen else {str(i) for i in exclude}
        ctx = Context(hist, seen, profile_text, query, f, where, mask, allowed, max(cfg.depth, k))
        wanted = set(sources) if sources is not None else None
        if wanted is not None:
            unknown = wanted - {s.name for s in self.sources}
            if unknown:
                raise ConfigError(
                    f"unknown source(s) {sorted(unknown)}", hint=f"sources: {[s.name for s in self.sources]}"
                )
        weights = cfg.weights if hist else cfg.cold_start_weights
        default = cfg.default_weight if hist else 0.0
        rankings: dict[str, list[str]] = {}
        timings: dict[str, float] = {}
        for src in self.sources:
            if wanted is not None and src.name not in wanted:
                continue
            if wanted is None and weights.get(src.name, default) <= 0:
                continue  # a source with weight 0 would not change the fused order: skip its query
            t0 = time.perf_counter()
            ranked = src.rank(ctx)
            timings[src.name] = (time.perf_counter() - t0) * 1000
            if ranked:
                rankings[src.name] = ranked
        t0 = time.perf_counter()
        fused = rrf_fuse(rankings, weights, rrf_k=cfg.rrf_k, default_weight=default)
        timings["fusion"] = (time.perf_counter() - t0) * 1000
        return Retrieval(fused[:k], rankings, cold_start=not hist, timings_ms=timings)

    def _history(self, user_id, history, new_items, profile, query) -> list[str]:
        if history is not None:
            if isinstance(history, str):
                raise ConfigError("history must be a list of item ids, not one string", hint='e.g. history=["1", "50"]')
            hist = [str(i) for i in history]
        elif user_id is not None:
            if self.interactions is not None and str(user_id) in self.interactions:
                # stored events may name items since deleted from the catalog: skip those
                hist = [i for i in self.interactions.history(str(user_id)) if i in self._table.pos]
            elif new_items or profile or query or (self.profiles and self.profiles(str(user_id))):
                hist = []  # a new user: served from what the request carries
            else:
                raise UnknownIdError(
                    "user",
                    [user_id],
                    hint="use a user id from the interactions, or pass history=, profile= or query= for a new user",
                )
        else:
            hist = []
        hist = hist + [str(i) for i in new_items]
        unknown = [i for i in dict.fromkeys(hist) if i not in self._table.pos]
        if unknown:
            raise UnknownIdError(
                "item", unknown, hint="history items must be in the catalog (add new items with upsert_items)"
            )
        if user_id is None and history is None and not new_items and not profile and not query and self._pop is None:
            raise EmptyInputError(
                "nothing to retrieve from: no user, history, profile or query",
                hint="pass a user id, a history or a query",
            )
        return hist


def _profile_text(profile: str | Mapping[str, Any] | None) -> str | None:
    if profile is None:
        return None
    if isinstance(profile, str):
        return profile.strip() or None
    parts = []
    for k, v in profile.items():
        if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
            continue
        parts.append(str(v) if k == "text" else f"{k}: {', '.join(map(str, v)) if isinstance(v, list) else v}")
    return ". ".join(parts) or None


# ----------------------------------------------------------------------------------------
# harness adapter


class RetrieverSystem:
    """The retriever as a harness system: ``fit(split, stage)`` builds the index and trains the
    CF models on the stage's histories, ``topk(users, k)`` returns fused item codes.

    >>> sys = RetrieverSystem(cf_models={"cf": {"name": "als"}}).fit(split, "test")
    >>> sys.topk(np.arange(split.n_users), 20)
    """

    name = "retriever"

    @dataclass
    class Config:
        retriever: RetrieverConfig = field(default_factory=RetrieverConfig)
        # CF collection name → baseline spec (``name`` + options for make_baseline); one source each
        cf_models: dict[str, dict[str, Any]] = field(default_factory=lambda: {"cf": {"name": "als"}})
        index_path: str | None = None  # Chroma folder; None = a fresh temporary folder
        index_name: str | None = None  # collection prefix; None = "eval-<dataset>"
        model: str | None = None  # embedding model; None = bundled MiniLM
        progress: bool = False

    def __init__(
        self, config: RetrieverSystem.Config | None = None, *, index: ItemIndex | None = None, **overrides: Any
    ):
        cfg = config or self.Config()
        unknown = set(overrides) - set(asdict(cfg))
        if unknown:
            raise ConfigError(
                f"retriever: unknown option(s) {sorted(unknown)}", hint=f"options are {sorted(asdict(cfg))}"
            )
        for key, value in overrides.items():
            setattr(cfg, key, value)
        self.config = cfg
        self._index = index
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.retriever: Retriever | None = None
        self.split: Split | None = None
        self.stage: str | None = None
        self.cf_models: dict[str, Any] = {}

    @property
    def index(self) -> ItemIndex:
        if self._index is None:
            path = self.config.index_path
            if path is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="recagent-chroma-")
                path = self._tmp.name
            name = self.config.index_name or f"eval-{self.split.dataset.name if self.split else 'items'}"
            self._index = ItemIndex(
                IndexConfig(path=str(Path(path)), name=name, model=self.config.model, progress=self.config.progress)
            )
        return self._index

    def fit(self, split: Split, stage: str) -> RetrieverSystem:
        from .eval.baselines import make_baseline

        self.split, self.stage = split, stage
        catalog = split.dataset.catalog
        item_ids = [str(i) for i in split.item_ids]
        self.index.build(catalog)
        encoders = {}
        for cname, spec in self.config.cf_models.items():
            spec = dict(spec)
            model = make_baseline(spec.pop("name", "als"), **spec).fit(split, stage)
            enc = CFUserEncoder(model, item_ids)
            self.index.set_cf_vectors(catalog, item_ids, enc.item_factors(), name=cname, space="ip")
            self.cf_models[cname] = model
            encoders[cname] = enc
        pop = split.popularity(stage)
        self.retriever = Retriever(
            self.index,
            catalog,
            config=self.config.retriever,
            cf=encoders,
            sequences=([item_ids[c] for c in split.history(u, stage)] for u in range(split.n_users)),
            popularity=dict(zip(item_ids, pop.tolist(), strict=False)),
        )
        self._code = {i: c for c, i in enumerate(item_ids)}
        return self

    def _check(self) -> Retriever:
        if self.retriever is None or self.split is None:
            raise ConfigError("retriever is not fitted", hint="call fit(split, stage) first")
        return self.retriever

    def topk(self, users: np.ndarray, k: int, *, sources: Iterable[str] | None = None) -> np.ndarray:
        """Fused top-k item codes per user (-1 padded), history excluded."""
        r = self._check()
        out = np.full((len(users), k), -1, dtype=np.int64)
        for row, u in enumerate(np.asarray(users)):
            hist = [str(self.split.item_ids[c]) for c in self.split.history(int(u), self.stage)]
            res = r.retrieve(history=hist, k=k, sources=sources)
            codes = [self._code[i] for i in res.ids]
            out[row, : len(codes)] = codes
        return out

    def source_rankings(self, users: np.ndarray, depth: int | None = None) -> dict[str, np.ndarray]:
        """Each source's own ranking per user as item codes (n_users × depth, -1 padded): for
        reporting sources alone and tuning fusion weights without querying again."""
        r = self._check()
        depth = depth or r.config.depth
        out: dict[str, np.ndarray] = {s.name: np.full((len(users), depth), -1, dtype=np.int64) for s in r.sources}
        for row, u in enumerate(np.asarray(users)):
            hist = [str(self.split.item_ids[c]) for c in self.split.history(int(u), self.stage)]
            res = r.retrieve(history=hist, k=depth, sources=[s.name for s in r.sources])
            for name, ids in res.rankings.items():
                codes = [self._code[i] for i in ids[:depth]]
                out[name][row, : len(codes)] = codes
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.config)}
