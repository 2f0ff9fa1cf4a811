"""LangChain plug-ins: a retriever and the tools ``recommend``, ``search_items``, ``similar_items``
and ``explain`` over one :class:`~recagent.agent.RecAgent`.

>>> from langchain.agents import create_agent
>>> from langchain_openai import ChatOpenAI
>>> tools = make_tools(pipeline)
>>> llm = ChatOpenAI(base_url="http://127.0.0.1:8001/v1", api_key="EMPTY", model="<served model>")
>>> agent = create_agent(llm, tools, system_prompt="You recommend movies. Use the tools.")
>>> agent.invoke({"messages": [{"role": "user", "content": "Something like Toy Story for user 1"}]})

>>> docs = RecAgentRetriever(pipeline=pipeline, k=3).invoke("space adventure with robots")
>>> docs[0].metadata["item_id"], docs[0].page_content

Tools return compact JSON strings (what a chat model reads best). Bad arguments (an unknown
user, a title not in the catalog) come back as a tool error message saying what to pass, so
the agent can correct itself instead of the run failing.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from langchain_core.tools import BaseTool, StructuredTool, ToolException
from pydantic import BaseModel, ConfigDict, Field, create_model

from .agent import RecAgent, RecommendRequest
from .components import Query
from .data import as_list, as_year
from .errors import RecAgentError

__all__ = ["RecAgentRetriever", "make_tools", "TOOL_NAMES"]

log = logging.getLogger(__name__)

TOOL_NAMES = ("recommend", "search_items", "similar_items", "explain")


def _item(pipeline: RecAgent, item_id: str, **extra: Any) -> dict[str, Any]:
    row = pipeline.catalog.items.loc[item_id]
    out = {
        "item_id": item_id,
        "title": row["title"],
        "year": as_year(row.get("year")),
        "genres": as_list(row.get("genres"))[:4],
    }
    out.update({k: v for k, v in extra.items() if v is not None})
    return out


def _filters(
    include_genres: list[str] | None, exclude_genres: list[str] | None, year_min: int | None, year_max: int | None
):
    f: dict[str, Any] = {}
    if include_genres:
        f["include"] = {"genres": include_genres}
    if exclude_genres:
        f["exclude"] = {"genres": exclude_genres}
    if year_min is not None or year_max is not None:
        f["ranges"] = {"year": [year_min, year_max]}
    return f or None


class RecAgentRetriever(BaseRetriever):
    """LangChain retriever over the agent's fused retrieval (content, CF, sequence, knowledge...).

    Each ``Document`` holds the item's description; ``metadata`` has ``item_id``, ``title``,
    ``year``, ``genres``, ``score`` and ``sources``. ``user_id`` personalises the results.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    pipeline: Any
    k: int = 5
    user_id: str | None = None
    filters: dict[str, Any] | None = None

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        p: RecAgent = self.pipeline
        q = p.query_for(RecommendRequest(user_id=self.user_id, query=query or None, filters=self.filters))
        res = p.retriever(q, n=self.k)
        docs = []
        for item_id, score, sources in zip(res.ids, res.scores, res.field("sources", {}), strict=True):
            meta = _item(p, item_id)
            meta["genres"] = ", ".join(meta["genres"])  # flat metadata: vector stores and LCEL prompts expect scalars
            meta.update(score=score, sources=json.dumps(sources))
            docs.append(Document(page_content=p.catalog.describe(item_id), metadata=meta, id=item_id))
        return docs


# ------------------------------------------------------------------------------------------
# tool argument schemas (their field descriptions are what the chat model reads)


class _ListArgs(BaseModel):
    """What every list-returning tool takes: how many items, and a genre / year window."""

    k: int = Field(5, ge=1, le=20, description="How many items.")
    include_genres: list[str] | None = Field(
        None, max_length=3, description="Only items with one of these genres, e.g. ['Comedy']."
    )
    year_min: int | None = Field(None, description="Earliest release year.")
    year_max: int | None = Field(None, description="Latest release year.")


class RecommendArgs(_ListArgs):
    user_id: str | None = Field(
        None, description="A known user id, e.g. '1'. Omit for a new user and describe the wish in `request`."
    )
    request: str | None = Field(
        None, max_length=300, description="What the user wants, in words, e.g. 'funny space adventure'."
    )
    exclude_genres: list[str] | None = Field(
        None, max_length=3, description="No items with these genres, e.g. ['Horror']."
    )


class SearchArgs(_ListArgs):
    query: str = Field(
        ...,
        min_length=1,
        max_length=200,
        description="A title or a description, e.g. 'Toy Story' or 'robots in space'.",
    )


class SimilarArgs(BaseModel):
    item: str = Field(
        ..., min_length=1, max_length=200, description="An item id (e.g. '1') or an exact title (e.g. 'Toy Story')."
    )
    k: int = Field(5, ge=1, le=20, description="How many similar items.")


class ExplainArgs(BaseModel):
    item_ids: list[str] = Field(
        ..., min_length=1, max_length=10, description="Item ids to explain, e.g. ['260', '1196']."
    )
    user_id: str | None = Field(None, description="The user the items are for (their history grounds the reasons).")
    liked_item_ids: list[str] | None = Field(None, description="Or: item ids the user liked, if there is no user id.")


