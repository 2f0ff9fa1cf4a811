"""A LangChain agent that recommends movies with recagent's tools, its brain a vLLM server.

    .venv/bin/python examples/langchain_agent.py                # starts `vllm serve` (bundled SmolLM2) itself
    .venv/bin/python examples/langchain_agent.py --vllm-url http://127.0.0.1:8001 --model Qwen/Qwen2.5-1.5B-Instruct

The tools (`recommend`, `search_items`, `similar_items`, `explain`) run the recagent pipeline
in this process: Chroma retrieval, vLLM ranking in-process, MMR, grounded reasons. The chat
model that decides which tool to call is served by `vllm serve` behind its OpenAI-compatible
API (`langchain_openai.ChatOpenAI`).

The server runs with `--enable-auto-tool-choice --tool-call-parser hermes` (start your own the
same way). A capable instruct model picks tools on its own. The bundled 135M model does not, so
by default the first turn is forced to call a tool (`tool_choice="required"` with strict tool
schemas, which vLLM enforces with structured outputs) and the model then answers from the tool
result; pass `--auto` with a stronger model to let it choose.
"""

from __future__ import annotations

import argparse
import logging


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vllm-url", help="a running `vllm serve` (default: start one with the bundled model)")
    ap.add_argument("--model", help="model id on that server (default: its first model)")
    ap.add_argument(
        "--auto", action="store_true", help="let the model choose tools (needs a tool-call parser on the server)"
    )
    ap.add_argument("--question", default="I loved Toy Story. What should my kids watch next?")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")

    import httpx
    from langchain.agents import create_agent
    from langchain.agents.middleware import wrap_model_call
    from langchain_core.messages import ToolMessage
    from langchain_openai import ChatOpenAI

    from recagent.agent import AgentConfig, RecAgent
    from recagent.llm import VLLMServer
    from recagent.tools import make_tools

    server = None
    if args.vllm_url is None:
        # vLLM accepts tool_choice="required" only with a tool parser configured
        server = VLLMServer(
            max_model_len=4096, extra_args=["--enable-auto-tool-choice", "--tool-call-parser", "hermes"]
        ).start()
        args.vllm_url = server.base_url
    try:
        model_id = args.model or httpx.get(f"{args.vllm_url}/v1/models").json()["data"][0]["id"]
        chat_model = ChatOpenAI(
            model=model_id, base_url=f"{args.vllm_url}/v1", api_key="EMPTY", temperature=0, max_tokens=256
        )

        pipeline = RecAgent.from_config(AgentConfig(k=5))  # the agent's own engine, index and data
        middleware = []
        if not args.auto:

            @wrap_model_call
            def first_turn_calls_a_tool(request, handler):
                called = any(isinstance(m, ToolMessage) for m in request.messages)
                # strict: vLLM decodes the arguments against the tool's JSON schema
                return handler(
                    request.override(tool_choice="none" if called else "required", model_settings={"strict": True})
                )

            middleware.append(first_turn_calls_a_tool)
        agent = create_agent(
            chat_model,
            make_tools(pipeline),
            system_prompt="You recommend movies. Call a tool to find them, then answer in two sentences.",
            middleware=middleware,
        )
        result = agent.invoke({"messages": [{"role": "user", "content": args.question}]})
        for m in result["messages"]:
            label = getattr(m, "name", None) or m.type
            print(f"[{label}] {m.content if m.content else getattr(m, 'tool_calls', '')}"[:600])
        pipeline.close()
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
