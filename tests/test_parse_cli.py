"""``recagent parse`` as an integrator runs it (a subprocess): one JSON object per good input
line, in order, with exactly the documented keys; a malformed line is named by its number and
skipped while the others are parsed (issue 24, point 5)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

KEYS = ["message", "include", "exclude", "year_min", "year_max", "liked", "disliked"]


def _parse(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recagent.cli", "parse", "--data", "ml-latest-small", *args],
                          input=stdin, capture_output=True, text=True, timeout=120)  # fmt: skip


def test_jsonl_file_one_object_per_good_line_in_order(tmp_path):
    lines = [json.dumps({"message": "no horror please, something from the 90s"}), "{not json", json.dumps({"msg": "x"}),
             "", json.dumps({"message": "I loved The Matrix"}), json.dumps({"message": "  "}),
             json.dumps({"message": "anything but westerns"}, ensure_ascii=False)]  # fmt: skip
    f = tmp_path / "in.jsonl"
    f.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = _parse("--jsonl", str(f))
    assert res.returncode == 1, res.stderr  # some lines were skipped
    assert "Traceback" not in res.stderr
    out = [json.loads(x) for x in res.stdout.splitlines()]
    assert [o["message"] for o in out] == ["no horror please, something from the 90s", "I loved The Matrix",
                                            "anything but westerns"]  # fmt: skip
    assert all(list(o) == KEYS for o in out)
    assert out[0]["exclude"] == ["Horror"] and (out[0]["year_min"], out[0]["year_max"]) == (1990, 1999)
    assert out[1]["liked"] == ["2571"] and out[1]["disliked"] == []
    assert out[2]["exclude"] == ["Western"] and out[2]["include"] == []
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert [e.split(":")[1].strip() for e in errors] == ["line 2", "line 3", "line 6"], errors


def test_one_message_and_stdin_print_the_same_object():
    msg = "a war film that isn't too depressing"
    one = _parse(msg)
    piped = _parse("--jsonl", "-", stdin=json.dumps({"message": msg}) + "\n")
    assert one.returncode == 0 and piped.returncode == 0, (one.stderr, piped.stderr)
    assert json.loads(one.stdout) == json.loads(piped.stdout)
    assert list(json.loads(one.stdout)) == KEYS


def test_bad_invocations_are_one_line_errors(tmp_path):
    for args in ((), ("a comedy", "--jsonl", "-"), ("--jsonl", str(tmp_path / "missing.jsonl"))):
        res = _parse(*args)
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (args, res.stderr)


@pytest.mark.slow
def test_llm_flag_merges_the_model_parse():
    """--llm starts the engine and merges its JSON into the rules' parse where they found
    nothing (as chat does): same keys; a message the rules understood keeps their parse."""
    msgs = ["like The Matrix but no horror, from the 90s", "something heartwarming to watch tonight"]
    lines = "".join(json.dumps({"message": m}) + "\n" for m in msgs)
    rules = [json.loads(ln) for ln in _parse("--jsonl", "-", stdin=lines).stdout.splitlines()]
    res = _parse("--llm", "--jsonl", "-", stdin=lines)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-2000:]
    merged = [json.loads(ln) for ln in res.stdout.splitlines()]
    assert [list(m) for m in merged] == [KEYS, KEYS] and [m["message"] for m in merged] == msgs
    assert merged[0] == rules[0] and (merged[0]["year_min"], merged[0]["year_max"]) == (1990, 1999)
