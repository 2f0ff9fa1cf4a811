"""Catalog, interactions and user profiles for any item domain, and their loaders.

Ids are strings everywhere in the public API (MovieLens' integer ids become ``"1"``, ``"2"``...).

The generic format (any domain: movies, products, news, music) is three tables, each a CSV,
JSONL or Parquet file:

* interactions: ``user_id``, ``item_id``, ``timestamp`` (int seconds or ISO date), optional
  ``rating`` (float);
* catalog: ``item_id``, ``title``, optional ``text`` (free description), optional ``year`` and
  any other attribute columns. List attributes (``genres``, ``tags``, ``brand``...) are lists in
  JSONL/Parquet, or ``|``-separated strings in CSV;
* users (optional): ``user_id`` and any of ``age``, ``gender``, ``occupation``, ``text``.

>>> ds = load_dataset("ml-latest-small")          # the copy shipped in data/
>>> ds.catalog.title("1")
'Toy Story (1995)'
>>> ds.interactions.history("1")[:3]              # chronological item ids
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .movielens import DATA_DIR, SHIPPED_DATASETS, load_movielens
from .readers import iter_jsonl, load_generic, read_table
from .tables import Catalog, Dataset, Interactions, as_list, as_year
from .training import TrainData, natural_key

__all__ = [
    "Catalog",
    "Interactions",
    "Dataset",
    "load_dataset",
    "load_movielens",
    "load_generic",
    "read_table",
    "iter_jsonl",
    "as_list",
    "as_year",
    "TrainData",
    "natural_key",
    "DATA_DIR",
    "SHIPPED_DATASETS",
]


def load_dataset(spec: str | Path = "ml-latest-small") -> Dataset:
    """Load by name (``ml-latest-small``, shipped) or by path (a MovieLens folder/zip, or a
    folder holding ``interactions.*``, ``catalog.*`` and optionally ``users.*`` in the generic format)."""
    if str(spec) in SHIPPED_DATASETS:
        return load_movielens(SHIPPED_DATASETS[str(spec)])
    path = Path(spec)
    if not path.exists():
        raise DataError(
            "data set not found",
            file=str(path),
            hint=f"pass one of {sorted(SHIPPED_DATASETS)} or a path to a MovieLens folder/zip or a generic-format folder",
        )
    if path.is_dir():
        found = {
            stem: next((p for p in sorted(path.iterdir()) if p.name.split(".")[0] == stem), None)
            for stem in ("interactions", "catalog", "users")
        }
        if found["interactions"] is not None and found["catalog"] is not None:
            return load_generic(found["interactions"], found["catalog"], found["users"], name=path.name)
    return load_movielens(path)
