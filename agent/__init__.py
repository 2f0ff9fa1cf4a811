"""recagent: a local-first LLM recommendation agent and its evaluation harness.

>>> from recagent import AgentConfig, RecAgent
>>> agent = RecAgent.from_config(AgentConfig())                  # shipped data, bundled models
>>> agent.recommend(user_id="1", k=5).items

>>> from recagent import Pipeline, Retriever, VerbalizerRanker, llamarec_split, run_experiment
>>> split = llamarec_split(load_dataset("ml-latest-small"))
>>> report = run_experiment([Pipeline(Retriever(index), name="retriever")], split, "test")

Names load on first use, so ``import recagent`` stays quick (the CLI imports it before parsing flags).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    # serving
    "RecAgent": "recagent.agent",
    "AgentConfig": "recagent.agent",
    "RecommendRequest": "recagent.agent",
    "Recommendation": "recagent.agent",
    # the component contract and the one pipeline
    "Component": "recagent.components",
    "Query": "recagent.components",
    "ItemList": "recagent.components",
    "Pipeline": "recagent.pipeline",
    # data
    "load_dataset": "recagent.data",
    "Dataset": "recagent.data",
    "TrainData": "recagent.data",
    # components
    "Retriever": "recagent.retrieval",
    "RetrieverConfig": "recagent.retrieval",
    "VerbalizerRanker": "recagent.ranking",
    "GenerationRanker": "recagent.ranking",
    "MMR": "recagent.diversify",
    "Explainer": "recagent.explain",
    "ItemIndex": "recagent.store",
    "IndexConfig": "recagent.store",
    "LLMConfig": "recagent.llm",
    "make_backend": "recagent.llm",
    # evaluation
    "llamarec_split": "recagent.eval.splits",
    "make_baseline": "recagent.cf",
    "build_systems": "recagent.eval.systems",
    "evaluate": "recagent.eval.harness",
    "run_experiment": "recagent.eval.harness",
    "write_run": "recagent.eval.harness",
    # errors
    "RecAgentError": "recagent.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'recagent' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
