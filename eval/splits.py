"""Evaluation protocols: LlamaRec preprocessing + leave-one-out, and LLMRank candidate sets.

LlamaRec (Yue et al. 2023) on ml-latest-small: drop items without a title, keep items with at
least 5 interactions, then users with at least 5 (one pass each, as its code does), order each
user's items by (timestamp, item id); the last item is the test target, the second-to-last the
validation target, the rest is training history. Expected: 610 users, 3650 items, 90274 rows.

Items and users get dense integer codes; ``split.item_ids[code]`` maps back to the catalog id.

What a system may learn from at a stage is ``split.train_data(stage)``: every user's history
before the stage's target, and a catalog whose dated tags (MovieLens ``tags.csv``) are only those
each tagger applied before their own held-out item — so no fitted model, index, graph or prompt
sees a target. ``split.query(u, stage)`` is what a system is asked for user ``u``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recagent.components import Query
from recagent.data import Dataset, Interactions, TrainData, natural_key
from recagent.data.tables import with_tags
from recagent.errors import ConfigError, EmptyInputError, UnknownIdError

__all__ = ["Split", "Stage", "llamarec_split", "llmrank_candidates", "STAGES"]

Stage = Literal["val", "test"]
STAGES: tuple[str, ...] = ("val", "test")


@dataclass
class Split:
    """Per-user chronological sequences with the last two items held out.

    ``sequences[u]`` holds all item codes of user ``u``, oldest first. For stage ``val`` the
    history is ``sequences[u][:-2]`` and the target ``sequences[u][-2]``; for ``test`` the
    history is ``sequences[u][:-1]`` and the target the last item.
    """

    dataset: Dataset
    item_ids: np.ndarray
    user_ids: np.ndarray
    sequences: list[np.ndarray]
    ratings: list[np.ndarray]
    timestamps: list[np.ndarray] | None = None

    def __post_init__(self) -> None:
        self._item_code = {i: c for c, i in enumerate(self.item_ids)}
        self._user_code = {u: c for c, u in enumerate(self.user_ids)}
        self._matrices: dict[str, sp.csr_matrix] = {}
        self._train: dict[str, TrainData] = {}

    def _cut(self, stage: str) -> int:
        return -2 if stage == "val" else -1

    def train_data(self, stage: str) -> TrainData:
        """Histories before the stage's targets, with the stage's leak-free catalog (cached)."""
        self._check_stage(stage)
        if stage not in self._train:
            self._train[stage] = TrainData(
                f"{self.dataset.name}@{stage}",
                self.catalog(stage),
                self.item_ids,
                self.user_ids,
                [self.history(u, stage) for u in range(self.n_users)],
                [self.history_ratings(u, stage) for u in range(self.n_users)],
            )
        return self._train[stage]

    def catalog(self, stage: str):
        """The catalog a system may use at ``stage``: dated tags only from before each tagger's
        held-out item (taggers outside the split keep theirs; they hold no target)."""
        self._check_stage(stage)
        return self.catalog_before({u: len(s) + self._cut(stage) for u, s in enumerate(self.sequences)})

    def catalog_before(self, positions: Mapping[int, int]):
        """The catalog with each user's dated tags kept only if applied before the interaction at
        ``positions[user code]`` of their timeline (users not named keep all their tags)."""
        events = self.dataset.tag_events
        if events is None or self.timestamps is None:
            return self.dataset.catalog
        cut = {str(self.user_ids[u]): int(self.timestamps[u][p]) for u, p in positions.items()}
        limit = events["user_id"].astype(str).map(cut)
        keep = limit.isna() | (events["timestamp"] < limit.fillna(0))
        return with_tags(self.dataset.catalog, events[keep.to_numpy()])

    def query(self, u: int, stage: str) -> Query:
        """What a system is asked for user ``u`` at ``stage``: its history before the target."""
        uid = str(self.user_ids[u])
        return Query(
            user_id=uid,
            history=tuple(str(self.item_ids[c]) for c in self.history(u, stage)),
            ratings=tuple(None if np.isnan(r) else float(r) for r in self.history_ratings(u, stage)),
            profile=self.dataset.profile(uid),
        )

    n_users = TrainData.n_users
    n_items = TrainData.n_items
    n_interactions = TrainData.n_interactions

    def _check_stage(self, stage: str) -> None:
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r}", hint=f"use one of {STAGES}")

    def history(self, u: int, stage: str) -> np.ndarray:
        """Item codes the user interacted with before the stage's target, oldest first."""
        self._check_stage(stage)
        return self.sequences[u][: -2 if stage == "val" else -1]

    def history_ratings(self, u: int, stage: str) -> np.ndarray:
        self._check_stage(stage)
        return self.ratings[u][: -2 if stage == "val" else -1]

    def target(self, u: int, stage: str) -> int:
        self._check_stage(stage)
        return int(self.sequences[u][-2 if stage == "val" else -1])

    def targets(self, stage: str) -> np.ndarray:
        return np.array([self.target(u, stage) for u in range(self.n_users)])

    def history_matrix(self, stage: str) -> sp.csr_matrix:
        """Binary users × items matrix of each user's history for the stage (cached)."""
        if stage not in self._matrices:
            rows, cols = [], []
            for u in range(self.n_users):
                h = self.history(u, stage)
                rows.append(np.full(len(h), u))
                cols.append(h)
            r, c = np.concatenate(rows), np.concatenate(cols)
            m = sp.csr_matrix((np.ones(len(r), dtype=np.float32), (r, c)), shape=(self.n_users, self.n_items))
            m.sum_duplicates()
            m.data[:] = 1.0
            self._matrices[stage] = m
        return self._matrices[stage]

    def item_code(self, item_id: str) -> int:
        try:
            return self._item_code[str(item_id)]
        except KeyError:
            raise UnknownIdError("item", [item_id], hint="the item is not in the filtered split") from None

    def user_code(self, user_id: str) -> int:
        try:
            return self._user_code[str(user_id)]
        except KeyError:
            raise UnknownIdError("user", [user_id], hint="the user is not in the filtered split") from None

    def popularity(self, stage: str) -> np.ndarray:
        """Interaction counts per item code over the stage's histories."""
        return np.asarray(self.history_matrix(stage).sum(axis=0)).ravel()

    def stats(self) -> dict[str, float]:
        lengths = np.array([len(s) for s in self.sequences])
        return {
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "avg_length": round(float(lengths.mean()), 2),
            "density": round(self.n_interactions / (self.n_users * self.n_items), 5),
        }


