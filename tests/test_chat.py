"""The chat agent: rules and LLM parsing (vLLM structured outputs), memory over several turns,
cold start, and the requests it cannot serve. Real engine, real index, small catalog."""

from __future__ import annotations

import pytest

from recagent.chat import ChatAgent, ChatConfig, ChatSession, ChatTurn, detect_language

# ---- cheap parts ---------------------------------------------------------------------------


def test_public_names_are_stable():
    """The server, batch runner and tools import these; a change is deliberate."""
    import recagent.chat as chat

    assert set(chat.__all__) >= {
        "ChatAgent",
        "ChatConfig",
        "ChatTurn",
        "ChatQuery",
        "ChatReply",
        "ChatSession",
        "detect_language",
        "TitleResolver",
    }
    for method in ("respond", "respond_many", "session", "drop_session", "session_from_messages", "forget_user"):
        assert callable(getattr(ChatAgent, method)), method
    assert isinstance(ChatAgent.n_sessions, property)


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("something like Alien but funnier, from the 90s", "en"),
        ("Amélie", "en"),
        ("algo como Alien pero más divertido, de los 90", "es"),
        ("je voudrais un film drôle avec des robots", "fr"),
        ("ich möchte einen lustigen Film ohne Horror", "de"),
        ("что-нибудь смешное про космос", "script:Cyrillic"),
        ("推荐一部好看的电影", "script:CJK"),
    ],
)
def test_detect_language(text, lang):
    assert detect_language(text)[0] == lang


@pytest.fixture(scope="module")
def rules_agent(no_llm_chat):
    return no_llm_chat


@pytest.fixture(scope="module")
def no_llm_chat(retr_split, retr_index):
    """A chat agent whose pipeline has no LLM: rules only, every fallback reported."""
    from recagent.agent import AgentConfig, RecAgent
    from recagent.data import TrainData
    from recagent.retrieval import Retriever

    p = RecAgent(
        retr_split.dataset,
        Retriever(retr_index, cf_models={}).fit(TrainData.from_dataset(retr_split.dataset)),
        None,
        AgentConfig(k=4),
    )
    return ChatAgent(p, ChatConfig(k=4))


def test_rules_turn_a_request_into_a_structured_query(rules_agent):
    q = rules_agent._rules("something like Alien but funnier, from the 90s, no horror", ChatSession("t"))
    assert q.liked_titles == ["Alien (1979)"]
    assert q.include == {"genres": ["Comedy"]} and q.exclude == {"genres": ["Horror"]}
    assert (q.year_min, q.year_max) == (1990, 1999)
    assert q.mood == "funnier"


@pytest.mark.parametrize(
    ("text", "check"),
    [
        ("I loved The Matrix and Star Wars, sci-fi after 2000",
         lambda q: q.liked_titles[0] == "Matrix, The (1999)" and q.liked_titles[1].startswith("Star Wars") and q.year_min == 2001),
        ('movies similar to "Toy Story" for kids', lambda q: q.liked_titles == ["Toy Story (1995)"] and q.include == {"genres": ["Children"]}),
        ("nothing scary please, a comedy from the early 80s",
         lambda q: q.exclude == {"genres": ["Horror"]} and (q.year_min, q.year_max) == (1980, 1984)),
        ("between 1995 and 2000, thriller", lambda q: (q.year_min, q.year_max) == (1995, 2000)),
        ("something like Xyzzy Quux", lambda q: q.unknown_titles == ["Xyzzy Quux"] and not q.liked),
        ("more please", lambda q: q.more),
    ],
)  # fmt: skip
def test_rules_cases(rules_agent, text, check):
    assert check(rules_agent._rules(text, ChatSession("t")))


def test_without_llm_parsing_says_rules_and_still_answers(no_llm_chat):
    r = no_llm_chat.respond("a comedy from the 90s")
    assert r.query.parse_path == "rules" and "no LLM engine: rules only" in r.query.notes
    assert r.items and all("Comedy" in it.genres and 1990 <= it.year <= 1999 for it in r.items)
    assert r.reply.count("\n") >= len(r.items)


# ---- the real engine -----------------------------------------------------------------------


