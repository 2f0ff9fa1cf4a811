"""Retriever and item index: real Chroma, real MiniLM, small slices of ml-latest-small.

Session fixtures (tests/fixtures_retriever.py) embed ~250 movies once; tests that change an
index build their own from ``tiny_catalog`` (30 movies) in a temporary folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recagent.data import Catalog
from recagent.embeddings import (
    BUNDLED_MODEL,
    LangChainEmbeddings,
    SentenceEmbeddingFunction,
    VectorsOnlyEmbeddingFunction,
    encode,
)
from recagent.errors import ConfigError, EmptyInputError, ModelPathError, UnknownIdError
from recagent.eval.metrics import target_ranks
from recagent.retriever import Retriever, RetrieverConfig, RetrieverSystem, rrf_fuse
from recagent.store import IndexConfig, ItemFilter, ItemIndex, attribute_schema

REPO = Path(__file__).resolve().parent.parent


def _passes(catalog: Catalog, item_id: str, f: dict) -> bool:
    """Reference semantics of a filter, written out plainly for the tests."""
    row = catalog.get(item_id)
    for attr, vals in f.get("include", {}).items():
        v = row.get(attr)
        have = set(v) if isinstance(v, list) else {v}
        if not have & set(vals):
            return False
    for attr, vals in f.get("exclude", {}).items():
        v = row.get(attr)
        have = set(v) if isinstance(v, list) else {v}
        if have & set(vals):
            return False
    for attr, (lo, hi) in f.get("ranges", {}).items():
        v = row.get(attr)
        if v is None or (lo is not None and v < lo) or (hi is not None and v > hi):
            return False
    return True


def _user_history(split, u: int) -> list[str]:
    return [str(split.item_ids[c]) for c in split.history(u, "test")]


# ----------------------------------------------------------------------------------------
# fusion


def test_rrf_fusion_order_on_a_hand_made_case():
    rankings = {"a": ["x", "y", "z"], "b": ["y", "w", "x"], "c": ["w"]}
    out = rrf_fuse(rankings, {"a": 1.0, "b": 1.0, "c": 0.5}, rrf_k=1.0)
    # x: 1/2 + 1/4 = .75; y: 1/3 + 1/2 = .833; w: 1/3 + .5/2 = .583; z: 1/4
    assert [c.item_id for c in out] == ["y", "x", "w", "z"]
    assert out[0].sources == {"a": 2, "b": 1}
    assert out[0].score == pytest.approx(1 / 3 + 1 / 2)
    # a heavier weight on "a" puts its first item on top
    assert rrf_fuse(rankings, {"a": 3.0, "b": 1.0, "c": 0.5}, rrf_k=1.0)[0].item_id == "x"


def test_rrf_ties_break_by_best_rank_then_id():
    out = rrf_fuse({"a": ["p", "q"], "b": ["q", "p"]}, {"a": 1.0, "b": 1.0})
    assert [c.item_id for c in out] == ["p", "q"]  # equal scores and best ranks → id order


# ----------------------------------------------------------------------------------------
# filters and seen items


FILTERS = [
    {"include": {"genres": ["Comedy"]}},
    {"exclude": {"genres": ["Drama", "Horror"]}},
    {"ranges": {"year": [1990, 1999]}},
    {"include": {"genres": ["Action", "Sci-Fi"]}, "exclude": {"genres": ["Comedy"]}, "ranges": {"year": [1980, None]}},
]


@pytest.mark.parametrize("f", FILTERS)
def test_filters_hold_and_seen_items_are_excluded(retr_system, retr_split, f):
    r = retr_system.retriever
    catalog = r.catalog
    for u in range(3):
        hist = _user_history(retr_split, u)
        res = r.retrieve(history=hist, k=30, filters=f)
        assert res.candidates, "a filter that matches items must return some"
        assert not set(res.ids) & set(hist)
        for c in res.candidates:
            assert _passes(catalog, c.item_id, f), (c.item_id, catalog.get(c.item_id))
        for name, ids in res.rankings.items():  # every source honours filter and exclusion
            assert not set(ids) & set(hist), name
            assert all(_passes(catalog, i, f) for i in ids), name


def test_every_candidate_names_its_sources(retr_system, retr_split):
    res = retr_system.retriever.retrieve(history=_user_history(retr_split, 0), k=20)
    assert len(res.candidates) == 20
    for c in res.candidates:
        assert c.sources
        for name, rank in c.sources.items():
            assert res.rankings[name][rank - 1] == c.item_id
    assert {"cf", "sequence", "content", "knowledge"} <= set(res.rankings)
    scores = [c.score for c in res.candidates]
    assert scores == sorted(scores, reverse=True)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    inc=st.lists(st.sampled_from(["Comedy", "Drama", "Action", "Thriller", "Romance", "Nope"]), max_size=2),
    exc=st.lists(st.sampled_from(["Comedy", "Drama", "Crime", "Sci-Fi", "Nope"]), max_size=2),
    lo=st.one_of(st.none(), st.integers(1930, 2010), st.floats(1930, 2010)),
    hi=st.one_of(st.none(), st.integers(1930, 2020), st.floats(1930, 2020)),
)
def test_in_memory_filter_mask_equals_chroma_where(retr_system, retr_index, inc, exc, lo, hi):
    spec: dict = {}
    if inc:
        spec["include"] = {"genres": inc}
    if exc:
        spec["exclude"] = {"genres": exc}
    if lo is not None or hi is not None:
        spec["ranges"] = {"year": [lo, hi]}
    f = ItemFilter.parse(spec)
    if f is None:
        return
    table = retr_system.retriever._table
    mask_ids = {table.ids[p] for p in np.flatnonzero(table.mask(f))}
    chroma_ids = set(retr_index.content().get(where=retr_index.where_for(f), include=[])["ids"])
    assert mask_ids == chroma_ids


@pytest.mark.parametrize("f", FILTERS)
def test_in_memory_post_filter_equals_chroma_where(retr_system, retr_index, retr_split, f):
    flt = ItemFilter.parse(f)
    allowed = retr_system.retriever._table.allowed(flt)
    where = retr_index.where_for(flt)
    seen = set(_user_history(retr_split, 0))
    q = encode(["a heist thriller with a twist"])
    by_where = retr_index.query_content(embeddings=q, k=15, where=where, exclude=seen)[0]
    by_mask = retr_index.query_content(embeddings=q, k=15, where=where, allowed=allowed, exclude=seen)[0]
    assert [h.item_id for h in by_mask] == [h.item_id for h in by_where]
    u = retr_system.retriever.sources[0].encoder(_user_history(retr_split, 0))[None, :]
    by_where = retr_index.query_cf(u, k=15, where=where, exclude=seen)[0]
    by_mask = retr_index.query_cf(u, k=15, where=where, allowed=allowed, exclude=seen)[0]
    assert [h.item_id for h in by_mask] == [h.item_id for h in by_where]


def test_filter_on_a_missing_attribute_is_a_clear_error(retr_system, retr_index):
    with pytest.raises(ConfigError, match=r"unknown attribute.*'director'") as e:
        retr_system.retriever.retrieve(history=["1"], filters={"include": {"director": ["Nolan"]}})
    assert "genres" in e.value.hint and "year" in e.value.hint
    with pytest.raises(ConfigError, match="unknown attribute"):
        retr_index.query_content(texts=["x"], filters={"ranges": {"runtime": [0, 90]}})
    with pytest.raises(ConfigError, match="not numeric"):
        retr_system.retriever.retrieve(history=["1"], filters={"ranges": {"genres": [1, 2]}})
    with pytest.raises(ConfigError, match="unknown filter key"):
        ItemFilter.parse({"genres": ["Comedy"]})


# ----------------------------------------------------------------------------------------
# users: unknown, cold start, newest interactions


def test_unknown_user_is_a_clear_error(retr_index, retr_dataset):
    r = Retriever.from_dataset(retr_index, retr_dataset)
    with pytest.raises(UnknownIdError, match="unknown user id: 'no-such-user'") as e:
        r.retrieve("no-such-user")
    assert "history=" in e.value.hint
    with pytest.raises(UnknownIdError, match="unknown item id"):
        r.retrieve(history=["not-an-item"])


def test_known_user_uses_stored_history(retr_index, retr_dataset):
    r = Retriever.from_dataset(retr_index, retr_dataset)
    user = retr_dataset.interactions.users[0]
    seen = set(retr_dataset.interactions.history(user))
    res = r.retrieve(user, k=10)
    assert len(res.ids) == 10 and not set(res.ids) & seen and not res.cold_start


def test_cold_start_user_is_served_from_profile_and_popularity(retr_system):
    r = retr_system.retriever
    res = r.retrieve("brand-new-user", profile={"text": "I love animated films for kids"}, k=20)
    assert res.cold_start
    assert set(res.rankings) == {"profile", "popularity"}
    genres = {g for i in res.rankings["profile"][:5] for g in r.catalog.get(i)["genres"]}
    assert genres & {"Animation", "Children"}, genres
    # no profile either: popularity alone, most popular first
    res = r.retrieve(history=[], k=5)
    assert res.cold_start and list(res.rankings) == ["popularity"]
    pop = r._pop
    assert pop[r._table.pos[res.ids[0]]] == pop.max()


def test_newest_interactions_change_retrieval_without_retraining(retr_system, retr_split):
    r = retr_system.retriever
    hist = _user_history(retr_split, 1)
    before = r.retrieve(history=hist, k=20)
    # the user just watched three films from the other end of the catalog
    new = [i for i in r.catalog.ids if i not in hist and "Animation" in r.catalog.get(i)["genres"]][:3]
    after = r.retrieve(history=hist, new_items=new, k=20)
    assert not set(new) & set(after.ids)
    assert before.ids != after.ids
    # the CF user vector is recomputed from the longer history, no refit
    enc = retr_system.retriever.sources[0].encoder
    assert not np.allclose(enc(hist), enc(hist + new))


def test_chat_query_text_drives_content_search(retr_system):
    res = retr_system.retriever.retrieve(history=[], query="toys that come alive, animated", k=5)
    assert "query" in res.rankings
    top = [retr_system.retriever.catalog.title(i) for i in res.rankings["query"][:5]]
    assert any("Toy Story" in t for t in top), top


# ----------------------------------------------------------------------------------------
# index: build, cold-start item, persistence, server, properties, concurrency


@pytest.fixture()
def tiny_index(tmp_path, tiny_catalog) -> ItemIndex:
    index = ItemIndex(IndexConfig(path=str(tmp_path / "db"), name="tiny", progress=False))
    index.build(tiny_catalog)
    return index


def test_build_is_idempotent_and_incremental(tiny_index, tiny_catalog):
    assert tiny_index.count() == len(tiny_catalog)
    again = tiny_index.build(tiny_catalog)
    assert (again.embedded, again.updated, again.deleted) == (0, 0, 0)
    items = tiny_catalog.items.copy()
    first, second = items.index[:2]
    third = next(i for i in items.index[2:] if len(items.at[i, "tags"]))
    gone = next(i for i in items.index[2:] if i != third)
    items.at[first, "title"] = "Entirely New Title (1995)"  # text changed → re-embedded
    items.at[second, "year"] = 1901  # attribute outside the text → metadata update only
    items.at[third, "tags"] = []  # tags are part of the text → re-embedded, and the key removed
    items = items.drop(index=gone)  # gone → deleted
    rep = tiny_index.build(Catalog(items, tiny_catalog.list_attributes))
    assert (rep.embedded, rep.updated, rep.deleted) == (2, 1, 1)
    got = tiny_index.content().get(ids=[first, second, third], include=["documents", "metadatas"])
    meta = dict(zip(got["ids"], got["metadatas"], strict=True))
    doc = dict(zip(got["ids"], got["documents"], strict=True))
    assert doc[first].startswith("Entirely New Title") and meta[second]["year"] == 1901
    assert "tags" not in meta[third] and "tags:" not in doc[third]
    assert tiny_index.count() == len(tiny_catalog) - 1


def test_cold_start_item_is_retrievable_at_once(tmp_path, tiny_catalog):
    index = ItemIndex(IndexConfig(path=str(tmp_path / "db"), name="cold", progress=False))
    index.build(tiny_catalog)
    r = Retriever(index, tiny_catalog, popularity={i: 1.0 for i in tiny_catalog.ids})
    new = pd.DataFrame(
        {
            "title": ["Zorblax: The Intergalactic Sheep Herders (2031)"],
            "genres": [["Sci-Fi", "Comedy"]],
            "tags": [["sheep", "space"]],
            "year": [2031],
        },  # fmt: skip
        index=pd.Index(["new-1"], name="item_id"),
    )
    r.upsert_items(new)
    assert index.count() == len(tiny_catalog) + 1
    res = r.retrieve(query="sheep herding in outer space", k=3, filters={"ranges": {"year": [2030, None]}})
    assert res.ids == ["new-1"]
    # the new item works as history (content + knowledge neighbours) before any CF training
    res = r.retrieve(history=["new-1"], k=5)
    assert res.candidates and "new-1" not in res.ids and "content" in res.rankings
    r.delete_items(["new-1"])
    assert index.count() == len(tiny_catalog)
    with pytest.raises(UnknownIdError):
        r.retrieve(history=["new-1"])


_REOPEN = textwrap.dedent(
    """
    import json, sys
    import chromadb
    import recagent.embeddings  # registers the embedding function, as every reopening process must
    from recagent.store import IndexConfig, ItemIndex

    path, name = sys.argv[1], sys.argv[2]
    col = chromadb.PersistentClient(path).get_collection(name + "-content")  # no embedding function passed
    hits = col.query(query_texts=["toys that come alive"], n_results=3)["ids"][0]
    index = ItemIndex(IndexConfig(path=path, name=name, progress=False))
    cf = index.query_cf([[1.0, 0.0, 0.0, 0.0]], k=2)[0]
    print(json.dumps({"count": index.count(), "ids": sorted(index.ids()), "text_hits": hits,
                      "ef": type(col._embedding_function).__name__, "cf": [h.item_id for h in cf],
                      "schema": index.schema()}))
    """
)


def test_reopen_persisted_index_in_a_new_process(tmp_path, tiny_catalog):
    path = tmp_path / "db"
    index = ItemIndex(IndexConfig(path=str(path), name="persist", progress=False))
    index.build(tiny_catalog)
    vecs = np.zeros((len(tiny_catalog), 4), dtype=np.float32)
    vecs[:, 1] = 1.0
    vecs[5] = [1.0, 0.0, 0.0, 0.0]
    index.set_cf_vectors(tiny_catalog, tiny_catalog.ids, vecs)
    proc = subprocess.run(
        [sys.executable, "-c", _REOPEN, str(path), "persist"], capture_output=True, text=True, timeout=300,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    import json

    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["count"] == len(tiny_catalog)
    assert out["ids"] == sorted(tiny_catalog.ids)
    assert out["text_hits"][0] == "1"  # Toy Story, found by text through the registered function
    assert out["cf"][0] == tiny_catalog.ids[5]
    assert out["schema"] == attribute_schema(tiny_catalog)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.server
def test_http_server_backend(tmp_path, tiny_catalog):
    chroma = Path(sys.executable).with_name("chroma")
    port = _free_port()
    log = open(tmp_path / "chroma.log", "w")
    proc = subprocess.Popen(
        [str(chroma), "run", "--path", str(tmp_path / "server-db"), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        import chromadb

        deadline = time.time() + 60
        while True:
            try:
                chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat()
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    raise AssertionError((tmp_path / "chroma.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        index = ItemIndex(IndexConfig(host="127.0.0.1", port=port, name="remote", progress=False))
        rep = index.build(tiny_catalog)
        assert rep.embedded == len(tiny_catalog) and index.count() == len(tiny_catalog)
        assert index.build(tiny_catalog).embedded == 0
        r = Retriever(index, tiny_catalog, popularity={i: 1.0 for i in tiny_catalog.ids})
        f = {"include": {"genres": ["Comedy"]}}
        res = r.retrieve(history=["1", "2"], k=5, filters=f)
        assert res.candidates and all(_passes(tiny_catalog, i, f) for i in res.ids)
        # a second client (another process would do the same) sees the collection and its function
        other = chromadb.HttpClient(host="127.0.0.1", port=port).get_collection("remote-content")
        assert other.query(query_texts=["toys that come alive"], n_results=1)["ids"][0] == ["1"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_dead_server_is_a_clear_error():
    index = ItemIndex(IndexConfig(host="127.0.0.1", port=_free_port(), name="nowhere", progress=False))
    with pytest.raises(ConfigError, match="cannot reach the Chroma server"):
        index.count()


_records = st.dictionaries(
    keys=st.text(alphabet="abcdefghij0123456789", min_size=1, max_size=6),
    values=st.tuples(
        st.lists(st.sampled_from(["Comedy", "Drama", "Horror", "Sci-Fi"]), max_size=3, unique=True),
        st.one_of(st.none(), st.integers(1950, 2020)),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=_records, second=_records, data=st.data())
def test_property_cf_collection_matches_the_records(tmp_path_factory, first, second, data):
    """Invariants over random record sets: count, ids and metadata match, exact self-search,
    filter results match the reference; a second store replaces the first (stale ids deleted)."""
    index = ItemIndex(IndexConfig(path=str(tmp_path_factory.mktemp("prop")), name="prop", progress=False))
    for records in (first, second):
        ids = sorted(records)
        items = pd.DataFrame(
            {
                "title": [f"item {i}" for i in ids],
                "genres": [records[i][0] for i in ids],
                "year": pd.array([records[i][1] for i in ids], dtype="Int64"),
            },  # fmt: skip
            index=pd.Index(ids, name="item_id"),
        )
        catalog = Catalog(items, ("genres",))
        vecs = np.random.default_rng(len(ids)).normal(size=(len(ids), 8)).astype(np.float32)
        index.set_cf_vectors(catalog, ids, vecs, space="cosine")
        col = index.cf()
        got = col.get(include=["metadatas"])
        assert col.count() == len(ids) and sorted(got["ids"]) == ids
        for i, m in zip(got["ids"], got["metadatas"], strict=True):
            genres, year = records[i]
            assert m.get("genres", []) == genres and m.get("year") == year and m["title"] == f"item {i}"
        j = data.draw(st.integers(0, len(ids) - 1))
        assert index.query_cf(vecs[j : j + 1], k=1)[0][0].item_id == ids[j]
        g = data.draw(st.sampled_from(["Comedy", "Drama", "Horror", "Sci-Fi"]))
        f = {"exclude": {"genres": [g]}, "ranges": {"year": [1980, None]}}
        expect = {i for i in ids if _passes(catalog, i, f)}
        hits = index.query_cf(vecs[:1], k=len(ids), filters=f)[0]
        assert {h.item_id for h in hits} == expect


def test_index_names_do_not_claim_each_other(tmp_path, tiny_catalog):
    a = ItemIndex(IndexConfig(path=str(tmp_path / "db"), name="shop", progress=False))
    b = ItemIndex(IndexConfig(path=str(tmp_path / "db"), name="shop-x", progress=False))
    ids = tiny_catalog.ids[:5]
    rng = np.random.default_rng(0)
    a.set_cf_vectors(tiny_catalog, ids, rng.normal(size=(5, 4)))
    b.set_cf_vectors(tiny_catalog, ids, rng.normal(size=(5, 4)))
    b.delete_items(ids[:1])
    assert (a.cf().count(), b.cf().count()) == (5, 4)
    a.clear()
    assert b.cf().count() == 4
    with pytest.raises(ConfigError, match="no CF vectors"):
        a.cf()


def test_concurrent_writers_and_readers(tmp_path, tiny_catalog):
    index = ItemIndex(IndexConfig(path=str(tmp_path / "db"), name="conc", progress=False))
    index.build(Catalog(tiny_catalog.items.iloc[:2].copy(), tiny_catalog.list_attributes))
    ids = tiny_catalog.ids
    chunks = [ids[2:9], ids[9:16], ids[16:23], ids[23:30]]
    errors: list[BaseException] = []
    stop = threading.Event()

    def writer(chunk):
        try:
            for i in chunk:
                index.upsert_items(tiny_catalog, [i])
        except BaseException as e:  # reported below; a thread cannot fail the test itself
            errors.append(e)

    def reader():
        try:
            while not stop.is_set():
                index.query_content(texts=["comedy"], k=3, filters={"exclude": {"genres": ["Horror"]}})
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(c,)) for c in chunks] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads[:-1]:
        t.join(timeout=300)
    stop.set()
    threads[-1].join(timeout=60)
    assert not errors, errors
    assert index.count() == len(ids) and sorted(index.ids()) == sorted(ids)


# ----------------------------------------------------------------------------------------
# embeddings


def test_registered_embedding_function_round_trips():
    from chromadb.utils.embedding_functions import known_embedding_functions

    ef = SentenceEmbeddingFunction()
    assert known_embedding_functions[ef.name()] is SentenceEmbeddingFunction
    assert ef.get_config()["model"] == BUNDLED_MODEL  # no site-packages path stored
    again = SentenceEmbeddingFunction.build_from_config(ef.get_config())
    v = np.asarray(again(["Toy Story"]))
    assert v.shape == (1, 384) and np.linalg.norm(v[0]) == pytest.approx(1.0, abs=1e-4)
    assert not ef.is_legacy()
    with pytest.raises(ConfigError, match="cannot embed text"):
        VectorsOnlyEmbeddingFunction()(["text"])


def test_langchain_adapter_shares_the_model(retr_index):
    from langchain_chroma import Chroma

    lc = LangChainEmbeddings()
    assert lc.embed_query("Toy Story") == pytest.approx(encode(["Toy Story"])[0].tolist(), abs=1e-5)
    store = Chroma(client=retr_index.client, collection_name=retr_index.content_name, embedding_function=lc)
    docs = store.similarity_search("toys that come alive", k=2)
    assert docs and "Toy Story" in docs[0].page_content


def test_missing_model_path_is_a_clear_error(tmp_path):
    missing = str(tmp_path / "no-model-here")
    for make in (
        lambda: SentenceEmbeddingFunction(missing),
        lambda: LangChainEmbeddings(missing),
        lambda: ItemIndex(IndexConfig(path=str(tmp_path / "db"), model=missing)),
        lambda: encode(["x"], missing),
    ):
        with pytest.raises(ModelPathError, match="not found") as e:
            make()
        assert "bundled" in e.value.hint
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelPathError, match="not a sentence-transformers model folder"):
        SentenceEmbeddingFunction(str(tmp_path / "empty"))


# ----------------------------------------------------------------------------------------
# clear errors for empty inputs and bad configs


def test_empty_catalog_is_a_clear_error(tmp_path, tiny_catalog):
    empty = tiny_catalog.items.iloc[:0].copy()
    with pytest.raises(EmptyInputError, match="catalog is empty"):
        Catalog(empty, tiny_catalog.list_attributes)
    index = ItemIndex(IndexConfig(path=str(tmp_path / "db"), name="empty", progress=False))
    hollow = object.__new__(Catalog)  # a catalog emptied after construction
    hollow.items, hollow.list_attributes = empty, tiny_catalog.list_attributes
    with pytest.raises(EmptyInputError, match="catalog is empty"):
        index.build(hollow)
    with pytest.raises(EmptyInputError, match="is empty.*build"):
        index.query_content(texts=["anything"], k=5)
    with pytest.raises(ConfigError, match="no CF vectors"):
        index.query_cf(np.ones((1, 4)), k=5)
    with pytest.raises(EmptyInputError):
        Retriever(index, hollow)


def test_bad_configs_are_clear_errors(retr_system):
    with pytest.raises(ConfigError, match="weights"):
        RetrieverConfig(weights={"cf": -1.0})
    with pytest.raises(ConfigError, match="invalid index name"):
        IndexConfig(name="a b")
    with pytest.raises(ConfigError, match="unknown source"):
        retr_system.retriever.retrieve(history=["1"], sources=["nope"])
    with pytest.raises(ConfigError, match="k=0"):
        retr_system.retriever.retrieve(history=["1"], k=0)
    with pytest.raises(ConfigError, match="unknown option"):
        RetrieverSystem(nope=1)




# ----------------------------------------------------------------------------------------
# harness interface


def test_retriever_system_has_the_harness_interface(retr_system, retr_split):
    from recagent.eval.harness import evaluate

    users = np.arange(retr_split.n_users)
    top = retr_system.topk(users, 20)
    assert top.shape == (len(users), 20) and top.dtype == np.int64
    for u in users[:10]:
        row = top[u][top[u] >= 0]
        assert len(set(row.tolist())) == len(row)
        assert not set(row.tolist()) & set(retr_split.history(int(u), "test").tolist())
    res = evaluate(retr_system, retr_split, "test", cutoffs=(20, 50), fit=False)
    assert 0.0 <= res.means["Recall@20"] <= res.means["Recall@50"] <= 1.0
    alone = retr_system.source_rankings(users[:5], depth=20)
    assert set(alone) >= {"cf", "sequence", "content", "knowledge", "popularity"}
    assert all(m.shape == (5, 20) for m in alone.values())
    # the fused list beats popularity alone on this slice
    tg = retr_split.targets("test")
    fused = (target_ranks(top, tg) >= 0).mean()
    pop = (target_ranks(retr_system.topk(users, 20, sources=["popularity"]), tg) >= 0).mean()
    assert fused >= pop
