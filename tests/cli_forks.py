"""Many ``recagent`` invocations for the price of one interpreter start.

Each invocation runs the real entry point (``recagent.cli.main``: argument parsing, the quiet
output set-up, the one-line errors, the exit code) in a fork of one interpreter that imported the
CLI once, so a bad-input case costs a fork (~0.1 s) instead of a Python start and the CLI's
imports (~3 s). A fork starts with the parent's modules and nothing else: what a case imports on
its way to an error is still its own, and recorded (``loaded``: the modules of ``heavy``, a
package name or a full module name, that the case imported)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Run", "run_forked"]

_RUNNER = r"""
import json, os, sys, traceback
spec = json.load(open(sys.argv[1]))
heavy = set(spec["heavy"])
from recagent.cli import main
for name in spec["preload"]:
    __import__(name)
def hits():
    return sorted(m for m in sys.modules if m in heavy or m.split(".")[0] in heavy)
pre = hits()
assert not pre, f"the CLI itself imports {pre}"
codes = []
for case in spec["cases"]:
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            out = os.open(case["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            err = os.open(case["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(out, 1); os.dup2(err, 2)
            sys.stdout = os.fdopen(1, "w", buffering=1); sys.stderr = os.fdopen(2, "w", buffering=1)
            os.environ.update(case["env"])
            try:
                main(case["args"])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            loaded = hits()
            with open(case["loaded"], "w") as f:
                json.dump(loaded, f)
        except BaseException:
            traceback.print_exc()
            code = 99
        finally:
            try:
                sys.stdout.flush(); sys.stderr.flush()
            finally:
                os._exit(code)
    _, status = os.waitpid(pid, 0)
    codes.append(os.waitstatus_to_exitcode(status))
json.dump(codes, open(sys.argv[2], "w"))
"""


@dataclass
class Run:
    """One invocation's outcome, shaped like :class:`subprocess.CompletedProcess`."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str
    loaded: list[str]


def run_forked(cases: list[tuple[list[str], dict[str, str]]], work: Path, heavy: tuple[str, ...],
               env: dict[str, str] | None = None, timeout: float = 300,
               preload: tuple[str, ...] = ("torch",)) -> list[Run]:  # fmt: skip
    """Run each ``(args, extra_env)`` as ``recagent ARGS``, in order; ``env`` is set for all (before
    the CLI is imported: ``COLUMNS`` and the like are read then). ``preload`` is imported once
    before the forks: the quiet set-up of engine commands imports torch, ~1 s a case otherwise
    (its log handlers then write to the case's log file, not its terminal, which these cases
    do not look at)."""
    work.mkdir(parents=True, exist_ok=True)
    spec = {"heavy": list(heavy), "preload": list(preload), "cases": []}
    for n, (args, extra) in enumerate(cases):
        spec["cases"].append({"args": list(args), "env": dict(extra), "stdout": str(work / f"{n}.out"),
                              "stderr": str(work / f"{n}.err"), "loaded": str(work / f"{n}.loaded")})  # fmt: skip
    (work / "spec.json").write_text(json.dumps(spec))
    res = subprocess.run([sys.executable, "-c", _RUNNER, str(work / "spec.json"), str(work / "codes.json")],
                         capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    codes = json.loads((work / "codes.json").read_text())
    out = []
    for n, (args, _) in enumerate(cases):
        loaded = work / f"{n}.loaded"
        out.append(Run(list(args), codes[n], (work / f"{n}.out").read_text(), (work / f"{n}.err").read_text(),
                       json.loads(loaded.read_text()) if loaded.exists() else ["<no record: the case crashed>"]))  # fmt: skip
    return out
