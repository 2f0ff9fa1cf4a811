"""Scale: the bounded sequence graph (exact, top-k, peak memory), the memory budget's refusals,
and the synthetic data generator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from recagent.cf import EASE
from recagent.data import TrainData, load_dataset
from recagent.data.budget import ENV, MemoryBudgetError, memory_budget_gb
from recagent.errors import ConfigError
from recagent.retrieval.sequence import cooccurrence_graph, graph_from_codes, sequence_graph

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from synth_data import SynthConfig, generate  # noqa: E402


def reference_graph(sequences, pos, window, backward, power) -> sp.csr_matrix:
    """The unbounded graph as it was built before the bounded build (all pairs at once)."""
    rows, cols, vals = [], [], []
    for seq in sequences:
        codes = np.array([pos[i] for i in seq if i in pos], dtype=np.int64)
        for d in range(1, min(window, len(codes) - 1) + 1):
            rows.append(codes[:-d])
            cols.append(codes[d:])
            vals.append(np.full(len(codes) - d, 1.0 / d**power))
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    m = sp.csr_matrix(
        (np.concatenate([v, backward * v]), (np.concatenate([r, c]), np.concatenate([c, r]))), shape=(len(pos),) * 2
    )
    m.setdiag(0)
    m.eliminate_zeros()
    sums = np.asarray(m.sum(axis=1)).ravel()
    sums[sums == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / sums) @ m)


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(SynthConfig(users=400, items=600, per_user=40, seed=3), out)
    return out


@pytest.fixture(scope="module")
def synth_data(synth) -> TrainData:
    return TrainData.from_dataset(load_dataset(synth))


def _graph(data: TrainData, **kw) -> sp.csr_matrix:
    return graph_from_codes(data.sequences, np.arange(data.n_items), data.n_items, 20, 0.5, 0.5, **kw)


def test_bounded_graph_equals_the_unbounded_one_when_k_covers_every_neighbour(synth_data):
    ids = [str(i) for i in synth_data.item_ids]
    ref = reference_graph(
        (synth_data.history_ids(u) for u in range(synth_data.n_users)), {i: p for p, i in enumerate(ids)}, 20, 0.5, 0.5
    )
    widest = int(np.diff(ref.indptr).max())
    for kw in (
        {"top_k": None},
        {"top_k": widest},
        {"top_k": None, "scratch_bytes": 2**16},
    ):  # tiny scratch: many blocks and parts
        g = _graph(synth_data, **kw)
        assert g.dtype == np.float32 and g.indices.dtype == np.int32 and g.indptr.dtype == np.int32
        assert g.nnz == ref.nnz and abs(g - ref).max() < 1e-6, kw
    # the string-id entry point builds the same graph
    by_ids = sequence_graph((synth_data.history_ids(u) for u in range(synth_data.n_users)), {i: p for p, i in enumerate(ids)},
                            20, 0.5, 0.5, top_k=None)  # fmt: skip
    assert abs(by_ids - ref).max() < 1e-6


def test_bounded_graph_keeps_exactly_the_top_k_heaviest_with_unbounded_weights(synth_data):
    full = _graph(synth_data, top_k=None)
    k = 7
    g = _graph(synth_data, top_k=k, scratch_bytes=2**16)
    assert (np.diff(g.indptr) == np.minimum(np.diff(full.indptr), k)).all()
    for i in range(full.shape[0]):
        fc, fv = full.indices[full.indptr[i] : full.indptr[i + 1]], full.data[full.indptr[i] : full.indptr[i + 1]]
        order = np.lexsort((fc, -fv))[:k]  # heaviest first, ties: lower column
        gc, gv = g.indices[g.indptr[i] : g.indptr[i + 1]], g.data[g.indptr[i] : g.indptr[i + 1]]
        assert set(gc.tolist()) == set(fc[order].tolist()), i
        assert np.allclose(gv, full[i, gc].toarray().ravel()), i  # normalised by the full row, not the kept part


def test_graph_skips_items_outside_the_catalog_and_short_timelines():
    flat = np.array([0, 1, 2, 3, 3], dtype=np.int32)
    g = cooccurrence_graph(flat, np.array([0, 3, 4, 5]), 4, window=1, backward=0.5, power=0.0, top_k=None)
    # user 0: 0→1→2; users 1 and 2 have one item each: no pairs, and 3 is nobody's neighbour
    assert g[0].toarray().ravel().tolist() == [0, 1, 0, 0]
    assert np.allclose(g[1].toarray().ravel(), [0.5 / 1.5, 0, 1 / 1.5, 0])
    assert g[3].nnz == 0
    assert cooccurrence_graph(flat[:1], np.array([0, 1]), 4, 1, 0.5, 0.0) is None
    with pytest.raises(ValueError, match="top_k"):
        cooccurrence_graph(flat, np.array([0, 5]), 4, 1, 0.5, 0.0, top_k=0)
    codes = [np.array([0, 1, 2]), np.array([2, 0])]
    g2 = graph_from_codes(codes, np.array([-1, 0, 1]), 2, 1, 0.5, 0.0)  # code 0 is not in the catalog: dropped
    assert g2.shape == (2, 2) and g2[0, 1] == 1.0 and g2[1, 0] == 1.0


_PEAK_SCRIPT = """
import json, sys, tracemalloc
import numpy as np
from recagent.retrieval.sequence import cooccurrence_graph
rng = np.random.default_rng(0)
n_users, per_user, n_items = 5_000, 100, 2_000
flat = np.minimum(rng.zipf(1.3, n_users * per_user) - 1, n_items - 1).astype(np.int32)
offsets = np.arange(0, n_users * per_user + 1, per_user)
tracemalloc.start()
g = cooccurrence_graph(flat, offsets, n_items, 20, 0.5, 0.5, top_k=50, scratch_bytes=32 * 2**20)
print(json.dumps({"peak_mb": tracemalloc.get_traced_memory()[1] / 2**20, "nnz": int(g.nnz)}))
"""


def test_graph_build_peak_memory_is_bounded():
    """500k interactions × window 20 = 20M pairs (~1 GB if held at once); the bounded build with
    32 MB of scratch peaked at 38 MB when measured (tracemalloc counts numpy's allocations); all
    pairs in one block (no chunking) peaked at 911 MB."""
    res = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["nnz"] <= 2_000 * 50
    assert out["peak_mb"] < 80, out


def test_memory_budget_from_env(monkeypatch):
    monkeypatch.setenv(ENV, "3.5")
    assert memory_budget_gb() == 3.5
    for bad in ("lots", "0", "-2"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(ConfigError, match=ENV):
            memory_budget_gb()
    monkeypatch.delenv(ENV)
    assert 0 < memory_budget_gb() < 10_000


def test_ease_refuses_before_allocating_when_items_squared_exceed_the_budget(monkeypatch, synth_data):
    import tracemalloc

    monkeypatch.setenv(ENV, "0.005")  # 600 items → 3 × 600² × 8 B = 8.6 MB > 5 MB
    tracemalloc.start()
    try:
        with pytest.raises(MemoryBudgetError, match=r"EASE on 600 items.*over the memory budget of 0\.0 GB") as e:
            EASE().fit(synth_data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert "als" in e.value.hint and peak < 2 * 2**20  # refused before the dense Gram matrix
    monkeypatch.setenv(ENV, "0.02")
    assert EASE().fit(synth_data)._b.shape == (600, 600)  # fits when the budget allows


def test_unbounded_graph_refused_over_budget_bounded_one_builds(monkeypatch, synth_data):
    monkeypatch.setenv(ENV, "0.001")
    with pytest.raises(MemoryBudgetError, match="sequence_top_k"):
        _graph(synth_data, top_k=None)
    assert _graph(synth_data, top_k=20).nnz > 0


def test_loader_refuses_a_data_set_over_the_budget_before_reading(monkeypatch, synth):
    monkeypatch.setenv(ENV, "0.5")  # below the fixed base cost: any data set is refused
    with pytest.raises(MemoryBudgetError, match=r"interactions\.parquet: [\d,]+ interactions needs"):
        load_dataset(synth)
    env = {**os.environ, ENV: "0.5"}
    res = subprocess.run([sys.executable, "-m", "recagent.cli", "data-info", "--data", str(synth)], capture_output=True,
                         text=True, timeout=120, env=env)  # fmt: skip
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "over the memory budget" in lines[0] and ENV in lines[0]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_generator_output_loads_with_load_dataset(tmp_path, fmt):
    cfg = SynthConfig(users=300, items=400, per_user=20, seed=1, fmt=fmt, chunk_users=120)
    info = generate(cfg, tmp_path / fmt)
    ds = load_dataset(tmp_path / fmt)
    assert len(ds.interactions) == info["interactions"] and len(ds.interactions.users) == info["users"] == 300
    assert len(ds.catalog) == 400 and "genres" in ds.catalog.list_attributes
    df = ds.interactions.df
    assert not df.duplicated(["user_id", "item_id"]).any()  # an item at most once per user
    assert df.groupby("user_id").size().min() >= cfg.min_per_user
    counts = df["item_id"].value_counts()
    assert counts.iloc[0] > 10 * counts.median()  # Zipf: the head is far above the median item
    again = generate(cfg, tmp_path / "again")
    assert again["interactions"] == info["interactions"]
    assert (tmp_path / fmt / f"interactions.{fmt}").read_bytes() == (
        tmp_path / "again" / f"interactions.{fmt}"
    ).read_bytes()


def test_generator_stops_at_the_interaction_target(tmp_path):
    info = generate(SynthConfig(users=1000, items=300, per_user=10, interactions=2_000, seed=2), tmp_path)
    assert 2_000 <= info["interactions"] < 2_000 + 300  # cut after the user who reaches it
    assert len(load_dataset(tmp_path).interactions) == info["interactions"]
