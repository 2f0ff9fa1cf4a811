"""``python -m recagent.cli`` = ``recagent``."""

from recagent.cli import main

main()
