"""What every LLM ranker shares: configs, input checks, prompts per candidate order, fallbacks.

A ranker is a :class:`~recagent.components.Component`: ``ranker.batch(queries, items)`` scores
each query's candidates with one engine call for all of them and returns them re-ordered. An
invalid LLM answer (missing or non-finite label scores, no parsable ranking) or a backend error
keeps the input order, with the reason in ``notes["rank"]``: never silent. Bad input (no
candidates, duplicates, unknown ids, neither history nor profile nor request text) raises a
:class:`~recagent.errors.RecAgentError` instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from ..components import Component, ComponentConfig, ItemList, Query
from ..data import Catalog
from ..errors import ConfigError, EmptyInputError, RecAgentError
from ..llm import LLMBackend, LLMBackendError, PromptTooLongError
from ..prompts.render import PromptRenderer
from .prompt import Prepared, PromptBuilder, evidence_text

__all__ = ["LLMRanker", "RankerConfig", "validate", "DEFAULT_LABELS"]

log = logging.getLogger(__name__)

DEFAULT_LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class RankerConfig(ComponentConfig):
    template_dir: str | None = None
    """A folder whose .jinja files override the shipped prompts."""
    item_noun: str | None = None
    """How the prompt names items; None = the catalog's own ("movie" for MovieLens, else "item")."""
    history_len: int = Field(10, ge=0)
    """The last H history items go into the prompt (LlamaRec uses 20; 10 with the compact prompt
    scored as well on validation for 40% fewer tokens: bench/results/speed.md)."""
    labels: str = DEFAULT_LABELS
    """Candidate labels, each a single token of the tokenizer (checked at startup)."""
    overflow: Literal["error", "tail"] = "error"
    """More candidates than labels: raise, or LLM-rank the first len(labels) and keep the rest below."""
    adapter: str | None = None
    """A LoRA adapter registered in the backend, or None for the base model."""
    fallback_on_error: bool = True
    """A backend failure keeps the input order (noted) instead of raising."""
    top_genres: int = 3
    top_tags: int = 5
    evidence: bool = False
    """Each candidate line carries the retriever's evidence in a few tokens: the sources that
    proposed it and their ranks (``next 2, cf 5``; see :func:`~recagent.ranking.prompt.evidence_text`).
    Read from the candidates' ``sources`` field (the retriever's output); absent there, nothing is shown."""


def validate(query: Query, items: ItemList | None, catalog: Catalog) -> list[str]:
    """The candidate ids, after the checks no ranker can do without (before any LLM call)."""
    cands = [] if items is None else list(items.ids)
    if not cands:
        raise EmptyInputError("no candidates to rank", hint="pass at least one candidate item id (e.g. the retriever's top-N)",
                              param="candidates")  # fmt: skip
    dup = sorted({c for c, n in Counter(cands).items() if n > 1})
    if dup:
        raise RecAgentError(f"duplicate candidate ids: {dup[:5]}", hint="pass each candidate once", param="candidates")
    catalog.require(cands)
    catalog.require(query.history)
    if not query.history and not query.profile and not query.text:
        raise EmptyInputError(
            "the user has neither history nor a profile nor a request text",
            hint="pass history item ids, a profile such as {'text': 'likes 90s sci-fi'}, or what the user asks for",
            param="history",
        )
    return cands


