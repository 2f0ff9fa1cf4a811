"""Chat parsing on labelled requests (tests/data/chat_fixtures.jsonl, the shipped ml-latest-small
catalog): negation, years and decades, "like X but Y", disliked titles, French/German/Spanish.

The rules must meet every fixture except a short list of known misses; no path may turn a
refusal ("no X") into a wish ("include X"); the LLM parser must keep contributing (issue 9: a
suite that accepts any parse path would stay green with the LLM parser dead).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from recagent.chat.lexicon import attribute_words, fold
from recagent.chat.llm_parse import LLMFields
from recagent.chat.parse_eval import accuracy, field_errors, inversions, load_fixtures, run_parsers

DATA = Path(__file__).parent / "data"
FIXTURES = load_fixtures(DATA / "chat_fixtures.jsonl")
NEGATED = [f for f in FIXTURES if f["exclude"]]
# Fixtures the rules are known to miss (none since issue 24: lowercase titles resolve when
# they are well known and not plain words; a single word only after a watch verb).
KNOWN_RULE_MISSES: dict[str, str] = {}
LOWERCASE_TITLES = ("en-58", "en-91", "en-92")  # "watch frozen", "the dark knight was amazing", "watched shrek"
RECORDED = DATA / "chat_llm_outputs.jsonl"  # the bundled model's answers, bench/chat.py --record


def _refused(fx):
    return {(a, v) for a, vs in fx["exclude"].items() for v in vs}


def _refused_in_mood(q, fx):
    """Words of a refused value in the mood the retriever searches for ("anything but horror" → "Horror")."""
    mood = f" {fold(q.mood)} "
    return [w for a, v in _refused(fx) for w in attribute_words(a, v) if f" {w} " in mood]


def test_fixture_set_covers_the_cases():
    langs = {lang: sum(f["lang"] == lang for f in FIXTURES) for lang in ("en", "fr", "de", "es")}
    assert len(FIXTURES) >= 60 and min(langs.values()) >= 10, langs
    assert len(NEGATED) >= 30
    assert sum(f["year_min"] is not None or f["year_max"] is not None for f in FIXTURES) >= 30
    assert sum(bool(f["disliked"]) for f in FIXTURES) >= 8
    assert sum(bool(f["liked"]) and bool(f["include"] or f["exclude"]) for f in FIXTURES) >= 10  # "like X but Y"
    assert len({f["id"] for f in FIXTURES}) == len(FIXTURES)


@pytest.mark.parametrize("fx", FIXTURES, ids=[f["id"] for f in FIXTURES])
def test_rules_parse_each_fixture(ml_parser, fx):
    errors = field_errors(ml_parser.rules.parse(fx["message"]), fx)
    if fx["id"] in KNOWN_RULE_MISSES:
        # strict: when the rules learn it, move it off the list
        assert set(errors) == {"liked"}, errors
    else:
        assert not errors, errors


def test_rules_never_turn_a_refusal_into_a_wish(ml_parser):
    for fx in NEGATED:
        q = ml_parser.rules.parse(fx["message"])
        wanted = {(a, v) for a, vs in q.include.items() for v in vs}
        assert not _refused(fx) & wanted, fx["id"]
        assert not _refused_in_mood(q, fx), (fx["id"], q.mood)  # nor the mood the retriever searches for


@pytest.mark.parametrize(
    ("text", "include", "exclude"),
    [
        ("no horror or westerns", [], ["Horror", "Western"]),
        ("no horror, gore or slashers, a comedy", ["Comedy"], ["Horror"]),
        ("nothing but comedies", ["Comedy"], []),
        ("not horror but a thriller", ["Thriller"], ["Horror"]),
        ("I'm not into westerns", [], ["Western"]),
        ("a drama, not too romantic and no war", ["Drama"], ["Romance", "War"]),
        ("sin terror ni drama", [], ["Horror", "Drama"]),
        ("weder Horror noch Western", [], ["Horror", "Western"]),
        ("ni horreur ni guerre, une comédie", ["Comedy"], ["Horror", "War"]),
        ("no horror and a comedy", ["Comedy"], ["Horror"]),
    ],
)
def test_negation_scope(ml_parser, text, include, exclude):
    m = ml_parser.rules.matcher.find(fold(text))
    assert sorted(m.include.get("genres", [])) == sorted(include)
    assert sorted(m.exclude.get("genres", [])) == sorted(exclude)


@pytest.mark.parametrize(
    ("text", "years"),
    [
        ("after 2000 and before 2010", (2001, 2009)),
        ("nothing older than 1990", (1990, None)),
        ("pre-1980 horror", (None, 1979)),
        ("mid-80s", (1983, 1987)),
        ("aus den frühen 90ern", (1990, 1994)),
        ("de finales de los 80", (1985, 1989)),
        ("début des années 80", (1980, 1984)),
        ("films of the 1940s", (1940, 1949)),
        ("nothing from the 70s", (None, None)),  # cannot be one range: dropped, with a note
        ("a 2001 or later release", (2001, None)),
    ],
)
def test_year_phrases(ml_parser, text, years):
    q = ml_parser.rules.parse(text)
    assert (q.year_min, q.year_max) == years


def test_titles_by_accent_alternative_title_and_year(ml_parser):
    t = ml_parser.titles
    assert t.resolve("Amélie") == t.resolve("Amelie") == "4973"
    assert t.resolve("Le Fabuleux Destin d'Amélie Poulain") == "4973"  # MovieLens' bracketed original title
    assert t.resolve("Lola rennt") == "2692"
    assert t.resolve("Alien (1979)") == "1214"


def test_values_without_a_word_list_match_by_name():
    """Any catalog works: an attribute the lexicon knows nothing about is matched by its values' names."""
    from recagent.chat.mentions import AttributeMatcher

    m = AttributeMatcher({"brand": ["Acme", "Globex Corp"]}).find(fold("something from Globex Corp, no acme please"))
    assert m.include == {"brand": ["Globex Corp"]} and m.exclude == {"brand": ["Acme"]}


