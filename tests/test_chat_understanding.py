"""Chat understanding that generalizes (issue 24), on the rules alone and the shipped catalog:
negation scoped to a modifier, occasions and moods, franchise / lowercase / partial titles,
dislikes in other wordings, hyphenated genre pairs, contradictions, and refinement turns that
act on the previous list. Expected items are computed from the data (most ratings), not typed in.
"""

from __future__ import annotations

import pytest

from recagent.chat.models import ChatQuery, ChatSession
from recagent.chat.parse_eval import inversions


def _g(q: ChatQuery, part: str) -> list[str]:
    return sorted(getattr(q, part).get("genres", []))


def _most_rated(ml_small, prefix: str) -> str:
    """The most-rated film whose title starts with ``prefix`` (ties: the earlier)."""
    cat = ml_small.catalog
    pop = ml_small.interactions.df["item_id"].astype(str).value_counts()
    ids = [i for i, t in cat.items["title"].items() if str(t).lower().startswith(prefix.lower())]
    return max(ids, key=lambda i: (pop.get(i, 0), -int(cat.items.loc[i, "year"] or 0)))


@pytest.mark.parametrize(
    ("text", "include", "exclude"),
    [
        ("a war film that's not too depressing", ["War"], []),
        ("a horror film, nothing too gory", ["Horror"], []),  # the modifier's own genre is the head
        ("a horror movie that isn't overly scary", ["Horror"], []),
        ("un film d'horreur mais pas trop gore", ["Horror"], []),
        ("ein Horrorfilm, nicht zu gruselig", ["Horror"], []),
        ("una película de terror pero no muy escalofriante", ["Horror"], []),
        ("an animated movie for kids, nothing too scary", ["Animation", "Children"], ["Horror"]),  # no head: a refusal
        ("nothing too scary", [], ["Horror"]),
        ("a horror film, but no comedy", ["Horror"], ["Comedy"]),  # plain negation still refuses
    ],
)
def test_negation_attaches_to_what_it_governs(ml_parser, text, include, exclude):
    q = ml_parser.rules.parse(text)
    assert (_g(q, "include"), _g(q, "exclude")) == (sorted(include), sorted(exclude))


@pytest.mark.parametrize(
    ("text", "include"),
    [
        ("a date-night movie", ["Romance"]),
        ("an action-packed evening", ["Action"]),
        ("I want to laugh", ["Comedy"]),
        ("quelque chose pour une soirée en amoureux", ["Romance"]),
        ("was zum Lachen für heute", ["Comedy"]),
        ("algo para una noche de Halloween", ["Horror"]),
        ("something to make me cry", ["Drama"]),
    ],
)
def test_occasions_and_moods_carry_genres(ml_parser, text, include):
    assert _g(ml_parser.rules.parse(text), "include") == sorted(include)


def test_a_title_inside_an_occasion_is_no_liked_film_unless_a_cue_says_so(ml_parser):
    for text in ("something for Christmas Eve with the family", "a movie for Friday night", "for a long flight"):
        assert ml_parser.rules.parse(text).liked == [], text
    speed = ml_parser.titles.exact("Speed")
    assert speed and ml_parser.rules.parse("I loved Speed, more like that").liked == [speed]
    assert ml_parser.rules.parse("not a date movie").exclude == {"genres": ["Romance"]}  # negation applies


def test_franchise_names_resolve_to_the_best_known_film(ml_parser, ml_small):
    for name in ("Harry Potter", "Star Wars", "Indiana Jones"):
        want = _most_rated(ml_small, name)
        assert ml_parser.rules.parse(f"something like {name}").liked == [want], name
    # two films of one name: the better known one
    assert ml_parser.rules.parse("like Ocean's Eleven").liked == [_most_rated(ml_small, "Ocean's Eleven")]


def test_lowercase_and_partial_titles(ml_parser, ml_small):
    bttf = _most_rated(ml_small, "Back to the Future")
    assert ml_parser.rules.parse("back to the future was great, more like it").liked == [bttf]
    shawshank = _most_rated(ml_small, "Shawshank")
    assert ml_parser.rules.parse("something like shawshank").liked == [shawshank]  # partial, after a cue
    assert ml_parser.rules.parse("we watched shrek yesterday").liked == [_most_rated(ml_small, "Shrek")]
    # plain words are no titles without a cue or a watch verb
    for text in ("nothing with zombies or aliens", "a film about the future", "something up to date"):
        assert ml_parser.rules.parse(text).liked == [], text


@pytest.mark.parametrize(
    "text",
    ["Titanic bored me", "Titanic was not for me", "I couldn't stand Titanic", "Titanic m'a ennuyé",
     "Titanic hat mich gelangweilt", "Titanic me aburrió", "Titanic no era para mí"],
)  # fmt: skip
def test_dislikes_in_other_wordings(ml_parser, text):
    q = ml_parser.rules.parse(text)
    titanic = ml_parser.titles.exact("Titanic")
    assert q.disliked == [titanic] and titanic not in q.liked


