"""Chat sessions: the store interface (memory and SQLite), several processes on one SQLite file,
honest session status (new / continued / unknown / expired / rebuilt), rebuilding memory from a
resent conversation, and forgetting a user."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest

from recagent.chat import ChatAgent, ChatConfig, ChatSession, MemorySessionStore, SQLiteSessionStore, open_session_store
from recagent.errors import ConfigError

TTL = 100.0


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    s = (
        MemorySessionStore(ttl_s=TTL, max_sessions=50)
        if request.param == "memory"
        else SQLiteSessionStore(tmp_path / "chat.db", ttl_s=TTL)
    )
    yield s
    s.close()


# ---- the store interface -------------------------------------------------------------------


def test_put_lookup_round_trip(store):
    s = ChatSession("a", user_id="u1", likes=["1", "2"], dislikes=["3"], shown=["4"], last_shown=["4"],
                    include={"genres": ["Comedy"]}, exclude={"genres": ["Horror"]}, year_min=1990, year_max=1999,
                    mood="funnier", turns=2, status=None)  # fmt: skip
    store.put(s)
    got, status = store.lookup("a")
    assert status == "found" and got == s  # every field survives (JSON in SQLite)
    assert store.lookup("nope") == (None, "unknown")
    assert store.count() == 1


def test_idle_sessions_expire_to_a_tombstone_then_vanish(store):
    now = time.time()
    store.put(ChatSession("old", user_id="u1", updated=now - TTL - 5))
    store.put(ChatSession("fresh", updated=now))
    assert store.lookup("old") == (None, "expired")  # found past its TTL: expired at once
    assert store.lookup("old") == (None, "expired")  # and stays so (tombstone, no data)
    assert store.count() == 1
    store.put(ChatSession("idle", updated=now - TTL - 1))
    assert store.expire(now) == 1 and store.lookup("idle")[1] == "expired"
    store.expire(now + 3 * TTL)  # tombstones are dropped after another TTL; fresh has expired meanwhile
    assert store.lookup("old") == (None, "unknown") and store.lookup("fresh")[1] == "expired"


def test_delete_and_delete_user(store):
    now = time.time()
    for sid, uid in (("a", "u1"), ("b", "u1"), ("c", "u2"), ("d", None)):
        store.put(ChatSession(sid, user_id=uid, likes=["1"]))
    store.put(ChatSession("gone", user_id="u1", updated=now - TTL - 5))
    store.expire(now)
    assert store.delete_user("u1") == 2  # live sessions removed; the tombstone goes too
    assert store.lookup("a")[1] == store.lookup("b")[1] == store.lookup("gone")[1] == "unknown"
    assert store.lookup("c")[1] == store.lookup("d")[1] == "found"
    assert store.delete("c") is True and store.delete("c") is False
    assert store.count() == 1


def test_memory_store_drops_least_recently_used_beyond_its_cap():
    s = MemorySessionStore(ttl_s=TTL, max_sessions=2)
    for sid in "abc":
        s.put(ChatSession(sid))
    assert s.count() == 2 and s.lookup("a") == (None, "expired") and s.lookup("c")[1] == "found"


def test_sqlite_store_caps_live_sessions_at_expire(tmp_path):
    s = SQLiteSessionStore(tmp_path / "c.db", ttl_s=TTL, max_sessions=2)
    now = time.time()
    for n, sid in enumerate("abc"):
        s.put(ChatSession(sid, updated=now + n))
    assert s.expire(now) == 1 and s.count() == 2 and s.lookup("a")[1] == "expired"


@pytest.mark.parametrize(
    ("spec", "kind"),
    [("memory", MemorySessionStore), ("{tmp}/a.db", SQLiteSessionStore), ("sqlite:///{tmp}/b.db", SQLiteSessionStore)],
)
def test_open_session_store(spec, kind, tmp_path):
    st = open_session_store(spec.format(tmp=tmp_path))
    assert isinstance(st, kind)
    st.close()


@pytest.mark.parametrize("spec", ["redis://localhost:6379", "/no/such/folder/chat.db", ""])
def test_bad_session_store_is_a_clear_error(spec):
    with pytest.raises(ConfigError) as e:
        open_session_store(spec)
    assert e.value.param == "session_store" and "memory" in e.value.hint


def test_two_processes_share_one_sqlite_file(tmp_path):
    """Two writers at once (like two `recagent serve` replicas): no lock errors, nothing lost,
    each reads the other's sessions."""
    n = 300
    db = tmp_path / "shared.db"
    SQLiteSessionStore(db, ttl_s=TTL).close()  # create the schema first
    # a pipe handshake: the child says "ready", then both start writing when the parent says "go"
    child = textwrap.dedent(f"""
        import sys
        from recagent.chat import ChatSession, SQLiteSessionStore
        st = SQLiteSessionStore({str(db)!r}, ttl_s={TTL})
        print("ready", flush=True)
        assert sys.stdin.readline().strip() == "go"
        for i in range({n}):
            st.put(ChatSession(f"child-{{i}}", user_id="c", likes=[str(i)], turns=i))
            st.lookup(f"parent-{{i // 2}}")
            st.expire()
        print("ok")
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    mine = SQLiteSessionStore(db, ttl_s=TTL)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()[-2000:]
    proc.stdin.write("go\n")
    proc.stdin.flush()
    for i in range(n):
        mine.put(ChatSession(f"parent-{i}", user_id="p", likes=[str(i)]))
        mine.lookup(f"child-{i // 2}")
        mine.expire()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out.strip() == "ok", err[-2000:]
    assert mine.count() == 2 * n
    got, status = mine.lookup(f"child-{n - 1}")
    assert status == "found" and got.likes == [str(n - 1)] and got.turns == n - 1
    assert mine.delete_user("c") == n and mine.count() == n
    mine.close()


# ---- the agent: status, rebuilding, forgetting (rules only, real index) -------------------------


@pytest.fixture(params=["memory", "sqlite"])
def agent(request, rules_pipeline, tmp_path):
    spec = "memory" if request.param == "memory" else str(tmp_path / "chat.db")
    a = ChatAgent(rules_pipeline, ChatConfig(k=3, session_store=spec, session_ttl_s=TTL))
    yield a
    a.close()


def test_session_status_is_reported(agent):
    r1 = agent.respond("a comedy from the 90s")
    assert r1.session_status == "new" and r1.items
    r2 = agent.respond("more", session_id=r1.session_id)
    assert r2.session_status == "continued" and not {i.item_id for i in r2.items} & {i.item_id for i in r1.items}
    r3 = agent.respond("more", session_id="never-seen")
    assert r3.session_status == "unknown" and r3.items == [] and r3.memory == {"likes": [], "dislikes": [], "shown": []}
    assert "couldn't find our earlier conversation" in r3.reply and "starting fresh" in r3.reply
    assert agent.respond("more", session_id="never-seen").session_status == "continued"
    # expired: idle past the TTL
    s = agent.store.get(r1.session_id)
    s.updated = time.time() - TTL - 5
    agent.store.put(s)
    r4 = agent.respond("a western", session_id=r1.session_id)
    assert r4.session_status == "expired" and "has expired" in r4.reply
    assert r4.memory["shown"] == [i.item_id for i in r4.items]  # started fresh: nothing of r1/r2 remembered


def test_a_new_agent_on_the_same_file_continues_the_conversation(rules_pipeline, tmp_path):
    cfg = ChatConfig(k=3, session_store=f"sqlite:///{tmp_path}/chat.db")
    first = ChatAgent(rules_pipeline, cfg)
    r1 = first.respond("I loved Toy Story, no horror please")
    first.close()  # "server restart"
    second = ChatAgent(rules_pipeline, cfg)
    r2 = second.respond("more", session_id=r1.session_id)
    assert r2.session_status == "continued" and r2.memory["likes"] == ["1"]
    assert second.session(r1.session_id).exclude == {"genres": ["Horror"]}
    assert not {i.item_id for i in r2.items} & set(r1.memory["shown"])
    second.close()


def test_session_from_messages_rebuilds_likes_dislikes_and_shown(agent):
    messages = [
        {"role": "user", "content": "I loved Toy Story, nothing scary"},
        {
            "role": "assistant",
            "content": "Here are 2 movies:\n1. Aladdin (1992) — a reason\n2. Jumanji (1995) — another\nSay “more”.",
        },
        {"role": "user", "content": "I didn't like the second one"},
        {"role": "user", "content": "I hated Titanic. And Forrest Gump was great, loved it"},
    ]
    s = agent.session_from_messages(messages, session_id="resent", user_id="u-re")
    assert s.likes[:1] == ["1"] and {"2", "1721"} <= set(s.dislikes) and s.shown == ["588", "2"]
    assert s.exclude == {"genres": ["Horror"]} and s.user_id == "u-re"
    r = agent.respond("more", session_id="resent")
    assert r.session_status == "rebuilt"
    assert not {i.item_id for i in r.items} & {"588", "2", "1721", "1"}
    assert all("Horror" not in i.genres for i in r.items)
    assert agent.respond("more", session_id="resent").session_status == "continued"


def test_forget_user_removes_every_session_of_that_user(agent):
    a = agent.respond("I loved Toy Story", user_id="u7")
    b = agent.respond("a western please", user_id="u7")
    c = agent.respond("a comedy", user_id="u8")
    before = agent.n_sessions
    assert agent.forget_user("u7") == {"chat_sessions": 2}
    assert agent.n_sessions == before - 2 and agent.forget_user("u7") == {"chat_sessions": 0}
    for sid in (a.session_id, b.session_id):
        assert agent.store.lookup(sid) == (None, "unknown")
    r = agent.respond("more", session_id=a.session_id)
    assert r.memory["likes"] == [] and r.session_status == "unknown"
    assert agent.store.lookup(c.session_id)[1] == "found"


def test_spanish_request_is_parsed_and_answered(rules_pipeline):
    chat = ChatAgent(rules_pipeline, ChatConfig(k=3))
    r = chat.respond("algo como Toy Story pero sin terror, de los 90")
    assert r.query.language == "es" and r.query.liked == ["1"] and r.query.exclude == {"genres": ["Horror"]}
    assert r.items and all("Horror" not in i.genres and 1990 <= i.year <= 1999 for i in r.items)
    assert "Aquí tienes" in r.reply and "Di «más»" in r.reply