# ---- the LLM path, replayed from recorded answers of the bundled model -----------------------


def _recorded():
    rows = {r["id"]: r for r in map(json.loads, RECORDED.read_text(encoding="utf-8").splitlines())}
    assert [rows[f["id"]]["message"] for f in FIXTURES] == [f["message"] for f in FIXTURES], (
        "re-record: bench/chat.py --record"
    )
    return [rows[f["id"]]["raw"] for f in FIXTURES]


def test_recorded_model_answers_merge_without_harm(ml_parser):
    run = run_parsers(ml_parser, [f["message"] for f in FIXTURES], raw=_recorded())
    assert inversions(run.llm, FIXTURES) == [] and inversions(run.merged, FIXTURES) == []
    for r, m, fx in zip(run.rules, run.merged, FIXTURES, strict=True):
        assert len(field_errors(m, fx)) <= len(field_errors(r, fx)), fx["id"]  # the merge never makes a parse worse
        assert not _refused_in_mood(m, fx), (fx["id"], m.mood)  # the model said mood "Horror" for "anything but horror"
    assert accuracy(run.merged, FIXTURES) >= accuracy(run.rules, FIXTURES)
    by_id = {f["id"]: m for f, m in zip(FIXTURES, run.merged, strict=True)}
    # a lowercase title without a cue, which the model finds too (grounded in the message)
    assert by_id["en-91"].liked == ["58559"] and "liked:58559" in by_id["en-91"].contributions["llm"]
    # the model's invented titles ("The Goonies", copied from the prompt's example) never pass
    assert all("The Goonies" not in " ".join(m.liked_titles) for m in run.merged)


def _ground(parser, message, answer):
    parse = parser.rules.analyse(message)
    parser.merge(parse, parser.ground(message, parse, json.dumps(answer)))
    return parse.query


EMPTY = {
    "liked_titles": [],
    "disliked_titles": [],
    "include": {},
    "exclude": {},
    "year_min": None,
    "year_max": None,
    "mood": "",
}


