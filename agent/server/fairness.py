"""The engine lock, with a fast lane: urgent work (the ``/recommend`` lane) gets the engine first.

The pipeline and the chat agent serialise every engine call through ``pipeline.lock`` (a
re-entrant lock). The server swaps it for :class:`PriorityLock` — one per engine, shared by
every pipeline on that engine — which behaves the same (re-entrant, a context manager) and adds
priorities:

* while a thread is inside :meth:`PriorityLock.urgent` (a whole /recommend batch: retrieval,
  ranking, reasons), normal threads (the chat lane) start no new engine call; they finish the
  one they are in. So a recommendation waits for at most one chat engine call;
* after urgent work ends, normal threads wait ``grace_s`` more, so the next /recommend batch,
  already queued, follows without a chat call in between;
* but urgent work holds normal threads back for at most ``max_streak_s`` in a row: then a
  waiting chat call runs next, even against back-to-back urgent batches, so a steady stream of
  recommendations cannot starve the chat routes.

It wraps the lock it replaces: holding it also holds the old one, so components that kept a
reference to the old lock (an explainer built with it) stay mutually exclusive with everyone.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["PriorityLock", "share_priority_lock"]


class PriorityLock:
    """Re-entrant lock; work inside :meth:`urgent` goes first (see the module docstring)."""

    def __init__(self, inner: object | None = None, *, grace_s: float = 0.05, max_streak_s: float = 2.0) -> None:
        self.inner = inner  # the lock this one replaces (taken too, after the priority rules)
        self.grace_s, self.max_streak_s = grace_s, max_streak_s
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._urgent = 0  # threads inside urgent()
        self._grace_until = 0.0
        self._streak_start: float | None = None  # since when urgent work has held normal threads back
        self._waiting = {True: 0, False: 0}  # threads blocked in acquire, by urgency
        self._local = threading.local()

    def waiting(self) -> dict[str, int]:
        """Threads blocked on the engine now: ``{"urgent": n, "normal": m}`` (the queue at the engine)."""
        with self._cond:
            return {"urgent": self._waiting[True], "normal": self._waiting[False]}

    @contextmanager
    def urgent(self) -> Iterator[None]:
        """Urgent work: while any thread is in this block, normal threads start no engine call."""
        nested = getattr(self._local, "urgent", False)
        if not nested:
            with self._cond:
                self._urgent += 1
                if self._streak_start is None:
                    self._streak_start = time.monotonic()
        self._local.urgent = True
        try:
            yield
        finally:
            self._local.urgent = nested
            if not nested:
                with self._cond:
                    self._urgent -= 1
                    if self._urgent == 0:
                        self._grace_until = time.monotonic() + self.grace_s
                    self._cond.notify_all()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        urgent = getattr(self._local, "urgent", False)
        deadline = None if timeout < 0 else time.monotonic() + timeout
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return True
            while True:
                now = time.monotonic()
                streak = self._streak_start is not None and now - self._streak_start < self.max_streak_s
                held_back = not urgent and streak and (self._urgent > 0 or now < self._grace_until)
                # past the streak cap an urgent caller lets a waiting normal thread go first: else
                # back-to-back batches with no gap win every race for the lock and starve it
                expired = self._streak_start is not None and not streak
                yields = urgent and expired and self._waiting[False] > 0
                if self._owner is None and not held_back and not yields:
                    break
                if not blocking or (deadline is not None and now >= deadline):
                    self._cond.notify_all()  # an urgent caller that yielded to this thread re-checks
                    return False
                # wake up by the next notify, or when the grace period or the streak runs out
                wake = [deadline - now] if deadline is not None else []
                if held_back:
                    wake.append(self._streak_start + self.max_streak_s - now)  # type: ignore[operator]
                    if self._urgent == 0:
                        wake.append(self._grace_until - now)
                self._waiting[urgent] += 1
                try:
                    self._cond.wait(max(0.001, min(wake)) if wake else None)
                finally:
                    self._waiting[urgent] -= 1
            self._owner, self._depth = me, 1
            if not urgent:
                self._streak_start = None  # a normal call ran: the next urgent streak starts afresh
        if self.inner is not None:  # outside the condition: others must be able to queue meanwhile
            left = -1 if deadline is None else max(0.0, deadline - time.monotonic())
            ok = self.inner.acquire(True, left) if blocking else self.inner.acquire(False)  # type: ignore[attr-defined]
            if not ok:
                self._free()
                return False
        return True

    def _free(self) -> None:
        with self._cond:
            self._owner, self._depth = None, 0
            self._cond.notify_all()

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("cannot release a lock this thread does not hold")
            self._depth -= 1
            if self._depth > 0:
                return
        if self.inner is not None:
            self.inner.release()  # type: ignore[attr-defined]
        self._free()

    def __enter__(self) -> PriorityLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


_BY_ENGINE: weakref.WeakKeyDictionary[object, PriorityLock] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


def share_priority_lock(*pipelines: object) -> PriorityLock:
    """Give every pipeline the :class:`PriorityLock` of its engine (``pipeline.llm``), and
    return the first one's. Pipelines on one engine always get one lock, whichever app is built
    first; a pipeline without an engine gets a lock of its own."""
    with _REGISTRY_LOCK:
        locks = []
        for p in pipelines:
            engine = getattr(p, "llm", None)
            key = engine if engine is not None else p
            lock = _BY_ENGINE.get(key)
            if lock is None:
                old = getattr(p, "lock", None)
                lock = _BY_ENGINE[key] = old if isinstance(old, PriorityLock) else PriorityLock(old)
            p.lock = lock  # type: ignore[attr-defined]
            locks.append(lock)
        return locks[0]
