"""LLM rankers on the real vLLM engine: verbalizer scoring, permutations, fallbacks, generation.

bf16 note: the engine computes in bf16, so the same prompt scored cold, from the prefix cache, or
in another batch can differ by a rounding step (~0.01-0.05 in probability). Scores are compared
per item with such a tolerance, and orders only where the gap between neighbours exceeds it —
never the order of near-ties.
"""

from __future__ import annotations

import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
from conformance import ComponentConformance

from recagent.components import ItemList, Query
from recagent.errors import ConfigError, EmptyInputError, RecAgentError, UnknownIdError
from recagent.ranking import (
    GenerationRanker,
    VerbalizerRanker,
    fuse_with_rank,
    measure_position_bias,
    parse_ranking,
    taste_summary,
    validate,
)

# Popular ml-latest-small movies: Toy Story, Star Wars IV, Pulp Fiction, Shawshank, Matrix, ...
CANDS = ["1", "260", "296", "318", "2571", "593", "480", "110", "589", "527"]
TOL = 0.05  # bf16 rounding between cold, cached and batched runs, in probability


def _query(ds, user="1") -> Query:
    frame = ds.interactions.user_frame(user)
    return Query(user, tuple(frame["item_id"]), tuple(frame["rating"]), ds.profile(user))


def _probs(res: ItemList) -> dict[str, float]:
    return {i: math.exp(s) for i, s in zip(res.ids, res.scores, strict=True)}


def _assert_permutation(res: ItemList, cands):
    assert sorted(res.ids) == sorted(cands) and len(res.ids) == len(cands)
    assert len(res.scores) == len(cands) and all(math.isfinite(s) for s in res.scores)
    assert res.scores == sorted(res.scores, reverse=True)


def _assert_same_ranking(a: ItemList, b: ItemList, tol: float = TOL):
    """Same scores per item within ``tol``; same order wherever neighbours differ by more."""
    pa, pb = _probs(a), _probs(b)
    assert pa == pytest.approx(pb, abs=tol)
    for x, y in zip(a.ids, a.ids[1:], strict=False):
        if pa[x] - pa[y] > 2 * tol:
            assert pb[x] > pb[y], (x, y, pa, pb)


# ---- input validation and parsing (fast) -------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "cands", "error", "match"),
    [
        (dict(history=("1",)), [], EmptyInputError, "no candidates"),
        (dict(history=("3",)), ["1", "2", "1"], RecAgentError, "duplicate"),
        (dict(history=("3",)), ["1", "no-such-item"], UnknownIdError, "no-such-item"),
        (dict(history=("no-such-item",)), ["1"], UnknownIdError, "no-such-item"),
        (dict(), ["1"], EmptyInputError, "neither history nor a profile"),
    ],
)
def test_bad_input_is_a_clear_error(rank_dataset, query, cands, error, match):
    with pytest.raises(error, match=match) as e:
        validate(Query(**query), ItemList.of(cands), rank_dataset.catalog)
    assert e.value.hint


def test_ratings_must_align_with_history():
    with pytest.raises(ConfigError, match="ratings"):
        Query(history=("2", "3"), ratings=(4.0,))


def test_cold_start_user_with_profile_or_text_is_valid(rank_dataset):
    cands = ItemList.of(["1", "2"])
    assert validate(Query(profile={"text": "likes animated films"}), cands, rank_dataset.catalog) == ["1", "2"]
    assert validate(Query(text="a feel-good animated film"), cands, rank_dataset.catalog) == ["1", "2"]
    with pytest.raises(EmptyInputError, match="neither history nor a profile"):  # the same user with nothing
        validate(Query(), cands, rank_dataset.catalog)


def test_taste_summary_uses_liked_items(rank_dataset):
    q = _query(rank_dataset)
    taste = taste_summary(rank_dataset.catalog, q.history, q.rating_list())
    assert taste["n_items"] == len(q.history) and len(taste["top_genres"]) == 3
    assert 0.5 <= taste["mean_rating"] <= 5
    assert taste_summary(rank_dataset.catalog, []) is None
    # a harsh rater: only items at or above their own mean count as liked
    cat = rank_dataset.catalog
    horror = next(i for i in cat.ids if cat.view(i)["genres"] == ["Horror"])
    comedy = next(i for i in cat.ids if cat.view(i)["genres"] == ["Comedy"])
    assert taste_summary(cat, [horror, comedy], [1.0, 3.0])["top_genres"] == ["Comedy"]


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