class LLMRanker(Component):
    """Shared machinery; subclasses set ``_orders``, ``_call_llm`` and ``_combine``."""

    name = "llm"
    Config = RankerConfig
    template = "rank"

    def __init__(self, backend: LLMBackend, catalog: Catalog, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        cfg = self.config
        if len(set(cfg.labels)) != len(cfg.labels) or not cfg.labels:
            raise ConfigError(f"labels must be distinct characters, got {cfg.labels!r}", param="labels")
        backend._check_adapter(cfg.adapter)
        self.backend, self.catalog = backend, catalog
        self.renderer = PromptRenderer(backend.tokenizer, cfg.template_dir)
        self.renderer.template(
            getattr(cfg, "template", self.template)
        )  # a missing or broken template fails here, not per request
        self.max_prompt_tokens = backend.max_model_len - self._reserve(len(cfg.labels))
        self._label_ids: list[int] | None = None
        self.lock: Any = threading.RLock()  # held around the engine call only; a shared engine shares it

    def fit(self, data: Any) -> LLMRanker:
        """Use the catalog the system may see at this stage (evaluation: tags before each cut)."""
        self.catalog = data.catalog
        return self

    @property
    def builder(self) -> PromptBuilder:
        c = self.config
        return PromptBuilder(self.backend.encode, self.renderer, template=getattr(c, "template", self.template),
                             labels=c.labels, item_noun=c.item_noun or self.catalog.item_noun, history_len=c.history_len,
                             top_genres=c.top_genres, top_tags=c.top_tags, max_tokens=self.max_prompt_tokens)  # fmt: skip

    def _reserve(self, n: int) -> int:
        return 1

    @property
    def label_token_ids(self) -> list[int]:
        """Token id of each label right after the rendered prompt's end (looked up, never hard-coded)."""
        if self._label_ids is None:
            dummy = Query(history=(self.catalog.ids[0],))
            after = self.builder.text(self.catalog, dummy, [self.catalog.ids[0]], [], None, [0])
            self._label_ids = [self.backend.single_token_id(lab, after=after) for lab in self.config.labels]
        return self._label_ids

    def _orders(self, n: int) -> list[list[int]]:
        return [list(range(n))]

    def prepare(self, query: Query, items: ItemList) -> Prepared:
        """Validate and render one query's prompts as token ids: what the LLM sees. Fine-tuning
        builds its examples with this, so training and serving prompts cannot drift."""
        cfg = self.config
        cands = validate(query, items, self.catalog)
        tail: list[str] = []
        if len(cands) > len(cfg.labels):
            if cfg.overflow == "error":
                raise ConfigError(
                    f"{len(cands)} candidates but only {len(cfg.labels)} labels",
                    hint=f"pass at most {len(cfg.labels)} candidates, longer labels, or overflow='tail' "
                    "(the LLM ranks the first ones, the rest keep their order below them)",
                    param="candidates",
                )
            cands, tail = cands[: len(cfg.labels)], cands[len(cfg.labels) :]
        evidence = None
        if cfg.evidence:
            evidence = [evidence_text(s) for s in items.field("sources", {})[: len(cands)]]
        return self.builder.prepare(self.catalog, query, cands, tail, self._orders(len(cands)), evidence)

    def batch(
        self, queries: Sequence[Query], items: Sequence[ItemList] | None = None, n: int | None = None
    ) -> list[ItemList]:
        """Rank every query's candidates with one engine call (all prompts in one batch)."""
        if items is None or len(items) != len(queries):
            raise ConfigError(
                "an LLM ranker needs one candidate list per query", hint="pass the retriever's output as items"
            )
        t0 = time.perf_counter()
        _ = self.label_token_ids  # fail early on labels the tokenizer splits
        preps = [self.prepare(q, lst) for q, lst in zip(queries, items, strict=True)]
        t1 = time.perf_counter()
        jobs = [(i, k) for i, p in enumerate(preps) if p.error is None for k in range(len(p.prompts))]
        outputs: list[Any] = []
        error: str | None = None
        if jobs:
            try:
                with self.lock:
                    outputs = self._call_llm(preps, jobs)
            except (LLMBackendError, PromptTooLongError) as e:
                if not self.config.fallback_on_error:
                    raise
                error = f"LLM call failed: {e.message}"
        t2 = time.perf_counter()
        per: dict[int, list[tuple[int, Any]]] = {}
        for (i, k), out in zip(jobs, outputs if error is None else [None] * len(jobs), strict=True):
            per.setdefault(i, []).append((k, out))
        results = []
        for i, (prep, given) in enumerate(zip(preps, items, strict=True)):
            reason = prep.error or error
            res = self._fallback(prep, given, reason) if reason else self._combine(prep, given, per.get(i, []))
            res.timings_ms.update({"rank.prepare": (t1 - t0) * 1000, "rank.llm": (t2 - t1) * 1000})
            res.info.update(ranker=self.describe_ranker(), batch_prompts=len(jobs), history_used=len(prep.history),
                            history_dropped=prep.dropped, prompt_tokens=max((len(p) for p in prep.prompts), default=0))  # fmt: skip
            results.append(res.head(n))
        return results

    def describe_ranker(self) -> str:
        """Which ranker ran, for every result: method, model and adapter."""
        model = getattr(self.backend, "model_path", None)
        adapter = f"+{self.config.adapter}" if self.config.adapter else ""
        return f"{self.name}:{getattr(model, 'name', model)}{adapter}"

    def _fallback(self, prep: Prepared, given: ItemList, reason: str) -> ItemList:
        log.warning("user %s: keeping the input order: %s", prep.query.user_id, reason)
        out = given.select(range(len(given)), [-float(i) for i in range(len(given))])
        out.notes["rank"] = reason
        out.info["n_llm_ranked"] = 0
        return out

    def _finish(
        self, prep: Prepared, given: ItemList, order: list[int], scores: list[float], raw: str | None = None
    ) -> ItemList:
        """The ranked list (LLM-ranked candidates, then the overflow tail); checks it is a permutation."""
        pos = {c: j for j, c in enumerate(given.ids)}
        ids = [prep.cands[i] for i in order] + prep.tail
        if sorted(ids) != sorted(given.ids):
            return self._fallback(prep, given, "internal check failed: ranking is not a permutation of the candidates")
        floor = min(scores, default=0.0)
        out = given.select([pos[c] for c in ids], list(scores) + [floor - 1.0 - i for i in range(len(prep.tail))])
        out.info["n_llm_ranked"] = len(prep.cands)
        if raw is not None:
            out.info["raw_output"] = raw
        return out

    def _call_llm(self, preps: list[Prepared], jobs: list[tuple[int, int]]) -> list[Any]:
        raise NotImplementedError

    def _combine(self, prep: Prepared, given: ItemList, outs: list[tuple[int, Any]]) -> ItemList:
        raise NotImplementedError
