"""Quiet by default: `recagent recommend` prints its results and stage lines, while the engines'
logs and warnings (vLLM, torch, transformers) go to a log file named once; --verbose shows them."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

# vLLM's log format "(MainProcess pid=1) INFO 11-30 08:44:39 [model.py:733] ...", glog lines
# from torch's C++ ("W1130 08:44:39.701000 21511 torch/_library/triton.py:53] ..."), Python
# warnings ("UserWarning: ..."), and the native noise named in issue 14
NOISE = re.compile(
    r"(INFO|WARNING|DEBUG) \d\d-\d\d \d\d:\d\d:\d\d \[[\w.]+:\d+\]|^[IWE]\d{4} \d\d:\d\d|Warning: |tcmalloc|Triton|NUMA"
    r"|^\d\d:\d\d:\d\d (INFO|WARNING) (vllm|torch)",  # vLLM's records as our log file writes them
    re.M,
)


@pytest.fixture(scope="module")
def shop(tmp_path_factory, tiny_catalog, retr_dataset):
    """A 30-item data folder: the index builds in seconds; the engine still starts (for reasons)."""
    folder = tmp_path_factory.mktemp("shop")
    cat = tiny_catalog.items.reset_index()[["item_id", "title", "genres"]]
    cat["genres"] = cat["genres"].map("|".join)
    cat.to_csv(folder / "catalog.csv", index=False)
    df = retr_dataset.interactions.df
    df = df[df["item_id"].isin(cat["item_id"])]
    df.to_csv(folder / "interactions.csv", index=False)
    return folder, str(df["user_id"].iloc[0])


def _recommend(shop, tmp_path, *extra: str) -> subprocess.CompletedProcess:
    folder, user = shop
    env = {**os.environ, "RECAGENT_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "120"}
    env.pop("RECAGENT_VERBOSE", None)
    # the bundled model's converted copy is reused from the real cache (no second conversion)
    env["RECAGENT_MODEL"] = os.environ.get("RECAGENT_MODEL") or _bundled_model()
    args = ["recommend", "--user", user, "--data", str(folder), "--chroma-path", str(tmp_path / "db"), "--k", "3"]
    return subprocess.run([sys.executable, "-m", "recagent.cli", *args, *extra], capture_output=True, text=True,
                          timeout=300, env=env)  # fmt: skip


def _bundled_model() -> str:
    from recagent.models import resolve_llm_path

    return str(resolve_llm_path(None))


def test_quiet_by_default_and_everything_with_verbose(shop, tmp_path):
    quiet = _recommend(shop, tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    out = quiet.stdout + quiet.stderr
    assert not NOISE.search(out), NOISE.search(out).group(0)
    assert "recommendations for user" in quiet.stdout  # the results table is there
    where = re.search(r"engine logs and warnings: (\S+)", quiet.stderr)
    assert where and quiet.stderr.count("engine logs and warnings") == 1
    assert NOISE.search(open(where.group(1), encoding="utf-8").read())  # the noise went to the file

    loud = _recommend(shop, tmp_path, "--verbose")
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert NOISE.search(loud.stdout + loud.stderr)
    assert "engine logs and warnings" not in loud.stderr
