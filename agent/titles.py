"""Title normalisation shared by the chat parser and the explanation checks."""

from __future__ import annotations

import re

__all__ = ["normalize_title"]

_ARTICLE_RE = re.compile(r"^(?P<rest>.*), (?P<art>the|a|an|les|la|le|l'|il|el|der|die|das)$")
_YEAR_SUFFIX = re.compile(r"\s*\(\d{4}(?:[-–]\d{0,4})?\)\s*$")


def normalize_title(title: str) -> str:
    """Lower-case, year and punctuation dropped, MovieLens' trailing article moved to the front:
    ``"Matrix, The (1999)"`` → ``"the matrix"``."""
    t = _YEAR_SUFFIX.sub("", title.strip()).lower()
    t = re.sub(r"\s*\(a\.k\.a\. .*\)$", "", t)  # "Seven (a.k.a. Se7en)"
    t = re.sub(r"\s*\([^)]*\)$", "", t).strip()  # a trailing alternative title "(Les ...)"
    m = _ARTICLE_RE.match(t)
    if m:
        t = f"{m.group('art')} {m.group('rest')}"
    return re.sub(r"[^\w]+", " ", t).strip()