def test_the_default_prompt_costs_at_most_350_tokens_at_20_candidates(rank_dataset):
    """The shipped prompt (rank_compact, 10 history items): ≤ 350 tokens per ranked user with 20
    candidates, well under half of the earlier one (rank.jinja with 20 items). Real tokenizer, no engine."""
    from recagent.llm import FakeBackend

    ds, llm = rank_dataset, FakeBackend()
    popular = list(ds.interactions.df["item_id"].value_counts().index[:200])
    users = [u for u in ds.interactions.users[:60] if len(ds.interactions.history(u)) >= 20][:30]

    def mean_tokens(ranker) -> float:
        lens = []
        for u in users:
            q = _query(ds, u)
            cands = [i for i in popular if i not in set(q.history)][:20]
            lens.append(len(ranker.prepare(q, ItemList.of(cands)).prompts[0]))
        return float(np.mean(lens))

    shipped = mean_tokens(VerbalizerRanker(llm, ds.catalog))
    earlier = mean_tokens(VerbalizerRanker(llm, ds.catalog, template="rank", history_len=20))
    assert shipped <= 350 and shipped < 0.5 * earlier, (shipped, earlier)


@pytest.fixture(scope="module")
def verbalizer(llm_engine, rank_dataset):
    return VerbalizerRanker(llm_engine, rank_dataset.catalog)


@pytest.mark.slow
def test_every_candidate_scored_once(verbalizer, rank_dataset, llm_engine):
    res = verbalizer(_query(rank_dataset), ItemList.of(CANDS))
    assert "rank" not in res.notes
    _assert_permutation(res, CANDS)
    assert (
        res.info["n_llm_ranked"] == len(CANDS)
        and res.info["history_used"] == verbalizer.config.history_len
        and res.info["history_dropped"] == 0
    )
    assert sum(_probs(res).values()) == pytest.approx(1.0, abs=1e-3)
    # label tokens come from the tokenizer; the prompt names items as the catalog does
    assert verbalizer.label_token_ids[:3] == [llm_engine.single_token_id(c) for c in "ABC"]
    text = llm_engine.tokenizer.decode(verbalizer.prepare(_query(rank_dataset), ItemList.of(CANDS)).prompts[0])
    assert "movies" in text and "A. Toy Story\n" in text  # the short title of "Toy Story (1995)"


@pytest.mark.slow
def test_batch_of_users_matches_one_by_one(verbalizer, rank_dataset):
    queries = [_query(rank_dataset, u) for u in ("1", "2", "3")]
    batch = verbalizer.batch(queries, [ItemList.of(CANDS)] * 3)
    assert batch[0].info["batch_prompts"] == 3
    _assert_same_ranking(batch[2], verbalizer(queries[2], ItemList.of(CANDS)))


@pytest.mark.slow
def test_permutations_aggregate_label_probabilities_per_candidate(llm_engine, rank_dataset):
    ranker = VerbalizerRanker(llm_engine, rank_dataset.catalog, permutations=4)
    q = _query(rank_dataset, "5")
    prep = ranker.prepare(q, ItemList.of(CANDS))
    assert len(prep.prompts) == 4
    # every rotation shares the profile + history prefix (what the prefix cache reuses)
    prefix = min(len(p) for p in prep.prompts)
    shared = next(i for i in range(prefix) if len({p[i] for p in prep.prompts}) > 1)
    assert shared > 0.5 * prefix
    assert llm_engine.reset_prefix_cache()
    cold = ranker(q, ItemList.of(CANDS))
    warm = ranker(q, ItemList.of(CANDS))  # every prompt now hits the prefix cache
    _assert_permutation(cold, CANDS)
    _assert_same_ranking(cold, warm)
    # the aggregate is the mean over rotations of the probability of the label each candidate had
    raw = llm_engine.score_labels(prep.prompts, ranker.label_token_ids[: len(CANDS)])
    expected = np.zeros(len(CANDS))
    for order, lp in zip(prep.orders, raw, strict=True):
        for j, tok in enumerate(ranker.label_token_ids[: len(CANDS)]):
            expected[order[j]] += math.exp(lp[tok]) / len(prep.orders)
    assert _probs(cold) == pytest.approx(dict(zip(CANDS, expected, strict=True)), abs=TOL)


def test_fuse_with_rank_subtracts_the_weighted_log_input_rank():
    logp = np.log([0.1, 0.5, 0.4])
    assert fuse_with_rank(logp, 0.0) == pytest.approx(logp)
    assert fuse_with_rank(logp, 1.5) == pytest.approx(logp - 1.5 * np.log([1, 2, 3]))


