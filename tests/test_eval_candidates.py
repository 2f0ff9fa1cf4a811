"""LLMRank candidate files: read as LLMRank reads them (has_gt=True), bad lines are clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from recagent.errors import DataError
from recagent.eval.candidates import read_candidates, sample_candidates, write_candidates


def _negatives(split, u: int, k: int) -> list[str]:
    """k catalog ids the user never interacted with, in catalog order."""
    seen = set(split.sequences[u].tolist())
    return [str(split.item_ids[c]) for c in range(split.n_items) if c not in seen][:k]


@pytest.fixture()
def users(ml_split):
    return [str(ml_split.user_ids[u]) for u in (0, 1, 2)]


def test_reads_llmrank_lines_ground_truth_moved_last_then_shuffled(ml_split, users, tmp_path):
    split = ml_split
    gt = {u: str(split.item_ids[split.target(split.user_code(u), "test")]) for u in users}
    negs = {u: _negatives(split, split.user_code(u), 30) for u in users}
    lines = [
        f"{users[0]}\t{' '.join(negs[users[0]][:25])}",  # ground truth absent: appended
        f"{users[1]}\t{' '.join([*negs[users[1]][:3], gt[users[1]], *negs[users[1]][3:25]])}",  # present: moved
        "",  # blank lines are ignored
        f"{users[2]}\t{' '.join(negs[users[2]][:19])}",  # exactly N-1
    ]
    path = tmp_path / "ml.random"
    path.write_text("\n".join(lines) + "\n")
    c = read_candidates(path, split, "test", n=20, seed=0)
    assert [str(split.user_ids[u]) for u in c.users] == users and c.items.shape == (3, 20)
    for row, u in zip(c.items, users, strict=True):
        ids = [str(split.item_ids[x]) for x in row]
        # the first N-1 items other than the ground truth, plus the ground truth; nothing else
        assert sorted(ids) == sorted([*negs[u][:19], gt[u]])
    assert c.skipped == {} and c.in_history == 0 and c.describe()["kind"] == "file"
    # shuffled (seeded): the ground truth is not always last, and the same seed gives the same rows
    assert np.array_equal(c.items, read_candidates(path, split, "test", n=20, seed=0).items)
    many = read_candidates(path, split, "test", n=5, seed=1)
    positions = {list(row).index(split.target(u, "test")) for u, row in zip(many.users, many.items, strict=True)}
    positions |= {list(row).index(split.target(u, "test")) for u, row in zip(c.users, c.items, strict=True)}
    assert positions != {4} and positions != {19}


def test_round_trip_through_the_run_folder_file(ml_split, tmp_path):
    drawn = sample_candidates(ml_split, "test", n=20, seed=4)
    path = write_candidates(drawn, ml_split, tmp_path / "candidates.tsv")
    back = read_candidates(path, ml_split, "test", n=20, seed=9)
    assert np.array_equal(back.users, drawn.users)
    assert all(set(a) == set(b) for a, b in zip(back.items, drawn.items, strict=True))


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("no-such-user\t1 2 3", r"ml\.random line 2: unknown user id 'no-such-user'"),
        ("{u}\t{negs} no-such-item", r"ml\.random line 2: unknown item id 'no-such-item' for user '{u}'"),
        ("{u}\t{short}", r"line 2: user '{u}' has 5 candidates besides the true item; 19 are needed"),
        ("{u} {negs}", r"line 2: cannot read"),
        ("{u0}\t{negs}", r"line 2: user '{u0}' again \(first on line 1\)"),
        ("{u}\t{dup}", r"line 2: item '\d+' is listed twice"),
    ],
)
def test_bad_lines_name_the_line_and_the_id(ml_split, users, tmp_path, line, match):
    u0, u = users[0], users[1]
    negs = _negatives(ml_split, ml_split.user_code(u), 19)
    fill = {"u": u, "u0": u0, "negs": " ".join(negs), "short": " ".join(negs[:5]), "dup": " ".join([*negs, negs[0]])}
    path = tmp_path / "ml.random"
    path.write_text(f"{u0}\t{' '.join(_negatives(ml_split, 0, 19))}\n{line.format(**fill)}\n")
    with pytest.raises(DataError, match=match.format(**fill)) as e:
        read_candidates(path, ml_split, "test", n=20)
    assert e.value.hint


def test_skip_unknown_counts_what_it_skips(ml_split, users, tmp_path):
    negs = [_negatives(ml_split, ml_split.user_code(u), 25) for u in users]
    path = tmp_path / "ml.random"
    path.write_text(
        f"{users[0]}\t{' '.join(negs[0][:19])} x1 x2\n"  # two unknown items, 19 known: kept
        "ghost\t1 2 3\n"  # unknown user: skipped
        f"{users[1]}\tx3 {' '.join(negs[1][:10])}\n"  # too short once x3 is dropped: skipped
        f"{users[2]}\t{' '.join(negs[2][:19])}\n"
    )
    c = read_candidates(path, ml_split, "test", n=20, skip_unknown=True)
    assert c.skipped == {"unknown_items": 3, "unknown_users": 1, "short_lines": 1}
    assert [str(ml_split.user_ids[u]) for u in c.users] == [users[0], users[2]]
    with pytest.raises(DataError, match="line 1: unknown item id 'x1'"):
        read_candidates(path, ml_split, "test", n=20)


def test_history_items_are_counted_and_the_file_must_exist(ml_split, tmp_path):
    u = 0
    hist = [str(ml_split.item_ids[c]) for c in ml_split.history(u, "test")[:4]]
    path = tmp_path / "ml.random"
    path.write_text(f"{ml_split.user_ids[u]}\t{' '.join(hist + _negatives(ml_split, u, 15))}\n")
    assert read_candidates(path, ml_split, "test", n=20).in_history == 4
    with pytest.raises(DataError, match="candidate file not found"):
        read_candidates(tmp_path / "missing", ml_split, "test")
    path.write_text("\n\n")
    with pytest.raises(DataError, match="no usable line"):
        read_candidates(path, ml_split, "test")
