"""The recommend path in one place: retrieve → LLM rank → diversify (MMR) → explain → result.

>>> from recagent.agent import AgentConfig, RecAgent, RecommendRequest
>>> agent = RecAgent.from_config(AgentConfig())        # shipped data, bundled models, embedded stores
>>> rec = agent.recommend(RecommendRequest(user_id="1", k=5))
>>> [(it.title, it.reason) for it in rec.items]
>>> agent.recommend(RecommendRequest(query="feel-good animated film", filters={"ranges": {"year": [1990, 1999]}}))

Each stage, top to bottom in :meth:`RecAgent.recommend_many`:

1. **retrieve** — :meth:`Retriever.retrieve` fuses several sources into ``n_candidates`` items;
   the caller's filters, exclusions, history and query pass straight through.
2. **rank** — :class:`VerbalizerRanker` scores every candidate in one forward pass (all requests
   of a batch in one engine call). A user with neither history nor profile nor request text
   cannot be ranked: the retriever order is kept and the result says so.
3. **diversify** — maximal marginal relevance over the items' content vectors:
   ``λ·relevance − (1−λ)·max similarity to the items already picked``; ``mmr_lambda=1`` keeps
   the ranker's order, lower values trade relevance for variety (no ten sequels of one film).
4. **explain** — one LLM call writes a short reason per picked item from a prompt listing the
   user's history items most similar to the picks (``prompts/explain.jinja``). A reason is kept
   only if it cites one of those history titles; its ``cites`` are the ids of the titles found in
   it, so no id is ever invented. Otherwise a templated reason from shared attributes replaces
   it, with ``reason_source="template"`` and the count in ``fallback["explain"]``.

Failures never pass silently: every stage that fell back is named in ``Recommendation.fallback``.
Bad input (unknown user or item ids, an invalid filter) raises a
:class:`~recagent.errors.RecAgentError`, which the server turns into a 4xx answer.

All LLM work goes through one lock, so one engine can be shared by threads (the HTTP server's
batcher, the chat agent, the CLI).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator

from .data import Dataset, as_list, as_year, load_dataset
from .errors import RecAgentError
from .llm import LLMBackend, LLMBackendError, LLMConfig, make_backend
from .models import cache_dir
from .prompts.render import PromptRenderer
from .ranker import RankQuery, RankResult, VerbalizerConfig, VerbalizerRanker, taste_summary
from .retriever import CFUserEncoder, Retrieval, Retriever, RetrieverConfig
from .store import IndexConfig, ItemIndex
from .titles import normalize_title

__all__ = [
    "AgentConfig",
    "RecommendRequest",
    "RecommendedItem",
    "Recommendation",
    "RecAgent",
    "mmr",
    "build_index",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------
# configuration


class AgentConfig(BaseModel):
    """Everything the agent needs, with embedded defaults. Parsed once by the CLI / server.

    Defaults: the shipped ml-latest-small, the bundled MiniLM and SmolLM2 models, Chroma
    in-process under the cache dir, vLLM in-process. ``chroma_host`` switches to a Chroma
    server; ``llm.backend="openai"`` + ``llm.base_url`` to a remote ``vllm serve``.
    """

    model_config = ConfigDict(extra="forbid")

    data: str = "ml-latest-small"
    """Data set name or path (see :func:`recagent.data.load_dataset`)."""
    item_noun: str | None = None
    """How prompts and replies name items; None = "movie" for MovieLens data, else "item"."""
    # --- vector store ---
    chroma_path: str | None = None
    """Embedded Chroma folder; None = ``<cache dir>/chroma``."""
    chroma_host: str | None = None
    """Chroma server host (``chroma run``); None = embedded."""
    chroma_port: int = 8000
    index_name: str | None = None
    """Collection prefix; None = derived from the data set name."""
    embedding_model: str | None = None
    """sentence-transformers folder; None = the bundled all-MiniLM-L6-v2."""
    cf_model: Literal["als", "bpr", "none"] = "als"
    """CF model trained at startup for the retriever's ``cf`` source (a few seconds); "none" skips it."""
    retriever: dict[str, Any] = Field(default_factory=dict)
    """Overrides of :class:`RetrieverConfig` fields (weights, depth, ...)."""
    # --- LLM ---
    llm: LLMConfig = Field(default_factory=LLMConfig)
    ranker: VerbalizerConfig = Field(default_factory=lambda: VerbalizerConfig(overflow="tail"))
    template_dir: str | None = None
    """Folder whose .jinja files override the shipped prompts (rank, explain, parse_query)."""
    # --- the recommend path ---
    k: int = Field(10, ge=1, le=100)
    """Items returned when a request does not say."""
    n_candidates: int = Field(20, ge=1, le=200)
    """Candidates retrieved and ranked (LlamaRec: 20; the first 26 are LLM-ranked)."""
    llm_rank: bool = True
    """False keeps the retriever's order (no LLM call for ranking)."""
    mmr_lambda: float = Field(0.7, ge=0.0, le=1.0)
    """MMR trade-off: 1 = ranker order, 0 = maximal variety."""
    explain: bool = True
    """Write a reason per item with the LLM (templated reasons when False or invalid)."""
    explain_history: int = Field(8, ge=1, le=30)
    """History items shown to the explainer (those most similar to the picks)."""
    explain_tokens_per_item: int = Field(30, ge=8, le=200)
    """Token budget per reason (the JSON around it included)."""
    explain_reason_chars: int = Field(100, ge=20, le=500)
    """Longest reason the structured output allows."""
    seed: int = 0

    @field_validator("retriever")
    @classmethod
    def _known_retriever_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        known = set(RetrieverConfig.__dataclass_fields__)
        unknown = sorted(set(v) - known)
        if unknown:
            raise ValueError(f"unknown retriever option(s) {unknown}; options are {sorted(known)}")
        return v

    def noun(self, dataset_name: str) -> str:
        if self.item_noun:
            return self.item_noun
        return "movie" if dataset_name.lower().startswith(("ml-", "movielens")) else "item"


