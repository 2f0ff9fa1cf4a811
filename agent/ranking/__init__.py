"""LLM re-rankers: the one-pass verbalizer (LlamaRec) and listwise generation (LLMRank).

Both are components: ``ranker.batch(queries, candidate_lists)`` → re-ordered lists, one engine call
for all queries. Modules: :mod:`.prompt` (the one ranking prompt), :mod:`.base` (checks,
fallbacks), :mod:`.verbalizer`, :mod:`.generation`, :mod:`.position_bias`, :mod:`.registry` (the rankers a config names).
"""

from __future__ import annotations

from .base import DEFAULT_LABELS, LLMRanker, RankerConfig, validate
from .generation import GenerationConfig, GenerationRanker, parse_ranking
from .position_bias import PositionBiasReport, measure_position_bias
from .prompt import Prepared, PromptBuilder, taste_summary
from .registry import RANKERS, ranker_names, register_ranker
from .verbalizer import VerbalizerConfig, VerbalizerRanker, fuse_with_rank

__all__ = [
    "LLMRanker", "RankerConfig", "VerbalizerRanker", "VerbalizerConfig", "fuse_with_rank", "GenerationRanker", "GenerationConfig",
    "PromptBuilder", "Prepared", "taste_summary", "parse_ranking", "validate", "measure_position_bias",
    "PositionBiasReport", "DEFAULT_LABELS", "fuse_with_rank", "RANKERS", "register_ranker", "ranker_names",
]  # fmt: skip
