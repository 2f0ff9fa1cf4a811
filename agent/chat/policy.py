"""The chat agent: parse each message (rules, then the LLM, grounded), update the conversation's
memory, ask the recommend pipeline, and write the reply.

Memory per conversation (``session_id``): liked and disliked items, items already shown (never
shown again), and the constraints of the last request, which carry over until the user changes
them ("more", "funnier please", "I loved the second one"). A user without history is served
from what they say (cold start); a known ``user_id`` adds their stored history. Conversations
live in a :class:`~recagent.chat.sessions.SessionStore` (memory or SQLite, ``ChatConfig.session_store``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..agent import RecAgent, Recommendation, RecommendedItem, RecommendRequest
from ..errors import RecAgentError
from ..explain import Explainer
from ..llm import LLMBackendError
from .lexicon import PARSED_LANGUAGES
from .llm_parse import LLMParser
from .models import ChatConfig, ChatQuery, ChatReply, ChatSession, ChatTurn
from .reply import ReplyComposer, describe_years
from .rules import RuleParse, RuleParser
from .sessions import SessionStore, open_session_store
from .titles import TitleResolver
from .understand import understand
from .vocab import CatalogVocab

__all__ = ["ChatAgent"]

log = logging.getLogger(__name__)

_LISTED = re.compile(r"^\s*\d+\.\s+(.+?)(?:\s+[—–-]\s+.*)?$")  # "2. Alien (1979) — because ..."
_EXPIRE_EVERY_S = 60.0

Sink = Callable[[str], None]
"""Receives a streamed reply's text, piece by piece (called from the answering thread)."""