class RecommendRequest(BaseModel):
    """One recommendation request (also the body of ``POST /recommend``).

    A known ``user_id`` brings its stored history; ``history`` replaces it, ``new_items`` are
    appended (the newest interactions, used without retraining). A new user is served from
    ``profile`` and/or ``query`` (cold start).
    """

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(None, max_length=200, description="A user id from the data, or a new one with query/profile.")
    history: list[str] | None = Field(None, max_length=5000, description="Item ids, oldest first; replaces the stored history.")
    new_items: list[str] = Field(default_factory=list, max_length=1000, description="Item ids appended to the history.")
    profile: dict[str, Any] | str | None = Field(None, description='Profile fields or free text, e.g. {"text": "likes 90s sci-fi"}.')
    query: str | None = Field(None, max_length=2000, description="What the user asks for, in words.")
    filters: dict[str, Any] | None = Field(
        None, description='{"include": {attr: [values]}, "exclude": {attr: [values]}, "ranges": {attr: [min, max]}}'
    )
    exclude: list[str] = Field(default_factory=list, max_length=5000, description="Item ids never to return.")
    k: int | None = Field(None, ge=1, le=100, description="Items to return.")
    n_candidates: int | None = Field(None, ge=1, le=200, description="Candidates to retrieve and rank.")
    mmr_lambda: float | None = Field(None, ge=0.0, le=1.0, description="1 = ranker order, 0 = maximal variety.")
    explain: bool | None = Field(None, description="Write a reason per item.")

    @field_validator("user_id", "query")
    @classmethod
    def _strip(cls, v: str | None) -> str | None:
        return v.strip() or None if isinstance(v, str) else v

    @field_validator("history", "new_items", "exclude")
    @classmethod
    def _ids_as_strings(cls, v: list[Any] | None) -> list[str] | None:
        return None if v is None else [str(i) for i in v]


class RecommendedItem(BaseModel):
    """One pick: its place, scores from each stage, where it came from and why."""

    item_id: str
    title: str
    year: int | None = None
    genres: list[str] = Field(default_factory=list)
    score: float
    """The ranker's score (label log-probability; ``-position`` when ranking fell back)."""
    retrieval_score: float
    """Fused RRF score from the retriever."""
    sources: dict[str, int]
    """Retriever source → the item's 1-based rank in it."""
    reason: str | None = None
    reason_source: Literal["llm", "template"] | None = None
    cites: list[str] = Field(default_factory=list)
    """Ids of the user's history items the reason refers to."""


