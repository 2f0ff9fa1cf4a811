"""Attribute values a message names, and whether each is wanted or refused.

"no horror", "nothing too scary", "not a musical", "skip the sci-fi", "anything but horror",
"pas d'horreur", "kein Horror", "sin terror" → exclude; "funnier", "a western" → include.

A mention is refused when a negator governs it: walking back from the mention, only words that
cannot end a negation's scope may stand in between — fillers ("a", "too", "any"), other mentions
joined by "or" ("no horror or westerns"), or by "and"/"," when the list goes on ("no horror,
gore or slashers"). Anything else ("but", "please", a comma before "a comedy") ends the scope.
"nothing but" / "I don't mind" affirm instead. The word lists are in ``lexicon/``.

A negation of a *modifier* — an intensifier between the negator and the mention ("not too
gory", "pas trop sanglant", "nicht zu blutig", "no muy violenta") — is soft: it never refuses
a value the message also wants, its head ("a horror film, nothing too gory" keeps Horror
wanted and excludes nothing), while "for kids, nothing too scary" still excludes Horror. Hyphenated pairs of value words
("romantic-comedy", "sci-fi-thriller") name each value.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from . import lexicon
from .lexicon import alternation, tokenize

__all__ = ["Mention", "Mentions", "AttributeMatcher", "governing_negator"]


@dataclass(frozen=True)
class Mention:
    attr: str
    value: str
    start: int
    end: int
    negated: bool
    scope_start: int
    """Where the refusal starts (the negator), or ``start`` when the mention is wanted."""
    soft: bool = False
    """Refused through an intensifier ("not too gory"): a refusal only when nothing is wanted."""


@dataclass
class Mentions:
    """What a text says about attribute values (``include`` minus anything also refused)."""

    items: list[Mention] = field(default_factory=list)

    def values(self, negated: bool) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for m in self.items:
            if m.negated == negated:
                vals = out.setdefault(m.attr, [])
                if m.value not in vals:
                    vals.append(m.value)
        return out

    @property
    def include(self) -> dict[str, list[str]]:
        exc = self.exclude
        inc = {a: [v for v in vs if v not in exc.get(a, [])] for a, vs in self.values(False).items()}
        return {a: vs for a, vs in inc.items() if vs}

    def _wanted(self) -> set[tuple[str, str]]:
        return {(m.attr, m.value) for m in self.items if not m.negated}

    @property
    def exclude(self) -> dict[str, list[str]]:
        wanted = self._wanted()
        out: dict[str, list[str]] = {}
        for m in self.items:
            if m.negated and not (m.soft and (m.attr, m.value) in wanted):
                vals = out.setdefault(m.attr, [])
                if m.value not in vals:
                    vals.append(m.value)
        return out

    @property
    def conflicts(self) -> dict[str, list[str]]:
        """Values both asked for and refused outright ("a comedy but no comedy"); refusal wins."""
        refused = {(m.attr, m.value) for m in self.items if m.negated and not m.soft}
        out: dict[str, list[str]] = {}
        for a, v in sorted(self._wanted() & refused):
            out.setdefault(a, []).append(v)
        return out

    @property
    def softened(self) -> list[Mention]:
        """Modifier refusals that excluded nothing: the message wants that very value (its head)."""
        wanted = self._wanted()
        return [m for m in self.items if m.negated and m.soft and (m.attr, m.value) in wanted]

    def negated_spans(self) -> list[tuple[int, int]]:
        """(start, end) of every refusal, negator included ("no horror")."""
        return [(m.scope_start, m.end) for m in self.items if m.negated]


def _phrases(key: str) -> set[tuple[str, ...]]:
    return {tuple(t for t, _, _ in tokenize(p)) for p in lexicon.words(key)}


class _Scope:
    """The negation word lists of every parsed language, as token tuples."""

    def __init__(self) -> None:
        self.negators = _phrases("negators")
        self.affirmers = _phrases("affirmers")
        self.fillers = {t for p in _phrases("scope_words") for t in p}
        self.loose = {t for p in _phrases("joiners_loose") for t in p}
        self.tight = {t for p in _phrases("joiners_tight") for t in p}
        self.intensifiers = {t for p in _phrases("intensifiers") for t in p}
        self.longest = max((len(p) for p in self.negators | self.affirmers), default=1)

    def phrase_ending_at(self, toks: Sequence[str], i: int, table: set[tuple[str, ...]]) -> int | None:
        """Start index of the longest phrase of ``table`` ending at token ``i``."""
        for n in range(min(self.longest, i + 1), 0, -1):
            if tuple(toks[i - n + 1 : i + 1]) in table:
                return i - n + 1
        return None


@functools.cache  # built on first use, from the lexicon files
def _scope() -> _Scope:
    return _Scope()


def governing_negator(
    toks: Sequence[str], first: int, spans_end_at: Mapping[int, int], spans_start_at: set[int]
) -> int | None:
    """Token index of the negator governing the phrase that starts at token ``first``, or ``None``.

    ``spans_end_at`` maps the last token of every other mention to its first token, so lists of
    mentions ("no horror or westerns") pass through; ``spans_start_at`` holds their first tokens.
    """
    sc = _scope()
    i = first - 1
    conjunct = 0  # words of a non-mention conjunct allowed after "or" ("nothing with zombies or aliens")
    steps = 0
    while i >= 0 and steps < 12:
        steps += 1
        if sc.phrase_ending_at(toks, i, sc.affirmers) is not None:
            return None
        start = sc.phrase_ending_at(toks, i, sc.negators)
        if start is not None:
            return start
        tok = toks[i]
        if i in spans_end_at:
            i = spans_end_at[i] - 1
            continue
        if tok in sc.fillers:
            i -= 1
            continue
        if tok in sc.loose:
            conjunct = 2
            i -= 1
            continue
        if tok in sc.tight:
            # "no horror and gore" / "no horror, gore or slashers" go on; "nothing scary, a comedy" stops
            left_is_mention = (i - 1) in spans_end_at
            right_is_mention = (i + 1) in spans_start_at
            if (
                left_is_mention
                and right_is_mention
                and (tok != "," or _list_goes_on(toks, i + 1, spans_end_at, spans_start_at))
            ):
                i -= 1
                continue
            return None
        if conjunct and re.fullmatch(r"\w[\w'-]*", tok):
            conjunct -= 1
            i -= 1
            continue
        return None
    return None


def _list_goes_on(toks: Sequence[str], j: int, spans_end_at: Mapping[int, int], spans_start_at: set[int]) -> bool:
    """After ", <mention>" comes "or/and <mention>": the comma joins a list ("X, Y or Z")."""
    sc = _scope()
    end = next((e for e, s in spans_end_at.items() if s == j), j)
    k = end + 1
    return k + 1 < len(toks) and (toks[k] in sc.loose or toks[k] in sc.tight) and (k + 1) in spans_start_at


class AttributeMatcher:
    """Finds attribute values in text: lexicon words (``attributes.json``) and the values' names.

    ``attr_values`` is the catalog's small vocabularies (e.g. ``{"genres": ["Comedy", ...]}``);
    values without a word list are matched by name only, so any catalog works.
    """

    def __init__(self, attr_values: Mapping[str, Sequence[str]]):
        self.patterns: list[tuple[re.Pattern[str], str, str]] = []
        self.words: dict[str, set[str]] = {}  # folded word -> values it names (for mood checks)
        for attr, values in attr_values.items():
            for value in values:
                found = lexicon.attribute_words(attr, value)
                rx = re.compile(r"(?<![\w-])" + alternation(found) + r"(?![\w-])")
                self.patterns.append((rx, attr, value))
                for w in found:
                    self.words.setdefault(w.rstrip("*"), set()).add(value)

    def _split_pairs(self, folded: str) -> str:
        """``folded`` with the hyphens of value-word pairs as spaces ("romantic-comedy" →
        "romantic comedy"; "sci-fi-thriller" → "sci-fi thriller"); same length."""
        out = list(folded)
        for m in re.finditer(r"\w+(?:-\w+)+", folded):
            word = m.group(0)
            if word in self.words:  # a value word of its own ("sci-fi", "rom-com")
                continue
            parts = word.split("-")
            cuts = self._segment(parts)
            if cuts:
                pos = m.start()
                for n, part in enumerate(parts[:-1]):
                    pos += len(part)
                    if n + 1 in cuts:
                        out[pos] = " "
                    pos += 1
        return "".join(out)

    def _segment(self, parts: list[str]) -> set[int] | None:
        """Part indexes where a new value word starts, when ``parts`` are two or more value words."""
        n = len(parts)
        best: dict[int, list[int] | None] = {n: []}
        for i in range(n - 1, -1, -1):
            best[i] = None
            for j in range(n, i, -1):
                if "-".join(parts[i:j]) in self.words and best[j] is not None:
                    best[i] = [i, *best[j]]
                    break
        cut = best[0]
        return set(cut[1:]) if cut and len(cut) >= 2 else None

    def find(self, folded: str) -> Mentions:
        """Mentions in ``folded`` text (see :func:`~recagent.chat.lexicon.fold`)."""
        folded = self._split_pairs(folded)
        raw = [(m.start(), m.end(), attr, value) for rx, attr, value in self.patterns for m in rx.finditer(folded)]
        # the longest phrase wins ("comédie musicale" is a musical, not a comedy); equal spans all count
        raw.sort(key=lambda r: (r[0] - r[1], r[0]))
        kept: list[tuple[int, int, str, str]] = []
        for r in raw:
            if any(k[0] <= r[0] and r[1] <= k[1] and (k[0], k[1]) != (r[0], r[1]) for k in kept):
                continue
            kept.append(r)
        kept.sort()
        toks = tokenize(folded)
        tok_at = {s: n for n, (_, s, _) in enumerate(toks)}
        tok_end = {e: n for n, (_, _, e) in enumerate(toks)}
        spans = [(tok_at.get(s), tok_end.get(e), s, e, a, v) for s, e, a, v in kept]
        spans = [x for x in spans if x[0] is not None and x[1] is not None]
        ends = {b: a for a, b, *_ in spans}
        starts = {a for a, *_ in spans}
        words = [t for t, _, _ in toks]
        out = Mentions()
        sc = _scope()
        for a, _b, s, e, attr, value in spans:
            neg = governing_negator(words, a, ends, starts)
            soft = neg is not None and any(w in sc.intensifiers for w in words[neg + 1 : a])
            out.items.append(Mention(attr, value, s, e, neg is not None, toks[neg][1] if neg is not None else s, soft))
        return out
