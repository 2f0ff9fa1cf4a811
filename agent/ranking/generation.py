"""Listwise generation ranking (LLMRank): the model writes the ranking, which is parsed."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from .base import LLMRanker, RankerConfig

__all__ = ["GenerationRanker", "GenerationConfig", "parse_ranking"]


class GenerationConfig(RankerConfig):
    template: str = "listwise"
    max_new_tokens: int | None = None
    """None = 3 tokens per candidate + 8 (``"A, B, C"`` is ~2 tokens per label)."""
    stop: list[str] = Field(default_factory=lambda: ["\n\n"])
    """Stop strings: the ranking is one line or one list; a blank line ends it."""


_BULLET = re.compile(r"^\s*(?:[-*•]|\(?\d+[.):]|#\d+)?\s*")
_SPLIT = re.compile(r"[,;\n>|]+|\s+-\s+")


def _norm(s: str) -> str:
    s = re.sub(r"\(\d{4}\)\s*$", "", s.lower())  # titles are matched without the year
    return re.sub(r"[^a-z0-9]+", " ", s).strip()


def parse_ranking(text: str, labels: Sequence[str], titles: Sequence[str]) -> list[int]:
    """Candidate indices in the order the answer names them, by label or by title.

    Pieces are split on commas, semicolons, newlines and ``>``; list bullets and numbers are
    stripped. A piece is a label if it is one (``"C"``, ``"C."``, ``"C) Heat"``), else a title
    if it contains a candidate title (longest match wins). Repeats and unknown labels are ignored.
    """
    index = {lab: i for i, lab in enumerate(labels)}
    norm_titles = [_norm(t) for t in titles]
    seen: list[int] = []
    for piece in _SPLIT.split(text):
        piece = _BULLET.sub("", piece).strip().strip("\"'`*[]")
        if not piece:
            continue
        hit: int | None = None
        m = re.match(r"^([A-Za-z])(?:[.):\]]|$)", piece)
        if m and m.group(1).upper() in index:
            hit = index[m.group(1).upper()]
        else:
            np_ = _norm(piece)
            matches = [i for i, t in enumerate(norm_titles) if t and (t in np_ or (len(np_) >= 4 and np_ in t))]
            if matches:
                hit = max(matches, key=lambda i: len(norm_titles[i]))
            else:
                m = re.match(r"^([A-Z])\s", piece)  # "C Heat": a label followed by text
                if m and m.group(1) in index:
                    hit = index[m.group(1)]
        if hit is not None and hit not in seen:
            seen.append(hit)
    return seen


class GenerationRanker(LLMRanker):
    """LLMRank-style: the model writes the ranking ("C, A, B, ..."), parsed by :func:`parse_ranking`.

    Candidates the answer leaves out follow the named ones in retriever order
    (``n_llm_ranked`` < n); an answer naming none is a fallback.
    """

    name = "generation"
    Config = GenerationConfig

    def _reserve(self, n: int) -> int:
        return self._max_new(n)

    def _max_new(self, n: int) -> int:
        return self.config.max_new_tokens or 3 * n + 8

    @property
    def label_token_ids(self) -> list[int]:
        return []  # labels are parsed from text, no token lookup needed

    def _call_llm(self, preps, jobs):
        # One generate call per distinct length budget (usually one: the same candidate count).
        budgets: dict[int, list[int]] = {}
        for j, (i, _) in enumerate(jobs):
            budgets.setdefault(self._max_new(len(preps[i].cands)), []).append(j)
        out: list[Any] = [None] * len(jobs)
        for budget, idx in budgets.items():
            texts = self.backend.generate(
                [preps[jobs[j][0]].prompts[jobs[j][1]] for j in idx],
                max_tokens=budget,
                temperature=0.0,
                adapter=self.config.adapter,
                stop=self.config.stop or None,
            )
            for j, t in zip(idx, texts, strict=True):
                out[j] = t
        return out

    def _combine(self, prep, given, outs):
        text = outs[0][1] if outs else ""
        labels = self.config.labels[: len(prep.cands)]
        titles = [self.catalog.title(c) for c in prep.cands]
        named = parse_ranking(text or "", labels, titles)
        if not named:
            res = self._fallback(prep, given, f"no candidate label or title found in the answer {text[:80]!r}")
            res.info["raw_output"] = text
            return res
        n = len(prep.cands)
        order = named + [i for i in range(n) if i not in named]
        res = self._finish(prep, given, order, [float(n - r) for r in range(n)], raw=text)
        res.info["n_llm_ranked"] = len(named)
        return res
