"""The micro-batcher and the engine lock on their own (no engine): batching, shutdown that
never hangs, the fast lane for /recommend, and the lock that lets that lane in first."""

from __future__ import annotations

import asyncio
import threading

import pytest
from waiting import hold, wait_until

from recagent.server import MicroBatcher
from recagent.server.batcher import ShuttingDown
from recagent.server.fairness import PriorityLock, share_priority_lock


def _run(coro, timeout: float = 20.0):
    return asyncio.run(asyncio.wait_for(coro, timeout))


def test_jobs_arriving_together_run_as_one_batch():
    seen: list[int] = []

    def double(xs):
        seen.append(len(xs))
        return [2 * x for x in xs]

    async def go():
        b = MicroBatcher({"double": double}, max_batch=8, max_wait_ms=50)
        out = await asyncio.gather(*(b.submit("double", i) for i in range(5)))
        await b.stop()
        return out

    assert _run(go()) == [0, 2, 4, 6, 8]
    assert seen == [5]


def test_a_failing_handler_fails_its_jobs_and_the_loop_goes_on():
    def boom(xs):
        raise ValueError("broken handler")

    def short(xs):
        return xs[:-1]  # one result too few: a bug in the handler, not a hang

    async def go():
        b = MicroBatcher({"boom": boom, "short": short, "ok": lambda xs: xs}, max_wait_ms=1)
        with pytest.raises(ValueError, match="broken handler"):
            await b.submit("boom", 1)
        with pytest.raises(RuntimeError, match="returned 1 results for 2 jobs"):
            await asyncio.gather(b.submit("short", 1), b.submit("short", 2))
        assert await b.submit("ok", 7) == 7
        await b.stop()

    _run(go())


def test_stop_during_a_running_batch_returns_and_fails_waiting_jobs():
    """The cancellation stop() sends must end the loop (issue 9: catching BaseException
    swallowed it, so stop() waited forever), and queued jobs get an error, not a hang."""
    started, release = threading.Event(), threading.Event()

    def slow(xs):
        started.set()
        release.wait(10)
        return xs

    async def go():
        b = MicroBatcher({"slow": slow}, max_batch=1, max_wait_ms=0)
        running = asyncio.ensure_future(b.submit("slow", 1))
        queued = asyncio.ensure_future(b.submit("slow", 2))
        await asyncio.to_thread(started.wait, 10)
        await asyncio.wait_for(b.stop(), 5)  # the old loop swallowed the cancellation: TimeoutError here
        release.set()
        for fut in (running, queued):
            with pytest.raises(ShuttingDown):
                await asyncio.wait_for(fut, 5)
        with pytest.raises(ShuttingDown):
            await b.submit("slow", 3)  # a stopped batcher says so at once

    _run(go())


def test_recommend_lane_is_not_queued_behind_a_slow_chat_batch():
    """With lanes, a fast job submitted while a slow batch runs finishes before it; with one
    queue (the old batcher) it waited for the whole slow batch."""
    chat_started, chat_release = threading.Event(), threading.Event()
    done: list[str] = []

    def chat(xs):
        chat_started.set()
        chat_release.wait(10)
        done.append("chat")
        return xs

    def recommend(xs):
        done.append("recommend")
        return xs

    async def go(lanes):
        b = MicroBatcher({"chat": chat, "recommend": recommend}, max_wait_ms=1, lanes=lanes)
        slow = asyncio.ensure_future(b.submit("chat", "c"))
        await asyncio.to_thread(chat_started.wait, 10)
        fast = asyncio.ensure_future(b.submit("recommend", "r"))
        finished, _ = await asyncio.wait({fast}, timeout=2)
        chat_release.set()
        await asyncio.gather(slow, fast)
        await b.stop()
        return bool(finished)

    assert _run(go({"chat": "chat", "recommend": "recommend"})) is True
    assert done == ["recommend", "chat"]


