"""LLM rankers on the real vLLM engine: verbalizer scoring, permutations, fallbacks, generation."""

from __future__ import annotations

import logging
import math

import pytest

from recagent.errors import ConfigError, EmptyInputError, RecAgentError, UnknownIdError
from recagent.ranker import (
    GenerationConfig,
    GenerationRanker,
    RankQuery,
    VerbalizerConfig,
    VerbalizerRanker,
    measure_position_bias,
    parse_ranking,
    taste_summary,
    validate_query,
)

# Popular ml-latest-small movies: Toy Story, Star Wars IV, Pulp Fiction, Shawshank, Matrix, ...
CANDS = ["1", "260", "296", "318", "2571", "593", "480", "110", "589", "527"]


def _query(ds, user="1", cands=CANDS) -> RankQuery:
    return RankQuery.for_user(ds, user, cands)


def _assert_permutation(res, cands):
    assert sorted(res.item_ids) == sorted(cands) and len(res.item_ids) == len(cands)
    assert len(res.scores) == len(cands) and all(math.isfinite(s) for s in res.scores)
    assert res.scores == sorted(res.scores, reverse=True)


# ---- input validation and parsing (fast) -------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(candidates=[], history=["1"]), EmptyInputError, "no candidates"),
        (dict(candidates=["1", "2", "1"], history=["3"]), RecAgentError, "duplicate"),
        (dict(candidates=["1", "no-such-item"], history=["3"]), UnknownIdError, "no-such-item"),
        (dict(candidates=["1"], history=["no-such-item"]), UnknownIdError, "no-such-item"),
        (dict(candidates=["1"], history=[]), EmptyInputError, "neither history nor a profile"),
        (dict(candidates=["1"], history=["2", "3"], ratings=[4.0]), RecAgentError, "ratings"),
    ],
)
def test_bad_input_is_a_clear_error(rank_dataset, kwargs, error, match):
    with pytest.raises(error, match=match) as e:
        validate_query(RankQuery(**kwargs), rank_dataset.catalog)
    assert e.value.hint


def test_cold_start_user_with_profile_is_valid(rank_dataset):
    validate_query(RankQuery(candidates=["1", "2"], profile={"text": "likes animated films"}), rank_dataset.catalog)


def test_taste_summary_uses_liked_items(rank_dataset):
    q = _query(rank_dataset)
    taste = taste_summary(rank_dataset.catalog, q.history, q.ratings)
    assert taste["n_items"] == len(q.history) and len(taste["top_genres"]) == 3
    assert 0.5 <= taste["mean_rating"] <= 5
    assert taste_summary(rank_dataset.catalog, []) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("C, A, B", [2, 0, 1]),
        (" C > A > B > C", [2, 0, 1]),
        ("1. B\n2. C) Heat\n3. A.", [1, 2, 0]),
        ("Heat (1995), Toy Story", [2, 0]),
        ("A Beautiful Mind; Toy Story", [1, 0]),
        ("Z, Q, B", [1]),
        ("I cannot rank these.", []),
        ("", []),
    ],
)
def test_parse_ranking(text, expected):
    titles = ["Toy Story (1995)", "A Beautiful Mind (2001)", "Heat (1995)"]
    assert parse_ranking(text, "ABC", titles) == expected


# ---- verbalizer on the real engine (slow) -------------------------------------------------------


@pytest.fixture(scope="module")
def verbalizer(llm_engine, rank_dataset):
    return VerbalizerRanker(llm_engine, rank_dataset.catalog, VerbalizerConfig(item_noun="movie"))


@pytest.mark.slow
def test_every_candidate_scored_once(verbalizer, rank_dataset, llm_engine):
    res = verbalizer.rank(_query(rank_dataset))
    assert not res.fallback and res.fallback_reason is None
    _assert_permutation(res, CANDS)
    assert res.n_llm_ranked == len(CANDS) and res.history_used == 20 and res.history_dropped == 0
    assert sum(math.exp(s) for s in res.scores) == pytest.approx(1.0, abs=1e-3)
    # label tokens come from the tokenizer
    assert verbalizer.label_token_ids[:3] == [llm_engine.single_token_id(c) for c in "ABC"]


@pytest.mark.slow
def test_batch_of_users_matches_one_by_one(verbalizer, rank_dataset):
    queries = [_query(rank_dataset, u) for u in ("1", "2", "3")]
    batch = verbalizer.rank_many(queries)
    assert batch[0].timings["batch_prompts"] == 3
    single = verbalizer.rank(queries[2])
    # bf16 logits: batched and single runs may differ by a rounding step (~0.1 in logprob),
    # which can swap near-ties; compare probabilities per item.
    p_batch = {i: math.exp(s) for i, s in zip(batch[2].item_ids, batch[2].scores, strict=True)}
    p_single = {i: math.exp(s) for i, s in zip(single.item_ids, single.scores, strict=True)}
    assert p_single == pytest.approx(p_batch, abs=0.05)


@pytest.mark.slow
def test_permutations_consistent_with_prefix_cache(llm_engine, rank_dataset):
    ranker = VerbalizerRanker(llm_engine, rank_dataset.catalog, VerbalizerConfig(item_noun="movie", permutations=4))
    q = _query(rank_dataset, "5")
    prep = ranker.prepare(q)
    assert len(prep.prompts) == 4
    # every rotation shares the profile + history prefix
    prefix = min(len(p) for p in prep.prompts)
    shared = next(i for i in range(prefix) if len({p[i] for p in prep.prompts}) > 1)
    assert shared > 0.5 * prefix
    assert llm_engine.reset_prefix_cache()
    cold = ranker.rank(q)
    warm = ranker.rank(q)  # every prompt now hits the prefix cache
    _assert_permutation(cold, CANDS)
    assert warm.item_ids == cold.item_ids
    assert warm.scores == pytest.approx(cold.scores, abs=1e-3)
    # the same candidates in another input order get the same aggregated scores
    rev = ranker.rank(RankQuery(list(reversed(CANDS)), q.history, q.ratings, q.profile, q.user_id))
    by_id = dict(zip(cold.item_ids, cold.scores, strict=True))
    rev_by_id = dict(zip(rev.item_ids, rev.scores, strict=True))
    assert sorted(by_id) == sorted(rev_by_id)


