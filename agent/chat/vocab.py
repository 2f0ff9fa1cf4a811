"""What a catalog lets a chat request constrain: small attribute vocabularies and the year span."""

from __future__ import annotations

import time
from dataclasses import dataclass

from ..data import Catalog
from ..store import attribute_schema

__all__ = ["CatalogVocab"]


@dataclass
class CatalogVocab:
    """``attr_values``: list/str attributes with 2..``max_values`` distinct values (genres yes,
    tags no); ``year_attr``: ``"year"`` when the catalog has a numeric year column."""

    attr_values: dict[str, list[str]]
    year_attr: str | None
    min_year: int
    max_year: int

    @classmethod
    def from_catalog(cls, catalog: Catalog, max_values: int = 60) -> CatalogVocab:
        schema = attribute_schema(catalog)
        year_attr = "year" if schema.get("year") in ("int", "float") else None
        years = catalog.items["year"].dropna() if year_attr else None
        has_years = years is not None and len(years) > 0
        attr_values: dict[str, list[str]] = {}
        for attr, kind in schema.items():
            if kind not in ("list", "str") or attr in ("year", "title"):
                continue
            cells = catalog.items[attr]
            vals = sorted(
                {
                    str(v)
                    for cell in cells
                    for v in (cell if isinstance(cell, (list, tuple)) else [cell])
                    if v is not None and str(v)
                }
            )
            if 2 <= len(vals) <= max_values:
                attr_values[attr] = vals
        return cls(
            attr_values=attr_values,
            year_attr=year_attr,
            min_year=int(years.min()) if has_years else 1900,
            max_year=int(years.max()) if has_years else time.gmtime().tm_year,
        )
