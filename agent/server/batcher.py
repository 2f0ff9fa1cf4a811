"""The micro-batcher: concurrent requests of one kind become one engine call per stage.

Jobs are queued by kind; each *lane* (a group of kinds) has its own queue, batching loop and
worker thread. With the default lanes, ``/recommend`` (one short ranking pass) never queues
behind chat batches (a parse and a generation per turn): the two lanes run side by side and
meet only at the engine lock, where :class:`~recagent.server.fairness.PriorityLock` lets the
fast lane in first. One lane for everything gives the old single-queue behaviour.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import RecAgentError

__all__ = ["MicroBatcher", "ShuttingDown"]

log = logging.getLogger("recagent.server")


class ShuttingDown(RecAgentError):
    """The server stopped before this job ran."""

    status_code = 503
    error_type = "service_unavailable"


class _Lane:
    def __init__(self, name: str) -> None:
        self.name = name
        self.queue: asyncio.Queue[tuple[str, Any, asyncio.Future]] = asyncio.Queue()
        self.task: asyncio.Task | None = None
        # one thread per lane; engine calls from several lanes are serialised by the engine lock
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"recagent-{name}")


class MicroBatcher:
    """Collect concurrent jobs for a moment, then run each kind's handler on the whole batch in
    its lane's worker thread. ``handlers[kind](payloads) -> results`` returns one result or
    exception per payload, in order. ``lanes`` maps kind → lane name (default: one lane)."""

    def __init__(self, handlers: dict[str, Callable[[list[Any]], Sequence[Any]]], *, max_batch: int = 8,
                 max_wait_ms: float = 10.0, on_batch: Callable[[str, int], None] | None = None,
                 lanes: Mapping[str, str] | None = None):  # fmt: skip
        self.handlers = handlers
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1000
        self.on_batch = on_batch
        self.lane_of = {kind: (lanes or {}).get(kind, "engine") for kind in handlers}
        self._lanes: dict[str, _Lane] = {}
        self._stopped = False

    async def start(self) -> None:
        if self._stopped:
            raise ShuttingDown("the server is shutting down", hint="retry against a running server")
        if not self._lanes:
            for name in dict.fromkeys(self.lane_of.values()):
                lane = self._lanes[name] = _Lane(name)
                lane.task = asyncio.create_task(self._run(lane), name=f"recagent-batcher-{name}")

    async def stop(self) -> None:
        """Stop the loops; jobs still queued fail with :class:`ShuttingDown` instead of hanging."""
        self._stopped = True
        lanes, self._lanes = list(self._lanes.values()), {}
        for lane in lanes:
            if lane.task is not None:
                lane.task.cancel()
        for lane in lanes:
            if lane.task is not None:
                try:
                    await lane.task
                except asyncio.CancelledError:
                    pass
            while not lane.queue.empty():
                _, _, fut = lane.queue.get_nowait()
                if not fut.done():
                    fut.set_exception(ShuttingDown("the server stopped before this request ran", hint="retry"))
            lane.executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, kind: str, payload: Any) -> Any:
        """Queue one job; returns its result or raises its exception."""
        if kind not in self.handlers:
            raise ValueError(f"unknown job kind {kind!r}")
        await self.start()
        fut = asyncio.get_running_loop().create_future()
        await self._lanes[self.lane_of[kind]].queue.put((kind, payload, fut))
        return await fut

    async def _collect(self, lane: _Lane, batch: list[tuple[str, Any, asyncio.Future]]) -> None:
        """Fill ``batch`` (given, so a cancelled loop can still fail what it took off the queue)."""
        loop = asyncio.get_running_loop()
        batch.append(await lane.queue.get())
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            timeout = deadline - loop.time()
            if timeout <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(lane.queue.get(), timeout))
            except TimeoutError:
                break
        while len(batch) < self.max_batch and not lane.queue.empty():
            batch.append(lane.queue.get_nowait())

    async def _run(self, lane: _Lane) -> None:
        batch: list[tuple[str, Any, asyncio.Future]] = []
        try:
            while True:
                batch = []
                await self._collect(lane, batch)
                await self._run_batch(lane, batch)
        except asyncio.CancelledError:
            for _, _, fut in batch:
                if not fut.done():
                    fut.set_exception(ShuttingDown("the server stopped while this request ran", hint="retry"))
            raise

    async def _run_batch(self, lane: _Lane, batch: list[tuple[str, Any, asyncio.Future]]) -> None:
        loop = asyncio.get_running_loop()
        groups: dict[str, list[tuple[Any, asyncio.Future]]] = {}
        for kind, payload, fut in batch:
            if not fut.done():  # a request that timed out while queued is not run
                groups.setdefault(kind, []).append((payload, fut))
        for kind, jobs in groups.items():
            if self.on_batch:
                self.on_batch(kind, len(jobs))
            try:
                results = list(await loop.run_in_executor(lane.executor, self.handlers[kind], [p for p, _ in jobs]))
                if len(results) != len(jobs):
                    raise RuntimeError(f"handler {kind!r} returned {len(results)} results for {len(jobs)} jobs")
            except Exception as e:  # the handler itself failed: every job in it gets the error
                # (Exception, not BaseException: the CancelledError sent by stop() must end the loop)
                results = [e] * len(jobs)
            for (_, fut), res in zip(jobs, results, strict=True):
                if fut.done():
                    continue
                if isinstance(res, BaseException):
                    fut.set_exception(res)
                else:
                    fut.set_result(res)
