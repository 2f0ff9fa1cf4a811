"""The learned combiner: features, scores, the conditional-logit fit, cross-fitting, bad files."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

from recagent.errors import DataError
from recagent.finetune.fusion import cross_fit_combiner, fit_combiner, ndcg_for_scores, ndcg_for_weight
from recagent.ranking.card import load_combiner
from recagent.ranking.combine import Combiner, feature_matrix


def test_feature_matrix_reads_rank_llm_and_per_source_evidence():
    logp = np.log([0.5, 0.3, 0.2])
    sources = [{"cf": 1}, {"sequence": 3, "cf": 2}, {}]
    x = feature_matrix(["llm", "rank", "cf:found", "cf:rank", "sequence:rank"], logp, sources)
    assert x.shape == (3, 5)
    assert x[:, 0] == pytest.approx(logp) and x[:, 1] == pytest.approx(-np.log([1, 2, 3]))
    assert list(x[:, 2]) == [1, 1, 0]
    assert x[:, 3] == pytest.approx(-np.log([1, 2, 101])) and x[:, 4] == pytest.approx(-np.log([101, 3, 101]))
    with pytest.raises(ValueError, match="llm"):
        feature_matrix(["llm"], None, sources)


def test_combiner_scores_are_the_weighted_features():
    c = Combiner(features=["llm", "rank"], weights=[1.0, 1.5])
    logp = np.log([0.1, 0.5, 0.4])
    # the old single fusion weight is the special case llm + w·rank
    assert c.scores(logp, [{}] * 3) == pytest.approx(logp - 1.5 * np.log([1, 2, 3]))
    assert c.uses_llm and not Combiner(features=["rank"], weights=[1.0]).uses_llm


@pytest.mark.parametrize(
    "bad, match",
    [({"features": ["llm", "nope"], "weights": [1, 2]}, "unknown combiner feature"),
     ({"features": ["llm"], "weights": [1, 2]}, "2 weights for 1 features"),
     ({"features": ["llm"], "weights": [float("nan")]}, "finite")],
)  # fmt: skip
def test_bad_combiner_is_refused(bad, match):
    with pytest.raises(ValidationError, match=match):
        Combiner.model_validate(bad)


def _records(n_users: int, seed: int = 0) -> list[tuple]:
    """Synthetic users whose target is the candidate the sequence source ranked first; the LLM
    score is noise and the retriever order puts the target anywhere."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n_users):
        ids = [f"{u}-{j}" for j in range(10)]
        t = int(rng.integers(10))
        seq = rng.permutation(np.arange(2, 12))
        sources = [{"sequence": int(seq[j])} for j in range(10)]
        sources[t] = {"sequence": 1}
        logp = np.log(rng.dirichlet(np.ones(10)))
        out.append((ids[t], ids, logp, sources))
    return out


def test_fit_learns_the_feature_that_predicts_the_target():
    records = _records(200)
    feats = ["llm", "rank", "sequence:rank"]
    c = fit_combiner(records, feats, l2=0.01)
    w = c.describe()
    assert w["sequence:rank"] > 1.0 and abs(w["llm"]) < w["sequence:rank"] / 3
    # held out: perfect (the target is ranked first), while the LLM order and the retriever order are not
    held = _records(100, seed=1)
    assert ndcg_for_scores(held, c.scores).mean() == pytest.approx(1.0)
    assert ndcg_for_weight(held, 0.0).mean() < 0.6 and ndcg_for_weight(held, 1e6).mean() < 0.6
    # cross-fitting scores each user with weights from the other folds, and finds the same
    assert cross_fit_combiner(records, feats, l2=0.01).mean() == pytest.approx(1.0)


def test_a_user_the_retriever_missed_scores_zero_and_fits_nothing():
    missed = ("x", ["a", "b"], np.log([0.5, 0.5]), [{}, {}])
    assert ndcg_for_scores([missed], lambda lp, s: lp)[0] == 0.0
    with pytest.raises(DataError, match="nothing to fit"):
        fit_combiner([missed], ["llm", "rank"])


def test_load_combiner(tmp_path):
    f = tmp_path / "fusion.json"
    f.write_text(json.dumps({"retrieval_weight": 0.0}))
    assert load_combiner(f) is None
    f.write_text(json.dumps({"retrieval_weight": 0.0, "combiner": {"features": ["llm", "rank"], "weights": [1, 2]}}))
    assert load_combiner(f).describe() == {"llm": 1.0, "rank": 2.0}
    f.write_text(json.dumps({"retrieval_weight": 0.0, "combiner": {"features": ["bogus"], "weights": [1]}}))
    with pytest.raises(DataError, match="malformed combiner"):
        load_combiner(f)
