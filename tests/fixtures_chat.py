"""Session fixtures for the chat tests: the parsers on the shipped ml-latest-small catalog, the
labelled requests, and a chat pipeline without an LLM (rules only) on the small test index."""

from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["ml_parser", "chat_fixtures", "rules_pipeline"]

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def ml_parser(ml_small):
    """The rule parser and the LLM parser for ml-latest-small (9,742 movies, its popularity)."""
    from recagent.chat.llm_parse import LLMParser
    from recagent.chat.rules import RuleParser
    from recagent.chat.titles import TitleResolver
    from recagent.chat.vocab import CatalogVocab

    pop = ml_small.interactions.df["item_id"].value_counts().to_dict()
    rules = RuleParser(
        TitleResolver(catalog=ml_small.catalog, popularity=pop), CatalogVocab.from_catalog(ml_small.catalog)
    )
    return LLMParser(rules, item_noun="movie")


@pytest.fixture(scope="session")
def chat_fixtures():
    """Requests with their expected parse (tests/data/chat_fixtures.jsonl; ids like "en-00")."""
    from recagent.chat.parse_eval import load_fixtures

    return load_fixtures(DATA / "chat_fixtures.jsonl")


@pytest.fixture(scope="session")
def rules_pipeline(retr_split, retr_index):
    """The recommend pipeline on the 250-movie test index, without an LLM (chat parses by rules)."""
    from recagent.agent import AgentConfig, RecAgent
    from recagent.data import TrainData
    from recagent.retrieval import Retriever

    retriever = Retriever(retr_index, cf_models={}).fit(TrainData.from_dataset(retr_split.dataset))
    return RecAgent(retr_split.dataset, retriever, None, AgentConfig(k=4))
