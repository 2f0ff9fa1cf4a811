"""What a model may learn from: each user's items, oldest first, as dense integer codes.

Two sources make one:

* :meth:`TrainData.from_dataset` — every interaction of a data set (what the serving CF model
  and the serving retriever's graphs learn from);
* ``Split.train_data(stage)`` — each user's history before the stage's target (evaluation), so
  nothing fitted at a stage can see that stage's target.

>>> data = TrainData.from_dataset(load_dataset())
>>> data.matrix().shape, data.popularity()[:3]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..errors import UnknownIdError
from .tables import Catalog, Dataset

__all__ = ["TrainData", "natural_key"]


def natural_key(x: str) -> tuple[int, int, str]:
    """Sort numeric ids as numbers ("2" before "10"), other ids after them as text. The one order
    of items everywhere: dense codes, and ties of equal timestamps in every timeline."""
    return (0, int(x), "") if x.isdigit() else (1, 0, x)


@dataclass
class TrainData:
    """Per-user item code sequences (oldest first) over ``item_ids`` (code → catalog id)."""

    name: str
    catalog: Catalog
    item_ids: np.ndarray
    user_ids: np.ndarray
    sequences: list[np.ndarray]
    ratings: list[np.ndarray]
    _code: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _user: dict[str, int] = field(default_factory=dict, init=False, repr=False)
    _matrix: sp.csr_matrix | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._code = {str(i): c for c, i in enumerate(self.item_ids)}
        self._user = {str(u): c for c, u in enumerate(self.user_ids)}

    @classmethod
    def from_dataset(cls, dataset: Dataset) -> TrainData:
        """All interactions of ``dataset`` with catalog items, users and items in natural id order."""
        df = dataset.interactions.df
        df = df[df["item_id"].isin(dataset.catalog.items.index)]
        item_ids = np.array(sorted(df["item_id"].unique(), key=natural_key), dtype=object)
        user_ids = np.array(sorted(df["user_id"].unique(), key=natural_key), dtype=object)
        code = pd.Series(np.arange(len(item_ids)), index=item_ids)
        codes = code.loc[df["item_id"]].to_numpy()
        # Interactions are already ordered by (user, timestamp, natural item order)
        groups = pd.Series(np.arange(len(df)), index=df["user_id"].to_numpy()).groupby(level=0, sort=False).indices
        rating = df["rating"].to_numpy()
        seqs = [codes[groups[u]] for u in user_ids]
        rats = [rating[groups[u]] for u in user_ids]
        return cls(dataset.name, dataset.catalog, item_ids, user_ids, seqs, rats)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_interactions(self) -> int:
        return int(sum(len(s) for s in self.sequences))

    def item_code(self, item_id: str) -> int:
        try:
            return self._code[str(item_id)]
        except KeyError:
            raise UnknownIdError("item", [item_id], hint="the item has no interactions in the training data") from None

    def codes(self, item_ids: Iterable[str]) -> np.ndarray:
        """Codes of the given ids; ``-1`` for an item the training data does not know."""
        return np.array([self._code.get(str(i), -1) for i in item_ids], dtype=np.int64)

    def user_code(self, user_id: str | None) -> int:
        """The user's row, or ``-1`` for a user the training data does not know."""
        return -1 if user_id is None else self._user.get(str(user_id), -1)

    def history_ids(self, u: int) -> list[str]:
        return [str(self.item_ids[c]) for c in self.sequences[u]]

    def matrix(self) -> sp.csr_matrix:
        """Binary users × items matrix (cached)."""
        if self._matrix is None:
            rows = np.repeat(np.arange(self.n_users), [len(s) for s in self.sequences])
            cols = np.concatenate(self.sequences) if self.sequences else np.zeros(0, dtype=np.int64)
            m = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(self.n_users, self.n_items))
            m.sum_duplicates()
            m.data[:] = 1.0
            self._matrix = m
        return self._matrix

    def popularity(self) -> np.ndarray:
        """Users who interacted with each item."""
        return np.asarray(self.matrix().sum(axis=0)).ravel()

    def rows_for(self, histories: Sequence[Sequence[str]]) -> sp.csr_matrix:
        """Binary rows for histories given as item ids (unknown items are skipped)."""
        indptr, cols = [0], []
        for h in histories:
            c = np.unique(self.codes(h))
            c = c[c >= 0]
            cols.append(c)
            indptr.append(indptr[-1] + len(c))
        idx = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
        return sp.csr_matrix((np.ones(len(idx), dtype=np.float32), idx, indptr), shape=(len(histories), self.n_items))