def llamarec_split(dataset: Dataset, *, min_user: int = 5, min_item: int = 5) -> Split:
    """Apply the LlamaRec preprocessing and leave-one-out split (see module docstring)."""
    df = dataset.interactions.df
    # filters on integer codes (one boolean mask, one copy at the end): string-keyed value_counts
    # and isin per filter cost several copies of the table
    icode, iuniq = pd.factorize(df["item_id"])
    ucode, _ = pd.factorize(df["user_id"])
    titled = dataset.catalog.items.index[dataset.catalog.items["title"].str.strip() != ""]
    keep = pd.Index(iuniq).isin(titled)[icode]
    if min_item > 0:
        keep &= np.bincount(icode[keep], minlength=len(iuniq))[icode] >= min_item
    if min_user > 0:
        keep &= np.bincount(ucode[keep], minlength=ucode.max() + 1)[ucode] >= min_user
    # leave-one-out needs two held-out items plus some history
    keep &= np.bincount(ucode[keep], minlength=ucode.max() + 1)[ucode] >= 3
    if not keep.any():
        raise EmptyInputError(
            "no user is left after filtering",
            hint=f"the data needs users and items with ≥{min_user}/{min_item} interactions",
        )
    df = df[keep]
    kept_items = np.unique(icode[keep])
    item_ids = np.array(sorted(iuniq[kept_items], key=natural_key), dtype=object)
    user_ids = np.array(sorted(df["user_id"].unique(), key=natural_key), dtype=object)
    code_of = np.full(len(iuniq), -1, dtype=np.int64)
    code_of[kept_items] = pd.Index(item_ids).get_indexer(iuniq[kept_items])
    codes = code_of[icode[keep]]
    # Interactions keeps rows in (user, time, natural item) order, codes follow the natural order,
    # and filtering keeps the order: each user's rows are already one chronological run
    ucode = ucode[keep]
    starts = np.flatnonzero(np.r_[True, ucode[1:] != ucode[:-1]])
    users = df["user_id"].to_numpy()[starts]
    row = dict(zip(users.tolist(), range(len(starts)), strict=True))
    order = np.array([row[u] for u in user_ids.tolist()], dtype=np.int64)
    cuts = starts[1:]
    seqs, rats, times = (
        [parts[j] for j in order]
        for parts in (np.split(a, cuts) for a in (codes, df["rating"].to_numpy(), df["timestamp"].to_numpy()))
    )
    catalog = dataset.catalog.subset(item_ids)
    tags = dataset.tag_events
    if tags is not None:
        tags = tags[tags["item_id"].isin(set(item_ids))]
    # already in the Interactions order (user, time, natural item order = code order): no re-sort
    kept = Interactions(df.reset_index(drop=True), presorted=True)
    return Split(Dataset(dataset.name, catalog, kept, dataset.users, tags), item_ids, user_ids, seqs, rats, times)


def llmrank_candidates(split: Split, stage: str, *, n: int = 20, seed: int = 0) -> np.ndarray:
    """LLMRank protocol: per user the true item plus ``n-1`` items drawn uniformly from the items
    the user never interacted with (not even after the stage's target), shuffled.

    Returns an ``(n_users, n)`` array of item codes; seeded, so runs are comparable.
    """
    split._check_stage(stage)
    if n < 2 or n > split.n_items:
        raise ConfigError(
            f"{n} candidates per user is out of range: the filtered catalog of {split.dataset.name} has {split.n_items} items",
            hint=f"pass --n-candidates between 2 and {split.n_items} (LLMRank uses 20)",
            param="n_candidates",
        )
    rng = np.random.default_rng(seed)
    out = np.empty((split.n_users, n), dtype=np.int64)
    for u in range(split.n_users):
        target = split.target(u, stage)
        seen = set(split.sequences[u].tolist())  # every interaction, the held-out ones included
        free = split.n_items - len(seen)
        if free < n - 1:
            raise ConfigError(
                f"user {split.user_ids[u]!r} interacted with {len(seen)} of {split.n_items} items: only {free} are left "
                f"to draw {n - 1} negatives from",
                hint=f"pass a smaller --n-candidates (at most {free + 1} for this user)",
                param="n_candidates",
            )
        if free < 4 * n:  # rejection sampling would spin: draw from the complement instead
            pool = np.setdiff1d(np.arange(split.n_items), np.fromiter(seen, dtype=np.int64))
            negs = rng.choice(pool, size=n - 1, replace=False).tolist()
        else:
            negs = []
            while len(negs) < n - 1:
                for c in rng.integers(0, split.n_items, size=2 * n).tolist():
                    if c not in seen:
                        seen.add(c)
                        negs.append(c)
                        if len(negs) == n - 1:
                            break
        row = np.array([target, *negs])
        rng.shuffle(row)
        out[u] = row
    return out
