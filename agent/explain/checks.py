"""Reading the LLM's reasons and checking that each cites the user's own history.

A reason is kept only if it names one of the history titles shown to the model; the ids it
cites come from our own title matching, never from the model, so no citation is invented.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..titles import normalize_title

__all__ = ["parse_reasons", "check_reason"]

_REASON_LINE = re.compile(r"^\s*[-*•]?\s*\**\s*(?:\(?)([A-Z])(?:\)|\.|:|\s-|\s–)\**\s*(.+?)\s*$")
_CATALOG_LINE = re.compile(r"^[^\[]*\(\d{4}\)\s*(?:\[[^\]]*\])?\s*\.?$")


def parse_reasons(text: str, labels: Sequence[str]) -> dict[str, str]:
    """``{"A": "reason", ...}`` (structured output) or ``"A: reason"`` lines → {label: reason}."""
    wanted = set(labels)
    try:
        data = json.loads(text or "")
        if isinstance(data, dict):
            return {k: str(v).strip() for k, v in data.items() if k in wanted and isinstance(v, str) and v.strip()}
    except json.JSONDecodeError:
        pass
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        m = _REASON_LINE.match(line)
        if m and m.group(1) in wanted and m.group(1) not in out:
            reason = m.group(2).strip().strip('"').strip()
            if reason:
                out[m.group(1)] = reason
    return out


def check_reason(
    reason: str | None, item_title: str, history: Sequence[Mapping[str, Any]]
) -> tuple[str, list[str]] | None:
    """(reason, cited history ids) if the reason is usable, else None.

    Usable: it names at least one of the shown history titles (after the recommended item's own
    title is removed, so "Back to the Future Part II" does not cite "Back to the Future"), it
    says something besides titles (≥ 3 other words), and it is not a copy of a catalog line
    ("Title (1996) [Crime, Drama]"). Cited ids come from our own matching: never invented.
    """
    if not reason:
        return None
    reason = reason.strip()
    words = reason.split()
    if not 4 <= len(words) <= 60 or "<" in reason or _CATALOG_LINE.match(reason):
        return None
    text = " " + normalize_title(reason) + " "
    own = normalize_title(item_title)
    if len(own) >= 3:
        text = text.replace(f" {own} ", " ")
    cites: list[str] = []
    for h in sorted(history, key=lambda h: -len(str(h["title"]))):
        t = normalize_title(str(h["title"]))
        if len(t) >= 3 and f" {t} " in text and h["item_id"] not in cites:
            cites.append(h["item_id"])
            text = text.replace(f" {t} ", " ")
    rest = [w for w in text.split() if len(w) > 2 and not w.isdigit()]
    if not cites or len(rest) < 3:
        return None
    return reason, cites
