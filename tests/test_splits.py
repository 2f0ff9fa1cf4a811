"""The LlamaRec preprocessing and the LLMRank candidate protocol."""

from __future__ import annotations

import numpy as np
import pytest

from recagent.errors import ConfigError, UnknownIdError
from recagent.eval.splits import llmrank_candidates


def test_llamarec_counts(ml_split):
    # LlamaRec Table 2 for ml-latest-small ("ML-100k" in the paper)
    assert ml_split.stats()["users"] == 610
    assert ml_split.stats()["items"] == 3650
    assert ml_split.stats()["interactions"] == 90274
    assert ml_split.stats()["avg_length"] == pytest.approx(147.99, abs=0.01)


def test_leave_one_out_is_chronological(ml_split, ml_small):
    u = ml_split.user_code("1")
    frame = ml_small.interactions.user_frame("1")
    kept = frame[frame["item_id"].isin(set(ml_split.item_ids))]
    last = kept.sort_values(["timestamp"], kind="stable")["item_id"].tolist()
    assert ml_split.item_ids[ml_split.target(u, "test")] in last[-3:]
    seq = ml_split.sequences[u]
    assert ml_split.target(u, "test") == seq[-1]
    assert ml_split.target(u, "val") == seq[-2]
    assert len(ml_split.history(u, "test")) == len(seq) - 1
    assert len(ml_split.history(u, "val")) == len(seq) - 2
    assert ml_split.target(u, "test") not in ml_split.history(u, "test")
    m = ml_split.history_matrix("val")
    assert m.shape == (610, 3650) and m.nnz == 90274 - 2 * 610


def test_split_errors(ml_split):
    with pytest.raises(ConfigError, match="unknown stage"):
        ml_split.history(0, "train")
    with pytest.raises(UnknownIdError):
        ml_split.user_code("no-such-user")


def test_llmrank_candidates(ml_split):
    c = llmrank_candidates(ml_split, "test", n=20, seed=1)
    assert c.shape == (610, 20)
    assert np.array_equal(c, llmrank_candidates(ml_split, "test", n=20, seed=1))
    assert not np.array_equal(c, llmrank_candidates(ml_split, "test", n=20, seed=2))
    pos = []
    for u in range(ml_split.n_users):
        row = c[u].tolist()
        assert len(set(row)) == 20
        t = ml_split.target(u, "test")
        assert t in row
        pos.append(row.index(t))
        assert not set(row) - {t} & set(ml_split.history(u, "test").tolist())
    # shuffled: the true item is not parked at one position
    assert len(set(pos)) > 15
    with pytest.raises(ConfigError, match="out of range"):
        llmrank_candidates(ml_split, "test", n=1)


def test_llmrank_negatives_were_never_interacted_with(ml_split):
    """At the validation stage the test item lies after the target: it is an interaction, not a negative."""
    c = llmrank_candidates(ml_split, "val", n=20, seed=3)
    for u in range(ml_split.n_users):
        t = ml_split.target(u, "val")
        assert t in c[u]
        assert not set(c[u].tolist()) - {t} & set(ml_split.sequences[u].tolist()), u


def test_llmrank_candidates_too_many_is_a_clear_error(ml_split):
    with pytest.raises(ConfigError, match=r"3651 candidates per user is out of range: .* has 3650 items") as e:
        llmrank_candidates(ml_split, "test", n=3651)
    assert "--n-candidates between 2 and 3650" in e.value.hint
    # fits the catalog, but not what a heavy user has left to draw negatives from
    free_of = {
        str(ml_split.user_ids[u]): ml_split.n_items - len(set(s.tolist())) for u, s in enumerate(ml_split.sequences)
    }
    free = min(free_of.values())
    heaviest = "|".join(u for u, f in free_of.items() if f == free)
    with pytest.raises(ConfigError, match=f"user '({heaviest})' interacted with .* only {free} are left"):
        llmrank_candidates(ml_split, "test", n=free + 2)
    assert llmrank_candidates(ml_split, "test", n=free + 1).shape == (
        610,
        free + 1,
    )  # exactly enough: drawn from the rest