class ChatAgent:
    """Conversations over a :class:`RecAgent`. Thread-safe; the LLM calls share the pipeline's lock.

    >>> chat = ChatAgent(pipeline)                       # ChatConfig(session_store="chat.db") to share
    >>> r = chat.respond("something like Alien but funnier, from the 90s, no horror")
    >>> r.query.liked_titles, r.query.include, r.query.exclude, (r.query.year_min, r.query.year_max)
    (['Alien (1979)'], {'genres': ['Comedy']}, {'genres': ['Horror']}, (1990, 1999))
    >>> chat.respond("more", session_id=r.session_id).session_status
    'continued'
    """

    def __init__(self, pipeline: RecAgent, config: ChatConfig | None = None, *, store: SessionStore | None = None):
        self.pipeline = pipeline
        self.config = config or ChatConfig()
        self.catalog = pipeline.catalog
        self.noun = pipeline.item_noun
        self.vocab = CatalogVocab.from_catalog(self.catalog, self.config.max_schema_values)
        self.titles = TitleResolver(pipeline)
        self.rules = RuleParser(self.titles, self.vocab)
        self.llm_parser = LLMParser(self.rules, item_noun=self.noun,
                                    only_unsure=self.config.llm_parse_when == "unsure")  # fmt: skip
        self.composer = ReplyComposer(self.titles, self.noun)
        self._stream_explainer: Explainer | None = None
        cfg = self.config
        self.store = store or open_session_store(
            cfg.session_store, ttl_s=cfg.session_ttl_s, max_sessions=cfg.max_sessions
        )
        self._last_expire = 0.0
        self._expire_lock = threading.Lock()

    # kept for callers of the single-class agent
    @property
    def attr_values(self) -> dict[str, list[str]]:
        return self.vocab.attr_values

    @property
    def schema(self) -> dict[str, Any]:
        return self.llm_parser.schema

    # --- sessions ---------------------------------------------------------------------------

    def session(
        self, session_id: str | None = None, user_id: str | None = None, *, new_ok: bool = False
    ) -> ChatSession:
        """The conversation ``session_id``, created when new. An id the store does not hold is
        created too, with ``status`` "unknown" or "expired" (the next reply says so), unless
        ``new_ok`` (the caller knows the id starts a conversation)."""
        self._maybe_expire()
        s, found = self.store.lookup(session_id) if session_id else (None, "unknown")
        if s is None:
            status = "new" if session_id is None or new_ok else found
            s = ChatSession(session_id or uuid.uuid4().hex[:16], user_id=user_id, status=status)
        if user_id:
            s.user_id = user_id
        s.updated = time.time()
        self.store.put(s)
        return s

    def drop_session(self, session_id: str) -> None:
        self.store.delete(session_id)

    @property
    def n_sessions(self) -> int:
        return self.store.count()

    def understand(self, messages: Sequence[str], *, llm: bool = False) -> list[dict[str, Any]]:
        """How each message is understood as a first turn (``POST /v1/parse``; ``recagent parse``
        prints the same): rules, and with ``llm`` the model's JSON merged in where they are unsure."""
        p = self.pipeline
        if not llm or p.llm is None or p.renderer is None:
            return understand(self.llm_parser, messages)
        with p.lock:
            return understand(self.llm_parser, messages, llm=p.llm, renderer=p.renderer,
                              max_tokens=self.config.parse_max_tokens)  # fmt: skip

    def forget_user(self, user_id: str) -> dict[str, int]:
        """Remove every conversation of ``user_id`` (their likes, dislikes, shown items and
        constraints live there); returns what was removed, e.g. ``{"chat_sessions": 2}``."""
        return {"chat_sessions": self.store.delete_user(user_id)}

    def close(self) -> None:
        self.store.close()

    def _maybe_expire(self) -> None:
        now = time.time()
        with self._expire_lock:
            if now - self._last_expire < _EXPIRE_EVERY_S:
                return
            self._last_expire = now
        self.store.expire(now)

    def session_from_messages(
        self, messages: Sequence[Mapping[str, Any]], session_id: str | None = None, *, user_id: str | None = None
    ) -> ChatSession:
        """Rebuild memory from an earlier conversation (OpenAI-style messages, without the last
        user message): user turns are parsed by the same rules as live turns (likes, dislikes,
        constraints, "the second one"), titles listed in assistant turns count as shown. The
        next reply reports ``session_status="rebuilt"`` when there was anything to rebuild."""
        s = self.session(session_id, user_id, new_ok=True)
        rebuilt = False
        for m in messages:
            text = str(m.get("content") or "")
            if m.get("role") == "user" and text.strip():
                self._absorb(s, self.rules.parse(text, s))
                rebuilt = True
            elif m.get("role") == "assistant":
                listed = [self.titles.resolve(mt.group(1)) for mt in map(_LISTED.match, text.splitlines()) if mt]
                listed = [i for i in listed if i]
                if listed:
                    s.last_shown = listed
                    s.shown.extend(i for i in listed if i not in s.shown)
                    rebuilt = True
        if rebuilt:
            s.status = "rebuilt"
        self.store.put(s)
        return s

    # --- answering --------------------------------------------------------------------------

    def respond(
        self, message: str, session_id: str | None = None, user_id: str | None = None, k: int | None = None
    ) -> ChatReply:
        """Answer one message (see :meth:`respond_many`)."""
        (out,) = self.respond_many([ChatTurn(message=message, session_id=session_id, user_id=user_id, k=k)])
        if isinstance(out, BaseException):
            raise out
        return out

    def respond_many(
        self, turns: Sequence[ChatTurn], *, return_exceptions: bool = False, sinks: Sequence[Sink | None] | None = None
    ) -> list[ChatReply | BaseException]:
        """Answer several conversations at once: one LLM call parses all messages, one pipeline
        batch serves them. Two turns of the same session in one batch are answered in order.

        ``sinks`` (one per turn, or None) stream a turn's reply text: the sink is called with
        pieces that joined equal ``ChatReply.reply``, each as soon as it is known — the lines
        before the picks once they are ranked, then each pick's line as the LLM chooses its
        reason (:meth:`Explainer.stream <recagent.explain.Explainer.stream>`), then the rest."""
        sinks = list(sinks) if sinks is not None else [None] * len(turns)
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
                answers = self.respond_many(
                    [turns[i] for i in rnd], return_exceptions=return_exceptions, sinks=[sinks[i] for i in rnd]
                )
                for i, res in zip(rnd, answers, strict=True):
                    out[i] = res
            return out  # type: ignore[return-value]
        t0 = time.perf_counter()
        sessions = [self.session(t.session_id, t.user_id) for t in turns]
        parses = [self.rules.analyse(t.message, s) for t, s in zip(turns, sessions, strict=True)]
        t1 = time.perf_counter()
        self._llm_parse(turns, parses)
        t2 = time.perf_counter()
        queries = [p.query for p in parses]
        plans = []
        for t, s, q in zip(turns, sessions, queries, strict=True):
            self._absorb(s, q)
            plans.append(self._plan(t, s, q))
        # streamed turns are ranked without LLM reasons; their reasons are streamed afterwards
        explain_later = [self._defer_explain(plans, i) for i in range(len(plans)) if sinks[i] is not None]
        by_turn, relaxed = self._recommend(plans)
        t3 = time.perf_counter()
        out2: list[ChatReply | BaseException] = []
        for i, (s, q) in enumerate(zip(sessions, queries, strict=True)):
            rec = by_turn.get(i)
            if isinstance(rec, LLMBackendError):
                if not return_exceptions:
                    raise rec
                out2.append(rec)
                continue
            status = s.status or "continued"
            t_explain = time.perf_counter()
            try:
                if sinks[i] is None:
                    text, items, fallback = self.composer.compose(s, q, rec, relaxed.get(i, []), status)
                else:
                    plan = plans[i][2] if relaxed.get(i) else plans[i][0] if plans[i] else None
                    text, items, fallback = self._stream_reply(
                        sinks[i], s, q, rec, relaxed.get(i, []), status, plan if i in explain_later else None
                    )
            except LLMBackendError as e:  # the engine died while streaming
                if not return_exceptions:
                    raise
                out2.append(e)
                continue
            t_explain = time.perf_counter() - t_explain
            s.turns += 1
            s.status = None
            if items:
                s.last_shown = [it.item_id for it in items]
                s.shown.extend(x for x in s.last_shown if x not in s.shown)
            s.updated = time.time()
            self.store.put(s)
            reply = ChatReply(
                session_id=s.id, reply=text, items=items, query=q, session_status=status,
                relaxed=relaxed.get(i, []), memory=s.memory(), fallback=fallback,
            )  # fmt: skip
            reply.timings_ms = {
                "parse_rules": round((t1 - t0) * 1000, 2), "parse_llm": round((t2 - t1) * 1000, 2),
                "recommend": round((t3 - t2) * 1000, 2), "total": round((time.perf_counter() - t0) * 1000, 2),
            }  # fmt: skip
            if sinks[i] is not None:
                reply.timings_ms["compose_and_stream"] = round(t_explain * 1000, 2)
            out2.append(reply)
        return out2

    def _defer_explain(self, plans: list[Any], i: int) -> int | None:
        """Rank turn ``i`` without LLM reasons when it would have had them; ``i`` if so."""
        if plans[i] is None:
            return None
        req, drop, again = plans[i]
        if not (self.pipeline.config.explain if req.explain is None else req.explain):
            return None
        plans[i] = (req.model_copy(update={"explain": False}), drop, again.model_copy(update={"explain": False}))
        return i

    def _stream_reply(
        self, sink: Sink, s: ChatSession, q: ChatQuery, rec: Any, relaxed: list[str], status: Any, req: Any
    ) -> tuple[str, list[RecommendedItem], dict[str, str]]:
        """Compose the reply, sending each line to ``sink`` as soon as it is known; with ``req``
        (the request of a turn ranked without LLM reasons) the picks' reasons are streamed."""
        # a placeholder reason keeps the lines around the picks as they will be (see compose)
        live = req is not None and isinstance(rec, Recommendation) and bool(rec.items)
        pending = [it.model_copy(update={"reason": "…"}) for it in rec.items] if live else None
        shown = rec.model_copy(update={"items": pending}) if pending else rec
        lines, items, fallback, first = self.composer.compose_lines(s, q, shown, relaxed, status)
        if not pending or first is None:
            sink("\n".join(lines))
            return "\n".join(lines), items, fallback
        sink("\n".join(lines[:first]) + "\n")
        items = list(rec.items)
        stream = self._explainer().stream(self.pipeline.query_for(req), [it.item_id for it in items])
        while True:
            try:
                j, (reason, source, cites) = next(stream)
            except StopIteration as stop:
                note = stop.value
                break
            items[j] = items[j].model_copy(update={"reason": reason, "reason_source": source, "cites": cites})
            lines[first + j] = self.composer.item_line(j, items[j])
            sink(lines[first + j] + ("\n" if first + j + 1 < len(lines) else ""))
        sink("\n".join(lines[first + len(items) :]))
        fallback.pop("explain", None)
        if note:
            fallback["explain"] = note
        return "\n".join(lines), items, fallback

    def _explainer(self) -> Explainer:
        """The pipeline's explainer settings, on the pipeline's current engine lock."""
        p = self.pipeline
        if self._stream_explainer is None:
            c = p.config
            self._stream_explainer = Explainer(
                p.catalog, p.retriever.index, p.llm, popularity=p.popularity, lock=p.lock, history=c.explain_history,
                tokens_per_item=c.explain_tokens_per_item, template_dir=c.template_dir,
            )  # fmt: skip
        self._stream_explainer.lock = p.lock  # the server may have swapped in its priority lock
        return self._stream_explainer

    def _recommend(self, plans: list[Any]) -> tuple[dict[int, Any], dict[int, list[str]]]:
        """One pipeline batch for every plan; turns with nothing left get one relaxed retry."""
        todo = [(i, p) for i, p in enumerate(plans) if p is not None]
        recs = self.pipeline.recommend_many([p[0] for _, p in todo], return_exceptions=True) if todo else []
        by_turn: dict[int, Any] = {i: r for (i, _), r in zip(todo, recs, strict=True)}
        relaxed: dict[int, list[str]] = {}
        retry = [i for i, r in by_turn.items() if isinstance(r, Recommendation) and not r.items and plans[i][1]]
        if retry and self.config.relax_when_empty:
            again = self.pipeline.recommend_many([plans[i][2] for i in retry], return_exceptions=True)
            for i, r in zip(retry, again, strict=True):
                if isinstance(r, Recommendation) and r.items:
                    by_turn[i] = r
                    relaxed[i] = plans[i][1]
        return by_turn, relaxed

    # --- parsing ----------------------------------------------------------------------------

    def _rules(self, message: str, session: ChatSession) -> ChatQuery:
        """The rule-based structured query (see :class:`~recagent.chat.rules.RuleParser`)."""
        return self.rules.parse(message, session)

    def _llm_parse(self, turns: Sequence[ChatTurn], parses: list[RuleParse]) -> None:
        """Ask the LLM for each message's JSON query; keep only what the message backs up."""
        p = self.pipeline
        todo = [i for i, r in enumerate(parses) if self.llm_parser.wants(r.query)]
        if not todo or not self.config.parse_with_llm or p.llm is None or p.renderer is None:
            if p.llm is None and self.config.parse_with_llm:
                for r in parses:
                    r.query.notes.append("no LLM engine: rules only")
            return
        try:
            with p.lock:
                texts = self.llm_parser.generate(
                    p.llm, p.renderer, [turns[i].message for i in todo], self.config.parse_max_tokens
                )
        except LLMBackendError:
            if not p.healthy():
                raise
            for i in todo:
                parses[i].query.notes.append("LLM parse failed: rules only")
            return
        except RecAgentError as e:
            for i in todo:
                parses[i].query.notes.append(f"LLM parse failed ({e.message}): rules only")
            return
        for i, text in zip(todo, texts, strict=True):
            got = self.llm_parser.ground(turns[i].message, parses[i], text)
            self.llm_parser.merge(parses[i], got)

    # --- memory and planning ----------------------------------------------------------------

    def _absorb(self, s: ChatSession, q: ChatQuery) -> None:
        """Fold one parsed message into the conversation's memory."""
        if q.reset:
            s.likes.clear(), s.dislikes.clear(), s.include.clear(), s.exclude.clear()
            s.year_min = s.year_max = None
            s.mood = ""
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
        if q.year_min is not None and q.year_max is not None and q.year_min > q.year_max:
            pass  # an empty range ("before 1950 and after 2000"): the reply states the conflict
        elif q.year_min is not None or q.year_max is not None:
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
        year_attr = self.vocab.year_attr
        if year_attr and (s.year_min is not None or s.year_max is not None) and not relaxed:
            f["ranges"] = {year_attr: [s.year_min, s.year_max]}
        return f or None

    def _plan(self, t: ChatTurn, s: ChatSession, q: ChatQuery):
        """(request, constraints a relaxation drops, relaxed request) or None when there is
        nothing to serve (an unsupported language without titles, "?!")."""
        if q.language not in PARSED_LANGUAGES and not q.liked:
            return None
        known_user = s.user_id is not None and s.user_id in self.pipeline.dataset.interactions
        fresh = not (s.likes or s.shown or s.mood or any(s.include.values()) or any(s.exclude.values()))
        if (
            not known_user
            and not s.likes
            and (q.more and fresh or not q.more and not re.search(r"[^\W\d_]{2,}", t.message))
        ):
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
            drop.append("the year range " + describe_years(s.year_min, s.year_max))
        return req, drop, RecommendRequest(**base, filters=self._filters(s, relaxed=True))
