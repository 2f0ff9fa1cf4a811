"""The three tables of a data set: the item catalog, the interactions, user profiles."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..errors import EmptyInputError, UnknownIdError

__all__ = ["Catalog", "Interactions", "Dataset", "as_list", "as_year", "top_tags", "with_tags"]


@dataclass
class Catalog:
    """Items indexed by string id: ``title``, ``text``, ``year`` and attribute columns.

    ``list_attributes`` names the columns whose cells are lists of strings (genres, tags...).
    """

    items: pd.DataFrame
    list_attributes: tuple[str, ...] = ()
    item_noun: str = "item"
    """How prompts and replies name an item ("movie" for MovieLens)."""

    def __post_init__(self) -> None:
        if len(self.items) == 0:
            raise EmptyInputError("the catalog is empty", hint="load a catalog with at least one item")
        self.items.index = self.items.index.astype(str)
        self.items.index.name = "item_id"
        for col in ("title", "text"):
            if col not in self.items:
                self.items[col] = ""
        self.items["title"] = self.items["title"].fillna("").astype(str)
        self.items["text"] = self.items["text"].fillna("").astype(str)

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: object) -> bool:
        return str(item_id) in self.items.index

    @property
    def ids(self) -> list[str]:
        return self.items.index.tolist()

    @property
    def attributes(self) -> list[str]:
        """Filterable attribute columns (everything but title and text)."""
        return [c for c in self.items.columns if c not in ("title", "text")]

    def require(self, item_ids: Iterable[str]) -> list[str]:
        """Return the ids as strings, raising :class:`UnknownIdError` for any not in the catalog."""
        ids = [str(i) for i in item_ids]
        missing = [i for i in ids if i not in self.items.index]
        if missing:
            raise UnknownIdError("item", missing, hint="use ids from the catalog (search titles with GET /items?q=... or the search_items tool)")
        return ids

    def get(self, item_id: str) -> dict[str, Any]:
        """All fields of one item as plain Python values."""
        (item_id,) = self.require([item_id])
        row = self.items.loc[item_id]
        out: dict[str, Any] = {"item_id": item_id}
        for col, val in row.items():
            out[col] = _plain(val)
        return out

    def subset(self, item_ids: Iterable[str]) -> Catalog:
        """A copy holding only ``item_ids`` (same attributes and item noun)."""
        return Catalog(self.items.loc[[str(i) for i in item_ids]].copy(), self.list_attributes, self.item_noun)

    def title(self, item_id: str) -> str:
        return str(self.items.at[str(item_id), "title"])

    def view(self, item_id: str) -> dict[str, Any]:
        """What prompts and answers show of an item: ``item_id``, ``title``, ``year``, ``genres``, ``tags``."""
        row = self.items.loc[str(item_id)]
        return {
            "item_id": str(item_id),
            "title": row["title"] or str(item_id),
            "year": as_year(row.get("year")),
            "genres": as_list(row.get("genres")),
            "tags": as_list(row.get("tags")),
        }

    def describe(self, item_id: str) -> str:
        """The text that represents an item for content embeddings: title, attributes, text."""
        row = self.items.loc[str(item_id)]
        parts = [row["title"]]
        for col in self.list_attributes:
            vals = row[col]
            if isinstance(vals, (list, tuple, np.ndarray)) and len(vals):
                parts.append(f"{col}: {', '.join(map(str, vals))}")
        if row["text"]:
            parts.append(row["text"])
        return ". ".join(parts)

    def search_title(self, query: str, limit: int = 5) -> list[str]:
        """Item ids whose title contains ``query`` (case-insensitive), shortest titles first."""
        q = query.strip().lower()
        if not q:
            return []
        titles = self.items["title"].str.lower()
        hits = titles[titles.str.contains(q, regex=False)]
        return hits.str.len().sort_values(kind="stable").index[:limit].tolist()


@dataclass
class Interactions:
    """User–item events: ``user_id``, ``item_id`` (str), ``timestamp`` (int64), ``rating`` (float, NaN if absent)."""

    df: pd.DataFrame
    presorted: bool = field(default=False, repr=False)
    """The rows are already in this order (the split's filtered copy): skip the sort."""
    _by_user: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.presorted:
            self._sort()
        if len(self.df):
            groups = self.df.groupby("user_id", sort=False).indices
            self._by_user = {u: idx for u, idx in groups.items()}

    def _sort(self) -> None:
        # one order everywhere: users, then time, ties in natural item-id order ("2" before "10"), as
        # in the split. Sorted on integer codes: string keys per row cost ~10x the memory and time.
        from .training import natural_key

        users, _ = pd.factorize(self.df["user_id"], sort=True)
        items, uniq = pd.factorize(self.df["item_id"].astype(str))
        rank = np.empty(len(uniq), dtype=np.int64)
        rank[sorted(range(len(uniq)), key=lambda j: (natural_key(uniq[j]), uniq[j]))] = np.arange(len(uniq))
        order = np.lexsort((rank[items], self.df["timestamp"].to_numpy(), users))  # stable
        self.df = self.df.take(order).reset_index(drop=True)

    def __len__(self) -> int:
        return len(self.df)

    @property
    def users(self) -> list[str]:
        return list(self._by_user)

    def __contains__(self, user_id: object) -> bool:
        return str(user_id) in self._by_user

    def history(self, user_id: str) -> list[str]:
        """The user's item ids, oldest first."""
        return self.user_frame(user_id)["item_id"].tolist()

    def user_frame(self, user_id: str) -> pd.DataFrame:
        """The user's events, oldest first."""
        idx = self._by_user.get(str(user_id))
        if idx is None:
            raise UnknownIdError(
                "user", [user_id], hint="use a user id from the interactions, or pass a history/profile for a new user"
            )
        return self.df.iloc[idx]


@dataclass
class Dataset:
    """A catalog, its interactions and optional user profiles (indexed by user id)."""

    name: str
    catalog: Catalog
    interactions: Interactions
    users: pd.DataFrame | None = None
    tag_events: pd.DataFrame | None = None
    """Dated tag applications (``user_id``, ``item_id``, ``tag``, ``timestamp``) behind the catalog's
    ``tags`` column, where the data has them (MovieLens): evaluation keeps only those dated before
    each tagger's held-out item, so no tag leaks a target."""

    def profile(self, user_id: str) -> dict[str, Any]:
        """Profile fields of a user (empty when the data has none)."""
        if self.users is None or str(user_id) not in self.users.index:
            return {}
        return {k: _plain(v) for k, v in self.users.loc[str(user_id)].items() if not _is_missing(v)}


def top_tags(events: pd.DataFrame, per_item: int = 10) -> pd.Series:
    """item id → its ``per_item`` most frequent tags, lower-cased (ties alphabetical)."""
    t = events.assign(tag=events["tag"].astype(str).str.strip().str.lower())
    t = t[t["tag"] != ""].groupby(["item_id", "tag"]).size().rename("n").reset_index()
    t = t.sort_values(["item_id", "n", "tag"], ascending=[True, False, True]).groupby("item_id").head(per_item)
    return t.groupby("item_id")["tag"].agg(list)


def with_tags(catalog: Catalog, events: pd.DataFrame) -> Catalog:
    """A copy of ``catalog`` whose ``tags`` column is rebuilt from ``events``."""
    items = catalog.items.copy()
    tags = top_tags(events) if len(events) else pd.Series(dtype=object)
    items["tags"] = [list(tags.get(i, [])) for i in items.index]
    lists = catalog.list_attributes if "tags" in catalog.list_attributes else (*catalog.list_attributes, "tags")
    return Catalog(items, lists, catalog.item_noun)


def as_list(v: Any) -> list[str]:
    """A list cell as strings; anything that is not a list (missing, NaN) is ``[]``."""
    return [str(x) for x in v] if isinstance(v, (list, tuple, np.ndarray)) else []


def as_year(v: Any) -> int | None:
    """A year cell as an int, ``None`` when missing or not a number."""
    try:
        return None if v is None or pd.isna(v) else int(v)
    except (TypeError, ValueError):
        return None


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if _is_missing(v):
        return None
    return v


def _is_missing(v: Any) -> bool:
    try:
        return bool(pd.isna(v)) if not isinstance(v, (list, tuple, np.ndarray)) else False
    except (TypeError, ValueError):
        return False
