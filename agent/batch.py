"""Batch prompt evaluation: a JSONL file of requests through the pipeline, in engine batches.

    recagent batch requests.jsonl --out runs/batch.jsonl --batch-size 16

Input, one JSON object per line (``id`` optional: the line number is used):

    {"id": "u1", "user_id": "1", "expected": ["2571"]}
    {"id": "c1", "message": "something like Alien but funnier", "expected": ["1214"]}
    {"id": "r1", "user_id": "7", "query": "space opera", "filters": {"ranges": {"year": [1990, null]}}, "k": 5}

A row is a recommend request (any :class:`~recagent.agent.RecommendRequest` field) or a
chat message (``message``, optional ``session_id`` to continue a conversation in file order).

Output: one JSON line per row, appended and flushed as each batch finishes: ``id``, ``ok``,
the picked ``items``, ``error`` (bad rows are recorded, not fatal), ``latency_ms`` (the batch's
wall time: what the row waited), ``fallback``, and ``metrics`` (hit@k, ndcg@k, recall@k) when
``expected`` is given. Rerunning with the same output resumes: rows whose id is already in
the output are skipped; a half-written last line (a crash mid-write) is cut off first. A row an
LLM server failed after its retries is written with ``retry: true``, and a rerun does it again.

The summary (returned, and written next to the output as ``<out>.summary.json``) has rows
done/skipped/failed, throughput and latency percentiles, and mean metrics.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm.auto import tqdm

from .agent import RecAgent, Recommendation, RecommendRequest
from .chat import ChatAgent, ChatConfig, ChatReply, ChatTurn
from .data import iter_jsonl
from .errors import DataError, EmptyInputError, RecAgentError
from .llm import LLMBackendError

__all__ = [
    "BatchConfig",
    "BatchRow",
    "BatchSummary",
    "read_rows",
    "pending_rows",
    "run_batch",
    "run_rows",
    "row_metrics",
    "finished_ids",
    "append_records",
    "summarise",
    "write_parquet",
    "strict_config",
]

log = logging.getLogger(__name__)


class BatchConfig(BaseModel):
    """Where outputs go and how rows are grouped."""

    model_config = ConfigDict(extra="forbid")

    out: Path
    """Output JSONL (append-only; the resume key is the row id)."""
    batch_size: int = Field(16, ge=1, le=512)
    """Rows per engine batch (one rank call and one explain call for all of them)."""
    k: int = Field(10, ge=1, le=100)
    """Cutoff for the metrics and default list length."""
    llm_retries: int = Field(2, ge=0, le=10)
    """Tries again of a batch whose LLM server failed (``--llm-url``: an error or a timeout), then
    of each of its rows alone; a row that still fails is written ``ok: false`` with the reason and
    ``retry: true``, and the rest go on. A rerun does such rows again. An in-process engine that
    died stops the run instead (every row after it would fail)."""
    retry_wait_s: float = Field(2.0, ge=0, le=60)
    """Seconds before the first retry; doubled for each next one."""
    progress: bool = True


class BatchRow(BaseModel):
    """One input line: a recommend request or a chat message, with optional expected items."""

    model_config = ConfigDict(extra="forbid")

    id: str
    message: str | None = None
    session_id: str | None = None
    expected: list[str] = Field(default_factory=list)
    # recommend fields (see RecommendRequest)
    user_id: str | None = None
    history: list[str] | None = None
    new_items: list[str] = Field(default_factory=list)
    profile: dict[str, Any] | str | None = None
    query: str | None = None
    filters: dict[str, Any] | None = None
    exclude: list[str] = Field(default_factory=list)
    k: int | None = Field(None, ge=1, le=100)

    @property
    def kind(self) -> str:
        return "chat" if self.message is not None else "recommend"


class BatchSummary(BaseModel):
    """Totals of a run (this invocation plus what an earlier, interrupted one finished)."""

    input_rows: int
    done_now: int
    skipped_done_before: int
    failed: int
    seconds: float
    rows_per_s: float
    latency_ms: dict[str, float]
    metrics: dict[str, float]
    fallbacks: dict[str, int]
    out: str
    summary_path: str


def read_rows(path: str | Path) -> list[BatchRow]:
    """Parse and check the whole input first, so a bad line fails before any engine work.

    Each error names the line; duplicate ids are rejected (they are the resume key)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("batch input not found", file=str(path), hint="pass a JSONL file, one request object per line")
    rows: list[BatchRow] = []
    seen: dict[str, int] = {}
    for lineno, obj in iter_jsonl(path):
        obj.setdefault("id", str(lineno))
        obj["id"] = str(obj["id"])
        for key in ("user_id", "session_id"):
            if obj.get(key) is not None:
                obj[key] = str(obj[key])
        for key in ("expected", "history", "new_items", "exclude"):
            if isinstance(obj.get(key), list):
                obj[key] = [str(i) for i in obj[key]]
        try:
            row = BatchRow.model_validate(obj)
        except ValidationError as e:
            err = e.errors()[0]
            raise DataError(
                f"{'.'.join(map(str, err['loc'])) or 'row'}: {err['msg']}",
                file=str(path),
                row=lineno,
                hint='rows look like {"id": "1", "user_id": "42", "expected": ["260"]} or {"message": "..."}',
            ) from None
        if (
            row.message is None
            and row.user_id is None
            and row.history is None
            and not row.query
            and row.profile is None
        ):
            raise DataError(
                "the row has neither a message nor a user id / history / query / profile",
                file=str(path), row=lineno, hint='add "user_id" or "message"',
            )  # fmt: skip
        if row.id in seen:
            raise DataError(f"duplicate id {row.id!r} (also on line {seen[row.id]})", file=str(path), row=lineno,
                            hint="ids are the resume key: make them unique")  # fmt: skip
        seen[row.id] = lineno
        rows.append(row)
    if not rows:
        raise EmptyInputError(f"{path} has no rows", hint="write one JSON request per line")
    return rows


