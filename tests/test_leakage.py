"""Leakage guards: nothing fitted or shown at a stage may see that stage's target (``pytest -k leak``).

Each test names the structure it guards: CF factors, popularity, the sequence graph, the content
and tag text (index documents and the knowledge graph), the ranker's prompt catalog, and the
fine-tuning examples. Plus the one order of timestamp ties everywhere.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recagent.cf import ALS, Popularity
from recagent.components import Query
from recagent.data import Catalog, Dataset, Interactions, TrainData
from recagent.eval.splits import llamarec_split

STAGES = ("val", "test")


@pytest.mark.parametrize("stage", STAGES)
def test_leak_training_data_never_holds_the_stage_target(ml_split, stage):
    data = ml_split.train_data(stage)
    m = data.matrix()
    targets = ml_split.targets(stage)
    held = np.asarray(m[np.arange(ml_split.n_users), targets]).ravel()
    # MovieLens has no repeat ratings, so a target in the matrix can only be a leak
    assert held.sum() == 0
    later = {"val": 2, "test": 1}[stage]
    assert all(len(s) == len(full) - later for s, full in zip(data.sequences, ml_split.sequences, strict=True))


@pytest.mark.parametrize("stage", STAGES)
def test_leak_cf_factors_and_popularity_fit_on_histories_only(ml_split, stage):
    data = ml_split.train_data(stage)
    als = ALS(iterations=2).fit(data)
    assert als.model.user_factors.shape[0] == ml_split.n_users and als.data is data
    fitted = als.model.item_factors  # the factors' training matrix is exactly the stage's histories
    assert fitted.shape[0] == ml_split.n_items
    pop = Popularity().fit(data)._pop
    counts = np.zeros(ml_split.n_items)
    for u in range(ml_split.n_users):
        counts[np.unique(ml_split.history(u, stage))] += 1
    assert np.array_equal(pop, counts)
    # the target of the last user is counted once less than with it
    u = ml_split.n_users - 1
    with_target = counts.copy()
    with_target[ml_split.target(u, stage)] += 1
    assert not np.array_equal(pop, with_target)


def test_leak_sequence_graph_is_built_from_stage_histories(retr_system, retr_split):
    from recagent.retrieval.sequence import sequence_graph

    c = retr_system.config
    st = retr_system.state
    hist = [[str(retr_split.item_ids[x]) for x in retr_split.history(u, "test")] for u in range(retr_split.n_users)]
    full = [[str(retr_split.item_ids[x]) for x in s] for s in retr_split.sequences]
    args = (st.table.pos, c.sequence_window, c.sequence_backward, c.sequence_distance_power)
    expected = sequence_graph(hist, *args, top_k=c.sequence_top_k)
    assert (st.sequence != expected).nnz == 0
    assert (
        sequence_graph(full, *args, top_k=c.sequence_top_k) != expected
    ).nnz > 0  # the guard has teeth: targets change the graph


def _leaking_tags(split, stage):
    """(item, tag) applied by a user at or after their own cut, and by nobody before their cut."""
    ev = split.dataset.tag_events.copy()
    cut = {
        str(u): int(ts[-2 if stage == "val" else -1]) for u, ts in zip(split.user_ids, split.timestamps, strict=True)
    }
    ev["tag"] = ev["tag"].str.strip().str.lower()
    ev["limit"] = ev["user_id"].astype(str).map(cut)
    ev["late"] = ev["limit"].notna() & (ev["timestamp"] >= ev["limit"].fillna(0))
    ok = set(map(tuple, ev.loc[~ev["late"], ["item_id", "tag"]].to_numpy()))
    late = set(map(tuple, ev.loc[ev["late"], ["item_id", "tag"]].to_numpy()))
    return sorted(late - ok)


@pytest.mark.parametrize("stage", STAGES)
def test_leak_stage_catalog_drops_tags_from_after_each_taggers_cut(ml_split, stage):
    leaking = _leaking_tags(ml_split, stage)
    assert leaking, "ml-latest-small has users who tagged their own held-out items"
    all_time = ml_split.dataset.catalog
    staged = ml_split.train_data(stage).catalog
    shown_before = [(i, t) for i, t in leaking if t in all_time.view(i)["tags"]]
    assert shown_before  # the all-time catalog shows some of them: the guard has teeth
    for item, tag in shown_before:
        assert tag not in staged.view(item)["tags"]
        assert tag in all_time.describe(item) and tag not in staged.describe(item).split("tags: ")[-1].split(", ")


def test_leak_retriever_indexes_and_links_the_catalog_it_was_fitted_on(ml_split):
    """What the retriever embeds and links (knowledge graph) is ``data.catalog``, the stage catalog."""
    from recagent.retrieval import AttributeTable

    data = ml_split.train_data("test")
    table = AttributeTable(data.catalog, None)
    item, tag = next(
        (i, t) for i, t in _leaking_tags(ml_split, "test") if t in ml_split.dataset.catalog.view(i)["tags"]
    )
    assert tag not in table.catalog.view(item)["tags"]
    # every tag value with a column in the graph comes from the stage catalog
    staged_tags = {t for cell in data.catalog.items["tags"] for t in cell}
    all_tags = {t for cell in ml_split.dataset.catalog.items["tags"] for t in cell}
    assert staged_tags < all_tags


def test_leak_ranker_prompt_uses_the_stage_catalog(ml_split):
    from recagent.ranking.prompt import taste_summary

    data = ml_split.train_data("test")
    leaking = [(i, t) for i, t in _leaking_tags(ml_split, "test") if t in ml_split.dataset.catalog.view(i)["tags"]]
    item, tag = leaking[0]
    summary = taste_summary(data.catalog, [item] * 3, top_tags=50)
    assert tag not in summary["top_tags"]


def test_leak_pipeline_fit_hands_the_stage_catalog_to_the_ranker(ml_split, llm_free_ranker):
    from recagent.pipeline import Pipeline

    data = ml_split.train_data("test")
    Pipeline(None, llm_free_ranker).fit(data)
    assert llm_free_ranker.catalog is data.catalog and data.catalog is not ml_split.dataset.catalog


@pytest.fixture(scope="module")
def llm_free_ranker(retr_split):
    """A verbalizer ranker over a transformers model (no vLLM): enough to render prompts."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from recagent.finetune.hf_backend import TransformersScorer
    from recagent.models import resolve_llm_path
    from recagent.ranking import VerbalizerRanker

    path = resolve_llm_path(None)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return VerbalizerRanker(TransformersScorer(model, AutoTokenizer.from_pretrained(path), path), retr_split.dataset.catalog,
                            history_len=5)  # fmt: skip


