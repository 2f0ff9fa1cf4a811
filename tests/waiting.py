"""The suite's one way to wait: poll a condition until it holds, with a deadline.

Tests order events with threading.Event or by polling what they wait for (a file, a port, a
lock's queue), never by sleeping a guessed time; :func:`hold` stands for work that takes time
(an engine call) where the duration itself is the point of the test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout_s: float, what: str | Callable[[], str], every_s: float = 0.05) -> T:
    """The first truthy value of ``condition()``; AssertionError naming ``what`` after ``timeout_s``.
    ``condition`` may raise to stop early (a child process that died)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what() if callable(what) else what}")
        time.sleep(every_s)


def hold(seconds: float) -> None:
    """Simulated work of this duration (e.g. one engine call while holding the engine lock)."""
    time.sleep(seconds)