def _round(lock: PriorityLock, n_normal: int) -> list[str]:
    """A holder keeps the lock while ``n_normal`` normal threads, then one urgent thread, queue
    for it; returns the order in which they got it."""
    order: list[str] = []
    holder_in, go_on = threading.Event(), threading.Event()

    def holder():
        with lock:
            with lock:  # re-entrant, like the RLock it replaces
                holder_in.set()
                go_on.wait(10)

    def waiter(name: str, urgent: bool):
        if urgent:
            with lock.urgent(), lock:
                order.append(name)
        else:
            with lock:
                order.append(name)

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    holder_in.wait(10)
    for i in range(n_normal):
        threads.append(threading.Thread(target=waiter, args=(f"normal{i}", False)))
        threads[-1].start()
    wait_until(lambda: lock.waiting()["normal"] == n_normal, 10, "the normal threads to queue first")
    threads.append(threading.Thread(target=waiter, args=("urgent", True)))
    threads[-1].start()
    wait_until(lambda: lock.waiting()["urgent"] == 1, 10, "the urgent thread to queue behind them")
    go_on.set()
    for t in threads:
        t.join(10)
    return order


def test_priority_lock_serves_urgent_waiters_first_and_is_reentrant():
    lock = PriorityLock()
    for _ in range(5):  # without the priority the urgent thread would win ~1 round in 5
        order = _round(lock, n_normal=4)
        assert order[0] == "urgent" and len(order) == 5, order  # ...but the urgent one gets the engine first
    assert lock.acquire(blocking=False) and lock.acquire(timeout=0.1)
    lock.release()
    lock.release()
    with pytest.raises(RuntimeError):
        lock.release()


def test_share_priority_lock_keeps_one_lock_per_engine():
    class Pipeline:
        def __init__(self, llm):
            self.llm, self.lock = llm, threading.RLock()

    engine, other_engine = object.__new__(type("Engine", (), {})), object.__new__(type("Engine", (), {}))
    quick, full, other = Pipeline(engine), Pipeline(engine), Pipeline(other_engine)
    lock = share_priority_lock(quick)  # an app over one pipeline of the engine first...
    assert share_priority_lock(full, quick) is lock  # ...then one over both: still one lock
    assert full.lock is lock and quick.lock is lock and isinstance(lock, PriorityLock)
    assert share_priority_lock(other) is not lock  # a different engine keeps its own lock


def test_back_to_back_urgent_batches_keep_the_engine_but_cannot_starve_normal_threads():
    """Urgent batches following each other (gaps shorter than the grace period) keep normal
    threads out, but for at most max_streak_s: then a normal call gets its turn."""
    lock = PriorityLock(grace_s=0.05, max_streak_s=0.6)
    done, batches, streaming = threading.Event(), [0], threading.Event()
    got: list[tuple[int, bool]] = []  # (urgent batches that ran while the normal thread waited, stream still on)

    def urgent_stream():
        streaming.set()
        while not done.is_set():
            with lock.urgent():
                with lock:  # one engine call of a /recommend batch
                    hold(0.03)
                batches[0] += 1
            # the gap before the next batch (the batcher collecting it) is shorter than grace_s
        streaming.clear()

    def normal():
        before = batches[0]
        with lock:
            got.append((batches[0] - before, streaming.is_set()))
        done.set()

    u = threading.Thread(target=urgent_stream)
    u.start()
    wait_until(lambda: batches[0] >= 1, 10, "the urgent stream to run")
    n = threading.Thread(target=normal)
    n.start()
    n.join(30)
    done.set()
    u.join(30)
    # held back through the gaps (several batches ran first), then let in by the streak cap while
    # the stream was still running (without the cap it would wait for the stream to end)
    assert got and got[0][0] >= 3 and got[0][1], got


def test_priority_lock_also_holds_the_lock_it_replaced():
    """A component that kept the old lock (an explainer built with it) stays exclusive with
    everyone who takes the new one."""
    old = threading.RLock()
    lock = PriorityLock(old)
    inside = threading.Event()
    release = threading.Event()

    def component():  # holds only the old lock
        with old:
            inside.set()
            release.wait(10)

    t = threading.Thread(target=component)
    t.start()
    inside.wait(10)
    assert lock.acquire(timeout=0.2) is False  # the engine is busy through the old lock
    release.set()
    t.join(10)
    with lock:
        assert old.acquire(blocking=False)  # re-entrant: this thread holds the old lock now
        old.release()
        got: list[bool] = []
        other = threading.Thread(target=lambda: got.append(old.acquire(timeout=0.1)))
        other.start()
        other.join(10)
        assert got == [False]  # and nobody else can take it
