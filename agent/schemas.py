"""The agent's typed config and the request / answer models of the recommend path.

Parsed once (CLI flags, ``RECAGENT_*`` variables, the HTTP body), never at import.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .llm import LLMConfig
from .ranking import VerbalizerConfig
from .retrieval import RetrieverConfig

__all__ = ["AgentConfig", "RecommendRequest", "RecommendedItem", "Recommendation"]


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
    """How prompts and replies name items; None = the catalog's ("movie" for MovieLens, else "item")."""
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
    """CF model trained at startup on every interaction, for the retriever's ``cf`` source; "none" skips it."""
    retriever: dict[str, Any] = Field(default_factory=dict)
    """Overrides of :class:`RetrieverConfig` fields (weights, depth, ...)."""
    # --- LLM ---
    llm: LLMConfig = Field(default_factory=LLMConfig)
    ranker: VerbalizerConfig = Field(default_factory=lambda: VerbalizerConfig(overflow="tail"))
    ranker_kind: str = "verbalizer"
    """Which ranker re-orders the candidates: "verbalizer", "generation", or "module:Name" of one's own
    (:mod:`recagent.ranking.registry`); ``ranker`` holds the prompt settings they share."""
    adapter: str = "auto"
    """The fine-tuned ranker: "auto" = the ranker card shipped for this data set (used when it measured better
    than the retriever order on validation and fits the configured base model), "none" = the base model
    zero-shot, or a ranker card folder."""
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
    explain: bool = False
    """Let the LLM choose which grounded option each reason names (templated choice when False or
    invalid; both are grounded). Off by default: with the bundled 135M model it costs ~3.4 s per list
    and does not improve the reasons (docs/explain.md)."""
    explain_history: int = Field(8, ge=1, le=30)
    """History items shown to the explainer (those most similar to the picks)."""
    explain_tokens_per_item: int = Field(30, ge=8, le=200)
    """Token budget per reason (the JSON around it included)."""
    explain_reason_chars: int = Field(100, ge=20, le=500)
    """Longest reason the structured output allows."""
    seed: int = 0

    @field_validator("ranker_kind")
    @classmethod
    def _registered_ranker(cls, v: str) -> str:
        from .ranking import RANKERS

        return RANKERS.check(v)

    @field_validator("retriever")
    @classmethod
    def _known_retriever_fields(cls, v: dict[str, Any]) -> dict[str, Any]:
        known = set(RetrieverConfig.model_fields)
        unknown = sorted(set(v) - known)
        if unknown:
            raise ValueError(f"unknown retriever option(s) {unknown}; options are {sorted(known)}")
        try:  # the values too, so a bad weight fails when the config is read, not when the agent starts
            RetrieverConfig.model_validate(v)
        except ValidationError as e:
            err = e.errors()[0]
            key = ".".join(str(x) for x in err.get("loc", ()))
            raise ValueError(f"{key}: {err['msg'].removeprefix('Value error, ')}") from None
        return v


class RecommendRequest(BaseModel):
    """One recommendation request (also the body of ``POST /recommend``).

    A known ``user_id`` brings its stored history; ``history`` replaces it, ``new_items`` are
    appended (the newest interactions, used without retraining). A new user is served from
    ``profile`` and/or ``query`` (cold start).
    """

    model_config = ConfigDict(extra="forbid")

    user_id: str | None = Field(
        None, max_length=200, description="A user id from the data, or a new one with query/profile."
    )
    history: list[str] | None = Field(
        None, max_length=5000, description="Item ids, oldest first; replaces the stored history."
    )
    new_items: list[str] = Field(default_factory=list, max_length=1000, description="Item ids appended to the history.")
    profile: dict[str, Any] | str | None = Field(
        None, description='Profile fields or free text, e.g. {"text": "likes 90s sci-fi"}.'
    )
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
    """Who wrote the reason: the LLM (checked to cite the history) or a template from facts we hold."""
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
    ranker: str | None = None
    """Which ranker ordered the items: ``verbalizer:<model>[+adapter][+evidence][+combiner|+fused(w)]``, or ``retriever`` when the
    retriever's order was served (by design or as a fallback: ``fallback["rank"]`` says which)."""

    @property
    def ids(self) -> list[str]:
        return [it.item_id for it in self.items]
