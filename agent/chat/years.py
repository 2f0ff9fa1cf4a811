"""Year constraints in words: "from the 90s", "before 1970", "2010 or later", "early 80s",
"des années 90", "aus den 90ern", "de los 90", "antes de 1970", "2000 oder später".

The cue words are data (``years`` in ``lexicon/<lang>.json``); the patterns here combine them.
A negated phrase flips an open bound ("nothing before 1980" → from 1980) and is dropped with a
note when it cannot be one range ("nothing from the 70s").
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

from . import lexicon
from .lexicon import alternation, tokenize
from .mentions import governing_negator

__all__ = ["YearParse", "parse_years", "decade_start"]

_Y = r"(1[89]\d\d|20\d\d)"
_DEC = r"(\d0|1[89]\d0|20[0-2]0)"


@dataclass
class YearParse:
    year_min: int | None = None
    year_max: int | None = None
    spans: list[tuple[int, int]] = field(default_factory=list)
    """Where the year phrases are (folded text), so the mood text can leave them out."""
    negated: bool = False
    """A year phrase was refused ("nothing from the 70s")."""
    notes: list[str] = field(default_factory=list)


def decade_start(s: str, max_year: int) -> int:
    """ "90" → 1990, "10" → 2010 (when the catalog reaches it), "1980" → 1980."""
    if len(s) == 4:
        return int(s)
    d = int(s)
    return 2000 + d if 2000 + d <= max_year else 1900 + d


class _Patterns:
    def __init__(self) -> None:
        w = lexicon.year_words
        pre = alternation(w("decade_prefix"))
        suf = alternation(w("decade_suffix"))
        # a decade is a number with a suffix ("90s", "90er") or after a prefix ("années 90", "los 90")
        dec_num = rf"(?:{pre}\s+)?'?{_DEC}'?{suf}\b|(?:{pre})\s+'?{_DEC}\b(?!\s*['’]?\d)"
        dec_word = alternation(lexicon.decade_words())
        self.range = re.compile(
            rf"\b{alternation(w('between'))}\s+{_Y}\s*{alternation(w('range_sep'))}\s*{_Y}\b|\b{_Y}\s*[-–]\s*{_Y}\b"
        )
        part = rf"(?P<part>{alternation(w('early'))}|{alternation(w('mid'))}|{alternation(w('late'))})"
        self.part_decade = re.compile(rf"\b{part}[\s-]*(?:the\s+)?(?:{dec_num}|'?{_DEC}\b|(?P<word>{dec_word}))")
        self.decade = re.compile(rf"(?<![\w'])(?:{dec_num})|\b(?P<word>{dec_word})\b")
        self.before = re.compile(rf"\b{alternation(w('before'))}[\s-]*{_Y}\b")
        self.after = re.compile(rf"\b{alternation(w('after'))}[\s-]*{_Y}\b")
        self.since = re.compile(rf"\b{alternation(w('since'))}[\s-]*{_Y}\b")
        self.until = re.compile(rf"\b{alternation(w('until'))}\s*{_Y}\b")
        self.or_later = re.compile(rf"\b{_Y}\s*{alternation(w('or_later'))}(?!\w)")
        self.or_earlier = re.compile(rf"\b{_Y}\s*{alternation(w('or_earlier'))}(?!\w)")
        self.in_year = re.compile(rf"\b{alternation(w('in_year'))}\s+{_Y}\b")
        self.recent = re.compile(rf"\b{alternation(w('recent'))}\b")
        self.early, self.mid = set(w("early")), set(w("mid"))


@functools.cache  # built on first use, from the lexicon files
def _patterns() -> _Patterns:
    return _Patterns()


def _decade_of(m: re.Match[str], max_year: int) -> int:
    word = m.groupdict().get("word")
    if word:
        return lexicon.decade_words()[re.sub(r"\s+", " ", word)]
    num = next(g for g in m.groups()[::-1] if g and g.isdigit())
    return decade_start(num, max_year)


def parse_years(folded: str, max_year: int) -> YearParse:
    """The year range ``folded`` text asks for (see :func:`~recagent.chat.lexicon.fold`)."""
    p = _patterns()
    out = YearParse()
    toks = tokenize(folded)
    words = [t for t, _, _ in toks]
    first_tok = {s: n for n, (_, s, _) in enumerate(toks)}

    def negated(m: re.Match[str]) -> bool:
        n = first_tok.get(m.start())
        return n is not None and governing_negator(words, n, {}, set()) is not None

    def refuse(m: re.Match[str]) -> None:
        out.negated = True
        out.spans.append(m.span())
        out.notes.append(f"cannot leave out one span of years ({folded[m.start() : m.end()]!r}): no year filter")

    for rx, kind in ((p.range, "range"), (p.part_decade, "part"), (p.decade, "decade")):
        m = rx.search(folded)
        if not m:
            continue
        if negated(m):
            refuse(m)
            return out
        out.spans.append(m.span())
        if kind == "range":
            a, b = sorted(int(g) for g in m.groups() if g)
            out.year_min, out.year_max = a, b
        else:
            lo = _decade_of(m, max_year)
            if kind == "part":
                part = re.sub(r"\s+", " ", m.group("part"))
                lo, hi = (lo, lo + 4) if part in p.early else (lo + 3, lo + 7) if part in p.mid else (lo + 5, lo + 9)
                out.year_min, out.year_max = lo, hi
            else:
                out.year_min, out.year_max = lo, lo + 9
        return out
    # open bounds: (pattern, bound it sets, offset, bound and offset when negated)
    bounds = (
        (p.or_later, "min", 0, "max", -1), (p.or_earlier, "max", 0, "min", 1),
        (p.before, "max", -1, "min", 0), (p.after, "min", 1, "max", 0),
        (p.since, "min", 0, "max", -1), (p.until, "max", 0, "min", 1),
    )  # fmt: skip
    taken: list[tuple[int, int]] = []
    for rx, bound, off, neg_bound, neg_off in bounds:
        for m in rx.finditer(folded):
            if any(a < m.end() and m.start() < b for a, b in taken):
                continue
            year = int(next(g for g in m.groups() if g))
            if negated(m):
                bound, off = neg_bound, neg_off
            taken.append(m.span())
            if bound == "min" and out.year_min is None:
                out.year_min = year + off
            elif bound == "max" and out.year_max is None:
                out.year_max = year + off
    out.spans += taken
    if out.year_min is None and out.year_max is None:
        m = p.in_year.search(folded)
        if m:
            if negated(m):
                refuse(m)
                return out
            out.year_min = out.year_max = int(m.group(1))
            out.spans.append(m.span())
        elif (m := p.recent.search(folded)) and not negated(m):
            out.year_min = max_year - 4
            out.spans.append(m.span())
    return out
