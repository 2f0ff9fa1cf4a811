"""The `recagent` command line as a user runs it (a subprocess): options declared once with
defaults from the config classes, and bad input that costs one line and exit code 2 — no
traceback, no markup eaten, and no model loading before the ids are checked (issue 13)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command

from recagent.agent import AgentConfig
from recagent.chat import ChatConfig
from recagent.cli import app
from recagent.server import ServerConfig

AGENT_COMMANDS = ("recommend", "chat", "serve", "batch", "demo")
AGENT_OPTIONS = {"data", "model", "llm_url", "chroma_path", "chroma_host", "chroma_port", "k", "candidates",
                 "mmr_lambda", "explain", "llm_rank", "cf_model", "templates"}  # fmt: skip


# the models a bad invocation must never get to (importing them is the first step of loading them);
# chromadb is imported with the CLI, so the empty index folder is its witness instead
HEAVY = ("vllm", "sentence_transformers", "transformers")
_RECORDING_MAIN = (
    "import atexit, json, runpy, sys\n"
    "out = sys.argv.pop(1)\n"
    "atexit.register(lambda: open(out, 'w').write(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & set(%r)))))\n"
    "runpy.run_module('recagent.cli', run_name='__main__', alter_sys=True)\n"
)


def _run(*args: str, tmp_path: Path, timeout: float = 120, env: dict | None = None,
         loaded: Path | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    """``recagent ARGS`` with the index pointed at an empty folder: any model or index work shows
    there; with ``loaded``, the HEAVY packages the run imported are written to that file."""
    full_env = {**os.environ, "RECAGENT_CHROMA_PATH": str(tmp_path / "chroma"), "COLUMNS": "100", **(env or {})}
    cmd = ["-m", "recagent.cli", *args] if loaded is None else ["-c", _RECORDING_MAIN % (HEAVY,), str(loaded), *args]
    return subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=timeout, env=full_env)


def _one_line_error(res: subprocess.CompletedProcess) -> str:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    lines = [
        ln for ln in res.stderr.splitlines() if ln.strip() and not ln[:8].count(":") == 2
    ]  # drop log lines (HH:MM:SS)
    assert "Traceback" not in res.stderr and len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ") and " — hint: " in lines[0], lines[0]
    return lines[0]


def test_commands_and_every_option_documented_with_its_env_var():
    cmd = get_command(app)
    assert set(cmd.commands) == {
        "data-info",
        "eval",
        "recommend",
        "chat",
        "serve",
        "batch",
        "demo",
        "finetune",
        "forget",
        "parse",
        "config",
    }
    for name, command in cmd.commands.items():
        for p in command.params:
            if p.param_type_name == "option" and p.name != "help":
                assert p.help and str(p.envvar).startswith("RECAGENT_"), (name, p.name)
        if name in AGENT_COMMANDS:
            assert AGENT_OPTIONS <= {p.name for p in command.params}, name


def test_defaults_come_from_the_config_classes():
    cmd = get_command(app)

    def default(command: str, option: str):
        return next(p.default for p in cmd.commands[command].params if p.name == option)

    a = AgentConfig()
    for name in ("recommend", "serve", "batch"):
        assert default(name, "k") == a.k  # 10
    for name in ("chat", "demo"):
        assert default(name, "k") == ChatConfig().k  # 5: chat answers are shorter
    for name in AGENT_COMMANDS:
        assert default(name, "candidates") == a.n_candidates and default(name, "mmr_lambda") == a.mmr_lambda
        assert default(name, "explain") is a.explain and default(name, "cf_model") == a.cf_model
        assert default(name, "data") == a.data and default(name, "chroma_port") == a.chroma_port
    s = ServerConfig()
    assert (default("serve", "port"), default("serve", "max_batch"), default("serve", "request_timeout")) == (
        s.port, s.max_batch, s.request_timeout_s)  # fmt: skip
    assert (
        default("serve", "rate_limit") == s.rate_limit_per_min
        and default("serve", "max_body_bytes") == s.max_body_bytes
    )


BAD_INPUT = [
    (["recommend", "--user", ""], "--user is empty"),
    (["recommend", "--user", "no-such-user"], "unknown user id: 'no-such-user'"),
    (["chat", "--user", "999999", "-m", "hi"], "unknown user id"),
    (["demo", "--users", "1,nobody"], "'nobody'"),
    (["recommend", "--query", "x" * 50_000], "--query"),
    (["chat", "-m", "y" * 3000], "--message line 1"),
    (["recommend", "--user", "1", "--k", "lots"], "--k"),
    (["recommend", "--user", "1", "--nope"], "No such option: --nope"),
    (["recommend", "--user", "1", "--filters", "{oops"], "--filters is not valid JSON"),
    (["recommend", "--user", "1", "--filters", '{"ranges": [1]}'], '--filters: filter "ranges" must map'),
    (["recommend", "--user", "1", "--filters", '{"include": {"colour": ["red"]}}'], "unknown attribute"),
    (["recommend", "--user", "1", "--filters", '{"ranges": {"year": [1990]}}'], "must be [min, max] (null for open)"),
    (["serve", "--host", "0.0.0.0"], "without an API key"),
    (["serve", "--api-key", "has space"], "--api-key"),
    (["serve", "--cors-origin", "not-an-origin"], "--cors-origin"),
    (["forget", "--user", "1", "--url", "http://127.0.0.1:9"], "cannot reach a recagent server"),
    (["batch", "/no/such/file.jsonl"], "batch input not found"),
    (["eval", "--users", "0"], "--users must be positive"),
    (["recommend"], "--user is empty", {"RECAGENT_USER": "  ", "RECAGENT_K": "3"}),
    (["recommend", "--user", "1"], "RECAGENT_K", {"RECAGENT_K": "many"}),
]
BAD_CONFIG = "[agent.retriever]\nweights = { sequnce = 1.0 }\n"
CONFIG_COMMANDS = [["recommend", "--user", "1"], ["chat", "-m", "hi"], ["serve"], ["batch", "{dir}/in.jsonl"], ["demo"],
                   ["config", "show"], ["eval", "--systems", "popularity", "--out", "{dir}/run"]]  # fmt: skip


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory) -> dict[str, tuple[Path, object]]:
    """Every bad invocation below, each through the real entry point in a fork of one
    interpreter (tests/cli_forks.py) with its own empty index folder; case id → (folder, run)."""
    from cli_forks import run_forked

    root = tmp_path_factory.mktemp("bad-cli")
    cases, names = [], []
    for n, (args, _expect, *env) in enumerate(BAD_INPUT):
        d = root / f"input{n}"
        d.mkdir()
        cases.append((args, {"RECAGENT_CHROMA_PATH": str(d / "chroma"), **(env[0] if env else {})}))
        names.append(f"input{n}")
    for n, args in enumerate(CONFIG_COMMANDS):
        d = root / f"config{n}"
        d.mkdir()
        (d / "bad.toml").write_text(BAD_CONFIG)
        (d / "in.jsonl").write_text('{"id": "a", "user_id": "1"}\n')
        args = [a.replace("{dir}", str(d)) for a in args] + ["--config", str(d / "bad.toml")]
        cases.append((args, {"RECAGENT_CHROMA_PATH": str(d / "chroma")}))
        names.append(f"config{n}")
    runs = run_forked(cases, root / "runs", HEAVY, env={"COLUMNS": "100"})
    return {name: (root / name, run) for name, run in zip(names, runs, strict=True)}


def _nothing_loaded(folder: Path, run) -> None:
    assert not (folder / "chroma").exists()  # nothing was indexed
    assert not run.loaded, f"the error came after loading {run.loaded}"  # no engine, no embedder


@pytest.mark.parametrize("n", range(len(BAD_INPUT)), ids=[c[1][:40] for c in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_before_any_model_loads(bad_runs, n):
    folder, run = bad_runs[f"input{n}"]
    line = _one_line_error(run)
    assert BAD_INPUT[n][1] in line, line
    _nothing_loaded(folder, run)


@pytest.mark.parametrize("n", range(len(CONFIG_COMMANDS)), ids=[c[0] for c in CONFIG_COMMANDS])
def test_a_bad_config_file_is_one_line_from_every_agent_command(bad_runs, n):
    folder, run = bad_runs[f"config{n}"]
    line = _one_line_error(run)
    assert str(folder / "bad.toml") in line and "agent.retriever" in line and "'sequnce'" in line, line
    _nothing_loaded(folder, run)


def test_the_forked_runner_sees_what_a_case_imports(tmp_path):
    """The witness works: a case that reads the data set is recorded as having imported pyarrow's
    pandas bridge, which the CLI alone does not import."""
    from cli_forks import run_forked

    witness = ("pyarrow.pandas_compat", *HEAVY)
    [run, bad] = run_forked([(["parse", "a funny movie"], {}), (["recommend", "--user", "1", "--k", "lots"], {})], tmp_path, witness,
                            env={"COLUMNS": "100"})  # fmt: skip
    assert run.returncode == 0 and run.loaded == ["pyarrow.pandas_compat"], (run.stderr, run.loaded)
    assert bad.returncode == 2 and bad.loaded == []


def test_a_finished_batch_exits_without_loading_the_engine(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"id": f"r{i}", "user_id": "1"}) for i in range(3)) + "\n")
    out = tmp_path / "rows.out.jsonl"
    out.write_text("\n".join(json.dumps({"id": f"r{i}", "ok": True, "items": []}) for i in range(3)) + "\n")
    res = _run("batch", str(rows), "--out", str(out), tmp_path=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "nothing to do: all 3 rows" in res.stderr and not (tmp_path / "chroma").exists()
    out.write_text(out.read_text().splitlines()[0] + "\n")  # two rows left: this one would start the agent
    from recagent.batch import pending_rows, read_rows

    assert [r.id for r in pending_rows(read_rows(rows), out)] == ["r1", "r2"]


def test_no_arguments_prints_help(tmp_path):
    res = _run(tmp_path=tmp_path)
    assert res.returncode == 0 and "recommend" in res.stdout and "forget" in res.stdout


def test_forget_in_a_session_store_file_without_a_server(tmp_path):
    """`recagent forget --session-store FILE` edits the SQLite store directly (the chat package
    provides it; a build without stores says so in one line)."""
    import recagent.chat as chat

    db = tmp_path / "chat.db"
    if not hasattr(chat, "open_session_store"):
        res = _run("forget", "--user", "u1", "--session-store", str(db), tmp_path=tmp_path)
        assert "memory only" in _one_line_error(res)
        return
    store = chat.open_session_store(str(db))
    for s in (
        chat.ChatSession("s1", user_id="u1", likes=["1"]),
        chat.ChatSession("openai-u1"),
        chat.ChatSession("s2", user_id="u2"),
    ):
        store.put(s)
    store.close()
    res = _run("forget", "--user", "u1", "--session-store", str(db), tmp_path=tmp_path)
    assert res.returncode == 0 and "2 chat_sessions" in res.stdout, (res.stdout, res.stderr)
    store = chat.open_session_store(str(db))
    try:
        assert store.get("s1") is None and store.get("openai-u1") is None and store.get("s2") is not None
    finally:
        store.close()
