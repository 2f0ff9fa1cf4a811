"""The catalog's attributes in memory: filter masks and the item–attribute (knowledge) graph."""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data import Catalog
from ..errors import ConfigError
from ..store import AttrKind, ItemFilter, attribute_schema, coerce, operands

if TYPE_CHECKING:
    from .context import Context

__all__ = ["AttributeTable", "top_items"]


class AttributeTable:
    """The catalog's attributes in memory: filter masks (same semantics as Chroma ``where``) and the
    idf-weighted item–attribute graph of the knowledge source."""

    def __init__(self, catalog: Catalog, knowledge: Mapping[str, float] | None):
        self.catalog = catalog
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

    def __getstate__(self) -> dict[str, Any]:  # shipped to Ray actors: the lock and mask cache stay here
        return {**self.__dict__, "_lock": None, "_masks": {}}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _lock=threading.Lock())

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


def top_items(scores: np.ndarray, ctx: Context, table: AttributeTable) -> list[str]:
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
