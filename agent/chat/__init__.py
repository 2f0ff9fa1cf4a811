"""The chat agent: a request in words → a structured query → recommendations with reasons.

>>> chat = ChatAgent(pipeline)
>>> r = chat.respond("something like Alien but funnier, from the 90s, no horror")
>>> r.query.liked_titles, r.query.include, r.query.exclude, (r.query.year_min, r.query.year_max)
(['Alien (1979)'], {'genres': ['Comedy']}, {'genres': ['Horror']}, (1990, 1999))
>>> print(r.reply)
>>> chat.respond("more", session_id=r.session_id)       # new picks; shown items are not repeated

One module per job:

* :mod:`.language` — which language a message is in; :mod:`.lexicon` — the word lists (data
  files in ``lexicon/``: stop words, negators, cues, year phrases, attribute words per language);
* :mod:`.titles` — titles from what people type; :mod:`.mentions` — attribute values named,
  wanted or refused ("no horror"); :mod:`.years` — year ranges in words;
* :mod:`.rules` — the rule parser; :mod:`.llm_parse` — the LLM parser (vLLM structured
  outputs), grounded in the message and merged with the rules (``query.parse_path``,
  ``query.contributions`` say which path supplied what);
* :mod:`.sessions` — where conversations live (memory or SQLite, one small interface);
* :mod:`.policy` — :class:`ChatAgent`: memory and planning; :mod:`.reply` — the reply text.

Requests the agent cannot serve get a reply that says why and what to try: a title not in the
catalog (with suggestions), nothing left after the filters (one relaxation is tried and named),
a message in a language the rules do not read (English, French, German, Spanish are read), a
conversation id it no longer knows (``ChatReply.session_status``).
"""

from .language import detect_language
from .models import ChatConfig, ChatQuery, ChatReply, ChatSession, ChatTurn, SessionStatus
from .policy import ChatAgent
from .sessions import MemorySessionStore, SessionStore, SQLiteSessionStore, open_session_store
from .titles import TitleResolver

__all__ = [
    "ChatAgent",
    "ChatConfig",
    "ChatTurn",
    "ChatQuery",
    "ChatReply",
    "ChatSession",
    "SessionStatus",
    "SessionStore",
    "MemorySessionStore",
    "SQLiteSessionStore",
    "open_session_store",
    "detect_language",
    "TitleResolver",
]
