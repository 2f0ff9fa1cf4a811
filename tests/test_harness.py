"""The experiment harness end to end: run folder contents, and the retriever → LLM system."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recagent.errors import ConfigError, ModelPathError
from recagent.eval.baselines import make_baseline
from recagent.eval.harness import run_experiment, write_run


def test_run_folder(ml_split, tmp_path):
    report = run_experiment([make_baseline("popularity"), make_baseline("ease")], ml_split, "test", progress=False)
    out = write_run(report, tmp_path / "run", command="recagent eval --systems popularity,ease")
    for name in ("results.json", "results.md", "per_user.csv", "significance.md", "accuracy.png", "metrics_at_k.png"):
        assert (out / name).exists(), name
    data = json.loads((out / "results.json").read_text())
    assert data["dataset"]["users"] == 610 and data["n_users_evaluated"] == 610
    assert data["systems"]["ease"]["metrics"]["NDCG@10"] > data["systems"]["popularity"]["metrics"]["NDCG@10"]
    assert data["significance"][0]["best"] == "ease"
    assert "recagent eval --systems popularity,ease" in (out / "results.md").read_text()
    assert len((out / "per_user.csv").read_text().splitlines()) == 611
    with pytest.raises(ConfigError, match="no systems"):
        run_experiment([], ml_split, "test")


def test_llm_system_bad_adapter(tmp_path):
    from recagent.eval.llm_system import LLMRankerSystem

    with pytest.raises(ModelPathError, match="neither a LoRA adapter"):
        LLMRankerSystem(adapter=tmp_path)
    with pytest.raises(ConfigError, match="unknown option"):
        LLMRankerSystem(no_such=1)


@pytest.mark.slow
def test_retriever_then_llm_system(retr_split, retr_system, llm_engine):
    from recagent.eval.llm_system import LLMRankerSystem

    system = LLMRankerSystem(retriever_system=retr_system, engine=llm_engine, history_len=5).fit(retr_split, "test")
    users = np.arange(4)
    top = system.topk(users, 20)
    cands = retr_system.topk(users, 20)
    for row, cand in zip(top, cands, strict=True):
        # a permutation of the retrieved candidates: nothing invented, nothing dropped
        assert sorted(row[row >= 0].tolist()) == sorted(cand[cand >= 0].tolist())
    assert len(system.results) == 4 and not any(r.fallback for r in system.results)
