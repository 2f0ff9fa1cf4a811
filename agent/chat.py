"""The chat agent: a request in words → a structured query → recommendations with reasons.

>>> chat = ChatAgent(pipeline)
>>> r = chat.respond("something like Alien but funnier, from the 90s, no horror")
>>> r.query.liked_titles, r.query.include, r.query.exclude, (r.query.year_min, r.query.year_max)
(['Alien (1979)'], {'genres': ['Comedy']}, {'genres': ['Horror']}, (1990, 1999))
>>> print(r.reply)
>>> chat.respond("more", session_id=r.session_id)       # new picks; shown items are not repeated

Parsing runs two paths and reports which one produced the query (``query.parse_path``):

* **llm** — vLLM structured outputs: the model fills a JSON schema (``prompts/parse_query.jinja``)
  whose attribute values are enums of the catalog's values. The JSON is validated and every
  field must be grounded in the message (a title must appear in it and resolve to a catalog
  item, a genre must be named or described, a year must be written), because a 135M model
  happily invents all three;
* **rules** — title matching (quoted titles, titles after "like / loved / similar to",
  capitalised spans), year and decade patterns ("90s", "after 2005", "1990-1995"), genre words
  with negation ("no horror", "nothing scary").

``parse_path`` is ``"llm"``, ``"rules"`` or ``"llm+rules"`` (both contributed); ``notes`` says
what was dropped and why.

Memory per conversation (``session_id``): liked and disliked items, items already shown
(never shown again), and the constraints of the last request, which carry over until the user
changes them ("more", "funnier please", "I loved the second one"). A user without history is
served from what they say (cold start); a known ``user_id`` adds their stored history.

Requests the agent cannot serve get a reply that says why and what to try: a title not in the
catalog (with suggestions), nothing left after the filters (one relaxation is tried and named),
a message in another language (detected from its script and common words).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .agent import RecAgent, Recommendation, RecommendedItem, RecommendRequest
from .errors import RecAgentError
from .llm import LLMBackendError
from .store import attribute_schema
from .titles import normalize_title

__all__ = [
    "ChatConfig",
    "ChatTurn",
    "ChatQuery",
    "ChatReply",
    "ChatSession",
    "ChatAgent",
    "detect_language",
    "TitleResolver",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------
# types


class ChatConfig(BaseModel):
    """Chat behaviour; defaults suit the bundled 135M model."""

    model_config = ConfigDict(extra="forbid")

    k: int = Field(5, ge=1, le=50)
    """Picks per answer."""
    parse_with_llm: bool = True
    """Ask the LLM for the structured query (validated); False = rules only."""
    parse_max_tokens: int = Field(160, ge=32, le=1024)
    """Token budget of the JSON query. The schema bounds every field, but vLLM lets the model put
    whitespace between tokens, so a rambling answer can still be cut off: then rules only."""
    max_schema_values: int = Field(60, ge=2)
    """Attributes with more distinct values than this are not offered to the LLM (tags: too many)."""
    max_sessions: int = Field(1000, ge=1)
    """Conversations kept in memory (least recently used dropped first)."""
    session_ttl_s: float = Field(6 * 3600, gt=0)
    relax_when_empty: bool = True
    """Nothing passes the filters: retry once without year range and required genres (excludes stay)."""


class ChatTurn(BaseModel):
    """One user message (also the body of ``POST /chat``)."""

    model_config = ConfigDict(extra="forbid")

    message: str = Field(..., min_length=1, max_length=2000, description="What the user says.")
    session_id: str | None = Field(None, max_length=100, description="Conversation id; omitted = a new conversation.")
    user_id: str | None = Field(None, max_length=200, description="A known user id adds their stored history.")
    k: int | None = Field(None, ge=1, le=50, description="Picks to return.")

    @field_validator("message")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("message is blank; write what you would like to watch")
        return v.strip()


class ChatQuery(BaseModel):
    """The structured query behind an answer, and how it was obtained."""

    liked: list[str] = Field(default_factory=list)
    """Catalog ids of the reference items the message names as liked."""
    liked_titles: list[str] = Field(default_factory=list)
    disliked: list[str] = Field(default_factory=list)
    unknown_titles: list[str] = Field(default_factory=list)
    """Titles the message names that are not in the catalog."""
    include: dict[str, list[str]] = Field(default_factory=dict)
    exclude: dict[str, list[str]] = Field(default_factory=dict)
    year_min: int | None = None
    year_max: int | None = None
    mood: str = ""
    more: bool = False
    """"more" / "something else": same query, new items."""
    reset: bool = False
    language: str = "en"
    parse_path: Literal["llm", "rules", "llm+rules"] = "rules"
    notes: list[str] = Field(default_factory=list)


class ChatReply(BaseModel):
    """The agent's answer: text for people, items and the query for programs."""

    session_id: str
    reply: str
    items: list[RecommendedItem] = Field(default_factory=list)
    query: ChatQuery
    relaxed: list[str] = Field(default_factory=list)
    """Constraints dropped because nothing passed them all."""
    memory: dict[str, list[str]] = Field(default_factory=dict)
    fallback: dict[str, str] = Field(default_factory=dict)
    timings_ms: dict[str, float] = Field(default_factory=dict)


