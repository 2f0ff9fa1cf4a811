"""One retriever: serving, `recagent eval`, fine-tuning and the benches build the same one.

The bench's numbers were once measured on another retriever than `recagent eval` runs (an older
sequence-graph setting): these tests fail when any path builds its retriever differently.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from recagent.agent import AgentConfig, apply_card, retriever_config
from recagent.errors import ConfigError
from recagent.eval.runner import EvalSettings, run_eval
from recagent.eval.systems import make_retriever
from recagent.finetune.config import FinetuneConfig
from recagent.finetune.train import _retriever as finetune_retriever
from recagent.ranking.card import RankerCard, shipped_card

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from common import fitted_retriever  # noqa: E402  (bench/ is scripts, not a package)


def test_every_path_has_the_same_retriever_settings(retr_split, tmp_path):
    serving = retriever_config(AgentConfig())
    evaluation = make_retriever(retr_split, {"index_path": str(tmp_path / "e")}).config
    training = finetune_retriever(retr_split, tmp_path, FinetuneConfig(index_path=str(tmp_path / "f"))).config
    assert serving.model_dump() == evaluation.model_dump() == training.model_dump()


def test_bench_and_eval_return_the_same_candidates(retr_split, tmp_path):
    """`recagent eval --systems retriever` (run_eval) and the bench path give identical top 20s."""
    report, _ = run_eval(
        EvalSettings(systems=["retriever"], users=25, out=tmp_path / "run", progress=False,
                     options={"retriever": {"index_path": str(tmp_path / "eval-index")}}),
        split=retr_split,
    )  # fmt: skip
    bench = fitted_retriever(retr_split, "test", str(tmp_path / "bench-index"))
    top = report.results[0].topk
    for row, u in enumerate(report.users):
        ids = bench(retr_split.query(int(u), "test"), n=top.shape[1]).ids
        assert [retr_split.item_code(i) for i in ids] == [c for c in top[row] if c >= 0], f"user row {u}"
    assert len(report.users) == 25 and np.all(top[:, 0] >= 0)


def _card_with_retriever(tmp_path, **retriever) -> Path:
    import json
    import shutil

    card = shipped_card("ml-latest-small")
    folder = tmp_path / "card"
    shutil.copytree(card.folder, folder)
    data = json.loads((folder / "card.json").read_text())
    data["retriever"] = {**data.get("retriever", {}), **retriever}
    (folder / "card.json").write_text(json.dumps(data))
    return folder


def test_the_shipped_card_records_the_default_retriever():
    card = shipped_card("ml-latest-small")
    assert card.retriever is not None
    card.check_retriever(retriever_config(AgentConfig()))  # the defaults are what it was measured with


def test_a_card_for_other_retriever_settings_is_refused(tmp_path):
    folder = _card_with_retriever(tmp_path, sequence_top_k=50)
    with pytest.raises(ConfigError, match=r"sequence_top_k.*50.*1000") as e:
        apply_card(AgentConfig(adapter=str(folder)), "ml-latest-small")
    assert e.value.param == "retriever" and "--adapter none" in e.value.hint
    # and the other way round: the card's settings, a run that overrides them
    with pytest.raises(ConfigError, match="depth"):
        RankerCard.load(shipped_card("ml-latest-small").folder).check_retriever(
            retriever_config(AgentConfig(retriever={"depth": 30}))
        )
    # the seed is not a setting of the retriever's kind: another seed is no mismatch
    RankerCard.load(folder.parent / "card").model_copy(update={"retriever": None}).check_retriever(
        retriever_config(AgentConfig(seed=3))
    )
    shipped_card("ml-latest-small").check_retriever(retriever_config(AgentConfig(seed=3)))


def test_eval_checks_the_card_against_its_retriever_overrides():
    from recagent.eval.systems import LLMOptions, resolve_llm

    with pytest.raises(ConfigError, match="sequence_top_k"):
        resolve_llm(LLMOptions(adapter="auto"), "ml-latest-small", {"sequence_top_k": 10, "index_path": "/tmp/x"})
