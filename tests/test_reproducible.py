"""One run, same answers (issue 26): an embedded index leaves nothing in Chroma's log after a
write (every open then reads one HNSW graph), a refit with the same factors writes nothing, a
retriever rebuilt from a shipped fitted state fits nothing and returns the same candidates, and
a batch-invariant engine scores a prompt to the same bits whichever prompts share its batch.

Real parts: embedded Chroma (the pinned chromadb's folder layout), the 250-movie slice of
ml-latest-small, and the bundled model on the session's vLLM engine, scoring batch-invariantly."""

from __future__ import annotations

import pickle
import shutil
import sqlite3

import numpy as np
import pytest

from recagent.components import Query
from recagent.retrieval import Retriever
from recagent.store import IndexConfig, ItemIndex
from recagent.store.settle import BATCH_SIZE, pending_ops


def _newest_op(folder) -> int:
    with sqlite3.connect(folder / "chroma.sqlite3") as con:
        return int(con.execute("SELECT MAX(seq_id) FROM embeddings_queue").fetchone()[0] or 0)


def _pending(index: ItemIndex, folder) -> dict[str, int | None]:
    return {c.name: pending_ops(folder, str(c.id)) for c in index.client.list_collections()}


@pytest.fixture
def built(tmp_path, retr_split):
    """A fresh folder with the slice's content collection and ALS factors of 250 items."""
    folder = tmp_path / "chroma"
    index = ItemIndex(IndexConfig(path=str(folder), name="repro", progress=False))
    retriever = Retriever(index, depth=30, cf_models={"cf": {"name": "als", "iterations": 3}})
    retriever.fit(retr_split.train_data("test"))
    return folder, index, retriever


def test_index_writes_leave_nothing_in_chromas_log(built, retr_split):
    folder, index, _ = built
    # 250 items is past Chroma's batch size: without settling, 250 writes would wait in the log
    assert len(retr_split.dataset.catalog.ids) > BATCH_SIZE
    assert _pending(index, folder) == {"repro-content": 0, "repro-cf": 0}
    catalog = retr_split.dataset.catalog
    index.upsert_items(catalog, catalog.ids[: BATCH_SIZE + 20])  # item cold start: the same items again
    assert _pending(index, folder) == {"repro-content": 0, "repro-cf": 0}


def test_a_refit_with_the_same_factors_writes_nothing(built, retr_split):
    folder, index, retriever = built
    before = _newest_op(folder)
    retriever.fit(retr_split.train_data("test"))  # ALS on one BLAS thread: the same factors
    assert _newest_op(folder) == before


def test_two_copies_of_a_written_folder_find_the_same_neighbours(built, tmp_path):
    import chromadb

    folder, index, _ = built
    index.close()
    found = []
    for n in range(2):
        copy = tmp_path / f"copy{n}"
        shutil.copytree(folder, copy)
        client = chromadb.PersistentClient(path=str(copy))
        col = client.get_collection("repro-cf")
        got = col.get(include=["embeddings"])
        queries = np.asarray(got["embeddings"], dtype=np.float32)[::2] + 0.01
        found.append(col.query(query_embeddings=queries, n_results=20, include=["distances"]))
        client.close()
    assert found[0]["ids"] == found[1]["ids"]
    assert found[0]["distances"] == found[1]["distances"]


def test_a_shipped_fitted_retriever_fits_nothing_and_finds_the_same(built, retr_split, tmp_path, monkeypatch):
    folder, index, retriever = built
    queries = [Query(user_id=str(retr_split.user_ids[u]), history=tuple(str(retr_split.item_ids[c])
               for c in retr_split.history(u, "test"))) for u in range(25)]  # fmt: skip
    want = [retriever(q) for q in queries]
    shipped = pickle.loads(pickle.dumps(retriever.fitted_state()))  # what Ray's object store does
    index.close()
    copy = tmp_path / "actor-copy"
    shutil.copytree(folder, copy)

    def refuse(*a, **k):
        raise AssertionError("a shipped retriever must not fit or write")

    monkeypatch.setattr("recagent.cf.make_baseline", refuse)
    monkeypatch.setattr(ItemIndex, "set_cf_vectors", refuse)
    monkeypatch.setattr(ItemIndex, "build", refuse)
    again = Retriever.from_fitted(ItemIndex(IndexConfig(path=str(copy), name="repro", progress=False)), shipped)
    got = [again(q) for q in queries]
    assert [g.ids for g in got] == [w.ids for w in want]
    assert [list(g.scores) for g in got] == [list(w.scores) for w in want]
    assert _newest_op(copy) == _newest_op(folder)


def test_two_builds_of_a_small_collection_find_the_same_exact_neighbours(tmp_path, retr_split):
    """Chroma inserts with several threads, so two builds make two graphs; a collection of at most
    ``exact_up_to`` items is searched whole, so both give the exact top k. ef_search 10 makes the
    graph search approximate enough to show it on 250 items (``exact_up_to=0``: 14-20 of 250 lists
    differ between the builds, 36-39 miss an exact neighbour)."""
    catalog = retr_split.dataset.catalog
    ids = list(catalog.ids)
    vecs = np.random.default_rng(0).normal(size=(len(ids), 16)).astype(np.float32)
    got = []
    for run in range(2):
        index = ItemIndex(IndexConfig(path=str(tmp_path / f"b{run}"), name="repro", ef_search=10, progress=False))
        index.set_cf_vectors(catalog, ids, vecs, space="cosine")
        got.append([[h.item_id for h in hits] for hits in index.query_cf(vecs, k=10)])
        index.close()
    unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    exact = [[ids[j] for j in np.argsort(-(unit @ u), kind="stable")[:10]] for u in unit]
    assert got[0] == got[1]
    assert [set(g) for g in got[0]] == [set(e) for e in exact]


@pytest.fixture
def invariant_engine(llm_engine):
    """The session's engine scoring batch-invariantly (a flag read per call: no second engine,
    whose close would tear down the vLLM process groups the shared one runs on)."""
    plain = llm_engine.config
    llm_engine.config = plain.model_copy(update={"batch_invariant": True})
    yield llm_engine
    llm_engine.config = plain


@pytest.mark.slow
def test_batch_invariant_ranking_gives_the_same_bits_in_any_batch(invariant_engine, retr_split, retr_system):
    """Cold in one batch, again warm, reversed, one at a time: the same ids and the same scores (with
    vLLM's default scheduling the cold and warm passes differ in about half of such rows)."""
    from recagent.agent import AgentConfig, RecAgent, RecommendRequest

    # vLLM's default engine (batched steps, prefix cache on): the invariance is in how scores are asked
    assert invariant_engine._llm.llm_engine.vllm_config.cache_config.enable_prefix_caching
    agent = RecAgent(retr_split.dataset, retr_system, invariant_engine,
                     AgentConfig(data=retr_split.dataset.name, k=10, explain=False, cf_model="none", adapter="none"))  # fmt: skip
    requests = [RecommendRequest(history=[str(retr_split.item_ids[c]) for c in retr_split.history(u, "test")])
                for u in range(16)]  # fmt: skip

    def lists(reqs):
        return [[(it.item_id, it.score) for it in r.items] for r in agent.recommend_many(reqs)]

    cold = lists(requests)
    assert all(len(x) == 10 for x in cold)
    assert lists(requests) == cold
    assert lists(requests[::-1])[::-1] == cold
    assert [lists([r])[0] for r in requests[:6]] == cold[:6]
