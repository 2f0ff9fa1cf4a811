"""Prompt templates: every shipped template renders with the bundled model's chat template; a
user template folder overrides the shipped files; template mistakes are clear errors."""

from __future__ import annotations

import pytest

from recagent.errors import ConfigError
from recagent.models import resolve_llm_path
from recagent.prompts.render import PROMPTS_DIR, PromptRenderer

HIST = [{"title": "Alien (1979)", "rating": 5.0, "year": 1979, "genres": ["Horror", "Sci-Fi"], "tags": []}]
CANDS = [
    {"label": "A", "title": "Aliens (1986)", "year": 1986, "genres": ["Action"], "tags": []},
    {"label": "B", "title": "Babe (1995)", "year": 1995, "genres": ["Children"], "tags": []},
]
TASTE = {"top_genres": ["Sci-Fi"], "top_tags": ["space"], "mean_rating": 4.5, "n_items": 1}
RANK_CTX = dict(
    item_noun="movie", profile={"age": 30}, taste=TASTE, history=HIST, request=None, candidates=CANDS, labels=["A", "B"]
)


@pytest.fixture(scope="module")
def renderer():
    from transformers import AutoTokenizer

    return PromptRenderer(AutoTokenizer.from_pretrained(resolve_llm_path(None)))


def test_rank_prompt_puts_history_before_candidates(renderer):
    text = renderer.prompt("rank", **RANK_CTX)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")
    assert "age: 30" in text and "favourite genres Sci-Fi" in text and "(rated 5/5)" in text
    assert text.index("Alien (1979)") < text.index("A. Aliens (1986)") < text.index("B. Babe (1995)")
    assert "(A-B)" in text and "asks for" not in text
    asked = renderer.prompt("rank", **(RANK_CTX | {"request": "something darker"}))
    assert (
        text.index("Alien (1979)")
        < asked.index("What the user asks for now: something darker")
        < asked.index("A. Aliens")
    )


def test_cold_start_prompt_without_history(renderer):
    text = renderer.prompt(
        "rank", **(RANK_CTX | {"history": [], "taste": None, "profile": {"text": "loves space operas"}})
    )
    assert "no history yet" in text and "loves space operas" in text


def test_every_shipped_template_renders(renderer):
    assert renderer.prompt("listwise", **RANK_CTX).endswith("Ranking:")
    explain = renderer.prompt("explain", item_noun="movie", taste=TASTE, history=HIST, items=CANDS)
    assert "Alien (1979)" in explain and "A. Aliens (1986) [Action]" in explain
    parse = renderer.prompt(
        "parse_query", item_noun="movie", request="funny, no horror", attributes={"genres": ["Comedy"]}
    )
    assert "Request: funny, no horror" in parse and "- genres: Comedy" in parse
    shipped = {p.stem for p in PROMPTS_DIR.glob("*.jinja")}
    assert {"rank", "listwise", "explain", "parse_query"} <= shipped


def test_user_template_dir_overrides_shipped(renderer, tmp_path):
    (tmp_path / "rank.jinja").write_text("{% block user %}Pick one of {{ labels | join('/') }}.{% endblock %}")
    mine = PromptRenderer(renderer.tokenizer, template_dir=tmp_path)
    assert mine.messages("rank", **RANK_CTX) == [{"role": "user", "content": "Pick one of A/B."}]
    assert "Candidate movies" in mine.prompt("listwise", **RANK_CTX)  # not overridden: the shipped one