class Recommendation(BaseModel):
    """The answer to one request. ``fallback`` names every stage that did not run as designed."""

    user_id: str | None = None
    items: list[RecommendedItem]
    cold_start: bool = False
    fallback: dict[str, str] = Field(default_factory=dict)
    message: str | None = None
    """Set when there is nothing to recommend (e.g. no item passes the filters)."""
    n_candidates: int = 0
    batch_size: int = 1
    """Requests that shared the engine calls with this one."""
    timings_ms: dict[str, float] = Field(default_factory=dict)

    @property
    def ids(self) -> list[str]:
        return [it.item_id for it in self.items]


# ------------------------------------------------------------------------------------------
# helpers




def mmr(relevance: Sequence[float], vectors: np.ndarray | None, k: int, lam: float) -> list[int]:
    """Maximal marginal relevance: indices of ``k`` items, greedily maximising
    ``λ·rel(i) − (1−λ)·max_{j picked} cos(i, j)``. ``relevance`` is min-max scaled first, so λ
    means the same for log-probabilities and fallback scores. Rows of ``vectors`` that are all
    zero (no vector) count as dissimilar to everything."""
    n = len(relevance)
    k = min(k, n)
    if n == 0:
        return []
    rel = np.asarray(relevance, dtype=np.float64)
    finite = np.isfinite(rel)
    rel = np.where(finite, rel, rel[finite].min() - 1.0 if finite.any() else 0.0)  # -inf: below everything
    span = rel.max() - rel.min()
    rel = (rel - rel.min()) / span if span > 0 else np.ones(n)
    if vectors is None or lam >= 1.0:
        return sorted(range(n), key=lambda i: (-rel[i], i))[:k]
    v = np.asarray(vectors, dtype=np.float64)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = np.divide(v, norms, out=np.zeros_like(v), where=norms > 0)
    sim = v @ v.T
    picked: list[int] = []
    max_sim = np.full(n, -np.inf)
    left = set(range(n))
    while len(picked) < k:
        best, best_val = -1, -np.inf
        for i in sorted(left):  # sorted: ties go to the better-ranked item
            div = max_sim[i] if picked else 0.0
            val = lam * rel[i] - (1.0 - lam) * div
            if val > best_val + 1e-12:
                best, best_val = i, val
        picked.append(best)
        left.discard(best)
        max_sim = np.maximum(max_sim, sim[best])
    return picked




def build_index(dataset: Dataset, config: AgentConfig, *, progress: bool = True) -> ItemIndex:
    """The item index for ``dataset``: built on first use, then only changed items are re-embedded."""
    name = config.index_name or re.sub(r"[^a-zA-Z0-9._-]+", "-", dataset.name).strip("-._")[:50] or "items"
    if len(name) < 3:
        name = f"{name}-items"
    path = config.chroma_path or str(cache_dir() / "chroma")
    index = ItemIndex(
        IndexConfig(path=path, host=config.chroma_host, port=config.chroma_port, name=name,
                    model=config.embedding_model, progress=progress)  # fmt: skip
    )
    t0 = time.perf_counter()
    report = index.build(dataset.catalog)
    log.info("index %s ready (%d items, %d embedded now) in %.1f s", name, report.total, report.embedded, time.perf_counter() - t0)
    return index


# ------------------------------------------------------------------------------------------
# the pipeline


class _Job:
    """One request on its way through the stages."""

    def __init__(self, req: RecommendRequest, k: int, n_cand: int, lam: float, explain: bool):
        self.req, self.k, self.n_cand, self.lam, self.explain = req, k, n_cand, lam, explain
        self.retrieval: Retrieval | None = None
        self.history: list[str] = []
        self.ratings: list[float | None] = []
        self.profile: dict[str, Any] = {}
        self.rank: RankResult | None = None
        self.order: list[str] = []  # ranked candidate ids
        self.scores: dict[str, float] = {}
        self.picked: list[str] = []
        self.grounding: list[str] = []  # history items the explainer may cite
        self.reasons: dict[str, tuple[str, str, list[str]]] = {}  # id → (reason, source, cites)
        self.fallback: dict[str, str] = {}
        self.message: str | None = None
        self.error: BaseException | None = None
        self.timings: dict[str, float] = {}