def make_tools(pipeline: RecAgent) -> list[BaseTool]:
    """The four tools over ``pipeline``, ready for ``create_agent(model, tools)``."""
    from .chat import TitleResolver

    titles = TitleResolver(pipeline)

    def _resolve(item: str) -> str:
        item = item.strip()
        if item in pipeline.catalog:
            return item
        found = titles.resolve(item)
        if found is None:
            sug = titles.suggest(item)
            raise ToolException(
                f"no item with id or title {item!r}"
                + (f"; did you mean {sug}?" if sug else "")
                + " Use search_items to find ids."
            )
        return found

    def _guard(fn):
        def wrapped(**kw):
            try:
                return fn(**kw)
            except RecAgentError as e:
                raise ToolException(e.message + (f" Hint: {e.hint}" if e.hint else "")) from e

        wrapped.__name__, wrapped.__doc__ = fn.__name__, fn.__doc__
        return wrapped

    genres = sorted({g for cell in pipeline.catalog.items.get("genres", []) for g in as_list(cell)})

    def _check_genres(*lists: list[str] | None) -> None:
        # a chat model guesses genre names: say which exist rather than return nothing
        bad = sorted({g for lst in lists for g in (lst or []) if g not in genres})
        if bad:
            raise ToolException(f"unknown genre(s) {bad}; use some of {genres}")

    def recommend(
        user_id=None, request=None, k=5, include_genres=None, exclude_genres=None, year_min=None, year_max=None
    ) -> str:
        _check_genres(include_genres, exclude_genres)
        if not user_id and not request:
            raise ToolException("pass user_id (a known user) or request (what the user wants in words)")
        known = user_id is not None and user_id in pipeline.dataset.interactions
        if user_id is not None and not known and not request:
            raise ToolException(f"unknown user id {user_id!r}; omit it and describe the wish in `request`")
        rec = pipeline.recommend(RecommendRequest(
            user_id=user_id if known else None, query=request, k=k,
            filters=_filters(include_genres, exclude_genres, year_min, year_max),
        ))  # fmt: skip
        items = [_item(pipeline, it.item_id, reason=it.reason) for it in rec.items]
        return json.dumps(
            {"items": items, "note": rec.message} if rec.message else {"items": items}, ensure_ascii=False
        )

    def search_items(query, k=5, include_genres=None, year_min=None, year_max=None) -> str:
        _check_genres(include_genres)
        f = _filters(include_genres, None, year_min, year_max)
        ids: list[str] = []
        exact = titles.resolve(query)
        if exact and f is None:
            ids.append(exact)
        ids += [i for i in pipeline.catalog.search_title(query, limit=k) if i not in ids and f is None]
        if len(ids) < k:
            found = pipeline.retriever.source_lists(Query(text=query, filters=f), k, sources=["query"])
            ids += [i for i in found["query"].ids if i not in ids] if "query" in found else []
        return json.dumps({"items": [_item(pipeline, i) for i in ids[:k]]}, ensure_ascii=False)

    def similar_items(item, k=5) -> str:
        item_id = _resolve(item)
        vec = pipeline.index.vectors([item_id]).get(item_id)
        if vec is None:
            raise ToolException(f"item {item_id!r} is not in the index yet")
        hits = pipeline.index.query_content(embeddings=np.asarray(vec)[None, :], k=k, exclude=[item_id])[0]
        items = [_item(pipeline, h.item_id, similarity=round(1.0 - h.distance, 3)) for h in hits]
        return json.dumps({"item": _item(pipeline, item_id), "similar": items}, ensure_ascii=False)

    def explain(item_ids, user_id=None, liked_item_ids=None) -> str:
        ids = [_resolve(i) for i in item_ids]
        if user_id is None and not liked_item_ids:
            raise ToolException("pass user_id or liked_item_ids: reasons cite what the user liked")
        out = pipeline.explain_items(ids, user_id=user_id if liked_item_ids is None else None, history=liked_item_ids)
        return json.dumps(
            {
                "reasons": [
                    {"item_id": it.item_id, "title": it.title, "reason": it.reason, "cites": it.cites} for it in out
                ]
            },
            ensure_ascii=False,
        )

    # With the catalog's genres as enums, a model decoding with structured outputs (vLLM strict
    # tools) can only name genres that exist.
    GenreList = list[Literal[tuple(genres)]] | None if genres else list[str] | None  # type: ignore[valid-type]
    rec_args = create_model("RecommendArgs", __base__=RecommendArgs,
                            include_genres=(GenreList, RecommendArgs.model_fields["include_genres"]),
                            exclude_genres=(GenreList, RecommendArgs.model_fields["exclude_genres"]))  # fmt: skip
    search_args = create_model(
        "SearchArgs", __base__=SearchArgs, include_genres=(GenreList, SearchArgs.model_fields["include_genres"])
    )
    specs = [
        (
            recommend,
            rec_args,
            "Recommend items for a user (by id) or for a wish in words, with a reason each. Returns JSON.",
        ),
        (search_items, search_args, "Find catalog items by title or by description. Returns JSON with item ids."),
        (similar_items, SimilarArgs, "Items similar in content to one item (id or exact title). Returns JSON."),
        (explain, ExplainArgs, "Explain why items suit a user, citing items from their history. Returns JSON."),
    ]
    return [
        StructuredTool.from_function(
            func=_guard(fn),
            name=fn.__name__,
            description=desc,
            args_schema=schema,
            handle_tool_error=True,
            handle_validation_error=_argument_error,
        )  # fmt: skip
        for fn, schema, desc in specs
    ]


def _argument_error(e: Exception) -> str:
    """Bad tool arguments become a message the model can act on, not a failed run."""
    errors = getattr(e, "errors", lambda: [])()
    parts = [f"{'.'.join(map(str, err.get('loc', ())))}: {err.get('msg')}" for err in errors[:3]]
    return "invalid arguments: " + ("; ".join(parts) or str(e)) + ". Check the tool's argument types."