@dataclass
class ChatSession:
    """What one conversation remembers."""

    id: str
    user_id: str | None = None
    likes: list[str] = field(default_factory=list)
    dislikes: list[str] = field(default_factory=list)
    shown: list[str] = field(default_factory=list)
    last_shown: list[str] = field(default_factory=list)  # the previous answer, for "the second one"
    include: dict[str, list[str]] = field(default_factory=dict)
    exclude: dict[str, list[str]] = field(default_factory=dict)
    year_min: int | None = None
    year_max: int | None = None
    mood: str = ""
    turns: int = 0
    updated: float = field(default_factory=time.time)

    def memory(self) -> dict[str, list[str]]:
        return {"likes": list(self.likes), "dislikes": list(self.dislikes), "shown": list(self.shown)}


# ------------------------------------------------------------------------------------------
# language detection (cheap: script + common words)


_WORDS = {
    "en": "the and is a an to of something like with from but no not movie movies film films i me my want "
    "please show recommend for in that it some any watch similar funny good great more about who what "
    "would love liked loved enjoyed seen more less scary",
    "es": "el la los las una un que con para película películas algo como pero quiero por favor del y sin muy "
    "recomienda recomiéndame me gusta gustan busco dame",
    "fr": "le les une des que avec pour quelque chose comme mais je veux voudrais sans du et est un film "
    "films drôle peur aime recommande moi",
    "de": "der die das ein eine und mit für nicht ich möchte etwas wie aber ohne filme bitte von einen "
    "lustig gruselig empfiehl mir",
    "it": "il lo gli una che con per qualcosa come ma voglio senza di e vorrei consiglia divertente",
    "pt": "o os um uma que com para algo como mas quero sem filme filmes de e você recomenda engraçado",
    "nl": "de het een en met voor iets zoals maar ik wil zonder van graag grappig",
}
_STOP = {lang: set(ws.split()) for lang, ws in _WORDS.items()}
_LANG_NAMES = {"es": "Spanish", "fr": "French", "de": "German", "it": "Italian", "pt": "Portuguese", "nl": "Dutch"}
_SCRIPTS = [
    ("Cyrillic", 0x0400, 0x04FF), ("Greek", 0x0370, 0x03FF), ("Arabic", 0x0600, 0x06FF), ("Hebrew", 0x0590, 0x05FF),
    ("Devanagari", 0x0900, 0x097F), ("Thai", 0x0E00, 0x0E7F), ("Hangul", 0xAC00, 0xD7AF), ("Japanese kana", 0x3040, 0x30FF),
    ("CJK", 0x4E00, 0x9FFF),
]  # fmt: skip


def detect_language(text: str) -> tuple[str, str]:
    """(code, name): ``("en", "English")`` or a guess such as ``("es", "Spanish")``,
    ``("script:Cyrillic", "Cyrillic script")``. Cheap and conservative: English unless the
    message is mostly another script or has clearly more common words of another language."""
    letters = [c for c in text if c.isalpha()]
    if letters:
        for name, lo, hi in _SCRIPTS:
            share = sum(lo <= ord(c) <= hi for c in letters) / len(letters)
            if share > 0.3:
                return f"script:{name}", f"{name} script"
        non_latin = sum(ord(c) > 0x24F for c in letters) / len(letters)
        if non_latin > 0.3:
            return "script:other", "a non-Latin script"
    words = re.findall(r"[^\W\d_]+", text.lower())
    en = sum(w in _STOP["en"] for w in words)
    best, best_n = "en", 0
    for lang, stop in _STOP.items():
        if lang == "en":
            continue
        n = sum(w in stop and w not in _STOP["en"] for w in words)
        if n > best_n:
            best, best_n = lang, n
    if best_n >= 2 and best_n > en:
        return best, _LANG_NAMES[best]
    return "en", "English"


# ------------------------------------------------------------------------------------------
# titles


_LEADING_ARTICLE = re.compile(r"^(the|a|an) ")


class TitleResolver:
    """Catalog titles by normalised form; a phrase resolves to the most popular exact match,
    else to the most popular title that starts with it before a subtitle ("Star Wars" →
    "Star Wars: Episode IV - A New Hope (1977)"). Never a loose substring match."""

    def __init__(self, pipeline: RecAgent):
        self.catalog = pipeline.catalog
        pop = pipeline.popularity
        self.by_norm: dict[str, list[str]] = {}
        self.norm: dict[str, str] = {}
        for item_id, title in self.catalog.items["title"].items():
            n = normalize_title(str(title))
            if not n:
                continue
            self.norm[item_id] = n
            for key in {n, _LEADING_ARTICLE.sub("", n)}:
                self.by_norm.setdefault(key, []).append(item_id)
        for ids in self.by_norm.values():
            ids.sort(key=lambda i: (-pop.get(i, 0), i))
        self._keys = sorted(self.by_norm)
        self._pop = pop

    def resolve(self, phrase: str) -> str | None:
        n = normalize_title(phrase)
        if len(n) < 2:
            return None
        for key in (n, _LEADING_ARTICLE.sub("", n)):
            if key in self.by_norm:
                return self.by_norm[key][0]
        # subtitle prefix: "star wars" → "star wars episode iv a new hope" (title had a ':' or ' - ')
        if len(n.split()) >= 2 or len(n) >= 5:
            hits = []
            for item_id, norm in self.norm.items():
                if norm.startswith(n + " "):
                    raw = self.catalog.title(item_id).lower()
                    cut = raw.find(phrase.strip().lower()[-3:])
                    if re.search(r"[:\-–]", raw[cut:]) or len(n.split()) >= 3:
                        hits.append(item_id)
            if hits:
                return max(hits, key=lambda i: (self._pop.get(i, 0), i))
        return None

    def suggest(self, phrase: str, limit: int = 3) -> list[str]:
        """Titles sharing the phrase's longest word, most popular first (for "did you mean")."""
        words = sorted(re.findall(r"\w{4,}", phrase.lower()), key=len, reverse=True)
        if not words:
            return []
        ids = self.catalog.search_title(words[0], limit=200)
        ids.sort(key=lambda i: -self._pop.get(i, 0))
        return [self.catalog.title(i) for i in ids[:limit]]


