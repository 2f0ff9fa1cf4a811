"""The rule parser: a chat message → a :class:`~recagent.chat.ChatQuery`, without a model.

Titles: quoted ones, those after a cue ("like", "loved", "didn't like", "X bored me", "comme",
"wie", "como", "X hat mir nicht gefallen"; a partial title after a cue: "like shawshank"),
capitalised spans that resolve in the catalog, and lowercase runs equal to a well-known title
("back to the future was great"; one word only after a watch verb: "we watched shrek") — never
inside an occasion phrase ("on Christmas Eve", "a Friday night"). Attribute values with scoped
negation and occasions (:mod:`~recagent.chat.mentions`, ``lexicon/occasions.json``), year
ranges (:mod:`~recagent.chat.years`), contradictions stated in ``ChatQuery.conflicts``, "more" /
"start over", and turns on the previous answer in four languages ("more like the second one",
"not that one", "something older", "less violent"). The mood — the words left once titles, years,
refusals and fillers are gone — feeds the retriever's text query; a refused word never does.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from . import lexicon
from .language import detect_language
from .lexicon import PARSED_LANGUAGES, alternation, fold, tokenize
from .mentions import AttributeMatcher, Mentions
from .models import ChatQuery, ChatSession
from .titles import TitleResolver
from .vocab import CatalogVocab
from .years import YearParse, parse_years

__all__ = ["RuleParse", "RuleParser", "query_fields"]

_NEGATIVE = re.compile(
    r"\b(?:not|no|didn'?t|don'?t|hate|hated|dislike|seen|watched|boring|bad|awful"
    r"|pas|deja vu|nicht|kein|schon gesehen|ni|ya vi|ya la vi|ya lo vi)\b|^\s*(?:no|non|nein)\b",
    re.I,
)
_QUOTED = re.compile(r"[\"“”«»„]([^\"“”«»„]{2,80})[\"“”«»]|(?:^|\s)'([^']{2,80})'(?=[\s,.;!?]|$)")
_CAPS_SPAN = re.compile(
    r"\b([A-Z0-9][\w'’&:-]*(?:\s+(?:(?:of|the|a|an|and|in|on|to|&|d'|de|la|le|der|das|die|el)\s+)*[A-Z0-9][\w'’&:-]*)*)"
)
_COMMON_CAPS = set("I I'm I'd I've Something Anything Please Show Give Recommend Looking Want Find Me My Hi Hello Hey Thanks What Any Some Can Could Would Movie Movies Film Films No Not More".split())  # fmt: skip


@dataclass
class RuleParse:
    """The rules' query plus what the LLM merge checks its answer against."""

    query: ChatQuery
    rest: str = ""
    """The folded message with the titles the rules took blanked out."""
    mentions: Mentions = field(default_factory=Mentions)
    years: YearParse = field(default_factory=YearParse)
    refused: list[tuple[int, int]] = field(default_factory=list)
    """Spans of the folded message under a negation ("no horror", "not so violent"), to its clause end."""
    free_text: str = ""
    """The folded message without titles, dislikes, years and refusals: the words a mood may use."""


class _Text:
    """The message and its folded twin (same length); parts are blanked as they are used."""

    def __init__(self, text: str):
        self.orig = list(text)
        self.low = list(fold(text))
        self.occasions: list[tuple[int, int]] = []  # spans of occasion phrases: no implicit titles there

    def blank(self, a: int, b: int) -> None:
        self.orig[a:b] = self.low[a:b] = " " * (b - a)

    @property
    def o(self) -> str:
        return "".join(self.orig)

    @property
    def f(self) -> str:
        return "".join(self.low)