def test_leak_finetune_examples_targets_users_and_history(retr_split, retr_index, llm_free_ranker):
    from recagent.finetune.examples import build_examples, cut_data, split_users, training_cuts
    from recagent.retrieval import Retriever

    train_u, val_u = split_users(retr_split, 10, seed=0)
    assert not set(train_u) & set(val_u) and len(train_u) + len(val_u) == retr_split.n_users
    data = cut_data(retr_split, train_u, cuts_per_user=8)
    llm_free_ranker.fit(data)
    retriever = Retriever(retr_index, depth=50, cf_models={"cf": {"name": "als", "iterations": 3}}).fit(data)
    examples, stats = build_examples(retr_split, llm_free_ranker, retriever, train_u, cuts_per_user=8, n_candidates=10,
                                     progress=False)  # fmt: skip
    assert examples and stats["kept"] == len(examples) <= stats["cuts"]
    decode = llm_free_ranker.backend.tokenizer.decode
    for ex in examples:
        seq = retr_split.sequences[ex.user]
        assert ex.cut in training_cuts(retr_split, ex.user, 8)
        assert ex.cut <= len(seq) - 3  # a training item: never the validation or test item
        target = int(seq[ex.cut])
        # the retriever that proposed the candidates never saw this target for this user
        assert target not in set(data.sequences[ex.user].tolist())
        text = decode(ex.input_ids)
        title = retr_split.dataset.catalog.title(str(retr_split.item_ids[target]))
        history_part = text.split("Candidate movies:")[0]
        assert title not in history_part  # the history shown ends before the cut
    val_examples, _ = build_examples(
        retr_split, llm_free_ranker, retriever, val_u, mode="val", n_candidates=10, progress=False
    )
    assert {e.user for e in val_examples} <= set(val_u.tolist())
    assert all(e.cut == len(retr_split.sequences[e.user]) - 2 for e in val_examples)


def test_timestamp_ties_have_one_order_everywhere():
    """Items rated in the same second are ordered by natural id ("2" before "10") in the served
    history, the evaluation split and the training data alike."""
    items = [str(i) for i in range(1, 13)]
    cat = Catalog(pd.DataFrame({"title": [f"Item {i}" for i in items]}, index=pd.Index(items, name="item_id")))
    rows = [(u, i, 100 if i in ("2", "10") else int(i) * 10) for u in ("a", "b", "c", "d", "e") for i in items]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"]).assign(rating=np.nan)
    ds = Dataset("ties", cat, Interactions(df.sample(frac=1.0, random_state=0)))
    served = ds.interactions.history("a")
    assert served.index("2") < served.index("10")
    split = llamarec_split(ds, min_user=1, min_item=1)
    seq = [str(split.item_ids[c]) for c in split.sequences[split.user_code("a")]]
    assert seq == served
    assert TrainData.from_dataset(ds).history_ids(0) == served
    assert list(split.query(split.user_code("a"), "test").history) == served[:-1]
    assert Query(history=tuple(served)).history == tuple(served)


def test_finetune_examples_show_the_evidence_the_served_prompt_shows(retr_split, retr_index, llm_free_ranker):
    """With ``evidence=True`` a training prompt carries, on each candidate line, the sources and
    ranks the retriever gave that candidate for that cut, as a served prompt does."""
    from recagent.finetune.examples import _query, build_examples, cut_data, split_users
    from recagent.prompts.render import short_title
    from recagent.ranking import VerbalizerRanker
    from recagent.ranking.prompt import evidence_text
    from recagent.retrieval import Retriever

    train_u, _ = split_users(retr_split, 10, seed=0)
    data = cut_data(retr_split, train_u, cuts_per_user=3)
    ranker = VerbalizerRanker(llm_free_ranker.backend, data.catalog, history_len=5, evidence=True)
    retriever = Retriever(retr_index, depth=50, cf_models={"cf": {"name": "als", "iterations": 3}}).fit(data)
    examples, _ = build_examples(retr_split, ranker, retriever, train_u[:15], cuts_per_user=3, n_candidates=10,
                                 progress=False)  # fmt: skip
    assert examples
    decode = ranker.backend.tokenizer.decode
    for ex in examples[:5]:
        cands = retriever(_query(retr_split, ex.user, ex.cut), n=10)
        text = decode(ex.input_ids)
        assert "next: often chosen" in text  # the legend of the served prompt
        for label, item, sources in zip("ABCDEFGHIJ", cands.ids, cands.field("sources"), strict=True):
            ev = evidence_text(sources)
            line = f"{label}. {short_title(data.catalog.title(item))}" + (f" [{ev}]" if ev else "")
            assert line + "\n" in text
