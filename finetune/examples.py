"""Training and validation examples for the verbalizer ranker that look like serving.

The served ranker sees the retriever's top N in the retriever's order, rendered by the pipeline's
prompt. Examples are built the same way: for a cut ``t`` of a user's timeline, the retriever is
queried with the history before the cut, its top N become the candidates in its order, and the
example is kept when the item at the cut (the target) is among them. The prompt is rendered by
the ranker component's own :meth:`~recagent.ranking.LLMRanker.prepare`, so a training prompt and
a serving prompt for the same inputs are the same bytes.

No leakage: the retriever used for training examples is fitted on :func:`cut_data` — each
training user's timeline up to its first cut, each validation user's history before its
validation item — so no example's target was ever seen by the retriever (as at serving time).
Targets come only from training items, never a validation or test item; validation examples are
held-out users' validation items under the same retriever → ranker protocol.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from recagent.components import Component, Query
from recagent.data import TrainData
from recagent.errors import ConfigError, EmptyInputError
from recagent.eval.splits import Split
from recagent.ranking import LLMRanker

__all__ = ["Example", "build_examples", "split_users", "cut_data", "training_cuts"]


@dataclass
class Example:
    input_ids: list[int]
    label_ids: list[int]  # token id of each candidate's label, in label order
    target: int  # index into label_ids of the true item
    user: int
    cut: int  # position of the target in the user's timeline


def split_users(split: Split, val_users: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (train users, held-out validation users)."""
    if not 0 < val_users < split.n_users:
        raise ConfigError(f"val_users={val_users} must be between 1 and {split.n_users - 1}", param="val_users")
    perm = np.random.default_rng(seed).permutation(split.n_users)
    return np.sort(perm[val_users:]), np.sort(perm[:val_users])


def training_cuts(split: Split, u: int, cuts_per_user: int, min_history: int = 3) -> list[int]:
    """Target positions for user ``u``: its last ``cuts_per_user`` training items (never the
    validation or test item), each with at least ``min_history`` items before it."""
    last = len(split.sequences[u]) - 3  # index of the last training item
    return [t for t in range(max(min_history, last - cuts_per_user + 1), last + 1)]


def cut_data(split: Split, train_users: np.ndarray, cuts_per_user: int) -> TrainData:
    """What the examples' retriever may learn from: training users up to their first cut,
    everyone else up to their validation item (the val stage)."""
    data = split.train_data("val")
    seqs, rats = list(data.sequences), list(data.ratings)
    first = {u: len(s) - 2 for u, s in enumerate(split.sequences)}
    for u in train_users:
        cuts = training_cuts(split, int(u), cuts_per_user)
        if cuts:
            seqs[u], rats[u] = split.sequences[u][: cuts[0]], split.ratings[u][: cuts[0]]
            first[int(u)] = cuts[0]
    # tags too: a user's own tags from after their first cut could name a target
    catalog = split.catalog_before(first)
    return TrainData(f"{data.name}-cut{cuts_per_user}", catalog, data.item_ids, data.user_ids, seqs, rats)


def _query(split: Split, u: int, t: int) -> Query:
    uid = str(split.user_ids[u])
    seq = split.sequences[u]
    return Query(uid, tuple(str(split.item_ids[c]) for c in seq[:t]),
                 tuple(None if np.isnan(r) else float(r) for r in split.ratings[u][:t]), split.dataset.profile(uid))  # fmt: skip


def build_examples(
    split: Split,
    ranker: LLMRanker,
    retriever: Component,
    users: Sequence[int],
    *,
    mode: str = "train",
    cuts_per_user: int = 1,
    n_candidates: int = 20,
    shuffle: bool = False,
    batch: int = 64,
    seed: int = 0,
    progress: bool = True,
) -> tuple[list[Example], dict[str, int]]:
    """Examples for ``users`` and counts (cuts tried, kept). ``mode="train"``: the last
    ``cuts_per_user`` training items of each user as targets; ``mode="val"``: the validation item.
    ``shuffle`` permutes each candidate list (an augmentation; serving keeps the retriever order)."""
    if mode not in ("train", "val"):
        raise ConfigError(f"unknown mode {mode!r}", hint="use 'train' or 'val'")
    if not 2 <= n_candidates <= len(ranker.config.labels):
        raise ConfigError(
            f"n_candidates={n_candidates} is out of range", hint=f"use 2..{len(ranker.config.labels)} (one label each)"
        )
    rng = np.random.default_rng(seed)
    cuts = [(int(u), t) for u in users
            for t in ([len(split.sequences[u]) - 2] if mode == "val" else training_cuts(split, int(u), cuts_per_user))]  # fmt: skip
    label_ids = ranker.label_token_ids[:n_candidates]
    out: list[Example] = []
    bar = tqdm(total=len(cuts), desc=f"{mode} examples", unit="cut", disable=not progress, leave=False)
    for start in range(0, len(cuts), batch):
        part = cuts[start : start + batch]
        queries = [_query(split, u, t) for u, t in part]
        for (u, t), q, cands in zip(part, queries, retriever.batch(queries, None, n_candidates), strict=True):
            target = str(split.item_ids[split.sequences[u][t]])
            if target not in cands.ids or len(cands) != n_candidates:
                continue
            if shuffle:
                cands = cands.select(rng.permutation(len(cands)).tolist())
            prep = ranker.prepare(q, cands)  # with the retriever's fields: the evidence a served prompt shows
            if prep.error is None:
                out.append(Example(prep.prompts[0], label_ids[: len(cands)], cands.ids.index(target), u, t))
        bar.update(len(part))
    bar.close()
    if not out:
        raise EmptyInputError(
            f"no {mode} examples: the retriever's top {n_candidates} never held the target",
            hint="use more users or cuts, more candidates, or a data set with longer timelines",
        )
    return out, {"cuts": len(cuts), "kept": len(out)}