# ------------------------------------------------------------------------------------------
# rules


_GENRE_WORDS: dict[str, list[str]] = {
    "Comedy": ["comedy", "comedies", "funny", "funnier", "funniest", "hilarious", "humor", "humour", "laugh", "laughs", "lighthearted", "light-hearted"],
    "Horror": ["horror", "scary", "scarier", "creepy", "spooky", "terrifying", "slasher", "gore", "gory"],
    "Sci-Fi": ["sci-fi", "scifi", "sci fi", "science fiction", "science-fiction", "futuristic"],
    "Romance": ["romance", "romantic", "love story", "romcom", "rom-com"],
    "Action": ["action"],
    "Thriller": ["thriller", "thrillers", "suspense", "suspenseful"],
    "Animation": ["animation", "animated", "cartoon", "cartoons", "anime"],
    "Children": ["children", "kids", "kid", "family"],
    "Documentary": ["documentary", "documentaries"],
    "Drama": ["drama", "dramas", "dramatic"],
    "War": ["war movie", "war movies", "war film", "war films", "wartime"],
    "Western": ["western", "westerns", "cowboy", "cowboys"],
    "Musical": ["musical", "musicals"],
    "Mystery": ["mystery", "mysteries", "whodunit", "whodunnit"],
    "Crime": ["crime", "gangster", "gangsters", "heist", "mafia"],
    "Fantasy": ["fantasy", "wizards", "dragons"],
    "Film-Noir": ["noir", "film-noir", "film noir"],
    "Adventure": ["adventure", "adventures", "adventurous"],
    "IMAX": ["imax"],
}  # fmt: skip
_NEGATORS = r"(?:no|not|non|without|nothing|avoid|except|minus|never|skip|hate|hates|less|none|don'?t want|do not want|not too|nothing too)"
_DISLIKE_CUE = re.compile(
    r"\b(?:didn'?t like|did not like|don'?t like|do not like|hated|hate|disliked|dislike|not a fan of|can'?t stand|"
    r"couldn'?t stand|was bored by|(?:i'?ve |i have |already )(?:seen|watched))\s+(?P<t>[^,.;!?]+)",
    re.I,
)
_LIKE_CUE = re.compile(
    r"\b(?:like|similar to|such as|reminds? me of|in the (?:style|vein) of|as good as|fans? of|loved|love|liked|"
    r"enjoyed|adored?|favou?rite (?:movie |film )?(?:is|was))\s+(?P<t>[^,.;!?]+)",
    re.I,
)
_QUOTED = re.compile(r"[\"“”«»]([^\"“”«»]{2,80})[\"“”«»]|(?:^|\s)'([^']{2,80})'(?=[\s,.;!?]|$)")
_TITLE_STOP = re.compile(r"\s+(?:but|from|with|that|which|for|in the|only|except|without|and no|or no|no|not|made|released|set|please|though|yet)\b.*$", re.I)
_NOT_A_TITLE = re.compile(
    r"^(?:something|anything|stuff|things?|movies?|films?|shows?|ones?|it|this|that|them|those|these|"
    r"a (?:movie|film)|to|i|you|more|some|any|what|how|the (?:first|second|third|last))\b",
    re.I,
)
_ORDINALS = {"first": 0, "1st": 0, "second": 1, "2nd": 1, "third": 2, "3rd": 2, "fourth": 3, "4th": 3, "fifth": 4, "5th": 4, "last": -1}
_ORDINAL_RE = re.compile(r"\b(?:the\s+)?(first|1st|second|2nd|third|3rd|fourth|4th|fifth|5th|last)(?:\s+one)?\b|#(\d)\b|\bnumber (\d)\b", re.I)
_NEGATIVE = re.compile(r"\b(?:not|no|didn'?t|don'?t|hate|hated|dislike|seen|watched|boring|bad|awful)\b", re.I)
_MORE = re.compile(
    r"^\s*(?:(?:show |give )?(?:me )?(?:some )?(?:more|another|others|other ones|other options|something else|"
    r"anything else|next|different ones?)(?: please| pls)?[.!?]*)\s*$",
    re.I,
)
_RESET = re.compile(r"\b(?:start over|reset|forget (?:it|that|everything)|new search)\b", re.I)
_CAPS_SPAN = re.compile(r"\b([A-Z0-9][\w'’&:-]*(?:\s+(?:(?:of|the|a|an|and|in|on|to|&)\s+)*[A-Z0-9][\w'’&:-]*)*)")
_YEAR_PHRASE = re.compile(
    r"\b(?:between|from|after|since|before|until|older than|newer than|in|of|released in)?\s*(?:the\s+)?"
    r"(?:early|mid|late)?[- ]?'?(?:\d{4}|\d{2})'?s?\b(?:\s*(?:and|to|-|–)\s*\d{4})?|\b(?:recent|latest|newest)\b",
    re.I,
)
_FILLER = re.compile(
    r"\b(?:i'?d|i'?ve|i'?m|i|would|want|wanna|please|pls|recommend|show|me|give|something|anything|a|an|the|"
    r"movies?|films?|like|similar|to|some|looking|for|watch|watched|seen|tonight|today|can|could|you|loved|liked|"
    r"love|enjoyed|meets|but|and|or|with|one|ones|it|that|maybe|just|really|very|kind|of|sort|get|need)\b",
    re.I,
)
_COMMON_CAPS = set("I I'm I'd I've Something Anything Please Show Give Recommend Looking Want Find Me My Hi Hello Hey Thanks What Any Some Can Could Would Movie Movies Film Films No Not More".split())


