"""A small learned combiner of the LLM's label log-probability with the retriever's evidence.

The served score of candidate ``i`` is ``w · x_i`` over features of that candidate alone:

* ``llm``: its label log-probability (the verbalizer's score),
* ``rank``: ``-ln(retriever rank)``,
* per retrieval source ``s``: ``s:found`` (1 when ``s`` proposed it) and ``s:rank``
  (``-ln(rank in s)``, ``-ln(depth + 1)`` when ``s`` did not propose it).

The weights come from a conditional-logit fit on the validation stage
(:func:`recagent.finetune.fusion.fit_combiner`: softmax over each user's candidates, the true item
as the label, L2-regularised) and are stored in the ranker card's ``fusion.json``. With only
``llm`` and ``rank`` it is the old single fusion weight, learned instead of grid-searched.

>>> c = Combiner(features=["llm", "rank", "sequence:rank"], weights=[1.0, 0.8, 0.3])
>>> scores = c.scores(logp, sources)        # one score per candidate, in input (retriever) order
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["Combiner", "feature_matrix", "SOURCES", "ALL_FEATURES", "DEFAULT_FEATURES"]

SOURCES = ("cf", "sequence", "content", "knowledge", "popularity")
ALL_FEATURES = ("llm", "rank", *(f"{s}:{k}" for s in SOURCES for k in ("found", "rank")))
DEFAULT_FEATURES = (
    "llm",
    "rank",
    *(f"{s}:{k}" for s in ("cf", "sequence", "content", "knowledge") for k in ("found", "rank")),
)
"""The sources the default retriever queries (popularity has weight 0 there, so it proposes nothing)."""
_MISSING_RANK = 101  # a source's depth is 100: "not proposed" ranks just below its last item


def feature_matrix(
    features: Sequence[str], logp: np.ndarray | None, sources: Sequence[dict[str, int] | None]
) -> np.ndarray:
    """``(n candidates, len(features))`` for candidates in input (retriever) order."""
    n = len(sources)
    cols = []
    for f in features:
        if f == "llm":
            if logp is None:
                raise ValueError("feature 'llm' needs the LLM's label log-probabilities")
            cols.append(np.asarray(logp, dtype=np.float64))
        elif f == "rank":
            cols.append(-np.log(np.arange(1, n + 1, dtype=np.float64)))
        else:
            src, kind = f.split(":")
            ranks = [(s or {}).get(src) for s in sources]
            if kind == "found":
                cols.append(np.array([r is not None for r in ranks], dtype=np.float64))
            else:
                cols.append(-np.log(np.array([r if r is not None else _MISSING_RANK for r in ranks], dtype=np.float64)))
    return np.stack(cols, axis=1) if cols else np.zeros((n, 0))


class Combiner(BaseModel):
    """Feature names and their weights (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")
    features: list[str] = Field(min_length=1)
    weights: list[float]

    @model_validator(mode="after")
    def _check(self) -> Combiner:
        unknown = [f for f in self.features if f not in ALL_FEATURES]
        if unknown:
            raise ValueError(f"unknown combiner feature(s) {unknown}; features are {list(ALL_FEATURES)}")
        if len(self.weights) != len(self.features):
            raise ValueError(f"{len(self.weights)} weights for {len(self.features)} features")
        if not all(np.isfinite(self.weights)):
            raise ValueError("combiner weights must be finite numbers")
        return self

    @property
    def uses_llm(self) -> bool:
        return "llm" in self.features

    def scores(self, logp: np.ndarray | None, sources: Sequence[dict[str, int] | None]) -> np.ndarray:
        return feature_matrix(self.features, logp, sources) @ np.asarray(self.weights, dtype=np.float64)

    def describe(self) -> dict[str, Any]:
        return dict(zip(self.features, self.weights, strict=True))
