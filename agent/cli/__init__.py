"""The ``recagent`` command line. Every option also reads a ``RECAGENT_*`` environment variable.

    recagent demo                      # the whole agent on the shipped data and bundled model
    recagent recommend --user 1        # top 10 with reasons
    recagent chat                      # interactive
    recagent serve --port 8000         # HTTP API, OpenAI-compatible endpoint, chat page at /
    recagent batch requests.jsonl      # prompt sets in vLLM batches, resumable
    recagent forget --user 42          # remove what a running server keeps about a user
    recagent eval --systems popularity,ease,sasrec
    recagent data-info --data path/to/folder
    recagent parse "a war film, not too depressing"   # how a chat message is understood (JSON)
    recagent config show --config my.toml              # the resolved config, as a file --config reads

Layout: main.py (the app, the entry point, one-line errors), options.py (options declared once,
defaults from the config classes), checks.py (input checked before the agent starts),
render.py (terminal output), settings.py (the --config file), agent_cmds.py, serve_cmds.py, eval_cmds.py,
parse_cmds.py, config_cmds.py (the commands).
"""

from __future__ import annotations

from . import agent_cmds, config_cmds, eval_cmds, parse_cmds, serve_cmds  # noqa: F401  (each registers its commands on app)
from .main import app, main

__all__ = ["app", "main"]