def test_template_errors_are_clear(renderer, tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        PromptRenderer(renderer.tokenizer, template_dir=tmp_path / "missing")
    with pytest.raises(ConfigError, match="nope.jinja"):
        renderer.prompt("nope")
    (tmp_path / "rank.jinja").write_text("{% block user %}{{ histroy }}{% endblock %}")
    with pytest.raises(ConfigError, match="histroy"):
        PromptRenderer(renderer.tokenizer, template_dir=tmp_path).prompt("rank", **RANK_CTX)
    (tmp_path / "bad.jinja").write_text("{% block user %}{% if %}{% endblock %}")
    with pytest.raises(ConfigError, match="line 1"):
        PromptRenderer(renderer.tokenizer, template_dir=tmp_path).prompt("bad")
    (tmp_path / "nouser.jinja").write_text("{% block system %}x{% endblock %}")
    with pytest.raises(ConfigError, match="block user"):
        PromptRenderer(renderer.tokenizer, template_dir=tmp_path).messages("nouser")


def test_rank_prompt_shows_the_retrievers_evidence_with_a_legend_once(renderer):
    cands = [dict(CANDS[0], evidence="next 2, cf 5"), dict(CANDS[1], evidence="")]
    text = renderer.prompt("rank", **(RANK_CTX | {"candidates": cands}))
    assert "A. Aliens (1986) [next 2, cf 5]\n" in text and "B. Babe (1995)\n" in text
    assert text.count("next: often chosen right after") == 1
    assert text.index("Candidate movies") < text.index("next: often") < text.index("A. Aliens")
    # no evidence anywhere: no legend, the lines as before
    plain = renderer.prompt("rank", **RANK_CTX)
    assert "next: often" not in plain and "A. Aliens (1986)\n" in plain


def test_compact_rank_prompt_says_the_same_in_fewer_tokens(renderer):
    """rank_compact: short titles, ratings as "(5)", no years, the same order
    (instructions, history, request, then candidates), well under rank.jinja's length."""
    hist = [dict(HIST[0], title="City of Lost Children, The (Cité des enfants perdus, La) (1995)")]
    ctx = RANK_CTX | {"history": hist, "request": "something darker"}
    text = renderer.prompt("rank_compact", **ctx)
    assert "The City of Lost Children (5)\n" in text and "A. Aliens\n" in text and "B. Babe\n" in text
    assert text.index("Lost Children") < text.index("The user asks: something darker") < text.index("A. Aliens")
    assert "Likes: Sci-Fi, space; average rating 4.5." in text and "(A-B)" in text and "(1986)" not in text
    tokens = lambda t: len(renderer.tokenizer.encode(t))  # noqa: E731
    assert tokens(text) < 0.8 * tokens(renderer.prompt("rank", **ctx))
    cold = renderer.prompt(
        "rank_compact", **(RANK_CTX | {"history": [], "taste": None, "profile": {"text": "loves space operas"}})
    )
    assert "No history yet." in cold and "loves space operas" in cold
    cands = [dict(CANDS[0], evidence="next 2"), dict(CANDS[1], evidence="")]
    ev = renderer.prompt("rank_compact", **(RANK_CTX | {"candidates": cands}))
    assert "A. Aliens [next 2]\n" in ev and ev.count("In brackets") == 1 and "In brackets" not in text


@pytest.mark.parametrize(
    ("title", "short"),
    [
        ("City of Lost Children, The (Cité des enfants perdus, La) (1995)", "The City of Lost Children"),
        ("Dumb & Dumber (Dumb and Dumber) (1994)", "Dumb & Dumber"),
        ("Matrix, The (1999)", "The Matrix"),
        ("Star Wars: Episode IV - A New Hope (1977)", "Star Wars: Episode IV - A New Hope"),
        ("Amelie (Fabuleux destin d'Amélie Poulain, Le) (2001)", "Amelie"),
        ("(500) Days of Summer (2009)", "(500) Days of Summer"),
        ("(1995)", "(1995)"),
        ("Seven", "Seven"),
    ],
)
def test_short_title(title, short):
    from recagent.prompts.render import short_title

    assert short_title(title) == short


def test_two_digit_year_filter(renderer, tmp_path):
    (tmp_path / "y.jinja").write_text("{% block user %}{{ a | yy }}|{{ b | yy }}|{{ c | yy }}{% endblock %}")
    mine = PromptRenderer(renderer.tokenizer, template_dir=tmp_path)
    assert mine.messages("y", a=1999, b=2005, c=None)[0]["content"] == "'99|'05|"


def test_evidence_text_names_the_sources_strongest_first():
    from recagent.ranking.prompt import evidence_text

    assert evidence_text({"cf": 5, "sequence": 2, "knowledge": 90}) == "next 2, cf 5"  # beyond rank 50: left out
    assert evidence_text({"content": 1}, max_rank=50) == "like 1"
    assert evidence_text({}) == evidence_text(None) == ""