def test_grounding_drops_what_the_message_does_not_back(ml_parser):
    # issue 14: the model's mood 'Horror' next to exclude Horror
    q = _ground(
        ml_parser,
        "something like Alien but funnier, from the 90s, no horror",
        {**EMPTY, "include": {"genres": ["Horror"]}, "mood": "Horror"},
    )
    assert q.include == {"genres": ["Comedy"]} and q.exclude == {"genres": ["Horror"]} and q.mood == "funnier"
    assert any("Horror" in n and "ignored" in n for n in q.notes)
    # each layer on its own: grounding drops the refused value (the LLM-only path), and the merge
    # never adds a value the rules refuse even if grounding let one through
    msg = "no horror please, just a comedy"
    parse = ml_parser.rules.analyse(msg)
    got = ml_parser.ground(msg, parse, json.dumps({**EMPTY, "include": {"genres": ["Horror", "Comedy"]}}))
    assert got.include == {"genres": ["Comedy"]}
    ml_parser.merge(parse, LLMFields(include={"genres": ["Horror"]}))
    assert parse.query.include == {"genres": ["Comedy"]} and parse.query.exclude == {"genres": ["Horror"]}
    # a year the rules read as a bound: the model cannot add the other half ("before 1970" ≠ from 1970)
    q = _ground(ml_parser, "a thriller from before 1970", {**EMPTY, "year_min": 1970})
    assert (q.year_min, q.year_max) == (None, 1969)
    # a liked title is not made disliked; a title not in the message is not taken
    q = _ground(ml_parser, "something like Alien", {**EMPTY, "disliked_titles": ["Alien"], "liked_titles": ["Titanic"]})
    assert q.liked == ["1214"] and q.disliked == []
    # "Titanic hat mir nicht gefallen": the mood may not search for the disliked title
    q = _ground(ml_parser, "Titanic hat mir nicht gefallen, zeig mir einen Actionfilm", {**EMPTY, "mood": "Titanic"})
    assert q.disliked == ["1721"] and "titanic" not in q.mood.lower()
    # not JSON of the schema: rules only, said in the notes
    parse = ml_parser.rules.analyse("a comedy")
    ml_parser.merge(parse, ml_parser.ground("a comedy", parse, '{"liked_titles": ['))
    assert parse.query.parse_path == "rules" and any("LLM JSON invalid" in n for n in parse.query.notes)


def test_grounding_accepts_what_the_message_backs(ml_parser):
    q = _ground(
        ml_parser, "the dark knight was amazing", {**EMPTY, "liked_titles": ["The Dark Knight"], "mood": "amazing"}
    )
    assert q.liked == ["58559"] and q.parse_path == "llm" and q.contributions["llm"] == ["liked:58559", "mood"]
    q = _ground(ml_parser, "made after the year 1995, a comedy", {**EMPTY, "year_min": 1995})
    assert q.year_min == 1995 and q.parse_path == "llm+rules"


# ---- the LLM path on the real engine -------------------------------------------------------


@pytest.fixture(scope="module")
def live_run(ml_parser, llm_engine):
    from recagent.prompts.render import PromptRenderer

    return run_parsers(
        ml_parser, [f["message"] for f in FIXTURES], llm=llm_engine, renderer=PromptRenderer(llm_engine.tokenizer)
    )


@pytest.mark.slow
def test_merged_parse_never_turns_a_refusal_into_a_wish(live_run):
    assert inversions(live_run.merged, FIXTURES) == [] and inversions(live_run.llm, FIXTURES) == []
    for m, fx in zip(live_run.merged, FIXTURES, strict=True):
        if fx["exclude"]:
            assert _refused(fx) <= {(a, v) for a, vs in m.exclude.items() for v in vs}, fx["id"]
            assert not _refused_in_mood(m, fx), (fx["id"], m.mood)


@pytest.mark.slow
def test_merged_parse_meets_the_fixtures(live_run):
    assert accuracy(live_run.merged, FIXTURES) >= 0.95
    assert accuracy(live_run.merged, FIXTURES) >= accuracy(live_run.rules, FIXTURES)


@pytest.mark.slow
def test_llm_parser_keeps_contributing(live_run):
    """Fails when the LLM parser stops contributing grounded fields (measured with the bundled
    135M model: ~26 of 93 requests carry a grounded field from it, most of them titles the rules
    also found, among them the plain-lowercase titles)."""
    grounded = [f["id"] for f, m in zip(FIXTURES, live_run.merged, strict=True) if m.contributions.get("llm")]
    assert len(grounded) >= 10, grounded
    titles = [
        f["id"]
        for f, m in zip(FIXTURES, live_run.merged, strict=True)
        if any(c.startswith("liked:") for c in m.contributions.get("llm", []))
    ]
    assert len(titles) >= 4, titles
    lowercase = [i for i in LOWERCASE_TITLES if i in titles]
    assert lowercase, "the LLM no longer finds any plain-lowercase title"
