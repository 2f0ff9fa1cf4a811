"""The engine lock, with a fast lane: threads marked urgent get the engine before the others.

The pipeline and the chat agent serialise every engine call through ``pipeline.lock`` (a
re-entrant lock). The server swaps it for :class:`PriorityLock` — one per engine, shared by
every pipeline on that engine — which behaves the same (re-entrant, a context manager) but,
when the engine frees up, hands it to a waiting urgent thread (the ``/recommend`` lane) before
a normal one (the chat lanes). A chat batch then
delays a recommendation by at most the one engine call it is in, not by the whole batch.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["PriorityLock", "share_priority_lock"]


class PriorityLock:
    """Re-entrant lock; waiting threads inside :meth:`urgent` are served first."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._owner: int | None = None
        self._depth = 0
        self._urgent_waiting = 0
        self._local = threading.local()

    @contextmanager
    def urgent(self) -> Iterator[None]:
        """Mark this thread's acquisitions as urgent for the duration of the block."""
        before = getattr(self._local, "urgent", False)
        self._local.urgent = True
        try:
            yield
        finally:
            self._local.urgent = before

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        me = threading.get_ident()
        urgent = getattr(self._local, "urgent", False)
        with self._cond:
            if self._owner == me:
                self._depth += 1
                return True
            if urgent:
                self._urgent_waiting += 1
            try:
                # a normal thread also waits while an urgent one does, so urgent ones go first
                def free() -> bool:
                    return self._owner is None and (urgent or self._urgent_waiting == 0)

                ok = self._cond.wait_for(free, None if timeout < 0 else timeout) if blocking else free()
                if not ok:
                    return False
                self._owner, self._depth = me, 1
                return True
            finally:
                if urgent:
                    self._urgent_waiting -= 1
                    self._cond.notify_all()  # normal waiters re-check (an urgent one may have timed out)

    def release(self) -> None:
        with self._cond:
            if self._owner != threading.get_ident():
                raise RuntimeError("cannot release a lock this thread does not hold")
            self._depth -= 1
            if self._depth == 0:
                self._owner = None
                self._cond.notify_all()

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
                lock = _BY_ENGINE[key] = PriorityLock()
            p.lock = lock  # type: ignore[attr-defined]
            locks.append(lock)
        return locks[0]
