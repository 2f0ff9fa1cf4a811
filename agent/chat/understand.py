"""How a message is understood, in the one shape integrators read: ``recagent parse`` and
``POST /v1/parse`` print the same object.

>>> parser = message_parser(ds.catalog, popularity)
>>> understand(parser, ["a war film that's not too depressing, no musicals"])
[{'message': "a war film that's not too depressing, no musicals", 'include': ['War'], 'exclude': ['Musical'],
  'year_min': None, 'year_max': None, 'liked': [], 'disliked': []}]

The parse is a first turn's (no session): rules, then — with an engine — the LLM's JSON merged
in where the rules are unsure (:class:`~recagent.chat.llm_parse.LLMParser`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .llm_parse import LLMParser
from .models import ChatQuery
from .parse_eval import run_parsers
from .rules import RuleParser
from .titles import TitleResolver
from .vocab import CatalogVocab

__all__ = ["PARSE_KEYS", "message_parser", "understanding", "understand"]

PARSE_KEYS = ("message", "include", "exclude", "year_min", "year_max", "liked", "disliked")
GENRES = "genres"


def message_parser(catalog: Any, popularity: Mapping[str, int] | None = None, item_noun: str = "movie", *,
                   only_unsure: bool = True) -> LLMParser:  # fmt: skip
    """The chat agent's parsers over ``catalog`` without the rest of the agent (no index, no engine);
    ``only_unsure``: the LLM parses only messages the rules found nothing in, as the agent's default
    (:attr:`~recagent.chat.models.ChatConfig.llm_parse_when`)."""
    rules = RuleParser(TitleResolver(catalog=catalog, popularity=popularity), CatalogVocab.from_catalog(catalog))
    return LLMParser(rules, item_noun=item_noun, only_unsure=only_unsure)


def understanding(message: str, q: ChatQuery) -> dict[str, Any]:
    """``{"message", "include", "exclude", "year_min", "year_max", "liked", "disliked"}``: genre
    names as the data set spells them, item ids as strings."""
    return {
        "message": message,
        "include": list(q.include.get(GENRES, [])),
        "exclude": list(q.exclude.get(GENRES, [])),
        "year_min": q.year_min,
        "year_max": q.year_max,
        "liked": [str(i) for i in q.liked],
        "disliked": [str(i) for i in q.disliked],
    }


def understand(
    parser: LLMParser, messages: Sequence[str], *, llm: Any = None, renderer: Any = None, max_tokens: int = 160
) -> list[dict[str, Any]]:
    """:func:`understanding` of each message; the LLM (when given) is asked in one batch."""
    run = run_parsers(parser, list(messages), llm=llm, renderer=renderer, max_tokens=max_tokens)
    return [understanding(m, q) for m, q in zip(messages, run.merged, strict=True)]
