"""Retriever and item index: real Chroma, real MiniLM, small slices of ml-latest-small.

Session fixtures (tests/fixtures_retriever.py) embed ~250 movies once; tests that change an
index build their own from ``tiny_catalog`` (30 movies) in a temporary folder.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from conformance import ComponentConformance
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from local_servers import free_port, start_chroma

from recagent.components import ItemList, Query
from recagent.data import Catalog, TrainData
from recagent.embeddings import (
    BUNDLED_MODEL,
    LangChainEmbeddings,
    SentenceEmbeddingFunction,
    VectorsOnlyEmbeddingFunction,
    encode,
)
from recagent.errors import ConfigError, EmptyInputError, ModelPathError, UnknownIdError
from recagent.eval.metrics import target_ranks
from recagent.retrieval import (
    CFSource,
    ContentSource,
    KnowledgeSource,
    PopularitySource,
    Retriever,
    RRFFusion,
    SequenceSource,
    TextSource,
    rrf_fuse,
    union,
)
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


def _retrieve(r: Retriever, k: int = 20, **query) -> tuple[ItemList, dict[str, list[str]]]:
    """The fused list and each source's own ranking for one query."""
    q = Query(**query)
    return r(q, n=k), {name: lst.ids for name, lst in r.source_lists(q, k).items()}


# ----------------------------------------------------------------------------------------
# fusion


def test_rrf_fusion_order_on_a_hand_made_case():
    rankings = {"a": ["x", "y", "z"], "b": ["y", "w", "x"], "c": ["w"]}
    out = rrf_fuse(rankings, {"a": 1.0, "b": 1.0, "c": 0.5}, rrf_k=1.0)
    # x: 1/2 + 1/4 = .75; y: 1/3 + 1/2 = .833; w: 1/3 + .5/2 = .583; z: 1/4
    assert out.ids == ["y", "x", "w", "z"]
    assert out.field("sources")[0] == {"a": 2, "b": 1}
    assert out.scores[0] == pytest.approx(1 / 3 + 1 / 2)
    # a heavier weight on "a" puts its first item on top
    assert rrf_fuse(rankings, {"a": 3.0, "b": 1.0, "c": 0.5}, rrf_k=1.0).ids[0] == "x"


def test_rrf_ties_break_by_best_rank_then_id():
    out = rrf_fuse({"a": ["p", "q"], "b": ["q", "p"]}, {"a": 1.0, "b": 1.0})
    assert out.ids == ["p", "q"]  # equal scores and best ranks → id order


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
    r = retr_system
    catalog = r.catalog
    for u in range(3):
        hist = _user_history(retr_split, u)
        res, rankings = _retrieve(r, 30, history=hist, filters=f)
        assert len(res), "a filter that matches items must return some"
        assert not set(res.ids) & set(hist)
        for i in res.ids:
            assert _passes(catalog, i, f), (i, catalog.get(i))
        for name, ids in rankings.items():  # every source honours filter and exclusion
            assert not set(ids) & set(hist), name
            assert all(_passes(catalog, i, f) for i in ids), name


def test_every_candidate_names_its_sources(retr_system, retr_split):
    res, rankings = _retrieve(retr_system, 20, history=_user_history(retr_split, 0))
    assert len(res) == 20
    for i, sources in zip(res.ids, res.field("sources"), strict=True):
        assert sources
        for name, rank in sources.items():
            assert rankings[name][rank - 1] == i
    assert {"cf", "sequence", "content", "knowledge"} <= set(rankings)
    assert res.scores == sorted(res.scores, reverse=True) and res.field("retrieval_score") == res.scores


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
    table = retr_system.state.table
    mask_ids = {table.ids[p] for p in np.flatnonzero(table.mask(f))}
    chroma_ids = set(retr_index.content().get(where=retr_index.where_for(f), include=[])["ids"])
    assert mask_ids == chroma_ids


@pytest.mark.parametrize("f", FILTERS)
def test_in_memory_post_filter_equals_chroma_where(retr_system, retr_index, retr_split, f):
    flt = ItemFilter.parse(f)
    allowed = retr_system.state.table.allowed(flt)
    where = retr_index.where_for(flt)
    seen = set(_user_history(retr_split, 0))
    q = encode(["a heist thriller with a twist"])
    by_where = retr_index.query_content(embeddings=q, k=15, where=where, exclude=seen)[0]
    by_mask = retr_index.query_content(embeddings=q, k=15, where=where, allowed=allowed, exclude=seen)[0]
    assert [h.item_id for h in by_mask] == [h.item_id for h in by_where]
    u = retr_system.state.cf["cf"](_user_history(retr_split, 0))[None, :]
    by_where = retr_index.query_cf(u, k=15, where=where, exclude=seen)[0]
    by_mask = retr_index.query_cf(u, k=15, where=where, allowed=allowed, exclude=seen)[0]
    assert [h.item_id for h in by_mask] == [h.item_id for h in by_where]


