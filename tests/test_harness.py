"""The experiment harness end to end: run folder contents, systems by name, the retriever → LLM pipeline."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recagent.cf import make_baseline
from recagent.errors import ConfigError, ModelPathError
from recagent.eval.harness import run_experiment, write_run
from recagent.eval.systems import LLMOptions, build_systems


def test_run_folder(ml_split, tmp_path):
    report = run_experiment([make_baseline("popularity"), make_baseline("ease")], ml_split, "test", progress=False)
    out = write_run(report, tmp_path / "run", command="recagent eval --systems popularity,ease")
    for name in ("results.json", "results.md", "per_user.csv", "significance.md", "accuracy.png", "metrics_at_k.png"):
        assert (out / name).exists(), name
    data = json.loads((out / "results.json").read_text())
    assert data["dataset"]["users"] == 610 and data["n_users_evaluated"] == 610
    assert data["systems"]["ease"]["metrics"]["NDCG@10"] == pytest.approx(
        0.0367, abs=5e-4
    )  # bench/results/baselines.md
    assert data["systems"]["ease"]["metrics"]["NDCG@10"] > data["systems"]["popularity"]["metrics"]["NDCG@10"]
    assert data["significance"][0]["best"] == "ease"
    assert "recagent eval --systems popularity,ease" in (out / "results.md").read_text()
    assert len((out / "per_user.csv").read_text().splitlines()) == 611
    with pytest.raises(ConfigError, match="no systems"):
        run_experiment([], ml_split, "test")


def test_llm_system_bad_adapter(tmp_path, ml_split):
    with pytest.raises(ModelPathError, match="neither a ranker card .card.json., a LoRA adapter"):
        build_systems(["llm"], split=ml_split, llm=LLMOptions(adapter=str(tmp_path)))
    with pytest.raises(ConfigError, match="options are"):
        build_systems(["ease"], split=ml_split, options={"ease": {"no_such": 1}})


@pytest.mark.slow
def test_retriever_then_llm_pipeline(retr_split, retr_system, llm_engine):
    from recagent.pipeline import Pipeline
    from recagent.ranking import VerbalizerRanker

    system = Pipeline(retr_system, VerbalizerRanker(llm_engine, retr_split.dataset.catalog, history_len=5), name="llm")
    queries = [retr_split.query(u, "test") for u in range(4)]
    ranked = system.batch(queries, n=20)
    for q, lst in zip(queries, ranked, strict=True):
        # a permutation of the retrieved candidates: nothing invented, nothing dropped
        assert sorted(lst.ids) == sorted(retr_system(q, n=20).ids)
        assert "rank" not in lst.notes and lst.info["ranker"].startswith("verbalizer:")
    assert np.all([len(lst) == 20 for lst in ranked])
