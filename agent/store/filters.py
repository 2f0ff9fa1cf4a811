"""Item attributes as filterable metadata, and the filter language (include / exclude / ranges).

An :class:`ItemFilter` is written once and used two ways: translated to a Chroma ``where`` clause
(:meth:`ItemFilter.to_where`) or evaluated in memory over the catalog (``recagent.retrieval.attributes``);
both give the same items. A filter on an attribute the catalog does not have raises ConfigError.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..data import Catalog
from ..errors import ConfigError

__all__ = ["AttrKind", "ItemFilter", "attribute_schema", "coerce", "operands", "item_metadata"]

AttrKind = Literal["list", "int", "float", "str", "bool"]
# ----------------------------------------------------------------------------------------
# attributes → metadata


def attribute_schema(catalog: Catalog) -> dict[str, AttrKind]:
    """Kind of each filterable attribute: ``list``, ``int``, ``float``, ``str`` or ``bool``.

    String columns whose non-empty cells all parse as numbers (CSV catalogs read everything as
    text) count as numeric, so ``price < 20`` works on a generic catalog.
    """
    schema: dict[str, AttrKind] = {}
    items = catalog.items
    for col in catalog.attributes:
        s = items[col]
        if col in catalog.list_attributes:
            schema[col] = "list"
        elif pd.api.types.is_bool_dtype(s):
            schema[col] = "bool"
        elif pd.api.types.is_integer_dtype(s):
            schema[col] = "int"
        elif pd.api.types.is_float_dtype(s):
            schema[col] = "float"
        else:
            vals = s[s.notna() & (s.astype(str) != "")]
            if len(vals) and vals.map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any():
                schema[col] = "list"
                continue
            num = pd.to_numeric(vals, errors="coerce") if len(vals) else vals
            if len(vals) and num.notna().all():
                schema[col] = "int" if np.all(np.mod(num.to_numpy(dtype=float), 1) == 0) else "float"
            else:
                schema[col] = "str"
    return schema


def coerce(value: Any, kind: AttrKind) -> Any:
    """A cell or filter operand as the Python type Chroma stores for ``kind``; None if missing."""
    if value is None:
        return None
    if kind == "list":
        if isinstance(value, (list, tuple, np.ndarray)):
            out = list(dict.fromkeys(str(v) for v in value if str(v)))
            return out or None  # Chroma rejects empty lists: leave the key out
        return [str(value)] if str(value) else None
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if kind == "int":
        f = float(value)
        return int(f) if f.is_integer() else f
    if kind == "float":
        return float(value)
    if kind == "bool":
        return str(value).lower() in ("1", "true", "yes") if isinstance(value, str) else bool(value)
    s = str(value)
    return s if s else None


def item_metadata(catalog: Catalog, item_ids: Sequence[str], schema: Mapping[str, AttrKind]) -> list[dict[str, Any]]:
    """Chroma metadata for each item: ``title`` plus every attribute that has a value."""
    rows = catalog.items.loc[list(item_ids)]
    cols = [c for c in schema if c in rows.columns]
    out = []
    for title, *vals in rows[["title", *cols]].itertuples(index=False, name=None):
        meta: dict[str, Any] = {"title": str(title)}
        for col, v in zip(cols, vals, strict=False):
            c = coerce(v, schema[col])
            if c is not None:
                meta[col] = c
        out.append(meta)
    return out


# ----------------------------------------------------------------------------------------
# filters


@dataclass(frozen=True)
class ItemFilter:
    """Metadata filter: ``include`` any-of values, ``exclude`` none-of values, inclusive ``ranges``.

    ``ItemFilter(include={"genres": ["Comedy", "Drama"]}, exclude={"genres": ["Horror"]},
    ranges={"year": (1990, 1999)})`` keeps comedies or dramas from the 1990s that are not horror.
    On list attributes ``include`` means "contains any of", on scalars "equals any of". Items
    without the attribute fail ``include`` and ``ranges`` and pass ``exclude``.
    """

    include: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    exclude: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    ranges: Mapping[str, tuple[float | None, float | None]] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: ItemFilter | Mapping[str, Any] | None) -> ItemFilter | None:
        """From a dict ``{"include": {...}, "exclude": {...}, "ranges": {"year": [lo, hi]}}``
        (JSON from the CLI or the HTTP API); ``None`` or an empty filter → ``None``."""
        if spec is None or isinstance(spec, ItemFilter):
            return None if spec is None or spec.empty else spec
        if not isinstance(spec, Mapping):
            raise ConfigError(f"a filter must be a mapping, got {type(spec).__name__}", param="filters")
        unknown = set(spec) - {"include", "exclude", "ranges"}
        if unknown:
            raise ConfigError(
                f"unknown filter key(s) {sorted(unknown)}",
                hint='use {"include": {attr: [values]}, "exclude": {attr: [values]}, "ranges": {attr: [min, max]}}',
                param="filters",
            )

        def values(d: Any, key: str) -> dict[str, list[Any]]:
            if not isinstance(d, Mapping):
                raise ConfigError(f"filter {key!r} must map attribute → values", param="filters")
            return {str(k): list(v) if isinstance(v, (list, tuple, set)) else [v] for k, v in d.items()}

        ranges = {}
        if not isinstance(spec.get("ranges") or {}, Mapping):
            raise ConfigError('filter "ranges" must map attribute → [min, max]', hint='e.g. {"ranges": {"year": [1990, 1999]}}',
                              param="filters")  # fmt: skip
        for k, v in dict(spec.get("ranges") or {}).items():
            if not isinstance(v, (list, tuple)) or len(v) != 2:
                raise ConfigError(f"range for {k!r} must be [min, max] (null for open)", param="filters")
            ranges[str(k)] = (v[0], v[1])
        f = cls(values(spec.get("include") or {}, "include"), values(spec.get("exclude") or {}, "exclude"), ranges)
        return None if f.empty else f

    @property
    def empty(self) -> bool:
        return not (self.include or self.exclude or self.ranges)

    @property
    def attributes(self) -> set[str]:
        return set(self.include) | set(self.exclude) | set(self.ranges)

    def key(self) -> str:
        """A stable string for caching masks of equal filters."""
        return json.dumps(
            [sorted((k, sorted(map(str, v))) for k, v in self.include.items()),
             sorted((k, sorted(map(str, v))) for k, v in self.exclude.items()),
             sorted((k, [str(x) for x in v]) for k, v in self.ranges.items())],
        )  # fmt: skip

    def validate(self, schema: Mapping[str, AttrKind]) -> None:
        """Raise :class:`ConfigError` for an attribute the catalog lacks or a range on text."""
        missing = sorted(self.attributes - set(schema))
        if missing:
            raise ConfigError(
                f"filter on unknown attribute(s) {missing}",
                hint=f"filterable attributes of this catalog: {sorted(schema)}",
                param="filters",
            )
        for attr, (lo, hi) in self.ranges.items():
            if schema[attr] not in ("int", "float"):
                raise ConfigError(
                    f"range filter on {attr!r}, which is {schema[attr]}, not numeric",
                    hint="use include/exclude for text and list attributes",
                    param="filters",
                )
            for v in (lo, hi):
                if v is not None and not isinstance(v, (int, float)):
                    raise ConfigError(f"range bound {v!r} for {attr!r} is not a number", param="filters")
        for part in (self.include, self.exclude):
            for attr, vals in part.items():
                if not vals:
                    raise ConfigError(f"empty value list for {attr!r} in the filter", param="filters")
                if schema[attr] in ("int", "float"):
                    for v in vals:
                        try:
                            num = float(v)
                        except (TypeError, ValueError):
                            raise ConfigError(
                                f"filter value {v!r} for numeric attribute {attr!r} is not a number", param="filters"
                            ) from None
                        if schema[attr] == "int" and not num.is_integer():
                            raise ConfigError(
                                f"filter value {v!r} can never match integer attribute {attr!r}",
                                hint="use a whole number, or a range for intervals",
                                param="filters",
                            )

    def to_where(self, schema: Mapping[str, AttrKind]) -> dict[str, Any] | None:
        """The equivalent Chroma ``where`` clause (validated first)."""
        self.validate(schema)
        clauses: list[dict[str, Any]] = []
        for attr, vals in self.include.items():
            kind = schema[attr]
            if kind == "list":
                ors = [{attr: {"$contains": str(v)}} for v in dict.fromkeys(map(str, vals))]
                clauses.append(ors[0] if len(ors) == 1 else {"$or": ors})
            else:
                clauses.append({attr: {"$in": operands(vals, kind)}})
        for attr, vals in self.exclude.items():
            kind = schema[attr]
            if kind == "list":
                clauses.extend({attr: {"$not_contains": str(v)}} for v in dict.fromkeys(map(str, vals)))
            else:
                clauses.append({attr: {"$nin": operands(vals, kind)}})
        for attr, (lo, hi) in self.ranges.items():
            if schema[attr] == "int":
                # Chroma truncates a float bound on an int field (year ≥ 1990.5 keeps 1990): round inwards
                lo = None if lo is None else math.ceil(lo)
                hi = None if hi is None else math.floor(hi)
            if lo is not None:
                clauses.append({attr: {"$gte": lo}})
            if hi is not None:
                clauses.append({attr: {"$lte": hi}})
        if not clauses:
            return None
        return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def operands(vals: Sequence[Any], kind: AttrKind) -> list[Any]:
    out = [coerce(v, kind) for v in vals]  # validate() made sure numeric values parse
    out = list(dict.fromkeys(v for v in out if v is not None))
    if not out:
        raise ConfigError(f"no usable filter values in {list(vals)!r}", hint="pass non-empty values", param="filters")
    return out
