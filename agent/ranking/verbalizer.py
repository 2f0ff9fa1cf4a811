"""The one-pass verbalizer ranker (LlamaRec): candidate score = log-probability of its label.

The candidates are labelled A, B, C, ... in the prompt; one forward pass with sampling restricted
to the label tokens scores every candidate by its label's log-probability as the first answer
token. No text is parsed, so every candidate gets exactly one score.

Position bias: the 135M model prefers early labels. ``permutations=K`` scores K rotations of the
candidate list (each candidate at K evenly spaced positions) and averages the probabilities.

>>> ranker = VerbalizerRanker(make_backend(LLMConfig()), ds.catalog)
>>> ranked = ranker(Query(user_id="1", history=(...)), ItemList.of(["1", "260", "296"]))
>>> ranked.ids, ranked.scores, ranked.notes.get("rank")
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import Field

from .base import LLMRanker, RankerConfig
from .combine import Combiner

__all__ = ["VerbalizerRanker", "VerbalizerConfig", "fuse_with_rank"]


class VerbalizerConfig(RankerConfig):
    template: str = "rank_compact"
    """The prompt (prompts/<template>.jinja): ``rank_compact`` (~310 tokens per user at 20
    candidates) or ``rank``, the longer one the shipped ranker card was trained on (~815 at 20
    history items). Chosen on validation: bench/results/speed.md."""
    permutations: int = Field(1, ge=1)
    """K rotations of the candidate list, probabilities averaged: mitigates position bias (K× cost)."""
    retrieval_weight: float = Field(0.0, ge=0.0)
    """Fusion with the input order (the retriever's ranking): score = label log-probability −
    w·ln(rank), rank from 1. 0 = the LLM alone; fitted on the validation stage
    (``recagent.finetune.fusion``) and stored next to an adapter."""
    combiner: Combiner | None = None
    """A learned combiner of the label log-probability with the retriever's rank and per-source
    evidence (:mod:`recagent.ranking.combine`), fitted on validation; replaces ``retrieval_weight``."""


class VerbalizerRanker(LLMRanker):
    """One forward pass per prompt; candidate score = logprob of its label as the first answer token."""

    name = "verbalizer"
    Config = VerbalizerConfig

    def describe_ranker(self) -> str:
        """``verbalizer:<model>[+adapter]``, then how its scores are fused: ``+evidence`` (in the
        prompt), ``+combiner`` (learned fusion) or ``+fused(w)``."""
        c = self.config
        fused = (
            "+combiner" if c.combiner is not None else (f"+fused({c.retrieval_weight:g})" if c.retrieval_weight else "")
        )
        return super().describe_ranker() + ("+evidence" if c.evidence else "") + fused

    def _orders(self, n: int) -> list[list[int]]:
        # Rotations rather than random shuffles: with K of them every candidate sits at K evenly
        # spaced positions, the balanced design for cancelling a position effect.
        k = min(self.config.permutations, n)
        shifts = sorted({round(j * n / k) % n for j in range(k)})
        return [[(s + j) % n for j in range(n)] for s in shifts]

    def _call_llm(self, preps, jobs):
        label_ids = self.label_token_ids
        prompts = [preps[i].prompts[k] for i, k in jobs]
        allowed = [label_ids[: len(preps[i].cands)] for i, _ in jobs]
        return self.backend.score_labels(prompts, allowed, adapter=self.config.adapter)

    def label_logprobs(self, prep, outs) -> tuple[np.ndarray | None, list[str]]:
        """Mean label probability per candidate over the valid permutations, as log-probabilities."""
        n = len(prep.cands)
        label_ids = self.label_token_ids[:n]
        probs = np.zeros(n)
        valid = 0
        problems = []
        for k, lp in outs:
            vals = [lp.get(t, math.nan) for t in label_ids]
            if set(lp) != set(label_ids) or not all(math.isfinite(v) for v in vals):
                problems.append(f"permutation {k}: labels scored {len([v for v in vals if math.isfinite(v)])}/{n}")
                continue
            order = prep.orders[k]
            for j, v in enumerate(vals):  # label j shows candidate order[j]
                probs[order[j]] += math.exp(v)
            valid += 1
        if valid == 0:
            return None, problems
        with np.errstate(divide="ignore"):
            scores = np.log(probs / valid)
        return np.where(np.isfinite(scores), scores, -1e9), problems  # underflow to 0 probability

    def _combine(self, prep, given, outs):
        logp, problems = self.label_logprobs(prep, outs)
        if logp is None:
            return self._fallback(prep, given, "invalid LLM answer: " + "; ".join(problems or ["no output"]))
        if problems:
            given.notes["rank"] = "ignored invalid permutations: " + "; ".join(problems)
        # prep.cands[i] is the input's i-th item: its input (retriever) rank is i + 1
        combiner = self.config.combiner
        if combiner is not None:
            scores = combiner.scores(logp, given.field("sources", {})[: len(logp)])
        else:
            scores = fuse_with_rank(logp, self.config.retrieval_weight)
        order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))  # ties keep the input order
        out = self._finish(prep, given, order, [float(scores[i]) for i in order])
        by_id = dict(zip(prep.cands, logp.tolist(), strict=True))
        out.fields["llm_logprob"] = [by_id.get(i, float("nan")) for i in out.ids]
        return out


def fuse_with_rank(logp: np.ndarray, weight: float) -> np.ndarray:
    """Label log-probabilities (in input order) fused with the input rank: ``logp − w·ln(rank)``."""
    return np.asarray(logp, dtype=np.float64) - weight * np.log(np.arange(1, len(logp) + 1))