@pytest.mark.slow
def test_retrieval_weight_fuses_llm_scores_with_the_input_rank(llm_engine, rank_dataset):
    q = _query(rank_dataset, "5")
    fused = VerbalizerRanker(llm_engine, rank_dataset.catalog, retrieval_weight=1.5)(q, ItemList.of(CANDS))
    _assert_permutation(fused, CANDS)
    # each score is the item's own LLM log-probability minus w·ln(its input rank)
    llm = dict(zip(fused.ids, fused.fields["llm_logprob"], strict=True))
    want = {i: llm[i] - 1.5 * math.log(CANDS.index(i) + 1) for i in CANDS}
    assert dict(zip(fused.ids, fused.scores, strict=True)) == pytest.approx(want, abs=1e-9)
    # the LLM part is the plain ranker's score (within bf16 rounding)
    plain = VerbalizerRanker(llm_engine, rank_dataset.catalog)(q, ItemList.of(CANDS))
    assert {i: math.exp(v) for i, v in llm.items()} == pytest.approx(_probs(plain), abs=TOL)
    # a very large weight keeps the input order
    assert (
        list(VerbalizerRanker(llm_engine, rank_dataset.catalog, retrieval_weight=1e6)(q, ItemList.of(CANDS)).ids)
        == CANDS
    )


@pytest.mark.slow
def test_combiner_scores_from_the_llm_and_the_candidates_evidence(llm_engine, rank_dataset):
    from recagent.ranking.combine import Combiner

    q = _query(rank_dataset, "5")
    sources = [{"cf": j + 1} if j % 2 else {"sequence": 1} for j in range(len(CANDS))]
    given = ItemList.of(CANDS, sources=sources)
    plain = VerbalizerRanker(llm_engine, rank_dataset.catalog)(q, given)
    llm = dict(zip(plain.ids, plain.fields["llm_logprob"], strict=True))
    c = Combiner(features=["llm", "sequence:found", "cf:rank"], weights=[1.0, 3.0, 0.5])
    ranked = VerbalizerRanker(llm_engine, rank_dataset.catalog, combiner=c)(q, given)
    _assert_permutation(ranked, CANDS)
    # each score is w · features: its LLM log-probability (within bf16 rounding) and its own evidence
    for i, score in zip(ranked.ids, ranked.scores, strict=True):
        src = sources[CANDS.index(i)]
        ev = 3.0 * ("sequence" in src) + 0.5 * -math.log(src.get("cf", 101))
        assert score - ev == pytest.approx(llm[i], abs=0.1)
    # evidence only (no LLM weight that matters): the sequence-proposed items come first, in input order
    seq_first = VerbalizerRanker(llm_engine, rank_dataset.catalog, combiner=Combiner(
        features=["llm", "sequence:found", "rank"], weights=[1e-6, 100.0, 1.0]))(q, given)  # fmt: skip
    assert seq_first.ids == [c for j, c in enumerate(CANDS) if j % 2 == 0] + [c for j, c in enumerate(CANDS) if j % 2]


@pytest.mark.slow
def test_evidence_goes_into_the_prompt(llm_engine, rank_dataset):
    q = _query(rank_dataset, "5")
    given = ItemList.of(CANDS[:3], sources=[{"sequence": 2, "cf": 9}, {}, {"content": 1}])
    text = llm_engine.tokenizer.decode(
        VerbalizerRanker(llm_engine, rank_dataset.catalog, evidence=True).prepare(q, given).prompts[0]
    )
    assert "A. Toy Story [next 2, cf 9]\n" in text and "C. Pulp Fiction [like 1]\n" in text
    assert "B. Star Wars: Episode IV - A New Hope\n" in text
    off = llm_engine.tokenizer.decode(VerbalizerRanker(llm_engine, rank_dataset.catalog).prepare(q, given).prompts[0])
    assert "[next 2" not in off and "next: often" not in off


@pytest.mark.slow
def test_overflow_error_or_tail(llm_engine, rank_dataset):
    many = rank_dataset.catalog.ids[:30]
    q = Query(history=("1", "2"))
    with pytest.raises(ConfigError, match="30 candidates but only 26 labels") as e:
        VerbalizerRanker(llm_engine, rank_dataset.catalog)(q, ItemList.of(many))
    assert "overflow='tail'" in e.value.hint
    res = VerbalizerRanker(llm_engine, rank_dataset.catalog, overflow="tail")(q, ItemList.of(many))
    assert "rank" not in res.notes and res.info["n_llm_ranked"] == 26
    assert sorted(res.ids) == sorted(many) and res.ids[26:] == many[26:]


@pytest.mark.slow
def test_long_prompt_cuts_oldest_history_with_warning(verbalizer, rank_dataset, caplog):
    q = _query(rank_dataset)
    full = verbalizer(q, ItemList.of(CANDS))
    saved = verbalizer.max_prompt_tokens
    h = verbalizer.config.history_len
    verbalizer.max_prompt_tokens = full.info["prompt_tokens"] - 20
    try:
        with caplog.at_level(logging.WARNING, logger="recagent.ranking.prompt"):
            cut = verbalizer(q, ItemList.of(CANDS))
        assert 0 < cut.info["history_dropped"] < h and cut.info["history_used"] == h - cut.info["history_dropped"]
        assert cut.info["prompt_tokens"] <= verbalizer.max_prompt_tokens and "rank" not in cut.notes
        assert "oldest history" in caplog.text
        # not even the candidates fit: the input order, reported as a fallback
        verbalizer.max_prompt_tokens = 50
        fb = verbalizer(q, ItemList.of(CANDS))
        assert "too long" in fb.notes["rank"] and fb.ids == CANDS
    finally:
        verbalizer.max_prompt_tokens = saved