class RecAgent:
    """Retriever + LLM ranker + MMR + explainer over one data set. Build with :meth:`from_config`.

    ``llm`` may be ``None``: ranking keeps the retriever order and reasons are templated, each
    reported in ``fallback``.
    """

    def __init__(
        self,
        dataset: Dataset,
        retriever: Retriever,
        llm: LLMBackend | None,
        config: AgentConfig | None = None,
    ):
        self.config = config or AgentConfig()
        self.dataset = dataset
        self.catalog = dataset.catalog
        self.retriever = retriever
        self.index = retriever.index
        self.llm = llm
        self.item_noun = self.config.noun(dataset.name)
        self.lock = threading.RLock()  # one engine call at a time, whoever calls
        self.ranker: VerbalizerRanker | None = None
        self.renderer: PromptRenderer | None = None
        if llm is not None:
            rcfg = self.config.ranker.model_copy(update={"item_noun": self.item_noun})
            if self.config.template_dir and not rcfg.template_dir:
                rcfg = rcfg.model_copy(update={"template_dir": self.config.template_dir})
            self.ranker = VerbalizerRanker(llm, self.catalog, rcfg)
            self.renderer = PromptRenderer(llm.tokenizer, self.config.template_dir)
        counts = dataset.interactions.df["item_id"].value_counts() if len(dataset.interactions) else pd.Series(dtype=int)
        self.popularity: dict[str, int] = counts.to_dict()

    # --- construction -----------------------------------------------------------------------

    @classmethod
    def from_config(cls, config: AgentConfig | None = None, *, llm: LLMBackend | None = None, progress: bool = True) -> RecAgent:
        """Build the whole agent: data, index (built/updated), CF model, retriever, LLM engine.

        Pass ``llm`` to share an engine that is already running.
        """
        config = config or AgentConfig()
        t0 = time.perf_counter()
        dataset = load_dataset(config.data)
        index = build_index(dataset, config, progress=progress)
        cf = _train_cf(dataset, index, config)
        retriever = Retriever.from_dataset(index, dataset, config=RetrieverConfig(**config.retriever), cf=cf)
        if llm is None and (config.llm_rank or config.explain):
            llm = make_backend(config.llm)
        log.info("agent ready in %.1f s", time.perf_counter() - t0)
        return cls(dataset, retriever, llm, config)

    def close(self) -> None:
        if self.llm is not None:
            self.llm.close()

    def healthy(self) -> bool:
        """False once the LLM engine died (the server answers 503)."""
        return self.llm is None or self.llm.health()

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
        """Many requests with one engine call per LLM stage (rank, explain) for all of them.

        With ``return_exceptions`` a request with bad input yields its :class:`RecAgentError` in
        its slot and the others are served; otherwise the first such error is raised.
        """
        t_start = time.perf_counter()
        cfg = self.config
        jobs = [
            _Job(r, r.k or cfg.k, r.n_candidates or max(cfg.n_candidates, r.k or cfg.k),
                 cfg.mmr_lambda if r.mmr_lambda is None else r.mmr_lambda, cfg.explain if r.explain is None else r.explain)
            for r in requests
        ]  # fmt: skip
        for job in jobs:
            self._retrieve(job)
            if job.error is not None and not return_exceptions:
                raise job.error
        live = [j for j in jobs if j.error is None and j.retrieval is not None and j.retrieval.candidates]
        self._rank(live)
        for job in live:
            self._diversify(job)
        self._explain(live)
        total = (time.perf_counter() - t_start) * 1000
        out: list[Recommendation | BaseException] = []
        for job in jobs:
            if job.error is not None:
                out.append(job.error)
                continue
            job.timings["total"] = total
            out.append(self._result(job, len(requests)))
        return out

    def explain_items(
        self, item_ids: Sequence[str], *, user_id: str | None = None, history: Sequence[str] | None = None, query: str | None = None
    ) -> list[RecommendedItem]:
        """Reasons for given items (not recommended by us: e.g. chosen by a chatbot), grounded in
        the user's history; same validation and templated fallback as :meth:`recommend`."""
        ids = self.catalog.require(list(dict.fromkeys(str(i) for i in item_ids)))
        if not ids:
            raise RecAgentError("no item ids to explain", hint="pass one or more catalog item ids", param="item_ids")
        if len(ids) > 26:
            raise RecAgentError(f"{len(ids)} items; at most 26 can be explained at once", param="item_ids")
        req = RecommendRequest(user_id=user_id, history=list(history) if history is not None else None, query=query, k=len(ids))
        job = _Job(req, len(ids), len(ids), 1.0, True)
        job.history, job.ratings = self._history(req)
        if user_id is not None and history is None and user_id not in self.dataset.interactions:
            from .errors import UnknownIdError

            raise UnknownIdError("user", [user_id], hint="pass a user id from the data, or history= item ids")
        job.picked = ids
        job.scores = {i: 0.0 for i in ids}
        self._explain([job])
        return [
            RecommendedItem(
                item_id=i, title=self.catalog.title(i), year=as_year(self.catalog.items.at[i, "year"]) if "year" in self.catalog.items else None,
                genres=as_list(self.catalog.items.at[i, "genres"]) if "genres" in self.catalog.items else [], score=0.0, retrieval_score=0.0,
                sources={}, reason=job.reasons[i][0], reason_source=job.reasons[i][1], cites=job.reasons[i][2],
            )  # fmt: skip
            for i in ids
        ]

    # --- stage 1: retrieve ------------------------------------------------------------------

    def _retrieve(self, job: _Job) -> None:
        t0 = time.perf_counter()
        r = job.req
        try:
            job.history, job.ratings = self._history(r)
            profile = r.profile if r.profile is not None else (self.dataset.profile(r.user_id) if r.user_id else None)
            job.profile = {"text": profile} if isinstance(profile, str) else dict(profile or {})
            job.retrieval = self.retriever.retrieve(
                r.user_id, history=r.history, new_items=r.new_items, profile=r.profile, query=r.query,
                filters=r.filters, k=job.n_cand, exclude=r.exclude,
            )  # fmt: skip
        except RecAgentError as e:
            job.error = e
            return
        finally:
            job.timings["retrieve"] = (time.perf_counter() - t0) * 1000
        if not job.retrieval.candidates:
            job.message = (
                "no item passes the filters" if r.filters else "no candidates found"
            ) + (f" after excluding {len(r.exclude)} item(s)" if r.exclude else "")

    def _history(self, r: RecommendRequest) -> tuple[list[str], list[float | None]]:
        """The history the ranker sees (with ratings when stored), matching what the retriever used."""
        if r.history is not None:
            hist, ratings = list(r.history), [None] * len(r.history)
        elif r.user_id is not None and r.user_id in self.dataset.interactions:
            frame = self.dataset.interactions.user_frame(r.user_id)
            frame = frame[frame["item_id"].isin(self.catalog.items.index)]
            hist = frame["item_id"].tolist()
            ratings = [None if pd.isna(x) else float(x) for x in frame["rating"].tolist()]
        else:
            hist, ratings = [], []
        hist += list(r.new_items)
        ratings += [None] * len(r.new_items)
        self.catalog.require(hist)
        return hist, ratings

    # --- stage 2: rank ----------------------------------------------------------------------

    def _rank(self, jobs: list[_Job]) -> None:
        t0 = time.perf_counter()
        queries: list[tuple[_Job, RankQuery]] = []
        for job in jobs:
            cands = job.retrieval.ids
            profile = dict(job.profile)
            if job.req.query:
                # the request text is what the user wants now: the ranker reads it as profile text
                profile["text"] = (str(profile.get("text", "")) + " Looking for: " + job.req.query).strip()
            if not self.config.llm_rank or self.ranker is None:
                job.fallback["rank"] = "LLM ranking is off: retriever order" if not self.config.llm_rank else "no LLM engine: retriever order"
                self._keep_retrieval_order(job)
            elif not job.history and not profile:
                job.fallback["rank"] = "nothing to rank with (no history, profile or request text): retriever order"
                self._keep_retrieval_order(job)
            else:
                queries.append((job, RankQuery(cands, job.history, job.ratings, profile, job.req.user_id)))
        if queries:
            try:
                with self.lock:
                    results = self.ranker.rank_many([q for _, q in queries])
            except LLMBackendError:
                raise  # a dead engine is a server problem (503), not something to hide
            for (job, _), res in zip(queries, results, strict=True):
                job.rank = res
                job.order = list(res.item_ids)
                job.scores = dict(zip(res.item_ids, res.scores, strict=True))
                if res.fallback:
                    job.fallback["rank"] = res.fallback_reason or "ranker fell back to retriever order"
        dt = (time.perf_counter() - t0) * 1000
        for job in jobs:
            job.timings["rank"] = dt

    @staticmethod
    def _keep_retrieval_order(job: _Job) -> None:
        job.order = job.retrieval.ids
        job.scores = {c: -float(i) for i, c in enumerate(job.order)}

    # --- stage 3: diversify -----------------------------------------------------------------

    def _diversify(self, job: _Job) -> None:
        t0 = time.perf_counter()
        ids = job.order
        vectors = None
        if job.lam < 1.0 and len(ids) > 1:
            found = self.index.vectors(ids)
            dim = len(next(iter(found.values()))) if found else 0
            vectors = np.stack([found.get(i, np.zeros(dim, dtype=np.float32)) for i in ids]) if dim else None
        picked = mmr([job.scores[i] for i in ids], vectors, job.k, job.lam)
        job.picked = [ids[p] for p in picked]
        job.timings["diversify"] = (time.perf_counter() - t0) * 1000

    # --- stage 4: explain -------------------------------------------------------------------

    def _explain(self, jobs: list[_Job]) -> None:
        t0 = time.perf_counter()
        prompts: list[tuple[_Job, str, list[str], list[dict[str, Any]]]] = []
        for job in jobs:
            shown = job.grounding = self._grounding(job)
            if job.explain and self.llm is not None and shown:
                try:
                    prompts.append((job, *self._explain_prompt(job, shown)))
                except RecAgentError as e:
                    job.fallback["explain"] = f"explain prompt failed: {e.message}"
        texts: dict[int, str] = {}
        # Structured outputs: one JSON string per label, each at most explain_reason_chars long.
        # The format always parses and the length is bounded, so a rambling model cannot stall
        # the request; prompts are grouped by list length (one schema per group).
        groups: dict[int, list[int]] = {}
        for n, (_, _, labels, _) in enumerate(prompts):
            groups.setdefault(len(labels), []).append(n)
        for n_labels, members in groups.items():
            labels = [chr(ord("A") + i) for i in range(n_labels)]
            schema = {
                "type": "object",
                "properties": {lab: {"type": "string", "maxLength": self.config.explain_reason_chars} for lab in labels},
                "required": labels,
                "additionalProperties": False,
            }
            budget = self.config.explain_tokens_per_item * n_labels + 8
            try:
                with self.lock:
                    out = self.llm.generate([prompts[m][1] for m in members], max_tokens=budget, temperature=0.0, json_schema=schema)
                texts.update(zip(members, out, strict=True))
            except RecAgentError as e:
                if isinstance(e, LLMBackendError) and not self.healthy():
                    raise
                for m in members:
                    prompts[m][0].fallback["explain"] = f"LLM call failed: {e.message}"
        for n, (job, _, labels, hist_views) in enumerate(prompts):
            parsed = _parse_reasons(texts.get(n, ""), labels)
            for label, item_id in zip(labels, job.picked, strict=False):
                checked = _check_reason(parsed.get(label), self.catalog.title(item_id), hist_views)
                if checked is not None:
                    job.reasons[item_id] = (checked[0], "llm", checked[1])
        for job in jobs:
            templated = 0
            for item_id in job.picked:
                if item_id not in job.reasons:
                    job.reasons[item_id] = self._template_reason(job, item_id)
                    templated += 1
            if job.explain and templated and "explain" not in job.fallback:
                why = (
                    "no LLM engine" if self.llm is None
                    else "no history to cite" if not job.grounding
                    else "LLM reason missing or not citing a history title"
                )  # fmt: skip
                job.fallback["explain"] = f"{templated}/{len(job.picked)} reasons templated ({why})"
            elif not job.explain:
                job.fallback.setdefault("explain", "LLM explanations off: templated reasons")
        dt = (time.perf_counter() - t0) * 1000
        for job in jobs:
            job.timings["explain"] = dt

    def _grounding(self, job: _Job) -> list[str]:
        """History items to cite: among the user's liked recent items, those closest to the picks."""
        hist = list(dict.fromkeys(reversed(job.history)))[:50]  # newest first, unique
        if not hist:
            return []
        rating = dict(zip(job.history, job.ratings, strict=True))
        known = [r for r in job.ratings if r is not None]
        mean = float(np.mean(known)) if known else None
        liked = [h for h in hist if mean is None or rating.get(h) is None or rating[h] >= mean] or hist
        vecs = self.index.vectors(liked + job.picked)
        picks = [vecs[i] for i in job.picked if i in vecs]
        if not picks:
            return liked[: self.config.explain_history]
        p = np.stack(picks)
        score = {h: float((p @ vecs[h]).max()) if h in vecs else -1.0 for h in liked}
        best = sorted(liked, key=lambda h: (-score[h], liked.index(h)))[: self.config.explain_history]
        return best

    def _explain_prompt(self, job: _Job, shown: list[str]) -> tuple[str, list[str], list[dict[str, Any]]]:
        labels = [chr(ord("A") + i) for i in range(len(job.picked))]
        rating = dict(zip(job.history, job.ratings, strict=True))
        hist_views = [dict(self._view(h), rating=rating.get(h)) for h in shown]
        items = [dict(self._view(i), label=lab) for lab, i in zip(labels, job.picked, strict=True)]
        taste = taste_summary(self.catalog, job.history, job.ratings) if job.history else None
        prompt = self.renderer.prompt(
            "explain", item_noun=self.item_noun, profile=job.profile, taste=taste, history=hist_views, items=items
        )
        return prompt, labels, hist_views

    def _view(self, item_id: str) -> dict[str, Any]:
        return self.catalog.view(item_id)

    def _template_reason(self, job: _Job, item_id: str) -> tuple[str, str, list[str]]:
        """A reason built from facts we hold: the most similar history item and shared attributes."""
        view = self._view(item_id)
        shown = job.grounding
        if shown:
            vecs = self.index.vectors([item_id, *shown])
            v = vecs.get(item_id)
            best = max(shown, key=lambda h: float(v @ vecs[h]) if v is not None and h in vecs else -1.0)
            shared = [g for g in view["genres"] if g in self._view(best)["genres"]]
            what = f"shares {', '.join(shared[:3])} with" if shared else "is close in content to"
            verb = "liked"  # grounding keeps liked items only (rated at least the user's mean, or unrated)
            return f"It {what} {self.catalog.title(best)}, which you {verb}.", "template", [best]
        if job.req.query:
            genres = f" ({', '.join(view['genres'][:3])})" if view["genres"] else ""
            return f"It matches your request “{job.req.query[:80]}”{genres}.", "template", []
        n = self.popularity.get(item_id, 0)
        return f"A popular {self.item_noun} ({n} ratings) that passes your filters.", "template", []

    # --- result -----------------------------------------------------------------------------

    def _result(self, job: _Job, batch_size: int) -> Recommendation:
        cands = {c.item_id: c for c in (job.retrieval.candidates if job.retrieval else [])}
        items = []
        for item_id in job.picked:
            v = self._view(item_id)
            reason, source, cites = job.reasons.get(item_id, (None, None, []))
            items.append(
                RecommendedItem(
                    item_id=item_id, title=v["title"], year=v["year"], genres=v["genres"],
                    score=float(job.scores.get(item_id, 0.0)), retrieval_score=float(cands[item_id].score),
                    sources=dict(cands[item_id].sources), reason=reason, reason_source=source, cites=cites,
                )  # fmt: skip
            )
        timings = {k: round(v, 2) for k, v in job.timings.items()}
        if job.retrieval is not None:
            timings.update({f"retrieve.{k}": round(v, 2) for k, v in job.retrieval.timings_ms.items()})
        return Recommendation(
            user_id=job.req.user_id,
            items=items,
            cold_start=bool(job.retrieval.cold_start) if job.retrieval else not job.history,
            fallback=job.fallback,
            message=job.message,
            n_candidates=len(cands),
            batch_size=batch_size,
            timings_ms=timings,
        )


