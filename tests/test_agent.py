"""The recommend pipeline end to end on real parts: Chroma index, fused retriever, vLLM ranker
(bundled SmolLM2 on the shared session engine), MMR, LLM explanations with validation."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from pydantic import ValidationError

from recagent.agent import AgentConfig, RecAgent, RecommendRequest, mmr
from recagent.errors import ConfigError, DataError, UnknownIdError
from recagent.titles import normalize_title

# ---- pure helpers (fast) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "norm"),
    [
        ("Matrix, The (1999)", "the matrix"),
        ("Star Wars: Episode IV - A New Hope (1977)", "star wars episode iv a new hope"),
        ("Seven (a.k.a. Se7en) (1995)", "seven"),
        ("Toy Story", "toy story"),
    ],
)
def test_normalize_title(title, norm):
    assert normalize_title(title) == norm


def test_mmr_keeps_order_at_lambda_one_and_spreads_at_zero():
    # items 0 and 1 are near-duplicates, 2 is different; relevance 0 > 1 > 2
    vecs = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0]])
    assert mmr([3.0, 2.0, 1.0], vecs, 2, 1.0) == [0, 1]
    assert mmr([3.0, 2.0, 1.0], vecs, 2, 0.3) == [0, 2]
    # a missing vector (zero row) counts as dissimilar; k larger than n is capped
    assert sorted(mmr([1.0, 1.0, 1.0], np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 0.0]]), 5, 0.5)) == [0, 1, 2]
    assert mmr([], None, 3, 0.5) == []
    assert mmr([-np.inf, 0.0], None, 2, 1.0) == [1, 0]


def test_config_is_typed_and_checked():
    with pytest.raises(ValidationError, match="unknown retriever option"):
        AgentConfig(retriever={"wieghts": {}})
    with pytest.raises(ValidationError):
        AgentConfig(mmr_lambda=1.5)
    with pytest.raises(ValidationError):
        RecommendRequest(user_id="1", k=0)
    with pytest.raises(ValidationError, match="extra"):
        RecommendRequest(user="1")  # a typo is an error, not silently ignored


def test_missing_data_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="not found") as e:
        RecAgent.from_config(AgentConfig(data=str(tmp_path / "nope"), chroma_path=str(tmp_path / "db")))
    assert e.value.hint


# ---- without an LLM (fast): every fallback is reported ---------------------------------------


@pytest.fixture(scope="module")
def no_llm_pipeline(retr_split, retr_index):
    from recagent.data import TrainData
    from recagent.retrieval import Retriever

    return RecAgent(
        retr_split.dataset,
        Retriever(retr_index, cf_models={}).fit(TrainData.from_dataset(retr_split.dataset)),
        None,
        AgentConfig(k=4),
    )


def test_without_llm_rank_and_explain_fall_back_and_say_so(no_llm_pipeline):
    rec = no_llm_pipeline.recommend(user_id="1")
    assert len(rec.items) == 4
    assert "rank" in rec.fallback and "explain" in rec.fallback
    assert all(it.reason and it.reason_source == "template" for it in rec.items)
    hist = set(no_llm_pipeline.dataset.interactions.history("1"))
    for it in rec.items:
        assert it.item_id not in hist
        assert set(it.cites) <= hist  # templated reasons cite real history items only


def test_bad_input_raises_clear_errors(no_llm_pipeline):
    with pytest.raises(UnknownIdError, match="user"):
        no_llm_pipeline.recommend(user_id="no-such-user")
    with pytest.raises(UnknownIdError, match="nope"):
        no_llm_pipeline.recommend(history=["1", "nope"])
    with pytest.raises(ConfigError, match="unknown attribute") as e:
        no_llm_pipeline.recommend(user_id="1", filters={"include": {"colour": ["red"]}})
    assert "genres" in e.value.hint


def test_recommend_many_keeps_bad_requests_in_their_slot(no_llm_pipeline):
    reqs = [
        RecommendRequest(user_id="1"),
        RecommendRequest(user_id="nope"),
        RecommendRequest(query="animated family film"),
    ]
    out = no_llm_pipeline.recommend_many(reqs, return_exceptions=True)
    assert isinstance(out[1], UnknownIdError)
    assert out[0].items and out[2].items and out[2].cold_start
    assert out[0].batch_size == 3


@pytest.mark.slow
def test_factory_builds_the_whole_agent_from_config(tmp_path, tiny_catalog, retr_dataset, llm_engine):
    """from_config on a generic-format data folder: index built, CF trained, engine shared."""
    import pandas as pd

    folder = tmp_path / "shop"
    folder.mkdir()
    cat = tiny_catalog.items.reset_index()[["item_id", "title", "genres"]]
    cat["genres"] = cat["genres"].map("|".join)
    cat.to_csv(folder / "catalog.csv", index=False)
    df = retr_dataset.interactions.df
    df[df["item_id"].isin(cat["item_id"])].to_csv(folder / "interactions.csv", index=False)
    cfg = AgentConfig(data=str(folder), chroma_path=str(tmp_path / "db"), k=3, n_candidates=6, explain=False)
    pipe = RecAgent.from_config(cfg, llm=llm_engine, progress=False)
    assert pipe.index.count() == len(cat) and pipe.item_noun == "item"
    user = pd.Series(df[df["item_id"].isin(cat["item_id"])]["user_id"]).iloc[0]
    rec = pipe.recommend(user_id=user)
    assert 1 <= len(rec.items) <= 3 and set(rec.ids) <= set(cat["item_id"])


# ---- the real engine -----------------------------------------------------------------------


@pytest.mark.slow
def test_known_user_gets_ranked_diverse_explained_items(agent_pipeline):
    p = agent_pipeline
    rec = p.recommend(user_id="1")
    hist = set(p.dataset.interactions.history("1"))
    assert len(rec.items) == 5 and len(set(rec.ids)) == 5
    assert not hist & set(rec.ids)
    assert "rank" not in rec.fallback, rec.fallback  # the verbalizer scored every candidate
    for it in rec.items:
        assert it.item_id in p.catalog and it.sources and it.reason
        assert it.reason_source in ("llm", "template")
        assert set(it.cites) <= hist  # no invented ids, LLM or template
        if it.reason_source == "llm":
            assert any(normalize_title(p.catalog.title(c)) in normalize_title(it.reason) for c in it.cites)
    templated = sum(it.reason_source == "template" for it in rec.items)
    assert (templated > 0) == ("explain" in rec.fallback)  # a fallback is never silent
    assert {"retrieve", "rank", "diversify", "explain", "total"} <= set(rec.timings_ms)
    assert rec.ranker and rec.ranker.startswith("verbalizer:")  # every result says which ranker ran


@pytest.mark.slow
def test_filters_pass_through_to_the_retriever(agent_pipeline):
    f = {"exclude": {"genres": ["Drama"]}, "ranges": {"year": [1990, 2005]}}
    rec = agent_pipeline.recommend(user_id="5", filters=f, explain=False)
    assert rec.items
    for it in rec.items:
        assert "Drama" not in it.genres and 1990 <= it.year <= 2005
    empty = agent_pipeline.recommend(user_id="5", filters={"ranges": {"year": [1800, 1801]}})
    assert empty.items == [] and "filters" in empty.message


@pytest.mark.slow
def test_lower_lambda_gives_more_varied_lists(agent_pipeline):
    p = agent_pipeline

    def spread(rec):
        vecs = p.index.vectors(rec.ids)
        sims = [float(vecs[a] @ vecs[b]) for a, b in itertools.combinations(rec.ids, 2)]
        return np.mean(sims)

    focused = p.recommend(user_id="7", mmr_lambda=1.0, explain=False)
    varied = p.recommend(user_id="7", mmr_lambda=0.2, explain=False)
    assert spread(varied) <= spread(focused)
    assert focused.ids[0] == varied.ids[0]  # the best item is picked first either way


@pytest.mark.slow
def test_cold_start_and_batched_requests(agent_pipeline):
    reqs = [
        RecommendRequest(query="animated movie for the whole family"),
        RecommendRequest(user_id="2", k=3),
        RecommendRequest(history=["1", "2355"], new_items=["3114"], k=3),
    ]
    out = agent_pipeline.recommend_many(reqs)
    assert out[0].cold_start and len(out[0].items) == 5
    assert len(out[1].items) == 3 and len(out[2].items) == 3
    assert not {"1", "2355", "3114"} & set(out[2].ids)
    assert all(r.batch_size == 3 for r in out)


@pytest.mark.slow
def test_explain_items_is_grounded(agent_pipeline):
    out = agent_pipeline.explain_items(["260", "1196"], user_id="1")
    hist = set(agent_pipeline.dataset.interactions.history("1"))
    assert [it.item_id for it in out] == ["260", "1196"]
    assert all(it.reason and set(it.cites) <= hist for it in out)
    with pytest.raises(UnknownIdError):
        agent_pipeline.explain_items(["not-an-item"], user_id="1")


def test_cli_agent_commands_document_every_option():
    from typer.main import get_command
    from typer.testing import CliRunner

    from recagent.cli import app

    cmd = get_command(app)
    for name in ("recommend", "chat", "serve", "batch", "demo"):
        for p in cmd.commands[name].params:
            if p.param_type_name == "option" and p.name != "help":
                assert p.help and str(p.envvar).startswith("RECAGENT_"), (name, p.name)
    # bad input is caught before anything heavy starts
    res = CliRunner().invoke(app, ["recommend"])
    assert isinstance(res.exception, ConfigError) and "--user" in res.exception.message
    res = CliRunner().invoke(app, ["recommend", "--user", "1", "--filters", "{oops"])
    assert isinstance(res.exception, ConfigError) and "--filters" in res.exception.message


def test_from_config_takes_the_data_set_the_caller_loaded(monkeypatch, tmp_path, tiny_catalog, retr_dataset):
    """The CLI loads the data once for its id checks and hands it on: the factory must not load it again."""
    from recagent import agent as agent_module
    from recagent.data import Dataset, Interactions

    def no_second_load(*_a, **_k):
        raise AssertionError("the data set was loaded a second time")

    monkeypatch.setattr(agent_module, "load_dataset", no_second_load)
    df = retr_dataset.interactions.df
    ds = Dataset("tiny-given", tiny_catalog, Interactions(df[df["item_id"].isin(tiny_catalog.ids)].copy()))
    cfg = agent_module.AgentConfig(data="not-loaded-by-name", chroma_path=str(tmp_path / "chroma"), llm_rank=False,
                                   explain=False, cf_model="none", adapter="none")  # fmt: skip
    built = agent_module.RecAgent.from_config(cfg, dataset=ds, progress=False)
    assert built.dataset is ds and built.llm is None
    user = ds.interactions.users[0]
    assert len(built.recommend(user_id=user, k=3).items) == 3


def test_one_request_fetches_each_item_vector_once(fake_pipeline, monkeypatch):
    """The content source, MMR and the explainer share one request's vector fetches (store/cache.py)."""
    col = fake_pipeline.index.content()
    fetched: list[str] = []
    real_get = type(col).get

    def counting_get(self, *args, **kwargs):
        if kwargs.get("include") == ["embeddings"] and kwargs.get("ids"):
            fetched.extend(kwargs["ids"])
        return real_get(self, *args, **kwargs)

    monkeypatch.setattr(type(col), "get", counting_get)
    user = fake_pipeline.dataset.interactions.users[3]
    rec = fake_pipeline.recommend(user_id=user, k=5, mmr_lambda=0.5)
    assert len(rec.items) == 5 and all(it.reason for it in rec.items)
    picks = {it.item_id for it in rec.items}
    assert picks <= set(fetched)  # MMR and the explainer did read the picks' vectors
    assert len(fetched) == len(set(fetched)), sorted(i for i in set(fetched) if fetched.count(i) > 1)