@pytest.mark.slow
def test_overflow_error_or_tail(llm_engine, rank_dataset):
    many = rank_dataset.catalog.ids[:30]
    strict = VerbalizerRanker(llm_engine, rank_dataset.catalog, VerbalizerConfig())
    with pytest.raises(ConfigError, match="30 candidates but only 26 labels") as e:
        strict.rank(RankQuery(many, history=["1", "2"]))
    assert "overflow='tail'" in e.value.hint
    tail = VerbalizerRanker(llm_engine, rank_dataset.catalog, VerbalizerConfig(overflow="tail"))
    res = tail.rank(RankQuery(many, history=["1", "2"]))
    assert not res.fallback and res.n_llm_ranked == 26
    assert sorted(res.item_ids) == sorted(many) and res.item_ids[26:] == many[26:]


@pytest.mark.slow
def test_long_prompt_cuts_oldest_history_with_warning(verbalizer, rank_dataset, caplog):
    q = _query(rank_dataset)
    full = verbalizer.rank(q)
    saved = verbalizer.max_prompt_tokens
    verbalizer.max_prompt_tokens = full.prompt_tokens - 60
    try:
        with caplog.at_level(logging.WARNING, logger="recagent.ranker"):
            cut = verbalizer.rank(q)
        assert 0 < cut.history_dropped < 20 and cut.history_used == 20 - cut.history_dropped
        assert cut.prompt_tokens <= verbalizer.max_prompt_tokens and not cut.fallback
        assert "oldest history" in caplog.text
        # not even the candidates fit: retriever order, reported as a fallback
        verbalizer.max_prompt_tokens = 50
        fb = verbalizer.rank(q)
        assert fb.fallback and "too long" in fb.fallback_reason and fb.item_ids == CANDS
    finally:
        verbalizer.max_prompt_tokens = saved


@pytest.mark.slow
def test_cold_start_user_is_ranked(verbalizer):
    res = verbalizer.rank(RankQuery(CANDS, profile={"age": 30, "text": "loves science fiction and action"}))
    assert not res.fallback and res.history_used == 0
    _assert_permutation(res, CANDS)


@pytest.mark.slow
def test_adapter_changes_ranker_scores(llm_engine, lora_adapter, rank_dataset, verbalizer):
    llm_engine.add_adapter("random", lora_adapter)
    q = RankQuery(CANDS[:5], history=["1", "2", "3"])
    tuned = VerbalizerRanker(llm_engine, rank_dataset.catalog, VerbalizerConfig(adapter="random")).rank(q)
    base = VerbalizerRanker(llm_engine, rank_dataset.catalog, VerbalizerConfig()).rank(q)
    _assert_permutation(tuned, CANDS[:5])
    assert dict(zip(tuned.item_ids, tuned.scores, strict=True)) != pytest.approx(
        dict(zip(base.item_ids, base.scores, strict=True)), abs=0.05
    )
    with pytest.raises(ConfigError, match="unknown LoRA adapter"):
        VerbalizerRanker(llm_engine, rank_dataset.catalog, VerbalizerConfig(adapter="missing"))


@pytest.mark.slow
def test_position_bias_probe(verbalizer, rank_dataset):
    cases = []
    for u in ("1", "2"):
        q = _query(rank_dataset, u, [])
        cases.append((RankQuery([], q.history[:-1], q.ratings[:-1], q.profile, u), q.history[-1]))
    rep = measure_position_bias(verbalizer, cases, positions=(0, 19))
    assert rep.positions == [0, 19] and len(rep.hit1) == 2 and rep.n_users == 2
    assert sum(rep.top1_share) == pytest.approx(1.0) and rep.fallbacks == 0
    assert "| 20 |" in rep.as_markdown()


# ---- listwise generation (slow) -----------------------------------------------------------------


@pytest.mark.slow
def test_generation_ranker_returns_a_permutation(llm_engine, rank_dataset):
    ranker = GenerationRanker(llm_engine, rank_dataset.catalog, GenerationConfig(item_noun="movie"))
    res = ranker.rank(_query(rank_dataset, "2", CANDS[:5]))
    assert sorted(res.item_ids) == sorted(CANDS[:5])
    assert res.raw_output is not None
    assert res.fallback == (res.n_llm_ranked == 0)
    if res.fallback:
        assert res.fallback_reason


@pytest.mark.slow
@pytest.mark.server
def test_ranker_on_server_matches_in_process(verbalizer, rank_dataset, vllm_server):
    from recagent.llm import LLMConfig, make_backend

    queries = [_query(rank_dataset, u) for u in ("1", "2")]
    local = verbalizer.rank_many(queries)
    remote = make_backend(LLMConfig(backend="openai", base_url=vllm_server.base_url))
    got = VerbalizerRanker(remote, rank_dataset.catalog, VerbalizerConfig(item_noun="movie")).rank_many(queries)
    remote.close()
    for a, b in zip(local, got, strict=True):
        assert not b.fallback
        sa = dict(zip(a.item_ids, a.scores, strict=True))
        sb = dict(zip(b.item_ids, b.scores, strict=True))
        assert max(abs(math.exp(sa[i]) - math.exp(sb[i])) for i in CANDS) < 0.02
