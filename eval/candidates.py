"""Candidate lists for the LLMRank protocol: sampled here, or read from LLMRank's files.

LLMRank (Hou et al. 2024) ranks, for each user, the held-out item among N−1 others. Its candidate
files (``dataset/ml-1m/ml-1m.random`` and the like) hold one user per line::

    user_id<TAB>item item item ...

:func:`read_candidates` reads such a file as LLMRank does with ``has_gt=True``: the ground-truth
item is taken out of the line where present, the first N−1 remaining items are kept, the ground
truth is appended, and the row is shuffled (seeded). Unlike LLMRank, which maps unknown ids to a
padding item silently, an unknown user or item is an error naming the line and the id, unless
``skip_unknown`` (then they are skipped and counted).

>>> cands = sample_candidates(split, "test", n=20, seed=0)            # every user of the split
>>> cands = read_candidates("ml-latest-small.random", split, "test", n=20)
>>> cands.users, cands.items.shape, cands.skipped                     # user codes, (users, 20) codes
>>> write_candidates(cands, split, "run/candidates.tsv")              # the lists a run used
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recagent.errors import ConfigError, DataError, UnknownIdError

from .splits import Split, llmrank_candidates

__all__ = ["CandidateLists", "sample_candidates", "read_candidates", "write_candidates"]

_FORMAT = "one line per user: user_id<TAB>item item ... (LLMRank's candidate file format)"


@dataclass
class CandidateLists:
    """Which users are evaluated (split user codes) and their candidate item codes, one row each.

    ``source`` says where the lists came from; ``skipped`` counts what ``skip_unknown`` left out
    (unknown users, unknown items, lines left with too few known items); ``in_history`` counts
    candidates the user had already interacted with before the stage's target (CF baselines rank
    those last, as every system excludes history)."""

    users: np.ndarray
    items: np.ndarray
    source: dict[str, Any]
    skipped: dict[str, int] = field(default_factory=dict)
    in_history: int = 0

    @property
    def n(self) -> int:
        return int(self.items.shape[1])

    def subset(self, rows: np.ndarray) -> CandidateLists:
        """The lists of the given rows (a user sample), same source."""
        return CandidateLists(self.users[rows], self.items[rows], self.source, self.skipped, self.in_history)

    def describe(self) -> dict[str, Any]:
        """What results.json records under ``protocol.candidates``."""
        return {**self.source, "n": self.n, "users": int(len(self.users)), "skipped": dict(self.skipped),
                "in_history": self.in_history}  # fmt: skip


def sample_candidates(split: Split, stage: str, *, n: int = 20, seed: int = 0) -> CandidateLists:
    """The true item + ``n-1`` seeded random never-interacted items for every user of ``split``."""
    items = llmrank_candidates(split, stage, n=n, seed=seed)
    return CandidateLists(np.arange(split.n_users), items, {"kind": "sampled", "seed": seed})


def read_candidates(path: str | Path, split: Split, stage: str, *, n: int = 20, seed: int = 0,
                    skip_unknown: bool = False) -> CandidateLists:  # fmt: skip
    """Read an LLMRank candidate file for ``split`` at ``stage`` (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("candidate file not found", file=str(path), hint=f"pass a file with {_FORMAT}")
    if n < 2:
        raise ConfigError(f"{n} candidates per user is too few", hint="pass --n-candidates 2 or more (LLMRank uses 20)")
    skip_hint = "pass --skip-unknown to skip unknown users and items (counted in results.json)"
    rng = np.random.default_rng(seed)
    users: list[int] = []
    rows: list[np.ndarray] = []
    first_line: dict[int, int] = {}
    skipped: Counter[str] = Counter()
    in_history = 0
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            where = f"{path.name} line {lineno}"
            uid, tab, rest = line.partition("\t")
            uid = uid.strip()
            if not tab or not uid:
                raise DataError(f"{where}: cannot read {line[:60]!r}", hint=f"write {_FORMAT}")
            u = _code(split.user_code, uid)
            if u is None:
                if skip_unknown:
                    skipped["unknown_users"] += 1
                    continue
                raise DataError(f"{where}: unknown user id {uid!r} (not among the {split.n_users} users of the "
                                f"filtered {split.dataset.name})", hint=skip_hint)  # fmt: skip
            if u in first_line:
                raise DataError(
                    f"{where}: user {uid!r} again (first on line {first_line[u]})", hint="give each user one line"
                )
            codes: list[int] = []
            dropped = 0
            for iid in rest.split():
                c = _code(split.item_code, iid)
                if c is None:
                    if skip_unknown:
                        skipped["unknown_items"] += 1
                        dropped += 1
                        continue
                    raise DataError(f"{where}: unknown item id {iid!r} for user {uid!r} (not among the {split.n_items} "
                                    f"items of the filtered {split.dataset.name})", hint=skip_hint)  # fmt: skip
                codes.append(c)
            dup = [split.item_ids[c] for c, k in Counter(codes).items() if k > 1]
            if dup:
                raise DataError(
                    f"{where}: item {dup[0]!r} is listed twice for user {uid!r}", hint="list each candidate once"
                )
            target = split.target(u, stage)
            negs = [c for c in codes if c != target][: n - 1]  # LLMRank has_gt=True: the target goes last
            if len(negs) < n - 1:
                if dropped:
                    skipped["short_lines"] += 1  # too short once its unknown items were skipped
                    continue
                raise DataError(
                    f"{where}: user {uid!r} has {len(negs)} candidates besides the true item; {n - 1} are needed",
                    hint=f"pass --n-candidates {len(negs) + 1} or less, or a file with longer lines",
                )
            history = set(split.history(u, stage).tolist())
            in_history += sum(c in history for c in negs)
            row = np.array([*negs, target], dtype=np.int64)
            rng.shuffle(row)  # LLMRank shuffles too (fix_pos = -1): the true item is not last
            first_line[u] = lineno
            users.append(u)
            rows.append(row)
    if not users:
        raise DataError(f"{path.name}: no usable line", file=str(path),
                        hint=f"write {_FORMAT} for users of {split.dataset.name}")  # fmt: skip
    return CandidateLists(np.array(users, dtype=np.int64), np.stack(rows),
                          {"kind": "file", "file": str(path), "seed": seed}, dict(skipped), in_history)  # fmt: skip


def _code(lookup, key: str) -> int | None:
    try:
        return lookup(key)
    except UnknownIdError:
        return None


def write_candidates(cands: CandidateLists, split: Split, path: str | Path) -> Path:
    """Write the lists in LLMRank's format (true item included), so a run can be repeated or shared."""
    path = Path(path)
    lines = [
        f"{split.user_ids[u]}\t{' '.join(str(split.item_ids[c]) for c in row)}"
        for u, row in zip(cands.users, cands.items, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