def row_metrics(ranked: Sequence[str], expected: Sequence[str], k: int) -> dict[str, float]:
    """hit@k, ndcg@k (binary relevance), recall@k of a ranked list against expected ids."""
    exp = set(expected)
    top = list(ranked)[:k]
    gains = [1.0 if i in exp else 0.0 for i in top]
    dcg = sum(g / math.log2(r + 2) for r, g in enumerate(gains))
    idcg = sum(1.0 / math.log2(r + 2) for r in range(min(len(exp), k)))
    return {
        f"hit@{k}": float(any(gains)),
        f"ndcg@{k}": dcg / idcg if idcg > 0 else 0.0,
        f"recall@{k}": sum(gains) / len(exp) if exp else 0.0,
    }


def finished_ids(out: Path) -> set[str]:
    """Ids already in the output, less those whose last record asks for a retry (an LLM server
    failure); a last line without its newline (crash mid-write) is cut off."""
    if not out.exists():
        return set()
    data = out.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        log.warning("%s: dropping a half-written last line (%d bytes) before resuming", out, len(data) - cut)
        with out.open("r+b") as f:
            f.truncate(cut)
        data = data[:cut]
    done = set()
    for n, line in enumerate(data.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            (done.discard if rec.get("retry") else done.add)(str(rec["id"]))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise DataError("unreadable line in the output being resumed", file=str(out), row=n,
                            hint="move the file away to start over") from None  # fmt: skip
    return done


def pending_rows(rows: Iterable[BatchRow], out: str | Path) -> list[BatchRow]:
    """The rows a run into ``out`` would still do (their id is not in it yet); no engine needed."""
    done = finished_ids(Path(out))
    return [r for r in rows if r.id not in done]


def _read_out(out: Path) -> list[dict[str, Any]]:
    """The output's records, the last one of each id (a row retried by a rerun has two)."""
    if not out.exists():
        return []
    recs = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]
    return list({str(r.get("id")): r for r in recs}.values())


