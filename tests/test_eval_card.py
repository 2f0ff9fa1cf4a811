"""Which LLM `recagent eval --systems llm` ranks with under ``--adapter auto``: the shipped ranker
card's best LLM variant (``best_llm``, with its fusion weight), not the card's serving default
(on ml-latest-small the retriever order, which has no LLM in it)."""

from __future__ import annotations

import json
import shutil

import pytest

from recagent.errors import ConfigError
from recagent.eval.systems import LLMOptions, resolve_llm
from recagent.finetune.card import ADAPTERS_DIR, shipped_card


def test_auto_is_the_shipped_cards_best_llm_variant():
    card = shipped_card("ml-latest-small")
    assert card.default == "retriever" and card.best_llm == "zero_shot_fused"  # what this test is about
    _, weight = card.variant(card.best_llm)
    opts, ranker, info = resolve_llm(LLMOptions(adapter="auto"), "ml-latest-small")
    assert ranker == {"history_len": card.history_len, "retrieval_weight": weight} and weight > 0
    assert info["variant"] == "zero_shot_fused" and info["retrieval_weight"] == weight
    assert "serving uses the card's default (retriever)" in info["why"]
    assert opts.model is None and opts.adapter is None  # zero_shot: the base model, no adapter


def test_a_card_folder_is_read_the_same_way(tmp_path):
    folder = tmp_path / "card"
    shutil.copytree(ADAPTERS_DIR / "ml-latest-small", folder)
    data = json.loads((folder / "card.json").read_text())
    (folder / "card.json").write_text(json.dumps({**data, "best_llm": "zero_shot", "history_len": 7}))
    _, ranker, info = resolve_llm(LLMOptions(adapter=str(folder)), "ml-latest-small")
    assert ranker == {"history_len": 7, "retrieval_weight": 0.0} and info["variant"] == "zero_shot"


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