def test_filter_on_a_missing_attribute_is_a_clear_error(retr_system, retr_index):
    with pytest.raises(ConfigError, match=r"unknown attribute.*'director'") as e:
        retr_system(Query(history=("1",), filters={"include": {"director": ["Nolan"]}}))
    assert "genres" in e.value.hint and "year" in e.value.hint
    with pytest.raises(ConfigError, match="unknown attribute"):
        retr_index.query_content(texts=["x"], filters={"ranges": {"runtime": [0, 90]}})
    with pytest.raises(ConfigError, match="not numeric"):
        retr_system(Query(history=("1",), filters={"ranges": {"genres": [1, 2]}}))
    with pytest.raises(ConfigError, match="unknown filter key"):
        ItemFilter.parse({"genres": ["Comedy"]})


# ----------------------------------------------------------------------------------------
# users: unknown, cold start, newest interactions


def test_unknown_history_item_is_a_clear_error(retr_system):
    with pytest.raises(UnknownIdError, match="unknown item id") as e:
        retr_system(Query(history=("not-an-item",)))
    assert e.value.hint


def test_cold_start_user_is_served_from_profile_and_popularity(retr_system):
    r = retr_system
    res, rankings = _retrieve(r, 20, user_id="brand-new-user", profile={"text": "I love animated films for kids"})
    assert set(rankings) == {"profile", "popularity"}
    genres = {g for i in rankings["profile"][:5] for g in r.catalog.get(i)["genres"]}
    assert genres & {"Animation", "Children"}, genres
    # no profile either: popularity alone, most popular first
    res, rankings = _retrieve(r, 5)
    assert list(rankings) == ["popularity"]
    st = r.state
    assert st.popularity[st.table.pos[res.ids[0]]] == st.popularity.max()


def test_newest_interactions_change_retrieval_without_retraining(retr_system, retr_split):
    r = retr_system
    hist = _user_history(retr_split, 1)
    before = r(Query(history=hist), n=20)
    # the user just watched three films from the other end of the catalog
    new = [i for i in r.catalog.ids if i not in hist and "Animation" in r.catalog.get(i)["genres"]][:3]
    after = r(Query(history=hist + new), n=20)
    assert not set(new) & set(after.ids)
    assert before.ids != after.ids
    # the CF user vector is recomputed from the longer history, no refit
    enc = r.state.cf["cf"]
    assert not np.allclose(enc(hist), enc(hist + new))


def test_chat_query_text_drives_content_search(retr_system):
    res, rankings = _retrieve(retr_system, 5, text="toys that come alive, animated")
    assert "query" in rankings
    top = [retr_system.catalog.title(i) for i in rankings["query"][:5]]
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
    r = Retriever(index, cf_models={}).fit(_no_interactions(tiny_catalog))
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
    res = r(Query(text="sheep herding in outer space", filters={"ranges": {"year": [2030, None]}}), n=3)
    assert res.ids == ["new-1"]
    # the new item works as history (content + knowledge neighbours) before any CF training
    res, rankings = _retrieve(r, 5, history=["new-1"])
    assert len(res) and "new-1" not in res.ids and "content" in rankings
    r.delete_items(["new-1"])
    assert index.count() == len(tiny_catalog)
    with pytest.raises(UnknownIdError):
        r(Query(history=("new-1",)))


def _no_interactions(catalog) -> TrainData:
    """Training data with one user per item (popularity 1 each) and no sequences worth a graph."""
    ids = np.array(catalog.ids, dtype=object)
    return TrainData("tiny", catalog, ids, ids.copy(), [np.array([c]) for c in range(len(ids))],
                     [np.array([np.nan]) for _ in ids])  # fmt: skip


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


@pytest.mark.server
def test_http_server_backend(tmp_path, tiny_catalog):
    port = free_port()
    proc = start_chroma(tmp_path / "server-db", port, tmp_path / "chroma.log")
    try:
        import chromadb

        index = ItemIndex(IndexConfig(host="127.0.0.1", port=port, name="remote", progress=False))
        rep = index.build(tiny_catalog)
        assert rep.embedded == len(tiny_catalog) and index.count() == len(tiny_catalog)
        assert index.build(tiny_catalog).embedded == 0
        r = Retriever(index, cf_models={}).fit(_no_interactions(tiny_catalog))
        f = {"include": {"genres": ["Comedy"]}}
        res = r(Query(history=("1", "2"), filters=f), n=5)
        assert len(res) and all(_passes(tiny_catalog, i, f) for i in res.ids)
        # a second client (another process would do the same) sees the collection and its function
        other = chromadb.HttpClient(host="127.0.0.1", port=port).get_collection("remote-content")
        assert other.query(query_texts=["toys that come alive"], n_results=1)["ids"][0] == ["1"]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_dead_server_is_a_clear_error():
    index = ItemIndex(IndexConfig(host="127.0.0.1", port=free_port(), name="nowhere", progress=False))
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
    data = TrainData("hollow", hollow, np.array([], dtype=object), np.array([], dtype=object), [], [])
    with pytest.raises(EmptyInputError, match="catalog is empty"):
        Retriever(index).fit(data)


