"""The rankers a config can name (``AgentConfig.ranker_kind``): registered here once.

A name is a built-in (``verbalizer``: one pass, label log-probabilities, LlamaRec; ``generation``:
the LLM writes the ranking, LLMRank), a name given to :func:`register_ranker`, or
``"package.module:Name"`` of one's own file: an :class:`~recagent.ranking.LLMRanker` subclass
(built as ``Name(llm, catalog, config)``, with the ``[agent.ranker]`` keys its config has), any
other :class:`~recagent.components.Component` subclass (built as ``Name()``), or a factory
``(llm, catalog, ranker_config) -> Component``. The ranker re-orders the retriever's candidates;
``[agent.ranker]`` settings reach it when set explicitly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..components import Component, Registry
from .base import LLMRanker
from .generation import GenerationConfig, GenerationRanker
from .verbalizer import VerbalizerRanker

__all__ = ["RANKERS", "register_ranker", "ranker_names", "RankerFactory"]

RankerFactory = Callable[[Any, Any, Any], Component]


def _settings(config_cls: type, cfg: Any) -> Any:
    """The ``[agent.ranker]`` keys set explicitly that ``config_cls`` has (a generation ranker keeps
    its own template unless one is named)."""
    set_keys = cfg.model_dump(exclude_unset=True) if cfg is not None else {}
    return config_cls(**{k: v for k, v in set_keys.items() if k in config_cls.model_fields})


def _from_class(cls: type) -> RankerFactory:
    if issubclass(cls, LLMRanker):
        return lambda llm, catalog, cfg: cls(llm, catalog, _settings(cls.Config, cfg))
    return lambda llm, catalog, cfg: cls()


RANKERS = Registry("ranker", "agent.ranker_kind", Component, _from_class)
"""name → factory ``(llm, catalog, ranker_config) -> Component``."""


def register_ranker(name: str, factory: RankerFactory) -> RankerFactory:
    """Make ``name`` usable as ``AgentConfig.ranker_kind``."""
    return RANKERS.register(name, factory)


def ranker_names() -> list[str]:
    return RANKERS.names()


register_ranker("verbalizer", lambda llm, catalog, cfg: VerbalizerRanker(llm, catalog, cfg))
register_ranker(
    "generation", lambda llm, catalog, cfg: GenerationRanker(llm, catalog, _settings(GenerationConfig, cfg))
)