@pytest.mark.parametrize(
    ("text", "include"),
    [("a romantic-comedy", ["Comedy", "Romance"]), ("a sci-fi-thriller", ["Sci-Fi", "Thriller"]),
     ("une comédie-romantique", ["Comedy", "Romance"]), ("an action-comedy", ["Action", "Comedy"])],
)  # fmt: skip
def test_hyphenated_genre_pairs(ml_parser, text, include):
    assert _g(ml_parser.rules.parse(text), "include") == sorted(include)


def test_contradictions_are_stated(ml_parser):
    q = ml_parser.rules.parse("a comedy but no comedy")
    assert q.exclude == {"genres": ["Comedy"]} and q.include == {} and q.conflicts
    y = ml_parser.rules.parse("before 1950 and after 2000")
    assert y.conflicts and "year" in y.conflicts[0]
    assert ml_parser.rules.parse("a comedy from the 90s").conflicts == []


@pytest.fixture
def shown(ml_parser, ml_small):
    """A session whose previous answer was five films of known years."""
    s = ChatSession("s1")
    s.last_shown = [
        _most_rated(ml_small, t) for t in ("Toy Story", "Star Wars", "Matrix", "Silence of the Lambs", "Fargo")
    ]
    return s


def test_refinement_more_like_the_second_one(ml_parser, shown):
    assert ml_parser.rules.parse("more like the second one", shown).liked == [shown.last_shown[1]]
    assert ml_parser.rules.parse("another one like the first", shown).liked == [shown.last_shown[0]]
    assert ml_parser.rules.parse("la segunda no", shown).disliked == [shown.last_shown[1]]


def test_refinement_not_that_one(ml_parser, shown):
    q = ml_parser.rules.parse("not that one", shown)
    assert q.disliked == [shown.last_shown[0]] and q.liked == []
    assert ml_parser.rules.parse("nicht den ersten", shown).disliked == [shown.last_shown[0]]


def test_refinement_something_older_or_newer(ml_parser, shown):
    years = sorted(ml_parser.titles.year[i] for i in shown.last_shown)
    mid = years[len(years) // 2]
    older = ml_parser.rules.parse("something older", shown)
    assert (older.year_min, older.year_max) == (None, mid - 1)
    newer = ml_parser.rules.parse("plus récent", shown)
    assert (newer.year_min, newer.year_max) == (mid + 1, None)
    # without a previous list "older" means nothing
    assert ml_parser.rules.parse("something older").year_max is None


def test_refinement_less_violent(ml_parser, shown):
    q = ml_parser.rules.parse("less violent", shown)
    assert {"Horror", "War", "Crime"} <= set(q.exclude.get("genres", []))
    assert ml_parser.rules.parse("weniger brutal", shown).exclude.get("genres")
    # on a first message "not too violent" stays a soft modifier: nothing excluded
    assert ml_parser.rules.parse("a war film that's not too violent").exclude == {}


def test_inversions_count_both_directions():
    fx = [{"id": "a", "include": {"genres": ["War"]}, "exclude": {}, "liked": ["1"], "disliked": []}]
    flipped = ChatQuery(exclude={"genres": ["War"]})
    assert inversions([flipped], fx) == ["a"] and inversions([flipped], fx, "refused_as_wanted") == []
    assert inversions([ChatQuery(disliked=["1"])], fx, "wanted_as_refused") == ["a"]
    assert inversions([ChatQuery(include={"genres": ["War"]}, liked=["1"])], fx) == []


def test_an_ambiguous_title_asks_which_one(ml_parser, ml_small):
    kongs = [i for i, t in ml_small.catalog.items["title"].items() if str(t).startswith("King Kong (")]
    q = ml_parser.rules.parse("something like King Kong")
    (chosen,) = q.liked
    assert set(kongs) >= {chosen, *q.ambiguous[chosen]} and len(q.ambiguous[chosen]) >= 1
    assert ml_parser.rules.parse("something like King Kong (1933)").ambiguous == {}  # the year settles it
    assert ml_parser.rules.parse("I loved Heat").ambiguous == {}  # one clearly better known
    from recagent.chat.reply import ReplyComposer

    lines, *_ = ReplyComposer(ml_parser.titles, "movie").compose_lines(ChatSession("a"), q, None, [], "new")
    assert any(line.startswith("Which one did you mean") for line in lines)


def test_a_contradiction_is_stated_and_an_empty_year_range_not_applied(ml_parser):
    from recagent.chat import ChatAgent
    from recagent.chat.reply import ReplyComposer

    q = ml_parser.rules.parse("something before 1950 and after 2000")
    s = ChatSession("c")
    ChatAgent._absorb(None, s, q)  # the memory update of a turn (uses no agent state)
    assert (s.year_min, s.year_max) == (None, None)
    lines, *_ = ReplyComposer(ml_parser.titles, "movie").compose_lines(s, q, None, [], "new")
    assert any("contradicts itself" in line and "year" in line for line in lines)
