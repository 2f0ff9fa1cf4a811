"""One conformance class for every Recommender; each baseline must beat popularity."""

from __future__ import annotations

import numpy as np
import pytest

from recagent.errors import ConfigError
from recagent.eval.baselines import BASELINES, Popularity, Recommender, make_baseline
from recagent.eval.harness import evaluate
from recagent.eval.systems import build_system

# small but real settings so the suite stays fast; the benchmark uses the defaults
FAST = {
    "sasrec": {"epochs": 12, "max_len": 50, "dim": 48, "batch_size": 16, "lr": 2e-3, "progress": False},
    "bpr": {"iterations": 100},
}


class RecommenderConformance:
    """Subclass with ``name`` set to run the shared checks on one system."""

    name: str

    def build(self) -> Recommender:
        return make_baseline(self.name, **FAST.get(self.name, {}))

    @pytest.fixture(scope="class")
    def fitted(self, ml_split):
        return self.build().fit(ml_split, "test")

    def test_config_round_trip(self):
        sys_ = self.build()
        desc = sys_.describe()
        assert desc.pop("name") == self.name
        again = make_baseline(self.name, **desc)
        assert again.describe() == sys_.describe()

    def test_unknown_option(self):
        with pytest.raises(ConfigError, match="unknown option"):
            make_baseline(self.name, no_such_option=1)

    def test_unfitted(self):
        with pytest.raises(ConfigError, match="not fitted"):
            self.build().topk(np.arange(2), 5)

    def test_topk_excludes_history(self, fitted, ml_split):
        users = np.arange(0, ml_split.n_users, 37)
        top = fitted.topk(users, 20)
        assert top.shape == (len(users), 20)
        for row, u in zip(top, users, strict=False):
            assert len(set(row.tolist())) == 20 and (row >= 0).all()
            assert not set(row.tolist()) & set(ml_split.history(u, "test").tolist())

    def test_beats_popularity(self, fitted, ml_split):
        ours = evaluate(fitted, ml_split, "test", fit=False).means["NDCG@10"]
        pop = evaluate(Popularity(), ml_split, "test").means["NDCG@10"]
        if self.name == "popularity":
            assert ours == pytest.approx(pop)
        else:
            assert ours > pop, f"{self.name} NDCG@10 {ours:.4f} does not beat popularity {pop:.4f}"


class TestPopularity(RecommenderConformance):
    name = "popularity"


class TestItemKNN(RecommenderConformance):
    name = "itemknn"


class TestBPR(RecommenderConformance):
    name = "bpr"


class TestALS(RecommenderConformance):
    name = "als"

    def test_user_vector_without_retraining(self, fitted, ml_split):
        u = 3
        hist = ml_split.history(u, "test")
        v = fitted.user_factors_for(hist)
        stored = fitted.model.user_factors[u]
        # the stored factors are one half-step older than the item factors, so close, not equal
        assert v @ stored / (np.linalg.norm(v) * np.linalg.norm(stored)) > 0.99
        # a new interaction changes the vector at once
        assert not np.allclose(fitted.user_factors_for(np.append(hist, ml_split.target(u, "test"))), v, atol=1e-4)


class TestEASE(RecommenderConformance):
    name = "ease"


class TestSASRec(RecommenderConformance):
    name = "sasrec"

    def test_loss_goes_down(self, fitted):
        assert fitted.losses[-1] < fitted.losses[0]


def test_every_baseline_has_a_conformance_class():
    covered = {c.name for c in RecommenderConformance.__subclasses__()}
    assert covered == set(BASELINES)


def test_unknown_system():
    with pytest.raises(ConfigError, match="unknown baseline"):
        make_baseline("svd++")
    with pytest.raises(ConfigError, match="unknown system"):
        build_system("svd++", split=None)