class RuleParser:
    """Parses messages against one catalog (``titles``, ``vocab``); stateless and thread-safe."""

    def __init__(self, titles: TitleResolver, vocab: CatalogVocab):
        self.titles = titles
        self.vocab = vocab
        self.catalog = titles.catalog
        self.matcher = AttributeMatcher(vocab.attr_values)
        w = lexicon.words
        cue = r"\b{}\s+(?P<t>[^,.;!?¿¡]+)"
        self.like = re.compile(cue.format(alternation(w("like_cues"))))
        self.dislike = re.compile(cue.format(alternation(w("dislike_cues"))))
        self.dislike_after = re.compile(rf"(?P<t>[^,.;!?¿¡]+?)\s+{alternation(w('dislike_after'))}\b")
        self.title_stop = re.compile(rf"\s+{alternation(w('title_stop'))}\b.*$")
        self.title_joiner = re.compile(rf"\s(?:{alternation(w('title_joiners'))})\s")
        self.not_title = re.compile(rf"^{alternation(w('not_title'))}\b")
        self.more = re.compile(
            rf"^\s*(?:show |give )?(?:me )?(?:some )?{alternation(w('more'))}(?: please| pls)?[.!?]*\s*$"
        )
        self.reset = re.compile(rf"\b{alternation(w('reset'))}\b")
        self.filler = re.compile(rf"(?<![\w'-]){alternation(w('filler'))}(?![\w'-])")
        self.breaks = set(w("clause_breaks"))
        self.negator_rx = re.compile(rf"(?<![\w'-]){alternation(w('negators'))}(?![\w'-])")
        self.fillers = set(w("filler")) | {x for p in w("scope_words") for x in p.split()}
        ords = lexicon.ordinal_words()
        self.ordinal_rx = re.compile(
            rf"(?<![\w'-])(?:(?:the|le|la|der|die|das|den|el)\s+)?(?P<w>{alternation(ords)})(?:\s+(?:one|film|movie|pelicula|peli))?(?![\w'-])"
            r"|#(?P<n>\d)\b|\b(?:number|numero|nummer|n°)\s*(?P<m>\d)\b"
        )
        self.ordinals = ords
        self.this_one = re.compile(rf"(?<![\w'-]){alternation(lexicon.refine_words('this_one'))}(?![\w'-])")
        self.older = re.compile(rf"(?<![\w'-]){alternation(lexicon.refine_words('older'))}(?![\w'-])")
        self.newer = re.compile(rf"(?<![\w'-]){alternation(lexicon.refine_words('newer'))}(?![\w'-])")
        less = alternation(lexicon.refine_words("less"))
        self.less_tone = [(re.compile(rf"(?<![\w'-]){less}\s+{alternation(ws)}(?![\w'-])"), genres)
                          for ws, genres in lexicon.tone_genres()]  # fmt: skip
        self.stop_words = set().union(*(lexicon.detection_words()[c] for c in PARSED_LANGUAGES))
        self.occasion_rx = re.compile(rf"(?<![\w'-]){alternation(lexicon.occasion_phrases())}(?![\w'-])")
        # words a lowercase span may not consist of alone (they are common words first)
        self.watch_verbs = set(w("watch_verbs"))
        self.common = (
            self.stop_words | self.fillers | set(self.matcher.words) | set(w("negators")) | set(w("intensifiers"))
        )

    def parse(self, message: str, session: ChatSession | None = None) -> ChatQuery:
        return self.analyse(message, session).query

    def analyse(self, message: str, session: ChatSession | None = None) -> RuleParse:
        """The rule-based structured query (always computed; the LLM's fields are checked against it)."""
        q = ChatQuery()
        text = message.strip()
        lang, lang_name = detect_language(text)
        if lang != "en":
            q.language = lang
            q.notes.append(f"message looks like {lang_name}")
        t = _Text(text)
        if self.reset.search(t.f):
            q.reset = True
        if self.more.match(t.f):
            q.more = True
            return RuleParse(q, t.f)
        if session is not None and session.last_shown:
            self._ordinals(t, q, session)
        # an occasion ("on Christmas Eve", "a date night") is no title unless a cue says so
        t.occasions = [m.span() for m in self.occasion_rx.finditer(t.f)]
        self._titles(t, q)
        if self.vocab.year_attr:
            years = parse_years(t.f, self.vocab.max_year)
            q.year_min, q.year_max = years.year_min, years.year_max
            q.notes += years.notes
        else:
            years = YearParse()
        rest = t.f
        mentions = self.matcher.find(rest)
        q.include, q.exclude = mentions.include, mentions.exclude
        if session is not None and session.last_shown:
            self._refine(t, q, session)
        for vals in mentions.conflicts.values():
            q.conflicts += [f"{v} is both asked for and refused: I left it out" for v in vals]
        if q.year_min is not None and q.year_max is not None and q.year_min > q.year_max:
            q.conflicts.append(f"no year is both from {q.year_min} on and up to {q.year_max}: I left the years out")
        refused = self._refused(rest, mentions)
        q.mood, free = self._mood(t, years, refused)
        q.contributions["rules"] = query_fields(q)
        return RuleParse(q, rest, mentions, years, refused, free)

    # --- titles -----------------------------------------------------------------------------

    def _ordinals(self, t: _Text, q: ChatQuery, session: ChatSession) -> None:
        """Feedback on the previous answer: "more like the second one", "seen the first", "not
        that one" (the top pick), "pas le deuxième", "nicht den ersten", "la segunda no"."""
        shown = session.last_shown
        negative = _NEGATIVE.search(t.f) is not None
        found = False
        for m in self.ordinal_rx.finditer(t.f):
            idx = self.ordinals.get(m.group("w")) if m.group("w") else int(m.group("n") or m.group("m")) - 1
            if idx is None or not -len(shown) <= idx < len(shown):
                continue
            (q.disliked if negative else q.liked).append(shown[idx])
            t.blank(*m.span())
            found = True
        if not found and negative and (m := self.this_one.search(t.f)) and len(t.f.split()) <= 6:
            q.disliked.append(shown[0])  # "not that one": the pick on top of the list
            t.blank(*m.span())

    def _refine(self, t: _Text, q: ChatQuery, session: ChatSession) -> None:
        """A turn that steers the previous list: "something older" / "newer" (than the median
        year of what was shown), "less violent" (leaves out the genres of that tone)."""
        years = sorted(self.titles.year[i] for i in session.last_shown if i in self.titles.year)
        if years and not re.search(r"\d", t.f):  # "plus récent" is relative here, not "recent years"
            mid = years[len(years) // 2]
            if self.older.search(t.f):
                q.year_min, q.year_max = None, mid - 1
                q.notes.append(f"older than the previous picks: up to {mid - 1}")
            elif self.newer.search(t.f):
                q.year_min, q.year_max = mid + 1, None
                q.notes.append(f"newer than the previous picks: from {mid + 1}")
        for rx, genres in self.less_tone:
            if rx.search(t.f) and "genres" in self.vocab.attr_values:
                known = [g for g in genres if g in self.vocab.attr_values["genres"]]
                vals = q.exclude.setdefault("genres", [])
                vals += [g for g in known if g not in vals]
                q.include = {
                    a: [v for v in vs if v not in known] if a == "genres" else vs for a, vs in q.include.items()
                }
                q.include = {a: vs for a, vs in q.include.items() if vs}

    def _titles(self, t: _Text, q: ChatQuery) -> None:
        # dislikes first: "didn't like X" also contains "like X"
        for rx in (self.dislike, self.dislike_after):
            for m in rx.finditer(t.f):
                cands = self._phrases(t, *m.span("t"))
                if rx is self.dislike_after:  # the title ends the clause before the cue: try its last words
                    cands = self._suffixes(t, *m.span("t"))
                for phrase, a, b in cands:
                    item = self.titles.resolve(phrase)
                    if item and item not in q.disliked:
                        q.disliked.append(item)
                        t.blank(min(a, m.start()), max(b, m.end()))
                        break
        for m in _QUOTED.finditer(t.o):
            g = 1 if m.group(1) else 2
            self._add_title(q, m.group(g), strict=False)
            t.blank(*m.span())
        for m in self.like.finditer(t.f):
            phrases = self._phrases(t, *m.span("t"))
            if not phrases:
                continue
            whole, a, b = phrases[0]
            if self._add_title(q, whole, strict=True, report=len(phrases) == 1) or len(phrases) == 1:
                if self.titles.resolve(whole) or whole in q.unknown_titles:
                    t.blank(a, b)
                continue
            for phrase, a, b in phrases[1:]:  # "The Matrix and Star Wars": each part on its own
                self._add_title(q, phrase, strict=True)
                if self.titles.resolve(phrase) or phrase in q.unknown_titles:
                    t.blank(a, b)
        for m in _CAPS_SPAN.finditer(t.o):
            span = m.group(1).rstrip(" :-")
            a = m.start(1)
            words = span.split()
            if words and words[0] in _COMMON_CAPS:
                a += len(words[0]) + 1
                words = words[1:]
                span = " ".join(words)
            if not words or self._plain_words(span) or self._in_occasion(t, a, a + len(span)):
                continue
            item = self.titles.resolve(span)
            if item and item not in q.liked and item not in q.disliked:
                self._like(q, item, span)
                t.blank(a, a + len(span))
        self._lowercase_titles(t, q)

    def _like(self, q: ChatQuery, item: str, phrase: str) -> None:
        q.liked.append(item)
        q.liked_titles.append(self.catalog.title(item))
        if rivals := self.titles.rivals(phrase, item):
            q.ambiguous[item] = rivals

    @staticmethod
    def _in_occasion(t: _Text, a: int, b: int) -> bool:
        return any(s < b and a < e for s, e in t.occasions)

    def _lowercase_titles(self, t: _Text, q: ChatQuery, min_ratings: int = 20) -> None:
        """Titles typed in lower case without a cue ("we watched shrek", "back to the future was
        great"): the longest word run equal to a well-known title (``min_ratings``), never one
        made only of common words ("up", "heat", "signs") nor one inside an occasion phrase; a
        single word only right after a watch verb ("watched", "vu", "gesehen", "visto")."""
        toks = [(w, s, e) for w, s, e in tokenize(t.f) if re.match(r"\w", w)]
        used: list[tuple[int, int]] = []
        for n in range(min(8, len(toks)), 0, -1):
            for i in range(len(toks) - n + 1):
                words = [w for w, _, _ in toks[i : i + n]]
                a, b = toks[i][1], toks[i + n - 1][2]
                if any(s < b and a < e for s, e in used):
                    continue
                content = [w for w in words if w not in self.common]
                if not content or (n == 1 and len(words[0]) < 5) or self._in_occasion(t, a, b):
                    continue
                # one plain word is a title only right after a watch verb ("we watched shrek")
                if n == 1 and not (i > 0 and toks[i - 1][0] in self.watch_verbs):
                    continue
                if not re.fullmatch(r"[\w' :&-]+", t.f[a:b]):
                    continue
                item = self.titles.exact(t.o[a:b])
                if (
                    item
                    and self.titles.popularity(item) >= min_ratings
                    and item not in q.liked
                    and item not in q.disliked
                ):
                    self._like(q, item, t.o[a:b])
                    used.append((a, b))
                    t.blank(a, b)

    def _plain_words(self, span: str) -> bool:
        """A capitalised span that is no title: one short or common word ("Please", "Kinder"),
        or only attribute words ("Horror", "Science-Fiction", "Western")."""
        low = fold(span)
        toks = [w for w, _, _ in tokenize(low) if re.match(r"\w", w)]
        if len(toks) == 1 and (len(low) < 4 or low in self.stop_words):
            return True
        return all(w in self.matcher.words or w in self.stop_words for w in toks) and any(
            w in self.matcher.words for w in toks
        )

    def _phrases(self, t: _Text, a: int, b: int) -> list[tuple[str, int, int]]:
        """Candidate titles in ``[a, b)`` after a cue: the whole phrase, then its 'and'/'or' parts."""
        low = t.f[a:b]
        cut = self.title_stop.search(low)
        if cut:
            b = a + cut.start()
        while a < b and t.f[a] in " '\"":
            a += 1
        while b > a and t.f[b - 1] in " '\"":
            b -= 1
        span, low = t.o[a:b], t.f[a:b]
        if not span.strip() or self.not_title.match(low) or len(span.split()) > 10:
            return []
        parts = [(span, a, b)]
        pos = 0
        if self.title_joiner.search(low):
            for m in [*self.title_joiner.finditer(low), None]:
                end = m.start() if m else len(low)
                piece = span[pos:end]
                lead = len(piece) - len(piece.lstrip())
                if piece.strip():
                    parts.append((piece.strip(), a + pos + lead, a + pos + lead + len(piece.strip())))
                pos = m.end() if m else pos
        return parts

    def _suffixes(self, t: _Text, a: int, b: int) -> list[tuple[str, int, int]]:
        """The last 1..6 words of ``[a, b)``, longest first ("Titanic" in "ich finde, Titanic")."""
        words = [(m.group(0), a + m.start(), a + m.end()) for m in re.finditer(r"\S+", t.o[a:b])]
        out = []
        for n in range(min(6, len(words)), 0, -1):
            s, e = words[-n][1], words[-1][2]
            out.append((t.o[s:e], s, e))
        return out

    def _add_title(self, q: ChatQuery, phrase: str, *, strict: bool, report: bool = True) -> bool:
        item = self.titles.resolve(phrase) or self.titles.partial(phrase)
        if item:
            if item not in q.liked and item not in q.disliked:
                self._like(q, item, phrase)
            return True
        # after a cue, only capitalised phrases are claimed as titles ("like Xyzzy" yes, "like funny stuff" no)
        if report and (not strict or (phrase[:1].isupper() and not self.not_title.match(fold(phrase)))):
            if phrase not in q.unknown_titles and not any(phrase in p for p in q.unknown_titles):
                q.unknown_titles.append(phrase.strip())
        return False

    # --- mood -------------------------------------------------------------------------------

    def _refused(self, folded: str, mentions: Mentions) -> list[tuple[int, int]]:
        """Refused mentions, and each negator up to the end of its clause ("not so violent")."""
        out = list(mentions.negated_spans())
        for m in self.negator_rx.finditer(folded):
            end = len(folded)
            for w, s, _ in tokenize(folded[m.end() :]):
                if w in self.breaks or w in ",.;!?":
                    end = m.end() + s
                    break
            out.append((m.start(), end))
        return out

    def _mood(self, t: _Text, years: YearParse, refused: list[tuple[int, int]]) -> tuple[str, str]:
        """What is left of the message once titles, years, refusals and filler words are gone:
        the text the retriever's query source searches with ("funnier", "feel-good"); and that
        text before the fillers go (see ``RuleParse.free_text``)."""
        for a, b in [*years.spans, *refused]:
            t.blank(a, b)
        free = t.f
        for m in self.filler.finditer(t.f):
            t.blank(*m.span())
        out = re.sub(r"\s+", " ", re.sub(r"[^\w\s'-]|(?<!\w)'|'(?!\w)", " ", t.o)).strip(" -'")
        return (out[:120] if re.search(r"\w{3,}", out) else ""), free


def query_fields(q: ChatQuery) -> list[str]:
    """The fields a query carries, as contribution labels ("liked:1214", "include:genres=Comedy")."""
    out = [f"liked:{i}" for i in q.liked] + [f"disliked:{i}" for i in q.disliked]
    for part, d in (("include", q.include), ("exclude", q.exclude)):
        out += [f"{part}:{a}={v}" for a, vs in d.items() for v in vs]
    out += [name for name in ("year_min", "year_max") if getattr(q, name) is not None]
    return out + (["mood"] if q.mood else [])
