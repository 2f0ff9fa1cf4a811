"""LangChain plug-ins: the retriever and the four tools, called by `create_agent` loops.

Two loops: one with a scripted chat model (deterministic tool calls; the tools, pipeline,
index and engine are real) so the wiring is checked every run, and one with the bundled
SmolLM2 behind a real `vllm serve` through `langchain_openai.ChatOpenAI`. The 135M model does
not choose tools reliably on its own, so that loop forces a tool call on the first turn
(`tool_choice="required"` with strict tool schemas, which vLLM enforces with structured
outputs; the server needs `--enable-auto-tool-choice --tool-call-parser hermes` for that) and
lets the model answer freely after the tool result.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from recagent.tools import TOOL_NAMES, RecAgentRetriever, make_tools


@pytest.fixture(scope="module")
def fast_pipeline(retr_split, retr_index):
    """No LLM: the tools still work (retriever order, templated reasons) and it is quick."""
    from recagent.agent import AgentConfig, RecAgent
    from recagent.data import TrainData
    from recagent.retrieval import Retriever

    return RecAgent(
        retr_split.dataset,
        Retriever(retr_index, cf_models={}).fit(TrainData.from_dataset(retr_split.dataset)),
        None,
        AgentConfig(k=3),
    )


@pytest.fixture(scope="module")
def fast_tools(fast_pipeline):
    return {t.name: t for t in make_tools(fast_pipeline)}


def test_public_surface():
    import recagent.tools as mod

    assert set(mod.__all__) == {"RecAgentRetriever", "make_tools", "TOOL_NAMES"}
    assert TOOL_NAMES == ("recommend", "search_items", "similar_items", "explain")


def test_retriever_returns_documents(fast_pipeline):
    docs = RecAgentRetriever(pipeline=fast_pipeline, k=3).invoke("animated toys come to life")
    assert len(docs) == 3 and all(isinstance(d, Document) for d in docs)
    assert {"item_id", "title", "genres", "score", "sources"} <= set(docs[0].metadata)
    assert any(d.metadata["item_id"] in ("1", "3114") for d in docs)  # Toy Story (2)
    personal = RecAgentRetriever(pipeline=fast_pipeline, k=3, user_id="1").invoke("")
    assert personal and not {d.metadata["item_id"] for d in personal} & set(
        fast_pipeline.dataset.interactions.history("1")
    )


def test_tools_called_directly(fast_tools):
    found = json.loads(fast_tools["search_items"].invoke({"query": "Toy Story", "k": 3}))
    assert found["items"][0]["item_id"] == "1"
    sim = json.loads(fast_tools["similar_items"].invoke({"item": "Toy Story", "k": 3}))
    assert (
        sim["item"]["item_id"] == "1" and len(sim["similar"]) == 3 and "1" not in [s["item_id"] for s in sim["similar"]]
    )
    rec = json.loads(fast_tools["recommend"].invoke({"user_id": "1", "k": 2, "exclude_genres": ["Drama"]}))
    assert len(rec["items"]) == 2 and all("Drama" not in it["genres"] and it["reason"] for it in rec["items"])
    why = json.loads(fast_tools["explain"].invoke({"item_ids": ["260"], "user_id": "1"}))
    assert why["reasons"][0]["item_id"] == "260" and why["reasons"][0]["reason"]


@pytest.mark.parametrize(
    ("tool", "args", "says"),
    [
        ("similar_items", {"item": "Xyzzy the Movie"}, "no item with id or title"),
        ("recommend", {"k": 3}, "pass user_id"),
        ("recommend", {"user_id": "nobody"}, "unknown user id"),
        ("explain", {"item_ids": ["260"]}, "pass user_id or liked_item_ids"),
        ("recommend", {"user_id": "1", "include_genres": ["Colour"]}, "invalid arguments: include_genres"),
        ("search_items", {"query": "x", "include_genres": ["Comedy"], "year_min": "old"}, "year_min"),
    ],
)
def test_tool_errors_come_back_as_messages(fast_tools, tool, args, says):
    out = fast_tools[tool].invoke(args)  # handle_tool_error: a message for the agent, no exception
    assert says in out


class ScriptedToolCaller(BaseChatModel):
    """A deterministic chat model: makes the planned tool calls in order, then answers with
    the last tool result. Stands in for the decision-making only; everything it calls is real."""

    plan: list[tuple[str, dict[str, Any]]]

    @property
    def _llm_type(self) -> str:
        return "scripted-tool-caller"

    def bind_tools(self, tools, **kwargs):
        return self

    def _generate(self, messages, stop=None, run_manager=None, **kwargs) -> ChatResult:
        done = sum(isinstance(m, ToolMessage) for m in messages)
        if done < len(self.plan):
            name, args = self.plan[done]
            msg = AIMessage(
                content="", tool_calls=[{"name": name, "args": args, "id": f"call_{done}", "type": "tool_call"}]
            )
        else:
            msg = AIMessage(content="Picks: " + str(messages[-1].content)[:300])
        return ChatResult(generations=[ChatGeneration(message=msg)])


def _tool_messages(result) -> list[ToolMessage]:
    return [m for m in result["messages"] if isinstance(m, ToolMessage)]


@pytest.mark.slow
def test_create_agent_loop_calls_our_tools(agent_pipeline):
    from langchain.agents import create_agent

    plan = [
        ("search_items", {"query": "Toy Story", "k": 2}),
        ("similar_items", {"item": "1", "k": 3}),
        ("recommend", {"request": "animated adventure for kids", "k": 3}),
        ("explain", {"item_ids": ["3114"], "liked_item_ids": ["1"]}),
    ]
    agent = create_agent(
        ScriptedToolCaller(plan=plan), make_tools(agent_pipeline), system_prompt="You recommend movies."
    )
    result = agent.invoke({"messages": [{"role": "user", "content": "Something like Toy Story for my kids"}]})
    tool_msgs = _tool_messages(result)
    assert [m.name for m in tool_msgs] == [p[0] for p in plan]
    assert all(m.status != "error" for m in tool_msgs), [m.content for m in tool_msgs]
    rec = json.loads(tool_msgs[2].content)
    assert len(rec["items"]) == 3 and all(it["reason"] for it in rec["items"])
    assert json.loads(tool_msgs[3].content)["reasons"][0]["cites"] == ["1"]
    assert result["messages"][-1].content.startswith("Picks: ")


@pytest.mark.slow
def test_create_agent_with_smollm2_on_vllm_serve(agent_pipeline, vllm_server):
    """The real model through the OpenAI-compatible vLLM server (as examples/langchain_agent.py)."""
    import httpx
    from langchain.agents import create_agent
    from langchain.agents.middleware import wrap_model_call
    from langchain_openai import ChatOpenAI

    model_id = httpx.get(f"{vllm_server.base_url}/v1/models").json()["data"][0]["id"]
    llm = ChatOpenAI(
        model=model_id, base_url=f"{vllm_server.base_url}/v1", api_key="EMPTY", temperature=0, max_tokens=160
    )

    @wrap_model_call
    def one_forced_tool_call(request, handler):
        # strict tools: vLLM decodes the arguments against each tool's JSON schema
        called = any(isinstance(m, ToolMessage) for m in request.messages)
        return handler(request.override(tool_choice="none" if called else "required", model_settings={"strict": True}))

    tools = [t for t in make_tools(agent_pipeline) if t.name in ("recommend", "search_items")]
    agent = create_agent(llm, tools, system_prompt="You recommend movies. Use a tool, then answer briefly.",
                         middleware=[one_forced_tool_call])  # fmt: skip
    # the vllm_server fixture starts vLLM with --enable-auto-tool-choice --tool-call-parser hermes (vLLM 0.32
    # needs it even for tool_choice="required"): a server without it is a failing test, not a skip
    result = agent.invoke({"messages": [{"role": "user", "content": "Recommend an animated movie for kids."}]})
    tool_msgs = _tool_messages(result)
    assert len(tool_msgs) >= 1 and tool_msgs[0].name in ("recommend", "search_items")
    final = result["messages"][-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
