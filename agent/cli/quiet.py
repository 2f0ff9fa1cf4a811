"""Quiet terminal output: results, progress bars and one line per stage; the engines' logs and
warnings (vLLM, torch, transformers, Chroma; Python warnings and what native code writes to the
error stream: thread binding, tcmalloc, Triton, NUMA) go to a log file whose path is printed
once at exit. ``--verbose`` (or ``RECAGENT_VERBOSE=1``) shows everything instead.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from ..models import cache_dir

__all__ = ["setup_output", "say_where", "VERBOSE_FLAG"]

VERBOSE_FLAG = "--verbose"

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
ENGINE_COMMANDS = frozenset({"recommend", "chat", "serve", "batch", "demo", "eval", "finetune"})
"""Commands that load torch (and vLLM, sentence-transformers)."""
_LOG: tuple[Path, Any] | None = None  # (path, open file) of this process's log


class _StageLines(logging.Filter):
    """Our own INFO lines (``recagent.*``: "retriever ready in 5.1 s") stay on the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name.startswith("recagent") or record.levelno >= logging.ERROR


def setup_output(command: str, *, verbose: bool) -> Path | None:
    """Route logs for this process; returns the log file (None with ``verbose``)."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format=_FORMAT, datefmt="%H:%M:%S")
        return None
    path = cache_dir() / "logs" / f"{command or 'recagent'}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    log_file = open(path, "w", buffering=1, encoding="utf-8")  # noqa: SIM115 - open for the process's life
    # Native code (torch, OpenMP, tcmalloc, vLLM's C++ thread binding) writes to file descriptor 2
    # directly: point it at the log, and give Python's sys.stderr (our console, progress bars,
    # one-line errors) a copy of the terminal.
    sys.stderr.flush()
    terminal = os.dup(2)
    os.dup2(log_file.fileno(), 2)
    if command in ENGINE_COMMANDS:
        # torch gives its loggers a handler on the sys.stderr of the moment it is imported
        # ("Triton not available" and the like): import it while sys.stderr still writes to fd 2
        import torch  # noqa: F401
    sys.stderr = os.fdopen(terminal, "w", buffering=1, encoding="utf-8", errors="replace")
    # vLLM would attach its own handler printing to stdout; let its records reach ours instead
    os.environ["VLLM_CONFIGURE_LOGGING"] = "0"
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
    to_file = logging.StreamHandler(log_file)
    to_file.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    root.addHandler(to_file)
    to_terminal = logging.StreamHandler(sys.stderr)
    to_terminal.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    to_terminal.addFilter(_StageLines())
    root.addHandler(to_terminal)
    logging.captureWarnings(True)  # warnings.warn(...) → the "py.warnings" logger → the file only

    global _LOG
    _LOG = (path, log_file)
    return path


def say_where() -> None:
    """After a command succeeded: where the engine logs went, if anything was written."""
    if _LOG is None:
        return
    path, f = _LOG
    f.flush()
    if path.stat().st_size:
        print(f"engine logs and warnings: {path} (--verbose shows them here)", file=sys.stderr)
