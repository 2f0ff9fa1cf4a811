"""Measuring the parsers against labelled requests (``tests/data/chat_fixtures.jsonl``).

A fixture is one message with its expected structured parse: ``liked`` / ``disliked`` catalog
ids, ``include`` / ``exclude`` attribute values, ``year_min`` / ``year_max``. Accuracy is per
field (six per fixture, each right or wrong as a whole, order-insensitive), for the rules alone,
the LLM alone after grounding, and the merge the agent uses.

>>> fixtures = load_fixtures("tests/data/chat_fixtures.jsonl")
>>> run = run_parsers(llm_parser, [f["message"] for f in fixtures], llm=engine, renderer=renderer)
>>> accuracy(run.merged, fixtures), inversions(run.merged, fixtures)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .llm_parse import LLMParser, as_query
from .models import ChatQuery

__all__ = ["FIELDS", "ParseRun", "load_fixtures", "field_errors", "accuracy", "inversions", "run_parsers"]

FIELDS = ("liked", "disliked", "include", "exclude", "year_min", "year_max")


def load_fixtures(path: str | Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _norm(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: sorted(v) for k, v in value.items() if v}
    return sorted(value) if isinstance(value, list) else value


def field_errors(q: ChatQuery, fixture: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Field → (parsed, expected) for every field the parse got wrong."""
    out = {}
    for name in FIELDS:
        got, want = _norm(getattr(q, name)), _norm(fixture.get(name, {} if name in ("include", "exclude") else None))
        if name in ("liked", "disliked") and want is None:
            want = []
        if got != want:
            out[name] = (got, want)
    return out


def accuracy(queries: list[ChatQuery], fixtures: list[dict[str, Any]]) -> float:
    """Share of (fixture, field) pairs parsed exactly right."""
    wrong = sum(len(field_errors(q, f)) for q, f in zip(queries, fixtures, strict=True))
    return 1 - wrong / (len(FIELDS) * len(fixtures)) if fixtures else 0.0


def inversions(queries: list[ChatQuery], fixtures: list[dict[str, Any]], direction: str = "both") -> list[str]:
    """Fixture ids where the parse turned a preference around: a refused value parsed as wanted
    ("no X" → include X; ``direction="refused_as_wanted"``) or a wanted one parsed as refused
    ("a war film that's not too depressing" → exclude War; ``"wanted_as_refused"``)."""
    if direction not in ("both", "refused_as_wanted", "wanted_as_refused"):
        raise ValueError(f"unknown direction {direction!r}")
    out = []
    for q, f in zip(queries, fixtures, strict=True):
        refused = {(a, v) for a, vs in f.get("exclude", {}).items() for v in vs}
        wanted = {(a, v) for a, vs in f.get("include", {}).items() for v in vs}
        got_in = {(a, v) for a, vs in q.include.items() for v in vs}
        got_out = {(a, v) for a, vs in q.exclude.items() for v in vs}
        # titles too: a liked film parsed as disliked, or the reverse
        refused |= {("item", i) for i in f.get("disliked") or []}
        wanted |= {("item", i) for i in f.get("liked") or []}
        got_in |= {("item", i) for i in q.liked}
        got_out |= {("item", i) for i in q.disliked}
        hit = (direction != "wanted_as_refused" and bool(refused & got_in)) or (
            direction != "refused_as_wanted" and bool(wanted & got_out)
        )
        if hit:
            out.append(f["id"])
    return out


@dataclass
class ParseRun:
    rules: list[ChatQuery] = field(default_factory=list)
    llm: list[ChatQuery] = field(default_factory=list)
    """The LLM path alone after grounding (empty queries where it did not run)."""
    merged: list[ChatQuery] = field(default_factory=list)
    raw: list[str | None] = field(default_factory=list)
    """The model's JSON answers (``None`` where it was not asked)."""


def run_parsers(
    parser: LLMParser,
    messages: list[str],
    *,
    llm: Any = None,
    renderer: Any = None,
    raw: list[str | None] | None = None,
    max_tokens: int = 160,
) -> ParseRun:
    """Parse ``messages`` as the agent does for a first turn. The model answers come from ``llm``
    (one batch) or, to replay a recorded run, from ``raw``; with neither, only the rules run."""
    run = ParseRun()
    parses = [parser.rules.analyse(m) for m in messages]
    run.rules = [p.query.model_copy(deep=True) for p in parses]
    asked = [i for i, p in enumerate(parses) if parser.wants(p.query)]
    answers: list[str | None] = [None] * len(messages)
    if raw is not None:
        answers = list(raw)
    elif llm is not None and asked:
        for i, text in zip(
            asked, parser.generate(llm, renderer, [messages[i] for i in asked], max_tokens), strict=True
        ):
            answers[i] = text
    run.raw = answers
    for m, p, text in zip(messages, parses, answers, strict=True):
        if text is None:
            run.llm.append(ChatQuery(parse_path="llm"))
            run.merged.append(p.query)
            continue
        got = parser.ground(m, p, text)
        run.llm.append(as_query(got))
        parser.merge(p, got)
        run.merged.append(p.query)
    return run
