"""The explanation parser and grounding check: what they accept, and every way they must refuse."""

from __future__ import annotations

import pytest

from recagent.explain import check_reason, parse_reasons

HISTORY = [
    {"item_id": "1", "title": "Toy Story (1995)"},
    {"item_id": "1270", "title": "Back to the Future (1985)"},
    {"item_id": "2571", "title": "Matrix, The (1999)"},
]


def test_a_reason_citing_a_history_title_is_kept_with_our_ids():
    got = check_reason("Like The Matrix, it bends reality with stylish action.", "Inception (2010)", HISTORY)
    assert got == ("Like The Matrix, it bends reality with stylish action.", ["2571"])
    two = check_reason("Fans of Toy Story and Back to the Future will enjoy its warm humour.", "Up (2009)", HISTORY)
    assert two is not None and sorted(two[1]) == ["1", "1270"]


@pytest.mark.parametrize(
    ("reason", "item", "why"),
    [
        (None, "Up (2009)", "no reason"),
        ("", "Up (2009)", "empty"),
        ("A great film.", "Up (2009)", "cites nothing from the history"),
        ("Like Toy Story.", "Up (2009)", "fewer than 4 words"),
        ("Toy Story, Toy Story!", "Up (2009)", "only titles, no words of its own"),
        ("Toy Story (1995) [Adventure, Animation]", "Up (2009)", "a copied catalog line"),
        (
            "Back to the Future Part II continues the time travel fun.",
            "Back to the Future Part II (1989)",
            "names only the recommended item's own title, which contains a history title",
        ),
        ("Like <b>Toy Story</b>, it is a charming family adventure.", "Up (2009)", "markup"),
        (
            "Just like Jurassic Park, which you loved, it has dinosaurs.",
            "Up (2009)",
            "a title not in the shown history",
        ),
        (" ".join(["word"] * 70) + " Toy Story", "Up (2009)", "far too long"),
    ],
)
def test_unusable_reasons_are_refused(reason, item, why):
    assert check_reason(reason, item, HISTORY) is None, why


def test_parse_reasons_reads_json_then_lines_and_ignores_the_rest():
    assert parse_reasons('{"A": "first reason", "B": "  ", "Z": "not ours", "C": 3}', ["A", "B", "C"]) == {
        "A": "first reason"
    }
    text = 'Here you go:\nA: it has robots\n**B.** a heist gone wrong\n- C) "quoted"\nA: a second A is ignored\nD: unknown label'
    assert parse_reasons(text, ["A", "B", "C"]) == {"A": "it has robots", "B": "a heist gone wrong", "C": "quoted"}
    assert parse_reasons("", ["A"]) == {} and parse_reasons("{not json", ["A"]) == {}
    assert parse_reasons('["A", "B"]', ["A", "B"]) == {}  # JSON, but not an object
