"""Talk to a running recagent server with the official `openai` client.

    recagent serve --port 8000 &                       # in another terminal
    .venv/bin/python examples/openai_client.py --base-url http://127.0.0.1:8000/v1

    recagent serve --api-key "$KEY" &                  # a server that wants a key:
    RECAGENT_API_KEY="$KEY" .venv/bin/python examples/openai_client.py

recagent answers as the model "recagent": a chat request becomes a structured query, the
agent retrieves, ranks and explains, and the answer comes back as an ordinary chat
completion (plain or streamed). The picks as data are in the response's extension field
``recagent``. Bad requests raise the usual `openai` exceptions (BadRequestError, NotFoundError,
AuthenticationError for a missing or wrong key, RateLimitError past the server's limits).
"""

from __future__ import annotations

import argparse
import os

import openai


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--message", default="Something like Alien but funnier, from the 90s, no horror")
    ap.add_argument(
        "--api-key",
        default=os.environ.get("RECAGENT_API_KEY", "not-needed"),
        help="the server's --api-key (default: $RECAGENT_API_KEY; a server without keys ignores it)",
    )
    args = ap.parse_args()

    client = openai.OpenAI(base_url=args.base_url, api_key=args.api_key)
    print("models:", [m.id for m in client.models.list()])

    messages = [{"role": "user", "content": args.message}]
    reply = client.chat.completions.create(model="recagent", messages=messages, user="example-user")
    print("\n--- plain ---\n" + reply.choices[0].message.content)
    picks = reply.model_extra["recagent"]["items"]
    print("item ids:", [p["item_id"] for p in picks])

    # the same conversation continues (the `user` field keeps its memory): new picks, streamed
    messages += [
        {"role": "assistant", "content": reply.choices[0].message.content},
        {"role": "user", "content": "more"},
    ]
    print("\n--- streamed ---")
    for chunk in client.chat.completions.create(model="recagent", messages=messages, user="example-user", stream=True):
        for choice in chunk.choices:
            print(choice.delta.content or "", end="", flush=True)
    print()

    try:
        client.chat.completions.create(model="recagent", messages=[], n=1)
    except openai.BadRequestError as e:
        print("\nbad request, as expected:", e.body["message"])


if __name__ == "__main__":
    main()