def run_batch(
    pipeline: RecAgent,
    rows: Iterable[BatchRow],
    config: BatchConfig,
    *,
    chat: ChatAgent | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> BatchSummary:
    """Run ``rows`` not yet in ``config.out`` in batches of ``config.batch_size`` and append their
    results. ``on_row`` sees every written record (progress hooks, tests)."""
    rows = list(rows)
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done_before = finished_ids(out)
    todo = [r for r in rows if r.id not in done_before]
    skipped = len(rows) - len(todo)
    if skipped:
        log.info("resuming: %d of %d rows already in %s", skipped, len(rows), out)
    chat = chat or ChatAgent(pipeline, ChatConfig(k=config.k))
    t0 = time.perf_counter()
    bar = tqdm(total=len(rows), initial=skipped, desc="batch", unit="row", disable=not config.progress)
    n_done = 0
    try:
        with out.open("a", encoding="utf-8") as f:
            for start in range(0, len(todo), config.batch_size):
                batch = todo[start : start + config.batch_size]
                records = run_rows_retrying(pipeline, chat, batch, config)
                n_done += append_records(f, records, on_row)
                bar.update(len(records))
    finally:
        bar.close()
    seconds = time.perf_counter() - t0
    return summarise(rows, out, n_done, skipped, seconds, config.k)


def append_records(
    f: Any, records: list[dict[str, Any]], on_row: Callable[[dict[str, Any]], None] | None = None
) -> int:
    """Append finished records to the open output and fsync: a written batch survives a crash
    and is never redone (the driver of a Ray run writes through here too). Returns how many."""
    for rec in records:
        f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    f.flush()
    os.fsync(f.fileno())
    if on_row is not None:
        for rec in records:
            on_row(rec)
    return len(records)


def strict_config(config: Any) -> Any:
    """The AgentConfig for a batch run: an LLM failure stops the run (to be resumed) instead of
    writing retriever-order rows, which a resume would then skip as done; and the engine is
    batch-invariant (``LLMConfig.batch_invariant``), so a row's answer does not depend on its
    batch, its neighbours or the run's width (one process or a Ray pool)."""
    return config.model_copy(update={"ranker": config.ranker.model_copy(update={"fallback_on_error": False}),
                                     "llm": config.llm.model_copy(update={"batch_invariant": True})})  # fmt: skip


def run_rows(pipeline: RecAgent, chat: ChatAgent, batch: list[BatchRow], k: int) -> list[dict[str, Any]]:
    """Recommend rows in one pipeline call, chat rows in one chat call; per-row errors are kept."""
    t0 = time.perf_counter()
    results: dict[str, Any] = {}
    rec_rows = [r for r in batch if r.kind == "recommend"]
    chat_rows = [r for r in batch if r.kind == "chat"]
    if rec_rows:
        reqs: list[RecommendRequest | None] = []
        for r in rec_rows:
            try:
                reqs.append(
                    RecommendRequest(**r.model_dump(include=set(RecommendRequest.model_fields)) | {"k": r.k or k})
                )
            except ValidationError as e:
                reqs.append(None)
                results[r.id] = RecAgentError(str(e.errors()[0]["msg"]))
        valid = [(r, q) for r, q in zip(rec_rows, reqs, strict=True) if q is not None]
        outs = pipeline.recommend_many([q for _, q in valid], return_exceptions=True) if valid else []
        for (r, _), o in zip(valid, outs, strict=True):
            results[r.id] = o
    if chat_rows:
        turns = [ChatTurn(message=r.message, session_id=r.session_id, user_id=r.user_id, k=r.k or k) for r in chat_rows]
        for r, o in zip(chat_rows, chat.respond_many(turns, return_exceptions=True), strict=True):
            results[r.id] = o
    latency = (time.perf_counter() - t0) * 1000
    records = []
    for r in batch:
        o = results[r.id]
        rec: dict[str, Any] = {"id": r.id, "kind": r.kind, "latency_ms": round(latency, 1), "batch_size": len(batch)}
        if isinstance(o, BaseException):
            if not isinstance(o, RecAgentError) or isinstance(o, LLMBackendError):
                raise o  # a bug, a dead engine or server: stop; finished batches are kept for the resume
            rec.update(ok=False, error=o.message + (f" Hint: {o.hint}" if o.hint else ""), items=[])
        else:
            recommendation: Recommendation | None = o if isinstance(o, Recommendation) else None
            items = o.items
            rec.update(
                ok=True,
                items=[
                    {"item_id": it.item_id, "title": it.title, "score": it.score, "reason": it.reason} for it in items
                ],
            )
            rec["fallback"] = recommendation.fallback if recommendation else o.fallback
            if isinstance(o, ChatReply):
                rec["reply"] = o.reply
                rec["parse_path"] = o.query.parse_path
                rec["session_id"] = o.session_id
            if recommendation is not None and recommendation.message:
                rec["message"] = recommendation.message
            if r.expected:
                rec["metrics"] = row_metrics([it.item_id for it in items], r.expected, r.k or k)
        records.append(rec)
    return records


def run_rows_retrying(
    pipeline: RecAgent, chat: ChatAgent, batch: list[BatchRow], config: BatchConfig
) -> list[dict[str, Any]]:
    """:func:`run_rows`, with ``config.llm_retries`` more tries when the LLM server fails, then
    each row alone; rows that still fail are recorded failed with the reason and ``retry: true``."""
    transient = bool(getattr(pipeline.llm, "transient_failures", False))
    for attempt in range(config.llm_retries + 1):
        try:
            return run_rows(pipeline, chat, batch, config.k)
        except LLMBackendError as e:
            if not transient:
                raise
            log.warning("batch of %d rows, try %d: %s", len(batch), attempt + 1, e.message)
            time.sleep(config.retry_wait_s * 2**attempt)
    records: list[dict[str, Any]] = []
    for r in batch:  # one row may be what the server cannot take (a timeout): the others go on
        try:
            records += run_rows(pipeline, chat, [r], config.k)
        except LLMBackendError as e:
            records.append({"id": r.id, "kind": r.kind, "ok": False, "retry": True, "items": [], "latency_ms": 0.0,
                            "batch_size": 1, "error": f"{e.message} (after {config.llm_retries + 1} tries of its "
                            "batch and one alone; rerun the same command to try it again)"})  # fmt: skip
    return records


def summarise(rows: list[BatchRow], out: Path, n_done: int, skipped: int, seconds: float, k: int) -> BatchSummary:
    ids = {r.id for r in rows}
    recs = [r for r in _read_out(out) if r.get("id") in ids]
    lat = np.array([r["latency_ms"] for r in recs if r.get("ok")], dtype=float)
    pct = {f"p{p}": round(float(np.percentile(lat, p)), 1) for p in (50, 90, 95, 99)} if len(lat) else {}
    if len(lat):
        pct["mean"] = round(float(lat.mean()), 1)
    # amortised: a batch's rows share its time
    per_row = [r["latency_ms"] / max(1, r.get("batch_size", 1)) for r in recs if r.get("ok")]
    if per_row:
        pct["amortised_mean"] = round(float(np.mean(per_row)), 1)
    metric_rows = [r["metrics"] for r in recs if r.get("metrics")]
    metrics = {
        m: round(float(np.mean([mr[m] for mr in metric_rows])), 4) for m in (metric_rows[0] if metric_rows else {})
    }
    if metric_rows:
        metrics["rows_with_expected"] = float(len(metric_rows))
    fallbacks: dict[str, int] = {}
    for r in recs:
        for stage in r.get("fallback") or {}:
            fallbacks[stage] = fallbacks.get(stage, 0) + 1
    summary_path = out.with_name(out.name + ".summary.json")
    s = BatchSummary(
        input_rows=len(rows), done_now=n_done, skipped_done_before=skipped, failed=sum(1 for r in recs if not r.get("ok")),
        seconds=round(seconds, 2), rows_per_s=round(n_done / seconds, 3) if seconds > 0 else 0.0,
        latency_ms=pct, metrics=metrics, fallbacks=fallbacks, out=str(out), summary_path=str(summary_path),
    )  # fmt: skip
    summary_path.write_text(s.model_dump_json(indent=2))
    return s


def write_parquet(out: str | Path, path: str | Path, order: Sequence[str] | None = None) -> Path:
    """The JSONL output as a Parquet table, one row per id (in ``order`` when given): ``id``,
    ``ok``, ``error``, ``item_ids``, ``scores``, ``latency_ms``, and ``record`` (the whole JSON line)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = {str(r["id"]): r for r in _read_out(Path(out))}
    ids = [i for i in order if i in recs] if order is not None else list(recs)
    table = pa.table({
        "id": ids,
        "ok": [bool(recs[i].get("ok")) for i in ids],
        "error": [recs[i].get("error") for i in ids],
        "item_ids": [[it["item_id"] for it in recs[i].get("items", [])] for i in ids],
        "scores": [[float(it["score"]) if it.get("score") is not None else None for it in recs[i].get("items", [])] for i in ids],
        "latency_ms": [float(recs[i].get("latency_ms", 0.0)) for i in ids],
        "record": [json.dumps(recs[i], ensure_ascii=False) for i in ids],
    })  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path