def _year_rules(text: str, max_year: int) -> tuple[int | None, int | None]:
    t = text.lower()
    m = re.search(r"\b(?:between|from)\s+(\d{4})\s*(?:and|to|-|–|until)\s*(\d{4})\b", t) or re.search(r"\b(\d{4})\s*[-–]\s*(\d{4})\b", t)
    if m:
        a, b = sorted((int(m.group(1)), int(m.group(2))))
        return a, b
    m = re.search(r"\b(early|mid|late)[- ]?(?:the\s+)?'?(\d{2}|\d{4})'?s\b", t)
    if m:
        lo = _decade(m.group(2), max_year)
        return {"early": (lo, lo + 4), "mid": (lo + 3, lo + 7), "late": (lo + 5, lo + 9)}[m.group(1)]
    m = re.search(r"(?:^|[\s(])(?:the\s+)?'?(\d{2}|1[89]\d0|20[0-2]0)'?s\b", t)
    if m:
        lo = _decade(m.group(1), max_year)
        return lo, lo + 9
    lo = hi = None
    m = re.search(r"\b(?:after|since|newer than|post[- ]?)\s*(\d{4})\b", t)
    if m:
        lo = int(m.group(1)) + (1 if "after" in m.group(0) or "newer" in m.group(0) else 0)
    m = re.search(r"\b(?:before|older than|pre[- ]?|until)\s*(\d{4})\b", t)
    if m:
        hi = int(m.group(1)) - (0 if "until" in m.group(0) else 1)
    if lo is None and hi is None:
        m = re.search(r"\b(?:from|in|of|released in)\s+(1[89]\d\d|20[0-2]\d)\b", t)
        if m:
            lo = hi = int(m.group(1))
    if lo is None and hi is None and re.search(r"\b(?:recent|latest|new releases?|newest)\b", t):
        lo = max_year - 4
    return lo, hi


def _decade(s: str, max_year: int) -> int:
    if len(s) == 4:
        return int(s)
    d = int(s)
    return 2000 + d if 2000 + d <= max_year else 1900 + d


def _genre_mentions(text: str, genres: Sequence[str]) -> tuple[list[str], list[str]]:
    """(include, exclude) genres named or described in ``text``; a negator within the 4 words
    before the word makes it an exclusion ("no horror", "nothing too scary")."""
    t = " " + text.lower() + " "
    inc: list[str] = []
    exc: list[str] = []
    for g in genres:
        words = _GENRE_WORDS.get(g, []) + [g.lower()]
        for w in dict.fromkeys(words):
            for m in re.finditer(rf"(?<![\w-]){re.escape(w)}(?![\w-])", t):
                before = " ".join(t[: m.start()].split()[-4:])
                clause = re.split(r"[,.;!?]|\bbut\b", before)[-1]
                neg = re.search(rf"\b{_NEGATORS}\b", clause)
                (exc if neg else inc).append(g)
    exc = list(dict.fromkeys(exc))
    inc = [g for g in dict.fromkeys(inc) if g not in exc]
    return inc, exc


# ------------------------------------------------------------------------------------------
# the agent