@pytest.mark.slow
def test_request_text_is_in_the_prompt_and_changes_scores(verbalizer, rank_dataset):
    q = _query(rank_dataset, "2")
    with_text = Query(q.user_id, q.history, q.ratings, q.profile, text="something with robots and a chosen one")
    prompt = verbalizer.backend.tokenizer.decode(verbalizer.prepare(with_text, ItemList.of(CANDS)).prompts[0])
    assert "The user asks: something with robots" in prompt
    plain = verbalizer.backend.tokenizer.decode(verbalizer.prepare(q, ItemList.of(CANDS)).prompts[0])
    assert "The user asks" not in plain


@pytest.mark.slow
def test_cold_start_user_is_ranked(verbalizer):
    res = verbalizer(Query(profile={"age": 30, "text": "loves science fiction and action"}), ItemList.of(CANDS))
    assert "rank" not in res.notes and res.info["history_used"] == 0
    _assert_permutation(res, CANDS)


@pytest.mark.slow
def test_adapter_changes_ranker_scores(llm_engine, lora_adapter, rank_dataset):
    llm_engine.add_adapter("random", lora_adapter)
    q, cands = Query(history=("1", "2", "3")), ItemList.of(CANDS[:5])
    tuned = VerbalizerRanker(llm_engine, rank_dataset.catalog, adapter="random")(q, cands)
    base = VerbalizerRanker(llm_engine, rank_dataset.catalog)(q, cands)
    _assert_permutation(tuned, CANDS[:5])
    assert _probs(tuned) != pytest.approx(_probs(base), abs=0.05)
    assert tuned.info["ranker"].endswith("+random")
    with pytest.raises(ConfigError, match="unknown LoRA adapter"):
        VerbalizerRanker(llm_engine, rank_dataset.catalog, adapter="missing")


@pytest.mark.slow
def test_position_bias_probe_detects_the_zero_shot_bias(verbalizer, rank_dataset):
    cases = []
    for u in ("1", "2", "3", "4"):
        q = _query(rank_dataset, u)
        cases.append((Query(u, q.history[:-1], q.ratings[:-1], q.profile), q.history[-1]))
    rep = measure_position_bias(verbalizer, cases, positions=(0, 19))
    assert rep.positions == [0, 19] and rep.n_users == 4 and rep.fallbacks == 0
    # the 135M model answers "A" for most prompts (FACTS.md): the probe must show it
    assert rep.top1_share[0] > 0.5
    assert rep.mean_rank[0] < rep.mean_rank[1] and rep.hit1[0] >= rep.hit1[1]
    assert "| 20 |" in rep.as_markdown()


# ---- listwise generation (slow) -----------------------------------------------------------------


@pytest.mark.slow
def test_generation_ranker_returns_a_permutation(llm_engine, rank_dataset):
    ranker = GenerationRanker(llm_engine, rank_dataset.catalog)
    res = ranker(_query(rank_dataset, "2"), ItemList.of(CANDS[:5]))
    assert sorted(res.ids) == sorted(CANDS[:5])
    assert res.info["raw_output"] is not None
    assert ("rank" in res.notes) == (res.info["n_llm_ranked"] == 0)


@pytest.mark.slow
@pytest.mark.server
def test_ranker_on_server_matches_in_process(verbalizer, rank_dataset, vllm_server):
    from recagent.llm import LLMConfig, make_backend

    queries = [_query(rank_dataset, u) for u in ("1", "2")]
    local = verbalizer.batch(queries, [ItemList.of(CANDS)] * 2)
    remote = make_backend(LLMConfig(backend="openai", base_url=vllm_server.base_url))
    remote.check_label_logprobs()
    got = VerbalizerRanker(remote, rank_dataset.catalog).batch(queries, [ItemList.of(CANDS)] * 2)
    remote.close()
    for a, b in zip(local, got, strict=True):
        assert "rank" not in b.notes
        assert max(abs(_probs(a)[i] - _probs(b)[i]) for i in CANDS) < 0.02


# ---- the shared component checks (slow: real engine) ---------------------------------------------


@pytest.mark.slow
class TestVerbalizerConformance(ComponentConformance):
    finds_items = False
    needs_items = True

    @pytest.fixture(scope="class")
    def env(self, ml_split, llm_engine):
        return SimpleNamespace(split=ml_split, llm=llm_engine)

    def make(self, env, **overrides):
        return VerbalizerRanker(env.llm, env.split.dataset.catalog, **overrides)
