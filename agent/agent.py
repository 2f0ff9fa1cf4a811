"""The serving agent: requests in, recommendations with reasons out, through the one pipeline.

>>> from recagent.agent import AgentConfig, RecAgent, RecommendRequest
>>> agent = RecAgent.from_config(AgentConfig())        # shipped data, bundled models, embedded stores
>>> rec = agent.recommend(RecommendRequest(user_id="1", k=5))
>>> [(it.title, it.reason) for it in rec.items]
>>> agent.recommend(RecommendRequest(query="feel-good animated film", filters={"ranges": {"year": [1990, 1999]}}))

A request becomes a :class:`~recagent.components.Query` (a known user's stored history and
ratings, or the history / new items / profile / text the request carries), then runs through
:class:`~recagent.pipeline.Pipeline`: the fused Chroma retriever → the verbalizer ranker on
vLLM → MMR → the explainer. The retriever, its CF model and graphs learn from every interaction
of the data set (:meth:`TrainData.from_dataset`). Bad input raises a
:class:`~recagent.errors.RecAgentError` (the server's 4xx); a stage that fell back is named in
``Recommendation.fallback``. All LLM work goes through one lock, so one engine can be shared by
threads (the HTTP server's batcher, the chat agent, the CLI).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Sequence
from typing import Any

import pandas as pd

from .components import Component, ItemList, Query
from .data import Dataset, TrainData, load_dataset
from .diversify import MMR, mmr
from .errors import ConfigError, RecAgentError, UnknownIdError
from .explain import Explainer
from .llm import LLMBackend, make_backend
from .models import cache_dir
from .pipeline import Pipeline
from .prompts.render import PromptRenderer
from .ranking import RANKERS
from .retrieval import Retriever, RetrieverConfig
from .schemas import AgentConfig, Recommendation, RecommendedItem, RecommendRequest
from .store import IndexConfig, ItemFilter, ItemIndex

__all__ = [
    "AgentConfig",
    "RecommendRequest",
    "RecommendedItem",
    "Recommendation",
    "RecAgent",
    "mmr",
    "build_index",
    "build_retriever",
    "retriever_config",
]

log = logging.getLogger(__name__)


def build_index(dataset: Dataset, config: AgentConfig, *, progress: bool = True) -> ItemIndex:
    """The item index for ``dataset`` (built by the retriever's fit; only changed items are re-embedded)."""
    name = config.index_name or re.sub(r"[^a-zA-Z0-9._-]+", "-", dataset.name).strip("-._")[:50] or "items"
    if len(name) < 3:
        name = f"{name}-items"
    path = config.chroma_path or str(cache_dir() / "chroma")
    return ItemIndex(IndexConfig(path=path, host=config.chroma_host, port=config.chroma_port, name=name,
                                 model=config.embedding_model, progress=progress))  # fmt: skip


def retriever_config(config: AgentConfig) -> RetrieverConfig:
    """The serving retriever's settings: :class:`RetrieverConfig` defaults (the ones evaluation
    and fine-tuning use too) with ``config.cf_model``, ``config.seed`` and ``config.retriever`` applied."""
    cf = {} if config.cf_model == "none" else {"cf": {"name": config.cf_model}}
    return RetrieverConfig.model_validate({"cf_models": cf, "seed": config.seed, **config.retriever})


def build_retriever(dataset: Dataset, config: AgentConfig, *, progress: bool = True) -> Retriever:
    """The serving retriever, fitted on every interaction of ``dataset``."""
    t0 = time.perf_counter()
    rcfg = retriever_config(config)
    retriever = Retriever(build_index(dataset, config, progress=progress), rcfg).fit(TrainData.from_dataset(dataset))
    log.info("retriever ready in %.1f s", time.perf_counter() - t0)
    return retriever


def apply_card(config: AgentConfig, dataset_name: str, *, variant: str | None = None) -> tuple[AgentConfig, str | None]:
    """The config with the ranker card applied (see ``AgentConfig.adapter``), and a note for the
    answers when the card turned LLM ranking off. ``variant`` picks a measured variant (default:
    the card's default for serving)."""
    from .ranking.card import RankerCard, shipped_card

    if config.adapter == "none" or not config.llm_rank:  # no LLM ranking: a ranker card has nothing to say
        return config, None
    if config.ranker_kind != "verbalizer":  # the cards hold verbalizer rankers
        if config.adapter != "auto":
            raise ConfigError(f"--adapter {config.adapter} is a verbalizer ranker card, but ranker_kind is "
                              f"{config.ranker_kind!r}", hint="leave the adapter at auto or none", param="adapter")  # fmt: skip
        return config, None
    if config.adapter == "auto":
        card = shipped_card(dataset_name)
        if card is None or config.llm.backend != "vllm":
            return config, None
        if config.llm.model is not None:
            try:
                card.check_base(config.llm.model)
            except RecAgentError:
                log.info("the shipped ranker for %s does not fit %s: zero-shot ranking", dataset_name, config.llm.model)
                return config, None
    else:
        card = RankerCard.load(config.adapter)
    card.check_retriever(retriever_config(config))  # its ranks and fusion weight belong to that retriever
    name = variant or card.default
    if name == "retriever":
        note = (f"retriever order: on {card.data} no LLM ranker beat it on validation ({card.folder}/README.md); "
                "pass --adapter none for the zero-shot LLM ranker")  # fmt: skip
        return config.model_copy(update={"llm_rank": False}), note
    finetuned, _ = card.variant(name)
    settings = card.ranker_settings(name)
    ranker = config.ranker.model_copy(update=settings)
    llm = config.llm.model_copy(update={"model": str(card.merged_model(config.llm.model))}) if finetuned else config.llm
    log.info("ranker card %s: serving the %s ranker (%s)", card.folder, name,
             {k: v for k, v in settings.items() if k != "combiner"} | {"combiner": settings["combiner"] is not None})  # fmt: skip
    return config.model_copy(update={"ranker": ranker, "llm": llm}), None


class RecAgent:
    """Retriever + LLM ranker + MMR + explainer over one data set. Build with :meth:`from_config`.

    ``llm`` may be ``None``: ranking keeps the retriever order and reasons are templated, each
    reported in ``fallback``.
    """

    def __init__(
        self, dataset: Dataset, retriever: Retriever, llm: LLMBackend | None, config: AgentConfig | None = None
    ):
        self.config = config or AgentConfig()
        self.dataset = dataset
        self.retriever = retriever
        self.index = retriever.index
        self.llm = llm
        self.item_noun = self.config.item_noun or dataset.catalog.item_noun
        self._lock: Any = threading.RLock()  # one engine call at a time, whoever calls (see the lock property)
        counts = (
            dataset.interactions.df["item_id"].value_counts() if len(dataset.interactions) else pd.Series(dtype=int)
        )
        self.popularity: dict[str, int] = counts.to_dict()
        self.ranker: Component | None = None
        self.renderer: PromptRenderer | None = None
        if llm is not None:
            rcfg = self.config.ranker.model_copy(
                update={"item_noun": self.config.item_noun or self.config.ranker.item_noun}
            )
            if self.config.template_dir and not rcfg.template_dir:
                rcfg = rcfg.model_copy(update={"template_dir": self.config.template_dir})
            self.ranker = RANKERS.make(self.config.ranker_kind, llm, dataset.catalog, rcfg)
            self.renderer = PromptRenderer(llm.tokenizer, self.config.template_dir)
        self._explainers = {on: self._explainer(on) for on in (True, False)}
        self.lock = self._lock
        self.ranking_note: str | None = None  # why LLM ranking is off by design (a ranker card), for every answer

    @property
    def lock(self) -> Any:
        """The engine lock: held around each engine call only (ranking, reasons, the chat parser),
        never around retrieval, so other requests' engine work is not kept waiting by it."""
        return self._lock

    @lock.setter
    def lock(self, value: Any) -> None:
        # the server swaps in its priority lock: every component that calls the engine follows
        self._lock = value
        for c in (self.ranker, *self._explainers.values()):
            if c is not None:
                c.lock = value

    @property
    def catalog(self):
        return self.retriever.catalog

    def _explainer(self, llm_on: bool) -> Explainer:
        c = self.config
        return Explainer(self.catalog, self.index, self.llm, popularity=self.popularity, lock=self.lock,
                         use_llm=llm_on, history=c.explain_history, tokens_per_item=c.explain_tokens_per_item,
                         reason_chars=c.explain_reason_chars, template_dir=c.template_dir)  # fmt: skip

    def pipeline(self, *, n_candidates: int, mmr_lambda: float, explain: bool) -> Pipeline:
        """The serving pipeline with these per-request settings (components are shared)."""
        ranker = self.ranker if self.config.llm_rank else None
        return Pipeline(self.retriever, ranker, MMR(self.index, lam=mmr_lambda), self._explainers[explain],
                        name="serving", n_candidates=n_candidates)  # fmt: skip

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        config: AgentConfig | None = None,
        *,
        llm: LLMBackend | None = None,
        progress: bool = True,
        dataset: Dataset | None = None,
        retriever: Retriever | None = None,
    ) -> RecAgent:
        """Build the whole agent: data, index (built/updated), CF model, retriever, LLM engine.

        Pass ``llm`` to share an engine that is already running, ``dataset`` when ``config.data``
        is already loaded (the CLI loads it once for its id checks), ``retriever`` when it was
        fitted elsewhere (a Ray actor gets the driver's, :meth:`Retriever.from_fitted`).
        """
        config = config or AgentConfig()
        t0 = time.perf_counter()
        dataset = dataset if dataset is not None else load_dataset(config.data)
        config, note = apply_card(config, dataset.name)
        retriever = retriever if retriever is not None else build_retriever(dataset, config, progress=progress)
        if llm is None and (config.llm_rank or config.explain):
            llm = make_backend(config.llm)
        log.info("agent ready in %.1f s", time.perf_counter() - t0)
        agent = cls(dataset, retriever, llm, config)
        agent.ranking_note = note
        return agent

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()

    def healthy(self) -> bool:
        """False once the LLM engine died (the server answers 503)."""
        return self.llm is None or self.llm.health()

    # --- requests → queries -----------------------------------------------------------------

    def query_for(self, r: RecommendRequest) -> Query:
        """The query a request stands for: whose history (stored, given or extended), profile, text."""
        known = r.user_id is not None and r.user_id in self.dataset.interactions
        if r.history is not None:
            hist, ratings = list(r.history), [None] * len(r.history)
        elif known:
            frame = self.dataset.interactions.user_frame(r.user_id)
            frame = frame[frame["item_id"].isin(self.catalog.items.index)]  # items since deleted are skipped
            hist = frame["item_id"].tolist()
            ratings = [None if pd.isna(x) else float(x) for x in frame["rating"].tolist()]
        elif r.user_id is not None and not (r.new_items or r.profile or r.query or self.dataset.profile(r.user_id)):
            raise UnknownIdError(
                "user", [r.user_id], hint="use a user id from the data, or send a query or profile for a new user"
            )
        else:
            hist, ratings = [], []
        hist += list(r.new_items)
        ratings += [None] * len(r.new_items)
        self.catalog.require(hist)
        profile = r.profile if r.profile is not None else (self.dataset.profile(r.user_id) if r.user_id else None)
        profile = {"text": profile} if isinstance(profile, str) else dict(profile or {})
        return Query(
            r.user_id, tuple(hist), tuple(ratings), profile, r.query, ItemFilter.parse(r.filters), frozenset(r.exclude)
        )

    # --- public API -------------------------------------------------------------------------

    def recommend(self, request: RecommendRequest | None = None, **fields: Any) -> Recommendation:
        """One request (a :class:`RecommendRequest` or its fields as keywords)."""
        req = request if request is not None else RecommendRequest(**fields)
        (out,) = self.recommend_many([req])
        if isinstance(out, BaseException):
            raise out
        return out

    def recommend_many(
        self, requests: Sequence[RecommendRequest], *, return_exceptions: bool = False
    ) -> list[Recommendation | BaseException]:
        """Many requests with one engine call per LLM stage (rank, explain) for those that share settings.

        With ``return_exceptions`` a request with bad input yields its :class:`RecAgentError` in
        its slot and the others are served; otherwise the first such error is raised.
        """
        t_start = time.perf_counter()
        cfg = self.config
        out: list[Recommendation | BaseException | None] = [None] * len(requests)
        groups: dict[tuple, list[tuple[int, Query, int]]] = {}
        for i, r in enumerate(requests):
            k = r.k or cfg.k
            try:
                q = self.query_for(r)
                self.retriever.check(q)
            except RecAgentError as e:
                if not return_exceptions:
                    raise
                out[i] = e
                continue
            opts = (r.n_candidates or max(cfg.n_candidates, k), cfg.mmr_lambda if r.mmr_lambda is None else r.mmr_lambda,
                    cfg.explain if r.explain is None else r.explain)  # fmt: skip
            groups.setdefault(opts, []).append((i, q, k))
        for (n_cand, lam, explain), members in groups.items():
            pipe = self.pipeline(n_candidates=n_cand, mmr_lambda=lam, explain=explain)
            self._run(pipe, members, requests, out, return_exceptions, len(requests))
        total = (time.perf_counter() - t_start) * 1000
        for rec in out:
            if isinstance(rec, Recommendation):
                rec.timings_ms["total"] = round(total, 2)
        return out  # type: ignore[return-value]

    def _run(self, pipe: Pipeline, members, requests, out, return_exceptions: bool, batch_size: int) -> None:
        """Run one group; a bad request that only the retriever can detect is isolated by re-running one by one."""
        k = max(m[2] for m in members)
        try:
            lists = pipe.batch([q for _, q, _ in members], n=k)
        except RecAgentError as e:
            if len(members) == 1:
                if not return_exceptions:
                    raise
                out[members[0][0]] = e
                return
            for m in members:
                self._run(pipe, [m], requests, out, return_exceptions, batch_size)
            return
        for (i, q, kk), lst in zip(members, lists, strict=True):
            out[i] = self._result(requests[i], q, lst.head(kk), pipe, batch_size)

    def explain_items(self, item_ids: Sequence[str], *, user_id: str | None = None, history: Sequence[str] | None = None,
                      query: str | None = None) -> list[RecommendedItem]:  # fmt: skip
        """Reasons for given items (not recommended by us: e.g. chosen by a chatbot), grounded in
        the user's history; same validation and templated fallback as :meth:`recommend`."""
        ids = self.catalog.require(list(dict.fromkeys(str(i) for i in item_ids)))
        if not ids:
            raise RecAgentError("no item ids to explain", hint="pass one or more catalog item ids", param="item_ids")
        if len(ids) > 26:
            raise RecAgentError(f"{len(ids)} items; at most 26 can be explained at once", param="item_ids")
        if user_id is not None and history is None and user_id not in self.dataset.interactions:
            raise UnknownIdError(
                "user", [user_id], hint="pass a user id from the data, or the liked item ids as history"
            )
        q = self.query_for(
            RecommendRequest(user_id=user_id, history=list(history) if history is not None else None, query=query)
        )
        (lst,) = self._explainers[True].batch([q], [ItemList.of(ids, [0.0] * len(ids))])
        return [self._item(lst, j, retrieval_score=0.0) for j in range(len(lst))]

    # --- answers ----------------------------------------------------------------------------

    def _item(self, lst: ItemList, j: int, retrieval_score: float | None = None) -> RecommendedItem:
        v = self.catalog.view(lst.ids[j])
        return RecommendedItem(
            item_id=v["item_id"], title=v["title"], year=v["year"], genres=v["genres"], score=float(lst.scores[j]),
            retrieval_score=float(retrieval_score if retrieval_score is not None else lst.field("retrieval_score", 0.0)[j]),
            sources=dict(lst.field("sources", {})[j] or {}), reason=lst.field("reason")[j],
            reason_source=lst.field("reason_source")[j], cites=list(lst.field("cites", [])[j] or []),
        )  # fmt: skip

    def _result(self, r: RecommendRequest, q: Query, lst: ItemList, pipe: Pipeline, batch_size: int) -> Recommendation:
        notes = dict(lst.notes)
        if pipe.ranker is None:
            notes["rank"] = self.ranking_note or (
                "LLM ranking is off: retriever order" if not self.config.llm_rank else "no LLM engine: retriever order"
            )
        message = None
        if not len(lst):
            message = ("no item passes the filters" if r.filters else "no candidates found") + (
                f" after excluding {len(r.exclude)} item(s)" if r.exclude else "")  # fmt: skip
            notes.pop("explain", None)
        ranked_by_llm = pipe.ranker is not None and "rank" not in notes
        return Recommendation(
            user_id=r.user_id, items=[self._item(lst, j) for j in range(len(lst))], cold_start=not q.history,
            fallback=notes, message=message, n_candidates=int(lst.info.get("n_candidates", pipe.config.n_candidates)),
            batch_size=batch_size, timings_ms={k: round(v, 2) for k, v in lst.timings_ms.items()},
            ranker=lst.info.get("ranker") if ranked_by_llm else "retriever",
        )  # fmt: skip