class ChatAgent:
    """Conversations over a :class:`RecAgent`. Thread-safe; the LLM calls share the pipeline's lock."""

    def __init__(self, pipeline: RecAgent, config: ChatConfig | None = None):
        self.pipeline = pipeline
        self.config = config or ChatConfig()
        self.catalog = pipeline.catalog
        self.titles = TitleResolver(pipeline)
        self.noun = pipeline.item_noun
        self._sessions: OrderedDict[str, ChatSession] = OrderedDict()
        self._lock = threading.Lock()
        schema = attribute_schema(self.catalog)
        self.year_attr = "year" if schema.get("year") in ("int", "float") else None
        years = self.catalog.items["year"].dropna() if self.year_attr else None
        self.max_year = int(years.max()) if years is not None and len(years) else time.gmtime().tm_year
        self.min_year = int(years.min()) if years is not None and len(years) else 1900
        # attributes the LLM may fill: list/str attributes with a small vocabulary (genres yes, tags no)
        self.attr_values: dict[str, list[str]] = {}
        for attr, kind in schema.items():
            if kind not in ("list", "str") or attr in ("year", "title"):
                continue
            col = self.catalog.items[attr]
            vals = sorted({str(v) for cell in col for v in (cell if isinstance(cell, (list, tuple)) else [cell]) if v is not None and str(v)})
            if 2 <= len(vals) <= self.config.max_schema_values:
                self.attr_values[attr] = vals
        self.genres = self.attr_values.get("genres", [])
        self.schema = self._json_schema()

    # --- sessions ---------------------------------------------------------------------------

    def session(self, session_id: str | None = None, user_id: str | None = None) -> ChatSession:
        """The conversation ``session_id`` (created when new or unknown)."""
        now = time.time()
        with self._lock:
            for sid in [s for s, v in self._sessions.items() if now - v.updated > self.config.session_ttl_s]:
                del self._sessions[sid]
            sid = session_id or uuid.uuid4().hex[:16]
            s = self._sessions.get(sid)
            if s is None:
                s = ChatSession(sid, user_id=user_id)
                self._sessions[sid] = s
                while len(self._sessions) > self.config.max_sessions:
                    self._sessions.popitem(last=False)
            else:
                self._sessions.move_to_end(sid)
            if user_id:
                s.user_id = user_id
            s.updated = now
            return s

    def drop_session(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)

    @property
    def n_sessions(self) -> int:
        return len(self._sessions)

    def session_from_messages(self, messages: Sequence[Mapping[str, Any]], session_id: str | None = None) -> ChatSession:
        """Rebuild memory from an earlier conversation (OpenAI-style messages, without the last
        user message): user turns are parsed by the rules (no LLM), titles listed in assistant
        turns count as shown."""
        s = self.session(session_id)
        for m in messages:
            text = m.get("content") or ""
            if m.get("role") == "user":
                q = self._rules(text, s)
                self._remember(s, q)
            elif m.get("role") == "assistant":
                for line in text.splitlines():
                    mt = re.match(r"^\s*\d+\.\s+(.+?)(?:\s+[—–-]\s+.*)?$", line)
                    if mt:
                        item = self.titles.resolve(mt.group(1))
                        if item and item not in s.shown:
                            s.shown.append(item)
        return s

    # --- answering --------------------------------------------------------------------------

    def respond(self, message: str, session_id: str | None = None, user_id: str | None = None, k: int | None = None) -> ChatReply:
        """Answer one message (see :meth:`respond_many`)."""
        (out,) = self.respond_many([ChatTurn(message=message, session_id=session_id, user_id=user_id, k=k)])
        if isinstance(out, BaseException):
            raise out
        return out

    def respond_many(self, turns: Sequence[ChatTurn], *, return_exceptions: bool = False) -> list[ChatReply | BaseException]:
        """Answer several conversations at once: one LLM call parses all messages, one pipeline
        batch serves them. Two turns of the same session in one batch are answered in order."""
        by_session: dict[str, list[int]] = {}
        for i, t in enumerate(turns):
            by_session.setdefault(t.session_id or f"\0{i}", []).append(i)
        if any(len(v) > 1 for v in by_session.values()):
            # a session's second message needs the first answer's memory: split into rounds
            out: list[ChatReply | BaseException | None] = [None] * len(turns)
            rounds: list[list[int]] = []
            for idxs in by_session.values():
                for r, i in enumerate(idxs):
                    if len(rounds) <= r:
                        rounds.append([])
                    rounds[r].append(i)
            for rnd in rounds:
                for i, res in zip(rnd, self.respond_many([turns[i] for i in rnd], return_exceptions=return_exceptions), strict=True):
                    out[i] = res
            return out  # type: ignore[return-value]
        t0 = time.perf_counter()
        sessions = [self.session(t.session_id, t.user_id) for t in turns]
        queries = [self._rules(t.message, s) for t, s in zip(turns, sessions, strict=True)]
        t1 = time.perf_counter()
        self._llm_parse(turns, queries)
        t2 = time.perf_counter()
        plans = []
        for t, s, q in zip(turns, sessions, queries, strict=True):
            if q.reset:
                self._reset(s)
            self._remember(s, q)
            plans.append(self._plan(t, s, q))
        reqs = [p for p in plans if p is not None]
        recs = self.pipeline.recommend_many([p[0] for p in reqs], return_exceptions=True) if reqs else []
        by_turn: dict[int, Recommendation | BaseException] = {}
        j = 0
        for i, p in enumerate(plans):
            if p is not None:
                by_turn[i] = recs[j]
                j += 1
        relaxed: dict[int, list[str]] = {}
        retry = [i for i, r in by_turn.items() if isinstance(r, Recommendation) and not r.items and plans[i][1]]
        if retry and self.config.relax_when_empty:
            reqs2 = [plans[i][2] for i in retry]
            for i, r in zip(retry, self.pipeline.recommend_many(reqs2, return_exceptions=True), strict=True):
                if isinstance(r, Recommendation) and r.items:
                    by_turn[i] = r
                    relaxed[i] = plans[i][1]
        t3 = time.perf_counter()
        out2: list[ChatReply | BaseException] = []
        for i, (t, s, q) in enumerate(zip(turns, sessions, queries, strict=True)):
            rec = by_turn.get(i)
            if isinstance(rec, LLMBackendError):
                if not return_exceptions:
                    raise rec
                out2.append(rec)
                continue
            reply = self._compose(t, s, q, rec, relaxed.get(i, []))
            reply.timings_ms = {
                "parse_rules": round((t1 - t0) * 1000, 2), "parse_llm": round((t2 - t1) * 1000, 2),
                "recommend": round((t3 - t2) * 1000, 2), "total": round((time.perf_counter() - t0) * 1000, 2),
            }  # fmt: skip
            out2.append(reply)
        return out2

    # --- parsing ----------------------------------------------------------------------------

    def _rules(self, message: str, session: ChatSession) -> ChatQuery:
        """The rule-based structured query (always computed; the LLM's fields are checked against it)."""
        q = ChatQuery()
        text = message.strip()
        lang, lang_name = detect_language(text)
        if lang != "en":
            q.language = lang
            q.notes.append(f"message looks like {lang_name}")
        if _RESET.search(text):
            q.reset = True
        if _MORE.match(text):
            q.more = True
            return q
        rest = text
        # ordinal feedback on the previous answer: "I loved the second one", "seen the first"
        if session.last_shown:
            for m in _ORDINAL_RE.finditer(text):
                word = (m.group(1) or "").lower()
                idx = _ORDINALS.get(word) if word else int(m.group(2) or m.group(3)) - 1
                if idx is None or not -len(session.last_shown) <= idx < len(session.last_shown):
                    continue
                item = session.last_shown[idx]
                (q.disliked if _NEGATIVE.search(text) else q.liked).append(item)
                rest = rest.replace(m.group(0), " ")
        # dislikes first: "didn't like X" also contains "like X"
        for m in _DISLIKE_CUE.finditer(rest):
            for phrase in self._title_phrases(m.group("t")):
                item = self.titles.resolve(phrase)
                if item:
                    q.disliked.append(item)
                    rest = rest.replace(m.group(0), " ")
        for m in _QUOTED.finditer(rest):
            phrase = m.group(1) or m.group(2)
            self._add_title(q, phrase, strict=False)
            rest = rest.replace(m.group(0), " ")
        for m in _LIKE_CUE.finditer(rest):
            phrases = self._title_phrases(m.group("t"))
            if not phrases:
                continue
            if self._add_title(q, phrases[0], strict=True, report=len(phrases) == 1) or len(phrases) == 1:
                if phrases[0] in q.liked_titles or phrases[0] in q.unknown_titles or self.titles.resolve(phrases[0]):
                    rest = rest.replace(phrases[0], " ")
                continue
            for phrase in phrases[1:]:  # "The Matrix and Star Wars": each part on its own
                self._add_title(q, phrase, strict=True)
                if self.titles.resolve(phrase) or phrase in q.unknown_titles:
                    rest = rest.replace(phrase, " ")
        for m in _CAPS_SPAN.finditer(rest):
            span = m.group(1).strip(" :-")
            words = span.split()
            if not words or (len(words) == 1 and (span in _COMMON_CAPS or span.lower() in _STOP["en"] or len(span) < 4)):
                continue
            if words[0] in _COMMON_CAPS:
                span = " ".join(words[1:])
            item = self.titles.resolve(span) if span else None
            if item and item not in q.liked and item not in q.disliked:
                q.liked.append(item)
                q.liked_titles.append(self.catalog.title(item))
                rest = rest.replace(span, " ")
        q.year_min, q.year_max = _year_rules(rest, self.max_year) if self.year_attr else (None, None)
        inc, exc = _genre_mentions(rest, self.genres)
        if inc:
            q.include["genres"] = inc
        if exc:
            q.exclude["genres"] = exc
        q.mood = self._mood(rest)
        return q

    def _title_phrases(self, span: str) -> list[str]:
        """Candidate titles in the text after a cue: the whole phrase, then its 'and'/'or' parts."""
        span = _TITLE_STOP.sub("", span.strip()).strip(" '\"")
        if not span or _NOT_A_TITLE.match(span) or len(span.split()) > 10:
            return []
        parts = [span]
        if re.search(r"\s(?:and|or|&)\s", span):
            parts += [p.strip() for p in re.split(r"\s(?:and|or|&)\s", span) if p.strip()]
        return parts

    def _add_title(self, q: ChatQuery, phrase: str, *, strict: bool, report: bool = True) -> bool:
        item = self.titles.resolve(phrase)
        if item:
            if item not in q.liked:
                q.liked.append(item)
                q.liked_titles.append(self.catalog.title(item))
            return True
        # after a cue, only capitalised phrases are claimed as titles ("like Xyzzy" yes, "like funny stuff" no)
        if report and (not strict or (phrase[:1].isupper() and not _NOT_A_TITLE.match(phrase))):
            if phrase not in q.unknown_titles and not any(phrase in p for p in q.unknown_titles):
                q.unknown_titles.append(phrase.strip())
        return False

    def _mood(self, rest: str) -> str:
        """What is left of the message once titles, years, exclusions and filler words are gone:
        the text the retriever's query source searches with ("funnier", "feel-good")."""
        t = _YEAR_PHRASE.sub(" ", rest)
        t = re.sub(rf"\b{_NEGATORS}\s+(?:too\s+|any\s+)?[\w-]+", " ", t, flags=re.I)
        t = _FILLER.sub(" ", t)
        t = re.sub(r"\s+", " ", re.sub(r"[^\w\s'-]|(?<!\w)'|'(?!\w)", " ", t)).strip(" -'")
        return t[:120] if re.search(r"\w{3,}", t) else ""

    def _json_schema(self) -> dict[str, Any]:
        attrs = {a: {"type": "array", "items": {"enum": v}, "maxItems": 3} for a, v in self.attr_values.items()}
        year = {"anyOf": [{"type": "integer", "minimum": 1800, "maximum": 2100}, {"type": "null"}]}
        return {
            "type": "object",
            "properties": {
                "liked_titles": {"type": "array", "items": {"type": "string", "maxLength": 60}, "maxItems": 3},
                "include": {"type": "object", "properties": attrs, "additionalProperties": False},
                "exclude": {"type": "object", "properties": attrs, "additionalProperties": False},
                "year_min": year,
                "year_max": year,
                "mood": {"type": "string", "maxLength": 60},
            },
            "required": ["liked_titles", "include", "exclude", "year_min", "year_max", "mood"],
            "additionalProperties": False,
        }

    def _llm_parse(self, turns: Sequence[ChatTurn], queries: list[ChatQuery]) -> None:
        """Ask the LLM for each message's JSON query; keep only what the message backs up."""
        p = self.pipeline
        todo = [i for i, q in enumerate(queries) if not q.more and q.language == "en"]
        if not todo or not self.config.parse_with_llm or p.llm is None or p.renderer is None:
            for q in queries:
                if p.llm is None and self.config.parse_with_llm:
                    q.notes.append("no LLM engine: rules only")
            return
        examples = {a: v for a, v in self.attr_values.items()}
        try:
            prompts = [
                p.renderer.prompt("parse_query", request=turns[i].message, attributes=examples, item_noun=self.noun)
                for i in todo
            ]
            with p.lock:
                texts = p.llm.generate(prompts, max_tokens=self.config.parse_max_tokens, temperature=0.0, json_schema=self.schema)
        except LLMBackendError:
            if not p.healthy():
                raise
            for i in todo:
                queries[i].notes.append("LLM parse failed: rules only")
            return
        except RecAgentError as e:
            for i in todo:
                queries[i].notes.append(f"LLM parse failed ({e.message}): rules only")
            return
        for i, text in zip(todo, texts, strict=True):
            self._merge_llm(turns[i].message, queries[i], text)

    def _merge_llm(self, message: str, q: ChatQuery, text: str) -> None:
        """Add the LLM's grounded values to the rules' query and record which path produced what."""
        try:
            parsed = _LLMQuery.model_validate(json.loads(text))
        except (json.JSONDecodeError, ValidationError) as e:
            q.notes.append(f"LLM JSON invalid ({type(e).__name__}): rules only")
            q.parse_path = "rules"
            return
        rule_values = {
            "liked": set(q.liked),
            "include": {(a, v) for a, vs in q.include.items() for v in vs},
            "exclude": {(a, v) for a, vs in q.exclude.items() for v in vs},
            "years": {x for x in (q.year_min, q.year_max) if x is not None},
        }
        llm_values: dict[str, set[Any]] = {k: set() for k in rule_values}
        msg_norm = " " + normalize_title(message) + " "
        for title in parsed.liked_titles:
            n = normalize_title(title)
            item = self.titles.resolve(title) if n and f" {n} " in msg_norm else None
            if item is None or item in q.disliked:
                q.notes.append(f"LLM title {title!r} not in the message or not in the catalog: ignored")
                continue
            llm_values["liked"].add(item)
            if item not in q.liked:
                q.liked.append(item)
                q.liked_titles.append(self.catalog.title(item))
                q.unknown_titles = [u for u in q.unknown_titles if normalize_title(u) != n]
        mentioned_inc, mentioned_exc = _genre_mentions(message, self.genres)
        for part, mine, target, mentioned in (
            ("include", parsed.include, q.include, mentioned_inc),
            ("exclude", parsed.exclude, q.exclude, mentioned_exc),
        ):
            for attr, vals in mine.items():
                for v in vals:
                    grounded = v in mentioned if attr == "genres" else v.lower() in message.lower()
                    if not grounded:
                        q.notes.append(f"LLM {part} {attr}={v!r} not backed by the message: ignored")
                        continue
                    llm_values[part].add((attr, v))
                    if v not in target.get(attr, []):
                        target.setdefault(attr, []).append(v)
        has_digits = re.search(r"\d{2}", message) is not None
        for name in ("year_min", "year_max"):
            v = getattr(parsed, name)
            if v is None:
                continue
            if not (has_digits and self.min_year - 5 <= v <= self.max_year + 1):
                q.notes.append(f"LLM {name}={v} not backed by the message: ignored")
            elif getattr(q, name) in (None, v):  # the regex reading of a written year wins over the model's
                setattr(q, name, v)
                llm_values["years"].add(v)
        mood = parsed.mood.strip()
        used_mood = bool(mood) and bool(set(re.findall(r"\w{4,}", mood.lower())) & set(re.findall(r"\w{4,}", message.lower())))
        if used_mood:
            q.mood = mood
        from_llm = any(llm_values.values()) or used_mood
        from_rules = any(rule_values[k] - llm_values[k] for k in rule_values)
        q.parse_path = "llm+rules" if from_llm and from_rules else "llm" if from_llm else "rules"
        if not from_llm:
            q.notes.append("LLM output carried nothing grounded in the message: rules only")

    # --- memory and planning ----------------------------------------------------------------

    def _reset(self, s: ChatSession) -> None:
        s.likes.clear(), s.dislikes.clear(), s.include.clear(), s.exclude.clear()
        s.year_min = s.year_max = None
        s.mood = ""

    def _remember(self, s: ChatSession, q: ChatQuery) -> None:
        for item in q.liked:
            if item not in s.likes:
                s.likes.append(item)
            if item in s.dislikes:
                s.dislikes.remove(item)
        for item in q.disliked:
            if item not in s.dislikes:
                s.dislikes.append(item)
            if item in s.likes:
                s.likes.remove(item)
        if q.more:
            return
        for attr, vals in q.include.items():
            s.include[attr] = list(vals)
            s.exclude[attr] = [v for v in s.exclude.get(attr, []) if v not in vals]
        for attr, vals in q.exclude.items():
            s.exclude[attr] = list(dict.fromkeys([*s.exclude.get(attr, []), *vals]))
            s.include[attr] = [v for v in s.include.get(attr, []) if v not in vals]
        if q.year_min is not None or q.year_max is not None:
            s.year_min, s.year_max = q.year_min, q.year_max
        if q.mood:
            s.mood = q.mood

    def _filters(self, s: ChatSession, *, relaxed: bool = False) -> dict[str, Any] | None:
        f: dict[str, Any] = {}
        inc = {a: v for a, v in s.include.items() if v}
        exc = {a: v for a, v in s.exclude.items() if v}
        if inc and not relaxed:
            f["include"] = inc
        if exc:
            f["exclude"] = exc
        if self.year_attr and (s.year_min is not None or s.year_max is not None) and not relaxed:
            f["ranges"] = {self.year_attr: [s.year_min, s.year_max]}
        return f or None

    def _plan(self, t: ChatTurn, s: ChatSession, q: ChatQuery):
        """(request, constraints a relaxation drops, relaxed request) or None when there is
        nothing to serve (another language without titles)."""
        if q.language != "en" and not q.liked:
            return None
        known_user = s.user_id is not None and s.user_id in self.pipeline.dataset.interactions
        fresh = not (s.likes or s.shown or s.mood or any(s.include.values()) or any(s.exclude.values()))
        if not known_user and not s.likes and (q.more and fresh or not q.more and not re.search(r"[^\W\d_]{2,}", t.message)):
            return None  # "?!", or "more" as the first message: nothing to go on
        query_text = s.mood or (None if q.more else t.message)
        if not s.likes and not known_user and not query_text:
            query_text = t.message
        base = dict(
            user_id=s.user_id if known_user else None,
            history=None if known_user else (list(s.likes) or None),
            new_items=list(s.likes) if known_user else [],
            query=query_text,
            exclude=list(dict.fromkeys([*s.shown, *s.dislikes, *s.likes])),
            k=t.k or self.config.k,
        )
        if not known_user and not s.likes and not query_text:
            return None
        req = RecommendRequest(**base, filters=self._filters(s))
        drop = []
        if any(s.include.values()):
            drop.append("required " + ", ".join(v for vals in s.include.values() for v in vals))
        if s.year_min is not None or s.year_max is not None:
            drop.append("the year range " + _years(s.year_min, s.year_max))
        return req, drop, RecommendRequest(**base, filters=self._filters(s, relaxed=True))

    # --- the reply --------------------------------------------------------------------------

    def _compose(self, t: ChatTurn, s: ChatSession, q: ChatQuery, rec, relaxed: list[str]) -> ChatReply:
        s.turns += 1
        lines: list[str] = []
        for u in q.unknown_titles:
            sug = self.titles.suggest(u)
            lines.append(
                f"I couldn't find “{u}” in the catalog" + (f" (did you mean {', '.join(sug)}?)." if sug else ".")
            )
        items: list[RecommendedItem] = []
        fallback: dict[str, str] = {}
        if q.language != "en" and not q.liked:
            lines.append(
                f"Sorry, I can only read requests in English so far (your message looks like {q.notes[0].split('like ', 1)[-1]}). "
                f"Try for example: “something like Alien but funnier, from the 90s, no horror”."
            )
        elif rec is None:
            lines.append(f"Tell me a {self.noun} you liked or what you are in the mood for, e.g. “a feel-good comedy from the 90s”.")
        elif isinstance(rec, RecAgentError):
            lines.append(f"I couldn't serve that: {rec.message}" + (f" ({rec.hint})" if rec.hint else ""))
        elif isinstance(rec, BaseException):
            log.exception("chat turn failed", exc_info=rec)
            lines.append("Something went wrong on my side while looking for recommendations; please try again.")
        elif not rec.items:
            lines.append(
                f"Nothing in the catalog matches {self._describe(s) or 'that'}"
                + (f" once the {len(s.shown)} {self.noun}s already shown are left out" if s.shown else "")
                + ". Try widening the years or dropping a genre."
            )
            fallback = dict(rec.fallback)
        else:
            items = rec.items
            fallback = dict(rec.fallback)
            if relaxed:
                lines.append(f"Nothing matched everything, so I dropped {' and '.join(relaxed)}.")
            if q.language != "en":
                lines.append("(I only read English well; I went by the titles I recognised.)")
            ctx = self._describe(s, relaxed=bool(relaxed))
            lines.append(f"Here {'is' if len(items) == 1 else 'are'} {len(items)} {self.noun}{'' if len(items) == 1 else 's'}" + (f" {ctx}" if ctx else "") + ":")
            for n, it in enumerate(items, start=1):
                lines.append(f"{n}. {it.title}" + (f" — {it.reason}" if it.reason else ""))
            lines.append("Say “more” for other picks, or tell me which ones you liked.")
            s.last_shown = [it.item_id for it in items]
            s.shown.extend(i for i in s.last_shown if i not in s.shown)
        return ChatReply(
            session_id=s.id, reply="\n".join(lines), items=items, query=q, relaxed=relaxed,
            memory=s.memory(), fallback=fallback,
        )  # fmt: skip

    def _describe(self, s: ChatSession, *, relaxed: bool = False) -> str:
        parts = []
        if s.likes:
            parts.append("for fans of " + ", ".join(self.catalog.title(i) for i in s.likes[-3:]))
        if not relaxed:
            for vals in s.include.values():
                if vals:
                    parts.append(" and ".join(vals))
            if s.year_min is not None or s.year_max is not None:
                parts.append(_years(s.year_min, s.year_max))
        for vals in s.exclude.values():
            if vals:
                parts.append("no " + ", ".join(vals))
        return "(" + "; ".join(parts) + ")" if parts else ""


def _years(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return str(lo) if lo == hi else f"{lo}–{hi}"
    return f"from {lo}" if lo is not None else f"up to {hi}"


class _LLMQuery(BaseModel):
    """What the LLM must return (the JSON schema enforces the shape; this re-checks it)."""

    liked_titles: list[str] = Field(default_factory=list, max_length=10)
    include: dict[str, list[str]] = Field(default_factory=dict)
    exclude: dict[str, list[str]] = Field(default_factory=dict)
    year_min: int | None = None
    year_max: int | None = None
    mood: str = ""