def test_bad_configs_are_clear_errors(retr_system):
    with pytest.raises(ConfigError, match="weights"):
        Retriever(retr_system.index, weights={"cf": -1.0})
    with pytest.raises(ConfigError, match="invalid index name"):
        IndexConfig(name="a b")
    with pytest.raises(ConfigError, match="unknown source"):
        retr_system.source_lists(Query(history=("1",)), sources=["nope"])
    with pytest.raises(ConfigError, match="n=0"):
        retr_system.source_lists(Query(history=("1",)), n=0)
    with pytest.raises(ConfigError, match="options are"):
        Retriever(retr_system.index, nope=1)
    with pytest.raises(ConfigError, match="not fitted"):
        Retriever(retr_system.index)(Query(history=("1",)))


# ----------------------------------------------------------------------------------------
# the retriever in the harness


def test_harness_asks_the_retriever_exactly_like_a_direct_call(retr_system, retr_split):
    from recagent.eval.harness import evaluate
    from recagent.pipeline import Pipeline

    users = np.arange(retr_split.n_users)
    res = evaluate(Pipeline(retr_system, name="retriever"), retr_split, "test", cutoffs=(10, 20), fit=False)
    for u in users[:10]:
        direct = retr_system(retr_split.query(int(u), "test"), n=20)
        assert [str(retr_split.item_ids[c]) for c in res.topk[u] if c >= 0] == direct.ids
        assert not set(direct.ids) & set(_user_history(retr_split, int(u)))
    # the fused list finds more targets than popularity alone on this slice
    pop = np.array([[retr_split.item_code(i) for i in retr_system(Query(), n=20).ids]] * len(users))
    hits_pop = (target_ranks(pop, retr_split.targets("test")) >= 0).mean()
    assert res.means["Recall@20"] > hits_pop


# ----------------------------------------------------------------------------------------
# the shared component conformance checks, for every source, the fusion and the retriever


class _RetrievalConformance(ComponentConformance):
    @pytest.fixture(scope="class")
    def env(self, retr_split, retr_system):
        return SimpleNamespace(split=retr_split, retriever=retr_system)


class TestRetrieverConformance(_RetrievalConformance):
    def make(self, env, **overrides):
        return Retriever(env.retriever.index, {**env.retriever.config.model_dump(), **overrides})

    def fit(self, component, env):
        return env.retriever  # the session's fitted retriever (same config), not a second fit


def _source_class(cls, name=None, text=None):
    class _T(_RetrievalConformance):
        def make(self, env, **overrides):
            state = lambda: env.retriever.state  # noqa: E731 - the retriever's current state
            return cls(state, name, **overrides) if name else cls(state, **overrides)

        def query(self, env):
            q = super().query(env)
            return Query(q.user_id, q.history, q.ratings, q.profile, text=text) if text else q

    _T.__name__ = f"Test{cls.__name__}{name or ''}Conformance"
    return _T


TestCFSourceConformance = _source_class(CFSource, "cf")
TestContentSourceConformance = _source_class(ContentSource)
TestQuerySourceConformance = _source_class(TextSource, "query", text="a heist thriller with a twist")
TestSequenceSourceConformance = _source_class(SequenceSource)
TestKnowledgeSourceConformance = _source_class(KnowledgeSource)
TestPopularitySourceConformance = _source_class(PopularitySource)


class TestFusionConformance(_RetrievalConformance):
    finds_items = False
    needs_items = True
    validates_ids = False  # fuses what the sources found; ids were checked there

    def make(self, env, **overrides):
        return RRFFusion(**overrides)

    def given(self, env):
        q = self.query(env)
        return union(env.retriever.source_lists(q, 10))


class TestMMRConformance(_RetrievalConformance):
    finds_items = False
    needs_items = True
    validates_ids = False  # re-orders what earlier stages checked

    def make(self, env, **overrides):
        from recagent.diversify import MMR

        return MMR(env.retriever.index, **overrides)


def test_every_retrieval_component_has_a_conformance_class():
    from recagent.retrieval import sources

    classes = {
        c
        for c in vars(sources).values()
        if isinstance(c, type) and issubclass(c, sources.Source) and c is not sources.Source
    }
    tested = {CFSource, ContentSource, TextSource, SequenceSource, KnowledgeSource, PopularitySource}
    assert classes == tested
