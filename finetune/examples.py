"""Training and validation examples for the verbalizer ranker, built from the harness split.

One example = the ranking prompt (rendered by the serving ranker itself, so training and serving
prompts cannot drift) for a user's history cut at some point, with the true next item among
``n_candidates`` shuffled candidates, and the index of its label as the target.

Training targets come only from each user's *training* part (never the validation or test
item); validation uses the validation item of users held out of training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from recagent.errors import ConfigError, EmptyInputError
from recagent.eval.baselines import Recommender
from recagent.eval.splits import Split
from recagent.ranker import RankQuery, VerbalizerRanker

__all__ = ["Example", "build_examples", "split_users"]


@dataclass
class Example:
    input_ids: list[int]
    label_ids: list[int]  # token id of each candidate's label, in label order
    target: int  # index into label_ids of the true item
    user: int


def split_users(split: Split, val_users: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (train users, held-out validation users)."""
    if val_users >= split.n_users:
        raise ConfigError(f"val_users={val_users} leaves no training user", hint=f"use fewer than {split.n_users}")
    perm = np.random.default_rng(seed).permutation(split.n_users)
    return np.sort(perm[val_users:]), np.sort(perm[:val_users])


def _negatives(rng, split: Split, exclude: set[int], n: int, hard: np.ndarray | None, n_hard: int) -> list[int]:
    out: list[int] = []
    if hard is not None:
        for c in hard.tolist():
            if len(out) >= n_hard:
                break
            if c >= 0 and c not in exclude:
                out.append(c)
                exclude.add(c)
    while len(out) < n:
        c = int(rng.integers(split.n_items))
        if c not in exclude:
            out.append(c)
            exclude.add(c)
    return out


def build_examples(
    split: Split,
    ranker: VerbalizerRanker,
    users: np.ndarray,
    *,
    mode: str = "train",
    n_candidates: int = 20,
    cuts_per_user: int = 1,
    hard_negatives: Recommender | None = None,
    hard_ratio: float = 0.0,
    seed: int = 0,
    progress: bool = True,
) -> list[Example]:
    """Examples for ``users``. ``mode="train"``: the last ``cuts_per_user`` training items of each
    user as targets; ``mode="val"``: the validation item. ``hard_negatives`` (a system fitted on
    stage ``val``) supplies ``hard_ratio`` of the negatives from its top list (LlamaRec-style
    retriever negatives); the rest are uniform random."""
    if mode not in ("train", "val"):
        raise ConfigError(f"unknown mode {mode!r}", hint="use 'train' or 'val'")
    if not 2 <= n_candidates <= len(ranker.config.labels):
        raise ConfigError(
            f"n_candidates={n_candidates} is out of range", hint=f"use 2..{len(ranker.config.labels)} (one label each)"
        )
    if not 0.0 <= hard_ratio <= 1.0:
        raise ConfigError(f"hard_ratio={hard_ratio} must be within [0, 1]")
    rng = np.random.default_rng(seed)
    n_hard = int(round(hard_ratio * (n_candidates - 1))) if hard_negatives is not None else 0
    hard = hard_negatives.topk(np.asarray(users), 4 * n_candidates) if n_hard else None
    label_ids = ranker.label_token_ids[:n_candidates]
    ids = split.item_ids
    out: list[Example] = []
    for row, u in enumerate(tqdm(users, desc=f"{mode} examples", disable=not progress, leave=False)):
        seq = split.sequences[u]
        if mode == "val":
            cuts = [len(seq) - 2]
        else:
            last = len(seq) - 3  # index of the last training item; val/test targets are never used
            cuts = [t for t in range(last, max(last - cuts_per_user, 0), -1) if t >= 1]
        for t in cuts:
            pos = int(seq[t])
            exclude = set(seq[: t + 1].tolist()) | set(seq[-2:].tolist())
            negs = _negatives(rng, split, exclude, n_candidates - 1, None if hard is None else hard[row], n_hard)
            cands = np.array([pos, *negs])
            rng.shuffle(cands)
            query = RankQuery(
                candidates=[ids[c] for c in cands],
                history=[ids[c] for c in seq[:t]],
                ratings=list(split.ratings[u][:t]),
                profile=split.dataset.profile(split.user_ids[u]),
                user_id=str(split.user_ids[u]),
            )
            prep = ranker.prepare(query)
            if prep.error:
                continue
            out.append(Example(prep.prompts[0], label_ids, int(np.flatnonzero(cands == pos)[0]), int(u)))
    if not out:
        raise EmptyInputError(
            f"no {mode} examples could be built", hint="use more users, or users with at least 4 interactions"
        )
    return out
