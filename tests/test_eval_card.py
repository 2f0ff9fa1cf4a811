"""Which LLM `recagent eval --systems llm` ranks with under ``--adapter auto``: the shipped ranker
card's best LLM variant (``best_llm``, with its fusion weight), not the card's serving default
(on ml-latest-small the retriever order, which has no LLM in it)."""

from __future__ import annotations

import json
import shutil

import pytest

from recagent.errors import ConfigError
from recagent.eval.systems import LLMOptions, resolve_llm
from recagent.ranking.card import ADAPTERS_DIR, shipped_card


def test_auto_is_the_shipped_cards_best_llm_variant():
    card = shipped_card("ml-latest-small")
    assert card.default == "retriever" and card.best_llm == "zero_shot_fused"  # what this test is about
    _, weight = card.variant(card.best_llm)
    opts, ranker, info = resolve_llm(LLMOptions(adapter="auto"), "ml-latest-small")
    assert ranker == card.ranker_settings(card.best_llm) and weight > 0
    assert ranker["history_len"] == card.history_len and ranker["retrieval_weight"] == weight
    assert info["variant"] == "zero_shot_fused" and info["retrieval_weight"] == weight
    assert "serving uses the card's default (retriever)" in info["why"]
    assert opts.model is None and opts.adapter is None  # zero_shot: the base model, no adapter


def test_a_card_folder_is_read_the_same_way(tmp_path):
    folder = tmp_path / "card"
    shutil.copytree(ADAPTERS_DIR / "ml-latest-small", folder)
    data = json.loads((folder / "card.json").read_text())
    (folder / "card.json").write_text(json.dumps({**data, "best_llm": "zero_shot", "history_len": 7}))
    _, ranker, info = resolve_llm(LLMOptions(adapter=str(folder)), "ml-latest-small")
    # the card names no template: its variants were trained and measured on rank.jinja, whatever
    # the zero-shot default prompt is now
    assert ranker == {
        "history_len": 7,
        "template": "rank",
        "evidence": False,
        "retrieval_weight": 0.0,
        "combiner": None,
    }
    assert info["variant"] == "zero_shot"


def _card(tmp_path, **variant) -> tuple[object, str]:
    folder = tmp_path / "card"
    shutil.copytree(ADAPTERS_DIR / "ml-latest-small", folder, dirs_exist_ok=True)
    data = json.loads((folder / "card.json").read_text())
    data["variants"]["zero_shot_combiner"] = {"model": "base", "retrieval_weight": 0.0, **variant}
    (folder / "card.json").write_text(json.dumps({**data, "best_llm": "zero_shot_combiner"}))
    return folder, "zero_shot_combiner"


def test_a_variant_carries_its_own_prompt_and_combiner(tmp_path):
    comb = {"features": ["llm", "rank", "sequence:rank"], "weights": [1.0, 0.5, 0.25]}
    folder, name = _card(tmp_path, history_len=5, template="rank_compact", evidence=True, combiner=comb)
    _, ranker, info = resolve_llm(LLMOptions(adapter=str(folder)), "ml-latest-small")
    assert ranker["history_len"] == 5 and ranker["evidence"] is True and ranker["template"] == "rank_compact"
    assert ranker["combiner"].describe() == {"llm": 1.0, "rank": 0.5, "sequence:rank": 0.25}
    assert info["variant"] == name and info["evidence"] is True and info["combiner"]["sequence:rank"] == 0.25
    # LLMRank lists carry no retriever rank or evidence: the combiner is not used there
    from recagent.agent import AgentConfig, apply_card

    served, note = apply_card(AgentConfig(adapter=str(folder)), "ml-latest-small", variant=name)
    assert note is None and served.ranker.evidence and served.ranker.combiner is not None
    assert served.ranker.history_len == 5 and served.ranker.template == "rank_compact"


def test_a_malformed_variant_or_default_is_a_clear_error(tmp_path):
    from recagent.errors import ModelPathError
    from recagent.ranking.card import RankerCard

    folder, name = _card(tmp_path, combiner={"features": ["bogus"], "weights": [1.0]})
    with pytest.raises(ModelPathError, match="malformed combiner"):
        RankerCard.load(folder).ranker_settings(name)
    data = json.loads((folder / "card.json").read_text())
    (folder / "card.json").write_text(json.dumps({**data, "default": "nope"}))
    with pytest.raises(ModelPathError, match="default 'nope' is not one of the variants"):
        RankerCard.load(folder)


def test_no_card_none_and_served_models_rank_as_they_are():
    assert resolve_llm(LLMOptions(adapter="auto"), "no-card-data")[2] == {"adapter": "none (auto: no card)"}
    assert resolve_llm(LLMOptions(adapter="none"), "ml-latest-small")[1:] == ({}, {"adapter": "none"})
    opts, ranker, info = resolve_llm(LLMOptions(adapter="auto", url="http://127.0.0.1:1"), "ml-latest-small")
    assert ranker == {} and opts.adapter is None and "served model" in info["adapter"]
    assert resolve_llm(LLMOptions(adapter="tuned", url="http://127.0.0.1:1"), "x")[2] == {
        "adapter": "served adapter 'tuned'"
    }
    with pytest.raises(ConfigError, match="is a folder, but the model is served"):
        resolve_llm(LLMOptions(adapter=str(ADAPTERS_DIR), url="http://127.0.0.1:1"), "ml-latest-small")
