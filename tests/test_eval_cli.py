"""`recagent eval` as a user runs it (a subprocess): LLMRank runs, bad input in one line with exit
code 2 and nothing written, before any model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _eval(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RECAGENT_CHROMA_PATH": str(tmp_path / "chroma"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "recagent.cli", "eval", "--out", str(tmp_path / "run"), *args],
                          capture_output=True, text=True, timeout=300, env=env)  # fmt: skip


def _one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in res.stderr, res.stderr
    assert " — hint: " in errors[0], errors[0]
    return errors[0]


def _negatives(split, u: int, k: int) -> list[str]:
    seen = set(split.sequences[u].tolist())
    return [str(split.item_ids[c]) for c in range(split.n_items) if c not in seen][:k]


@pytest.fixture(scope="module")
def candidate_file(ml_split, tmp_path_factory):
    """Line 1 fine, line 2 an unknown user, line 3 an unknown item among 19 known ones."""
    path = tmp_path_factory.mktemp("cands") / "ml.random"
    u0, u1 = (str(ml_split.user_ids[u]) for u in (0, 1))
    path.write_text(f"{u0}\t{' '.join(_negatives(ml_split, 0, 19))}\n"
                    "ghost\t1 2 3\n"
                    f"{u1}\t{' '.join(_negatives(ml_split, 1, 19))} 99999999\n")  # fmt: skip
    return path


BAD_FLAGS = [
        (["--protocol", "llmrank", "--systems", "popularity", "--n-candidates", "5000"],
         "5000 candidates per user is out of range: the filtered catalog of ml-latest-small has 3650 items"),
        (["--protocol", "llmrank", "--systems", "llm", "--n-candidates", "27", "--users", "2"],
         "27 candidates but the ranker has 26 labels"),
        (["--protocol", "other"], "unknown protocol 'other'"),
        (["--candidates-file", "x.tsv"], "--candidates-file and --skip-unknown belong to the LLMRank protocol"),
        (["--protocol", "llmrank", "--candidates-file", "no-such.tsv"], "candidate file not found: no-such.tsv"),
        (["--systems", "llm", "--llm-model", "qwen", "--users", "2"], "--llm-model names a model on a server"),
        (["--systems", "ease", "--permutations", "3"], "--permutations applies to the llm system"),
        (["--protocol", "llmrank", "--systems", "popularity", "--n-candidates", "1"], "--n-candidates 1 is too few"),
]  # fmt: skip


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory) -> list[tuple[Path, object]]:
    """Every bad invocation below through the real entry point, each in a fork of one interpreter
    (tests/cli_forks.py) with its own run and index folders."""
    from cli_forks import run_forked

    root = tmp_path_factory.mktemp("bad-eval")
    dirs = [root / f"case{n}" for n in range(len(BAD_FLAGS))]
    cases = [(["eval", "--out", str(d / "run"), *args], {"RECAGENT_CHROMA_PATH": str(d / "chroma")})
             for d, (args, _) in zip(dirs, BAD_FLAGS, strict=True)]  # fmt: skip
    runs = run_forked(cases, root / "runs", ("vllm", "transformers", "sentence_transformers"), env={"COLUMNS": "200"})
    return list(zip(dirs, runs, strict=True))


@pytest.mark.parametrize("n", range(len(BAD_FLAGS)), ids=[m[:40] for _, m in BAD_FLAGS])
def test_bad_flags_are_one_line(bad_runs, n):
    folder, run = bad_runs[n]
    line = _one_line_error(run)
    assert BAD_FLAGS[n][1] in line, line
    assert not (folder / "run").exists() and not (folder / "chroma").exists()  # refused before any work
    assert not run.loaded, f"refused only after loading {run.loaded}"


def test_candidate_file_errors_name_the_line_and_skip_unknown_counts(candidate_file, tmp_path):
    base = ["--protocol", "llmrank", "--systems", "popularity,ease", "--candidates-file", str(candidate_file)]
    line = _one_line_error(_eval(*base, tmp_path=tmp_path))
    assert "ml.random line 2: unknown user id 'ghost'" in line and "--skip-unknown" in line
    res = _eval(*base, "--skip-unknown", tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "skipped 1 unknown users, 1 unknown items" in res.stderr
    data = json.loads((tmp_path / "run" / "results.json").read_text())
    assert data["protocol"]["candidates"]["skipped"] == {"unknown_users": 1, "unknown_items": 1}
    assert data["protocol"]["candidates"]["kind"] == "file" and data["n_users_evaluated"] == 2
    for name in ("popularity", "ease"):
        s = data["systems"][name]
        assert s["n_users"] == 2 and s["users_per_s"] > 0
        assert s["rank_seconds"] == pytest.approx(2 / s["users_per_s"], abs=6e-4)  # both rounded to 3 decimals
    assert "user/s" in res.stderr  # the progress bar
