"""Every metric on small cases computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recagent.eval import metrics as M


def test_target_ranks_and_accuracy():
    top = np.array([[5, 3, 9], [1, 2, 4], [7, 8, 0]])
    ranks = M.target_ranks(top, np.array([3, 7, 7]))
    assert ranks.tolist() == [1, -1, 0]
    acc = M.accuracy(ranks, cutoffs=(1, 2, 3))
    assert acc["Recall@1"].tolist() == [0, 0, 1]
    assert acc["Recall@2"].tolist() == [1, 0, 1]
    assert acc["NDCG@1"].tolist() == [0, 0, 1]
    assert acc["NDCG@2"][0] == pytest.approx(1 / math.log2(3))
    assert acc["MRR@3"].tolist() == [0.5, 0, 1]
    assert acc["NDCG@3"].mean() == pytest.approx((1 / math.log2(3) + 1) / 3)


def test_coverage():
    assert M.coverage(np.array([[0, 1], [1, 2], [2, -1]]), n_items=10, k=2) == pytest.approx(0.3)


def test_intra_list_diversity():
    genres = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 1]], dtype=float)
    # items 0,1: Jaccard 1/2 -> distance 0.5; 0,2 and 1,2: distance 1
    assert M.intra_list_diversity(np.array([[0, 1]]), genres, metric="jaccard") == pytest.approx(0.5)
    assert M.intra_list_diversity(np.array([[0, 1, 2]]), genres, metric="jaccard") == pytest.approx((0.5 + 1 + 1) / 3)
    emb = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    assert M.intra_list_diversity(np.array([[0, 1]]), emb) == pytest.approx(1.0)
    assert M.intra_list_diversity(np.array([[0, 2]]), emb) == pytest.approx(0.0)
    assert M.intra_list_diversity(np.array([[0, -1]]), emb) == 0.0  # fewer than 2 items: no pairs
    with pytest.raises(ValueError, match="unknown metric"):
        M.intra_list_diversity(np.array([[0, 1]]), emb, metric="manhattan")


def test_novelty_and_popularity_bias():
    pop = np.array([5, 1])
    assert M.novelty(np.array([[0, 1]]), pop, n_users=10) == pytest.approx((1 + math.log2(10)) / 2)
    pop4 = np.array([1, 2, 3, 4])
    assert M.popularity_bias(np.array([[3]]), pop4) == pytest.approx(1.0)
    assert M.popularity_bias(np.array([[0, 3]]), pop4) == pytest.approx((0.25 + 1.0) / 2)


def test_paired_test_and_bootstrap():
    a = np.array([1.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0])
    b = np.zeros(8)
    t = M.paired_test(a, b)
    assert t["mean_diff"] == pytest.approx(7 / 8)
    assert t["t_p"] < 0.01 and t["wilcoxon_p"] < 0.05
    assert t["ci_low"] <= 7 / 8 <= t["ci_high"]
    same = M.paired_test(a, a)
    assert same["mean_diff"] == 0 and same["t_p"] == 1.0
    lo, hi = M.bootstrap_ci(np.array([0.2, 0.4, 0.6]))
    assert 0.2 <= lo <= 0.4 <= hi <= 0.6
    with pytest.raises(ValueError, match="same users"):
        M.paired_test(a, b[:3])
