"""results.json is read by other tools: every field a run writes is documented in the README (Evaluate),
and the schema tag changes with it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from recagent.eval.report import SCHEMA
from recagent.eval.runner import EvalSettings, run_eval

DOC = (Path(__file__).resolve().parents[1] / "README.md").read_text()


@pytest.fixture(scope="module")
def results(ml_split, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    settings = EvalSettings(systems=["random", "popularity"], protocol="llmrank", users=40, out=out, progress=False)
    _, folder = run_eval(settings, split=ml_split)
    return json.loads((folder / "results.json").read_text())


def _documented(key: str) -> bool:
    return re.search(rf"`{re.escape(key)}`", DOC) is not None


def test_every_field_is_documented(results):
    assert results["schema"] == SCHEMA and f'"schema": "{SCHEMA}"' in DOC
    groups = {
        "top level": results,
        "protocol": results["protocol"],
        "protocol.candidates": results["protocol"]["candidates"],
        "dataset": results["dataset"],
        "config": results["config"],
        "config.llm": results["config"]["llm"],
        "systems.<name>": results["systems"]["popularity"],
        "significance rows": results["significance"][0],
    }
    missing = {g: [k for k in d if not _documented(k)] for g, d in groups.items()}
    assert not any(missing.values()), missing


def test_the_numbers_are_consistent(results):
    assert results["n_users_evaluated"] == 40 and results["protocol"]["candidates"]["users"] == 40
    for s in results["systems"].values():
        assert s["n_users"] == 40 and s["rank_seconds"] == pytest.approx(40 / s["users_per_s"], abs=6e-4)
        assert set(s["metrics"]) >= {"NDCG@10", "Recall@10", "MRR@20"} and set(s["ci95"]) == {"NDCG@10", "Recall@10"}
