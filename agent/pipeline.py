"""One pipeline: candidates → rank → diversify → explain, every stage a component.

Serving (:class:`~recagent.agent.RecAgent`, hence the CLI, HTTP server, chat and LangChain tools),
``recagent eval``, fine-tuning and the benchmarks all run recommendations through this class, so a
prompt, a fusion rule or a fallback cannot differ between them.

>>> pipe = Pipeline(retriever, ranker=VerbalizerRanker(llm, catalog), diversify=MMR(index), n_candidates=20)
>>> pipe.fit(TrainData.from_dataset(ds))          # or split.train_data("test") in evaluation
>>> lists = pipe.batch(queries, n=10)              # one engine call per LLM stage for all queries
>>> lists = pipe.batch(queries, candidates, n=10)  # rank given candidate lists (LLMRank protocol)

A pipeline is itself a component, so the harness evaluates a CF baseline and a pipeline the same
way. Per-stage milliseconds go to each list's ``timings_ms``; a stage that fell back writes why in
``notes`` — never silent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pydantic import Field

from .components import Component, ComponentConfig, ItemList, Query
from .store import vector_cache

__all__ = ["Pipeline", "NOTHING_TO_RANK"]

NOTHING_TO_RANK = "nothing to rank with (no history, profile or request text): retriever order"


class Pipeline(Component):
    """``candidates`` finds items (a retriever or a CF baseline); ``ranker`` re-scores them;
    ``diversify`` re-orders and cuts to ``n``; ``explain`` adds reasons. Any stage but the
    first may be ``None``; with given ``items`` the first stage re-scores them when
    ``score_given`` (a baseline or the retriever in the LLMRank protocol) and is skipped otherwise
    (the LLM ranker reads the candidates in the order given)."""

    name = "pipeline"

    class Config(ComponentConfig):
        n_candidates: int = Field(20, ge=1)
        """Candidates found per query and handed to the ranker (LlamaRec: 20)."""
        score_given: bool = True

    def __init__(
        self,
        candidates: Component | None,
        ranker: Component | None = None,
        diversify: Component | None = None,
        explain: Component | None = None,
        *,
        name: str | None = None,
        config: Any = None,
        **overrides: Any,
    ):
        super().__init__(config, **overrides)
        if candidates is None and ranker is None:
            raise ValueError("a pipeline needs a candidate stage or a ranker")
        self.candidates, self.ranker, self.diversify, self.explain = candidates, ranker, diversify, explain
        if name:
            self.name = name

    @property
    def stages(self) -> list[tuple[str, Component]]:
        named = (
            ("retrieve", self.candidates),
            ("rank", self.ranker),
            ("diversify", self.diversify),
            ("explain", self.explain),
        )
        return [(s, c) for s, c in named if c is not None]

    def fit(self, data: Any) -> Pipeline:
        for _, c in self.stages:
            c.fit(data)
        return self

    def batch(
        self, queries: Sequence[Query], items: Sequence[ItemList] | None = None, n: int | None = None
    ) -> list[ItemList]:
        with vector_cache():  # the stages fetch item vectors from Chroma once per id
            return self._batch(list(queries), items, n)

    def _batch(self, queries: list[Query], items: Sequence[ItemList] | None, n: int | None) -> list[ItemList]:
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        if items is None:
            lists = self.candidates.batch(queries, None, self.config.n_candidates)
        elif self.candidates is not None and self.config.score_given:
            lists = self.candidates.batch(queries, list(items), None)
        else:
            lists = [lst.select(range(len(lst))) for lst in items]
        timings["retrieve"] = time.perf_counter() - t0
        for lst in lists:
            lst.info["n_candidates"] = len(lst)
        live = [j for j, lst in enumerate(lists) if len(lst)]
        if self.ranker is not None:
            t0 = time.perf_counter()
            can = [j for j in live if queries[j].history or queries[j].profile or queries[j].text]
            for j in set(live) - set(can):
                lists[j].notes["rank"] = NOTHING_TO_RANK
            for j, lst in zip(can, self.ranker.batch([queries[j] for j in can], [lists[j] for j in can]), strict=True):
                lists[j] = lst
            timings["rank"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if self.diversify is not None:
            for j in live:
                lists[j] = self.diversify(queries[j], lists[j], n)
        else:
            lists = [lst.head(n) for lst in lists]
        timings["diversify"] = time.perf_counter() - t0
        if self.explain is not None and live:
            t0 = time.perf_counter()
            for j, lst in zip(
                live, self.explain.batch([queries[j] for j in live], [lists[j] for j in live]), strict=True
            ):
                lists[j] = lst
            timings["explain"] = time.perf_counter() - t0
        for lst in lists:
            # a stage's own sub-timings (retrieve.cf, rank.llm, ...) stay; stage totals are shared by the batch
            lst.timings_ms = {**{f"retrieve.{k}" if "." not in k else k: v for k, v in lst.timings_ms.items()},
                              **{k: v * 1000 for k, v in timings.items()}}  # fmt: skip
        return lists

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.config.model_dump(), **{s: c.describe() for s, c in self.stages}}
