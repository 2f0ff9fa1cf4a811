"""The ranking prompt, rendered once for serving, evaluation and fine-tuning alike.

:class:`PromptBuilder` turns a :class:`~recagent.components.Query` and its candidates into the
token ids the LLM reads (``prompts/rank.jinja`` by default): profile, taste summary, the last
``history_len`` history items with ratings, the request text when there is one, then the
candidates labelled A, B, C... One builder per ranker; fine-tuning renders its examples with the
ranker's own builder, so a training prompt and a serving prompt for the same inputs are the
same bytes.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..components import Query
from ..data import Catalog, as_list
from ..prompts.render import PromptRenderer

__all__ = ["PromptBuilder", "Prepared", "taste_summary", "evidence_text", "SOURCE_SHORT"]

log = logging.getLogger(__name__)


def taste_summary(
    catalog: Catalog,
    history: Sequence[str],
    ratings: Sequence[float | None] | None = None,
    *,
    top_genres: int = 3,
    top_tags: int = 5,
) -> dict[str, Any] | None:
    """Top genres/tags over the user's history (liked items only when ratings say which), mean rating.

    "Liked" = rated at least the user's own mean, so a harsh rater's favourites still count.
    """
    if not len(history):
        return None
    rs = list(ratings) if ratings is not None else [None] * len(history)
    known = [r for r in rs if r is not None]
    mean = float(np.mean(known)) if known else None
    liked = [h for h, r in zip(history, rs, strict=True) if mean is None or r is None or r >= mean] or list(history)
    items = catalog.items.loc[[str(i) for i in liked]]
    out: dict[str, Any] = {"n_items": len(history), "mean_rating": round(mean, 1) if mean is not None else None}
    for col, k, key in (("genres", top_genres, "top_genres"), ("tags", top_tags, "top_tags")):
        if col in items and k > 0:
            counts = Counter(g for cell in items[col] for g in as_list(cell))
            out[key] = [g for g, _ in counts.most_common(k)]
        else:
            out[key] = []
    return out


SOURCE_SHORT = {"sequence": "next", "cf": "cf", "content": "like", "knowledge": "kg", "popularity": "pop",
                "profile": "profile", "query": "ask"}  # fmt: skip
"""How a candidate line names the retrieval source that proposed it (short words: few tokens)."""


def evidence_text(sources: dict[str, int] | None, max_rank: int = 50) -> str:
    """The retriever's evidence for one candidate in a few tokens: each source that ranked it in its
    top ``max_rank``, with that rank, strongest first — e.g. ``"next 2, cf 5"`` (the sequence graph
    put it 2nd after the user's recent items, the CF model 5th); "" when none did."""
    found = sorted((r, SOURCE_SHORT.get(s, s)) for s, r in (sources or {}).items() if r is not None and r <= max_rank)
    return ", ".join(f"{name} {r}" for r, name in found)


@dataclass
class Prepared:
    """One query ready for the LLM: the prompt of each candidate order, as token ids."""

    query: Query
    cands: list[str]  # the candidates the LLM sees (≤ len(labels))
    tail: list[str]  # overflow candidates kept in input order below the ranked ones
    history: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    prompts: list[list[int]] = field(default_factory=list)
    orders: list[list[int]] = field(default_factory=list)  # prompt k shows cands[orders[k][j]] at label j
    error: str | None = None


class PromptBuilder:
    """Renders ranking prompts; cuts the oldest history items until the prompt fits."""

    def __init__(self, tokenizer_encode, renderer: PromptRenderer, *, template: str, labels: str, item_noun: str,
                 history_len: int, top_genres: int, top_tags: int, max_tokens: int):  # fmt: skip
        self.encode, self.renderer = tokenizer_encode, renderer
        self.template, self.labels, self.item_noun = template, labels, item_noun
        self.history_len, self.top_genres, self.top_tags = history_len, top_genres, top_tags
        self.max_tokens = max_tokens

    def text(self, catalog: Catalog, query: Query, cands: Sequence[str], history: list[dict[str, Any]],
             taste: dict[str, Any] | None, order: Sequence[int], evidence: Sequence[str] | None = None) -> str:  # fmt: skip
        """The prompt string for one candidate order (label j shows ``cands[order[j]]``);
        ``evidence[i]``: the retriever's evidence for ``cands[i]`` (:func:`evidence_text`)."""
        views = [dict(catalog.view(c), evidence=evidence[i] if evidence else None) for i, c in enumerate(cands)]
        labels = list(self.labels[: len(views)])
        shown = [dict(views[i], label=lab) for lab, i in zip(labels, order, strict=True)]
        return self.renderer.prompt(
            self.template,
            item_noun=self.item_noun,
            profile=dict(query.profile or {}),
            taste=taste,
            history=history,
            request=query.text or None,
            candidates=shown,
            labels=labels,
        )

    def prepare(self, catalog: Catalog, query: Query, cands: list[str], tail: list[str], orders: list[list[int]],
                evidence: Sequence[str] | None = None) -> Prepared:  # fmt: skip
        hist = list(query.history)
        ratings = query.rating_list()
        taste = taste_summary(catalog, hist, ratings, top_genres=self.top_genres, top_tags=self.top_tags)
        keep = min(self.history_len, len(hist))
        views = [
            dict(catalog.view(h), rating=r)
            for h, r in zip(hist[-keep:] if keep else [], ratings[-keep:] if keep else [], strict=True)
        ]
        prep = Prepared(query, cands, tail)
        while True:
            prompts = [self.encode(self.text(catalog, query, cands, views, taste, o, evidence)) for o in orders]
            longest = max(len(p) for p in prompts)
            if longest <= self.max_tokens:
                break
            if not views:
                prep.error = f"prompt too long even without history ({longest} > {self.max_tokens} tokens)"
                return prep
            # Drop roughly enough items in one go (estimated from the average line length), at least one.
            bare = len(self.encode(self.text(catalog, query, cands, [], taste, orders[0], evidence)))
            per_item = max(1, (longest - bare) // len(views))
            n_drop = max(1, math.ceil((longest - self.max_tokens) / per_item))
            views = views[n_drop:]
            prep.dropped = keep - len(views)
        if prep.dropped:
            log.warning("user %s: prompt longer than the context window (%d tokens); cut the %d oldest history items",
                        query.user_id, self.max_tokens, prep.dropped)  # fmt: skip
        prep.history, prep.prompts, prep.orders = views, prompts, orders
        return prep