@pytest.mark.slow
def test_llm_parse_is_validated_and_reports_its_path(chat_agent):
    always = ChatAgent(chat_agent.pipeline, ChatConfig(k=4, llm_parse_when="always"))
    r = always.respond("something like Alien but funnier, from the 90s, no horror")
    q = r.query
    assert q.parse_path in ("llm", "llm+rules", "rules")
    notes = " ".join(q.notes)
    if "LLM JSON invalid" in notes or "carried nothing grounded" in notes:
        assert q.parse_path == "rules"  # the fallback is reported, never silent
    assert q.liked_titles == ["Alien (1979)"] and q.exclude == {"genres": ["Horror"]}
    assert (q.year_min, q.year_max) == (1990, 1999)
    for it in r.items:
        assert "Horror" not in it.genres
        assert it.item_id != "1214"  # the reference film itself is not recommended back


# chat policy (memory, references, constraints, replies) on the fake LLM backend: the merged LLM
# parse and real streaming keep their tests on the engine (above, test_server, test_explain_stream)
@pytest.fixture(scope="module")
def policy_chat(fake_chat_agent):
    return fake_chat_agent


def test_conversation_memory_over_several_turns(policy_chat):
    r1 = policy_chat.respond("I loved Toy Story. Something animated please")
    sid = r1.session_id
    assert r1.items and "1" in r1.memory["likes"]
    r2 = policy_chat.respond("more", session_id=sid)
    assert r2.items and not set(r2.memory["shown"][: len(r1.items)]) & {it.item_id for it in r2.items}
    assert set(r1.memory["shown"]) | {it.item_id for it in r2.items} == set(r2.memory["shown"])
    # "the second one" refers to the previous answer
    second = r2.items[1].item_id
    r3 = policy_chat.respond("I loved the second one", session_id=sid)
    assert second in r3.memory["likes"] and "1" in r3.memory["likes"]
    assert not {it.item_id for it in r3.items} & set(r2.memory["shown"])
    # constraints carry over until changed; a dislike is remembered and never shown
    r4 = policy_chat.respond("I didn't like Aladdin. No drama please", session_id=sid)
    assert "Drama" in policy_chat.session(sid).exclude.get("genres", [])
    assert all("Drama" not in it.genres for it in r4.items)
    assert "588" in r4.memory["dislikes"] and "588" not in {it.item_id for it in r4.items}


def test_the_llm_parses_only_what_the_rules_found_nothing_in(fake_pipeline):
    """By default a message the rules understood is answered without an LLM parse (the first
    streamed token waits for no JSON generation); one they found nothing in is still asked;
    ``llm_parse_when="always"`` asks on every message."""
    llm = fake_pipeline.llm
    for when, message, asked in (("unsure", "a comedy from the 90s, no horror", False),
                                 ("unsure", "I loved Toy Story", False),
                                 ("unsure", "surprise me with something", True),
                                 ("always", "a comedy from the 90s, no horror", True)):  # fmt: skip
        chat = ChatAgent(fake_pipeline, ChatConfig(k=4, llm_parse_when=when))
        before = llm.calls
        chat._llm_parse([ChatTurn(message=message)], [chat.rules.analyse(message)])
        assert (llm.calls > before) is asked, (when, message)


def test_cold_start_user_is_served_from_what_they_say(policy_chat):
    r = policy_chat.respond("a romantic comedy")
    assert r.items and r.memory["likes"] == []
    assert all(set(it.genres) & {"Romance", "Comedy"} for it in r.items)


def test_known_user_adds_their_history(policy_chat, fake_pipeline):
    r = policy_chat.respond("something exciting", user_id="1")
    hist = set(fake_pipeline.dataset.interactions.history("1"))
    assert r.items and not hist & {it.item_id for it in r.items}


@pytest.mark.parametrize(
    ("message", "expect"),
    [
        ("something like Xyzzy Quux Frobnicator", "couldn't find “Xyzzy Quux Frobnicator”"),
        ("a documentary western musical from 1931", "Nothing matched everything"),
        ("vorrei un film divertente da vedere con i miei figli", "only read requests in English"),
        ("что-нибудь смешное", "only read requests in English"),
        ("?!", "Tell me a movie you liked"),
    ],
)
def test_requests_it_cannot_serve_get_useful_replies(policy_chat, message, expect):
    r = policy_chat.respond(message)
    assert expect in r.reply, r.reply


def test_empty_result_after_filters_is_explained(policy_chat):
    sid = policy_chat.respond("a western from 1931").session_id  # relaxation finds something
    agent = policy_chat
    s = agent.session(sid)
    s.include, s.year_min, s.year_max = {"genres": ["Western"]}, 1931, 1931
    old = agent.config.relax_when_empty
    agent.config.relax_when_empty = False
    try:
        r = agent.respond("more", session_id=sid)
    finally:
        agent.config.relax_when_empty = old
    assert r.items == [] and r.reply.startswith("Nothing in the catalog matches")
