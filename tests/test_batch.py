"""Batch prompt evaluation: rows through the pipeline in engine batches, per-row metrics, a
summary, and a resume after an interruption that redoes no finished row."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recagent.batch import BatchConfig, read_rows, row_metrics, run_batch
from recagent.errors import DataError, EmptyInputError


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_row_metrics():
    m = row_metrics(["a", "b", "c"], ["b"], 3)
    assert m["hit@3"] == 1.0 and m["recall@3"] == 1.0 and abs(m["ndcg@3"] - 1 / 1.5849625) < 1e-6
    assert row_metrics(["a"], ["z"], 1) == {"hit@1": 0.0, "ndcg@1": 0.0, "recall@1": 0.0}


@pytest.mark.parametrize(
    ("lines", "match"),
    [
        (['{"user_id": "1"}', "{not json"], "row 2.*invalid JSON"),
        (['{"id": "a", "user_id": "1"}', '{"id": "a", "user_id": "2"}'], "duplicate id 'a'"),
        (['{"expected": ["1"]}'], "neither a message nor a user id"),
        (['{"user_id": "1", "k": 0}'], "row 1.*k"),
        (['{"user_id": "1", "colour": "red"}'], "colour"),
        (["[1, 2]"], "JSON object"),
    ],
)
def test_bad_input_files_fail_before_any_work(tmp_path, lines, match):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=match) as e:
        read_rows(path)
    assert str(path) in e.value.message
    with pytest.raises(EmptyInputError):
        read_rows(_write(tmp_path / "empty.jsonl", []))
    with pytest.raises(DataError, match="not found"):
        read_rows(tmp_path / "missing.jsonl")


@pytest.mark.slow
def test_batch_runs_resumes_and_never_redoes_rows(tmp_path, agent_pipeline, retr_split):
    from recagent.agent import RecAgent

    # the shared engine and index; reasons templated to keep the test short
    pipe = RecAgent(agent_pipeline.dataset, agent_pipeline.retriever, agent_pipeline.llm,
                    agent_pipeline.config.model_copy(update={"explain": False}))  # fmt: skip
    # each user's history up to (not including) the test item, which is the expected item: the
    # pipeline never returns history, so the target must not be in it
    rows = [{"id": f"u{u}", "user_id": str(retr_split.user_ids[u]),
             "history": [str(retr_split.item_ids[c]) for c in retr_split.history(u, "test")],
             "expected": [str(retr_split.item_ids[retr_split.target(u, "test")])]} for u in range(5)]  # fmt: skip
    rows.insert(2, {"id": "bad", "user_id": "no-such-user"})
    rows.append(
        {"id": "c1", "message": "an animated movie like Toy Story", "session_id": "s-batch", "expected": ["3114"]}
    )
    rows.append({"id": "c2", "message": "more", "session_id": "s-batch"})
    src = _write(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    cfg = BatchConfig(out=out, batch_size=3, k=5, progress=False)

    seen: list[str] = []

    def interrupt_after_first_batch(rec):
        seen.append(rec["id"])
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_batch(pipe, read_rows(src), cfg, on_row=interrupt_after_first_batch)
    first = [json.loads(line)["id"] for line in out.read_text().splitlines()]
    assert first == [r["id"] for r in rows[:3]]
    with out.open("a") as f:
        f.write('{"id": "u3", "ok": tr')  # a crash in the middle of writing a line

    again: list[str] = []
    summary = run_batch(pipe, read_rows(src), cfg, on_row=lambda rec: again.append(rec["id"]))
    assert again == [r["id"] for r in rows[3:]]  # nothing finished before was redone
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in lines) == sorted(r["id"] for r in rows)  # each row once
    by_id = {r["id"]: r for r in lines}
    assert by_id["bad"]["ok"] is False and "unknown user" in by_id["bad"]["error"]
    for r in rows:
        if r.get("expected") and r["id"] != "bad":
            got, (want,) = [i["item_id"] for i in by_id[r["id"]]["items"]], r["expected"]
            m = by_id[r["id"]]["metrics"]
            # the metrics are those of the returned list against the expected item
            assert m["hit@5"] == float(want in got[:5])
            assert m["ndcg@5"] == pytest.approx(1 / np.log2(got.index(want) + 2) if want in got[:5] else 0.0)
    assert by_id["c1"]["items"]
    # c2 continues c1's conversation (same session, file order): new picks only
    c1_items = {i["item_id"] for i in by_id["c1"]["items"]}
    assert by_id["c2"]["items"] and not {i["item_id"] for i in by_id["c2"]["items"]} & (c1_items | {"1"})
    assert summary.input_rows == len(rows) and summary.skipped_done_before == 3 and summary.done_now == len(rows) - 3
    assert summary.failed == 1
    assert {"p50", "p95"} <= set(summary.latency_ms) and "hit@5" in summary.metrics
    assert json.loads((tmp_path / "out.jsonl.summary.json").read_text())["input_rows"] == len(rows)

    done = run_batch(pipe, read_rows(src), cfg)  # a third run has nothing left to do
    assert done.done_now == 0 and done.skipped_done_before == len(rows)


def _strict_pipeline(split, retriever, llm):
    """The batch path over ``llm`` as `recagent batch` runs it (strict: no fallback), reasons templated."""
    from fixtures_agent import build_test_agent

    from recagent.agent import RecAgent
    from recagent.batch import strict_config

    base = build_test_agent(split, retriever, llm)
    return RecAgent(base.dataset, base.retriever, llm, strict_config(base.config).model_copy(update={"explain": False}))


def _flaky_server():
    """The fake backend as a server whose failures may pass: it fails on every prompt that holds
    its ``poison`` word (a row the server cannot take) and counts those refusals."""
    from recagent.llm import FakeBackend, LLMBackendError

    class Flaky(FakeBackend):
        transient_failures = True
        poison: str | None = "zebra"
        refused = 0

        def _score(self, ids, allowed, adapter):
            if self.poison and any(self.poison in self.tokenizer.decode(p) for p in ids):
                self.refused += 1
                raise LLMBackendError("the vLLM server at http://vllm-1:8000 failed (503): overloaded")
            return super()._score(ids, allowed, adapter)

    return Flaky()


def test_a_row_the_llm_server_fails_is_retried_then_marked_failed_and_redone_by_a_rerun(
    tmp_path, retr_split, retr_system, caplog
):
    from recagent.batch import write_parquet

    flaky = _flaky_server()
    pipe = _strict_pipeline(retr_split, retr_system, flaky)
    hist = [[str(retr_split.item_ids[c]) for c in retr_split.history(u, "test")] for u in range(4)]
    rows = [{"id": f"u{u}", "history": h} for u, h in enumerate(hist)]
    rows.insert(1, {"id": "z", "history": hist[0], "query": "a zebra documentary"})
    src = _write(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    cfg = BatchConfig(out=out, batch_size=5, k=5, progress=False, llm_retries=1, retry_wait_s=0)
    summary = run_batch(pipe, read_rows(src), cfg)
    by_id = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert sorted(by_id) == sorted(r["id"] for r in rows)
    assert by_id["z"]["ok"] is False and by_id["z"]["retry"] is True
    assert "failed (503): overloaded" in by_id["z"]["error"] and "2 tries" in by_id["z"]["error"]
    assert all(by_id[r["id"]]["ok"] and len(by_id[r["id"]]["items"]) == 5 for r in rows if r["id"] != "z")
    assert summary.failed == 1 and summary.done_now == 5
    # two tries of the whole batch, then each row alone (only z is refused again)
    assert [r.message.split(":")[0] for r in caplog.records if r.name == "recagent.batch"] == [
        "batch of 5 rows, try 1",
        "batch of 5 rows, try 2",
    ]
    assert flaky.refused > 2

    redone: list[str] = []
    flaky.poison = None  # the server takes it now: a rerun does that row only, and its record wins
    again = run_batch(pipe, read_rows(src), cfg, on_row=lambda r: redone.append(r["id"]))
    assert redone == ["z"] and again.failed == 0 and again.skipped_done_before == 4
    table = write_parquet(out, tmp_path / "out.parquet")
    import pyarrow.parquet as pq

    t = pq.read_table(table).to_pydict()
    assert sorted(t["id"]) == sorted(r["id"] for r in rows) and all(t["ok"])


def test_an_in_process_engine_that_dies_stops_the_batch(tmp_path, retr_split, retr_system):
    """Its failure does not pass (every next row would fail): the run stops, to be resumed."""
    from recagent.llm import FakeBackend, LLMBackendError

    dead = FakeBackend()
    dead.healthy = False
    pipe = _strict_pipeline(retr_split, retr_system, dead)
    src = _write(tmp_path / "in.jsonl", [{"id": "a", "history": [str(retr_split.item_ids[0])]}])
    with pytest.raises(LLMBackendError):
        run_batch(pipe, read_rows(src), BatchConfig(out=tmp_path / "out.jsonl", progress=False, retry_wait_s=0))
    assert not (tmp_path / "out.jsonl").read_text()
