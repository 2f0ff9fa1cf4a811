"""The LLMRank protocol through the harness: every system ranks the same candidate lists, CF
baselines beat the random order, and the LLM ranks them too (slow: the real engine)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
from conformance import ComponentConformance

from recagent.cf import RandomOrder
from recagent.eval.candidates import read_candidates
from recagent.eval.metrics import random_order_expectation
from recagent.eval.runner import EvalSettings, run_eval
from recagent.eval.systems import LLMOptions

RANDOM_NDCG10 = random_order_expectation(20)["NDCG@10"]  # 0.2272: rank uniform over 0..19


def test_random_order_expectation_is_the_mean_over_positions():
    # by hand: (1 + 1/log2 3 + ... + 1/log2 11) / 20
    assert RANDOM_NDCG10 == pytest.approx(sum(1 / np.log2(r + 2) for r in range(10)) / 20)
    assert random_order_expectation(20)["Recall@10"] == 0.5


@pytest.fixture(scope="module")
def llmrank_run(ml_split, tmp_path_factory):
    out = tmp_path_factory.mktemp("llmrank")
    report, folder = run_eval(EvalSettings(systems=["popularity", "ease", "random"], protocol="llmrank", out=out,
                                           progress=False), split=ml_split)  # fmt: skip
    return report, folder, json.loads((folder / "results.json").read_text())


def test_baselines_beat_the_random_order(llmrank_run):
    report, _, data = llmrank_run
    ndcg = {name: s["metrics"]["NDCG@10"] for name, s in data["systems"].items()}
    # the random system lands on the expectation: the lists really are shuffled around the true item
    se = np.std(report.results[2].per_user["NDCG@10"]) / np.sqrt(610)
    assert abs(ndcg["random"] - RANDOM_NDCG10) < 4 * se
    # popularity and EASE must be far above it (measured: 0.485 and 0.662; 4 standard errors ≈ 0.045)
    assert ndcg["popularity"] > RANDOM_NDCG10 + 0.15
    assert ndcg["ease"] > ndcg["popularity"] + 0.05
    assert data["protocol"]["random_order"]["NDCG@10"] == pytest.approx(RANDOM_NDCG10, abs=1e-6)


def test_every_system_ranked_exactly_the_written_candidate_lists(llmrank_run, ml_split):
    report, folder, data = llmrank_run
    cands = read_candidates(folder / "candidates.tsv", ml_split, "test", n=20)
    assert data["protocol"]["candidates"] == {"kind": "sampled", "seed": 0, "n": 20, "users": 610, "skipped": {},
                                              "in_history": 0}  # fmt: skip
    assert np.array_equal(cands.users, report.users)
    for r in report.results:
        for row, top in zip(cands.items, r.topk, strict=True):
            assert set(top.tolist()) == set(row.tolist()), r.name  # a permutation of the same 20, nothing else


class TestRandomOrderConformance(ComponentConformance):
    """The random floor obeys the component contract like every baseline."""

    @pytest.fixture(scope="class")
    def env(self, ml_split):
        return SimpleNamespace(split=ml_split)

    def make(self, env, **overrides):
        return RandomOrder(overrides)

    def fit(self, component, env):
        return component.fit(env.split.train_data("test"))

    def test_same_order_whatever_the_batch(self, env, fitted):
        q = [env.split.query(u, "test") for u in range(5)]
        given = [self.given(env)] * 5
        assert [x.ids for x in fitted.batch(q, given)] == [fitted(qq, g).ids for qq, g in zip(q, given, strict=True)]
        other = RandomOrder(seed=1).fit(env.split.train_data("test"))
        assert fitted(q[0], given[0]).ids != other(q[0], given[0]).ids


@pytest.mark.slow
def test_every_system_ranks_the_same_lists_retriever_and_llm_included(retr_split, llm_engine, tmp_path):
    """The pipeline systems take the same path: the retriever scores the given lists, the LLM ranks them."""
    settings = EvalSettings(systems=["popularity", "random", "retriever", "llm"], protocol="llmrank", n_candidates=10,
                            users=12, seed=1, out=tmp_path, progress=False, llm=LLMOptions(engine=llm_engine),
                            options={"llm": {"history_len": 5}})  # fmt: skip
    report, folder = run_eval(settings, split=retr_split)
    cands = read_candidates(folder / "candidates.tsv", retr_split, "test", n=10)
    for r in report.results:
        assert r.n_users == 12 and r.fallbacks == {}, (r.name, r.fallbacks)
        for row, top in zip(cands.items, r.topk, strict=True):
            assert set(top[:10].tolist()) == set(row.tolist()) and (top[10:] == -1).all(), r.name
    data = json.loads((folder / "results.json").read_text())
    llm = data["systems"]["llm"]
    assert llm["stage_seconds"]["rank"] > 0 and llm["users_per_s"] > 0
    assert llm["config"]["llm_choice"]["backend"] == "in-process" and llm["config"]["rank"]["history_len"] == 5
