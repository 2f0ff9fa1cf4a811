"""The reply text: the picks, what they were filtered by, and why a request could not be served.

Fixed lines come in the user's language where ``lexicon/<lang>.json`` has them (``replies``:
French, German, Spanish); the items' reasons come from the recommend pipeline in English, and
the reply says so. Anything else is English.
"""

from __future__ import annotations

import logging
from typing import Any

from ..agent import Recommendation, RecommendedItem
from ..errors import RecAgentError
from .lexicon import PARSED_LANGUAGES, language, language_names, reply_line
from .models import ChatQuery, ChatSession, SessionStatus
from .titles import TitleResolver

__all__ = ["ReplyComposer", "describe_years"]

log = logging.getLogger(__name__)


def describe_years(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return str(lo) if lo == hi else f"{lo}–{hi}"
    return f"from {lo}" if lo is not None else f"up to {hi}"


class ReplyComposer:
    """Writes the answer for one turn; changes nothing (the agent updates the session)."""

    def __init__(self, titles: TitleResolver, item_noun: str):
        self.titles = titles
        self.catalog = titles.catalog
        self.noun = item_noun

    def compose(
        self, s: ChatSession, q: ChatQuery, rec: Any, relaxed: list[str], status: SessionStatus
    ) -> tuple[str, list[RecommendedItem], dict[str, str]]:
        """(text, items, fallback) for the pipeline's answer ``rec`` (a Recommendation, an
        exception, or ``None`` when there was nothing to ask)."""
        lines, items, fallback, _ = self.compose_lines(s, q, rec, relaxed, status)
        return "\n".join(lines), items, fallback

    def compose_lines(
        self, s: ChatSession, q: ChatQuery, rec: Any, relaxed: list[str], status: SessionStatus
    ) -> tuple[list[str], list[RecommendedItem], dict[str, str], int | None]:
        """:meth:`compose` as lines (the text is them joined by newlines), and the index of the
        first item's line (item ``j`` is on line ``first + j``; None without items), so a
        streamed reply can send each item's line when its reason is ready (:meth:`item_line`)."""
        lang = q.language if q.language in PARSED_LANGUAGES else "en"
        lines: list[str] = []
        if status in ("unknown", "expired"):
            lines.append(self._line(lang, f"session_{status}") or self._session_line(s.id, status))
        for c in q.conflicts:
            lines.append(f"Your request contradicts itself: {c}.")
        for chosen, others in q.ambiguous.items():
            names = [self.titles.catalog.title(i) for i in [chosen, *others]]
            lines.append(f"Which one did you mean: {' or '.join(names)}? I went with {names[0]}; "
                         "name the year to switch.")  # fmt: skip
        for u in q.unknown_titles:
            sug = self.titles.suggest(u)
            lines.append(
                f"I couldn't find “{u}” in the catalog" + (f" (did you mean {', '.join(sug)}?)." if sug else ".")
            )
        items: list[RecommendedItem] = []
        fallback: dict[str, str] = {}
        if q.language not in PARSED_LANGUAGES and not q.liked:
            others = ", ".join(language_names()[c] for c in PARSED_LANGUAGES if c != "en")
            lines.append(
                f"Sorry, I can only read requests in English ({others} too) so far "
                f"(your message looks like {q.notes[0].split('like ', 1)[-1]}). "
                f"Try for example: “something like Alien but funnier, from the 90s, no horror”."
            )
        elif rec is None:
            lines.append(
                f"Tell me a {self.noun} you liked or what you are in the mood for, e.g. “a feel-good comedy from the 90s”."
            )
        elif isinstance(rec, RecAgentError):
            lines.append(f"I couldn't serve that: {rec.message}" + (f" ({rec.hint})" if rec.hint else ""))
        elif isinstance(rec, BaseException):
            log.error("chat turn failed", exc_info=rec)
            lines.append("Something went wrong on my side while looking for recommendations; please try again.")
        elif not isinstance(rec, Recommendation) or not rec.items:
            lines.append(
                f"Nothing in the catalog matches {self.describe(s) or 'that'}"
                + (f" once the {len(s.shown)} {self.noun}s already shown are left out" if s.shown else "")
                + ". Try widening the years or dropping a genre."
            )
            fallback = dict(rec.fallback) if isinstance(rec, Recommendation) else {}
        else:
            items, fallback = rec.items, dict(rec.fallback)
            picks, first = self._picks(s, q, lang, items, relaxed)
            return lines + picks, items, fallback, len(lines) + first
        return lines, items, fallback, None

    def _picks(
        self, s: ChatSession, q: ChatQuery, lang: str, items: list[RecommendedItem], relaxed: list[str]
    ) -> tuple[list[str], int]:
        lines = []
        if relaxed:
            lines.append(f"Nothing matched everything, so I dropped {' and '.join(relaxed)}.")
        if q.language not in PARSED_LANGUAGES:
            lines.append("(I read English, French, German and Spanish; I went by the titles I recognised.)")
        elif lang != "en" and any(it.reason for it in items):
            lines.append(self._line(lang, "reasons_in_english") or "(The reasons are in English.)")
        ctx = self.describe(s, relaxed=bool(relaxed))
        n = len(items)
        header = self._line(lang, "header_one" if n == 1 else "header", n=n, nouns=self._nouns(lang, n), ctx=ctx)
        if header:
            lines.append(" ".join(header.split()))
        else:
            lines.append(
                f"Here {'is' if n == 1 else 'are'} {n} {self.noun}{'' if n == 1 else 's'}"
                + (f" {ctx}" if ctx else "")
                + ":"
            )
        first = len(lines)
        lines += [self.item_line(i, it) for i, it in enumerate(items)]
        lines.append(self._line(lang, "footer") or "Say “more” for other picks, or tell me which ones you liked.")
        return lines, first

    @staticmethod
    def item_line(j: int, it: RecommendedItem) -> str:
        """The reply line of item ``j`` (0-based): "1. Title — reason"."""
        return f"{j + 1}. {it.title}" + (f" — {it.reason}" if it.reason else "")

    def describe(self, s: ChatSession, *, relaxed: bool = False) -> str:
        """The constraints in force, for the reply: "(for fans of Alien (1979); Comedy; 1990–1999; no Horror)"."""
        parts = []
        if s.likes:
            parts.append("for fans of " + ", ".join(self.catalog.title(i) for i in s.likes[-3:]))
        if not relaxed:
            for vals in s.include.values():
                if vals:
                    parts.append(" and ".join(vals))
            if s.year_min is not None or s.year_max is not None:
                parts.append(describe_years(s.year_min, s.year_max))
        for vals in s.exclude.values():
            if vals:
                parts.append("no " + ", ".join(vals))
        return "(" + "; ".join(parts) + ")" if parts else ""

    def _nouns(self, lang: str, n: int) -> str:
        """The item noun in ``lang`` ("films"), or the English one ("movies") when the lexicon has none."""
        forms = (language(lang).get("replies", {}).get("nouns", {}) or {}).get(self.noun)
        if forms:
            return forms[0] if n == 1 else forms[1]
        return self.noun if n == 1 else self.noun + "s"

    @staticmethod
    def _line(lang: str, key: str, **fields: Any) -> str | None:
        return reply_line(lang, key, **fields) if lang != "en" else None

    @staticmethod
    def _session_line(session_id: str, status: SessionStatus) -> str:
        if status == "expired":
            return f"Our earlier conversation (session “{session_id}”) has expired, so I'm starting fresh."
        return f"I couldn't find our earlier conversation (session “{session_id}”), so I'm starting fresh."
