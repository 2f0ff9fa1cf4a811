"""Build any evaluable system by name: the CF baselines, the Chroma retriever, the LLM ranker.

The retriever and LLM systems are imported lazily so that evaluating baselines never starts
sentence-transformers or vLLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from recagent.errors import ConfigError

from .baselines import BASELINES, Recommender, make_baseline
from .splits import Split

__all__ = ["build_system", "SYSTEM_NAMES"]

SYSTEM_NAMES = (*BASELINES, "retriever", "llm")

_SEEDED = {"bpr", "als", "sasrec"}


def build_system(name: str, *, split: Split, seed: int = 0, adapter: Path | None = None, **options: Any) -> Recommender:
    """A fresh, unfitted system; ``options`` are its config fields (see each class' Config)."""
    if name in BASELINES:
        if name in _SEEDED:
            options.setdefault("seed", seed)
        return make_baseline(name, **options)
    if name == "retriever":
        from recagent.retriever import RetrieverSystem

        return RetrieverSystem(**options)
    if name == "llm":
        from .llm_system import LLMRankerSystem

        return LLMRankerSystem(adapter=adapter, **options)
    raise ConfigError(f"unknown system {name!r}", hint=f"choose from {', '.join(SYSTEM_NAMES)}")