# ------------------------------------------------------------------------------------------
# explanation parsing and validation


_REASON_LINE = re.compile(r"^\s*[-*•]?\s*\**\s*(?:\(?)([A-Z])(?:\)|\.|:|\s-|\s–)\**\s*(.+?)\s*$")
_CATALOG_LINE = re.compile(r"^[^\[]*\(\d{4}\)\s*(?:\[[^\]]*\])?\s*\.?$")


def _parse_reasons(text: str, labels: Sequence[str]) -> dict[str, str]:
    """``{"A": "reason", ...}`` (structured output) or ``"A: reason"`` lines → {label: reason}."""
    wanted = set(labels)
    try:
        data = json.loads(text or "")
        if isinstance(data, dict):
            return {k: str(v).strip() for k, v in data.items() if k in wanted and isinstance(v, str) and v.strip()}
    except json.JSONDecodeError:
        pass
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        m = _REASON_LINE.match(line)
        if m and m.group(1) in wanted and m.group(1) not in out:
            reason = m.group(2).strip().strip('"').strip()
            if reason:
                out[m.group(1)] = reason
    return out


def _check_reason(reason: str | None, item_title: str, history: Sequence[Mapping[str, Any]]) -> tuple[str, list[str]] | None:
    """(reason, cited history ids) if the reason is usable, else None.

    Usable: it names at least one of the shown history titles (after the recommended item's own
    title is removed, so "Back to the Future Part II" does not cite "Back to the Future"), it
    says something besides titles (≥ 3 other words), and it is not a copy of a catalog line
    ("Title (1996) [Crime, Drama]"). Cited ids come from our own matching: never invented.
    """
    if not reason:
        return None
    reason = reason.strip()
    words = reason.split()
    if not 4 <= len(words) <= 60 or "<" in reason or _CATALOG_LINE.match(reason):
        return None
    text = " " + normalize_title(reason) + " "
    own = normalize_title(item_title)
    if len(own) >= 3:
        text = text.replace(f" {own} ", " ")
    cites: list[str] = []
    for h in sorted(history, key=lambda h: -len(str(h["title"]))):
        t = normalize_title(str(h["title"]))
        if len(t) >= 3 and f" {t} " in text and h["item_id"] not in cites:
            cites.append(h["item_id"])
            text = text.replace(f" {t} ", " ")
    rest = [w for w in text.split() if len(w) > 2 and not w.isdigit()]
    if not cites or len(rest) < 3:
        return None
    return reason, cites


# ------------------------------------------------------------------------------------------
# CF model for the retriever's cf source


def _train_cf(dataset: Dataset, index: ItemIndex, config: AgentConfig) -> dict[str, CFUserEncoder]:
    """Fit the CF model on every user's history but the last item and store its item vectors."""
    if config.cf_model == "none":
        return {}
    from .eval.baselines import make_baseline
    from .eval.splits import llamarec_split

    t0 = time.perf_counter()
    try:
        split = llamarec_split(dataset)
    except RecAgentError as e:  # tiny or sparse data: the other sources still work
        log.warning("no CF source: %s", e.message)
        return {}
    model = make_baseline(config.cf_model, seed=config.seed).fit(split, "test")
    enc = CFUserEncoder(model, [str(i) for i in split.item_ids])
    index.set_cf_vectors(dataset.catalog, enc.item_ids, enc.item_factors(), name="cf", space="ip", show_progress=False)
    log.info("CF source (%s) trained and stored in %.1f s", config.cf_model, time.perf_counter() - t0)
    return {"cf": enc}

