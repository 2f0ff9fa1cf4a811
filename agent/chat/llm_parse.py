"""The LLM parser: the model fills a JSON query (vLLM structured outputs), then every field is
checked against the message before it may join the rules' query.

The schema (``prompts/parse_query.jinja`` renders the prompt) offers the catalog's attribute
values as enums. A 135M model happily invents titles, genres and years, so a field counts only
when the message backs it up:

* a title must be written in the message and resolve to a catalog item; a disliked one needs a
  negative word in the message, and a title the rules read as liked is never made disliked (or
  the other way round);
* an included value must be mentioned and wanted, an excluded one mentioned and refused (the
  rules' mention analysis decides: "no horror" can never become include Horror);
* a year must be written, and is used only when the rules found no year (a range is one unit,
  so "before 1990" cannot gain a model's ``year_min=1990``);
* the mood must share a word with the message and contain no refused word.

Rules win every conflict; the LLM adds what they missed (a lowercase title without a cue, a year
phrase they do not know). ``ChatQuery.contributions`` records what each path supplied.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from ..titles import normalize_title
from .lexicon import PARSED_LANGUAGES, fold, tokenize
from .models import ChatQuery
from .rules import RuleParse, RuleParser, query_fields
from .titles import TitleResolver
from .vocab import CatalogVocab

__all__ = ["LLMFields", "LLMParser", "LLMQuery", "as_query", "rules_found"]

_ARTICLE = re.compile(r"^(?:the|a|an|le|la|les|l|der|die|das|el|los|las) ")  # "The Shrek" is written as "shrek"


class LLMQuery(BaseModel):
    """What the LLM must return (the JSON schema enforces the shape; this re-checks it)."""

    liked_titles: list[str] = Field(default_factory=list, max_length=10)
    disliked_titles: list[str] = Field(default_factory=list, max_length=10)
    include: dict[str, list[str]] = Field(default_factory=dict)
    exclude: dict[str, list[str]] = Field(default_factory=dict)
    year_min: int | None = None
    year_max: int | None = None
    mood: str = ""


@dataclass
class LLMFields:
    """The grounded part of one LLM answer (what survives the checks)."""

    liked: list[str] = field(default_factory=list)
    disliked: list[str] = field(default_factory=list)
    include: dict[str, list[str]] = field(default_factory=dict)
    exclude: dict[str, list[str]] = field(default_factory=dict)
    year_min: int | None = None
    year_max: int | None = None
    mood: str = ""
    valid: bool = True
    """False when the answer was not JSON of the schema (then nothing else is set)."""
    notes: list[str] = field(default_factory=list)


class LLMParser:
    """Builds the prompt and schema for one catalog; grounds and merges the model's answers."""

    def __init__(self, rules: RuleParser, *, item_noun: str = "item", only_unsure: bool = False):
        self.rules = rules
        self.only_unsure = only_unsure
        self.titles: TitleResolver = rules.titles
        self.vocab: CatalogVocab = rules.vocab
        self.noun = item_noun
        self.schema = self._json_schema()

    def _json_schema(self) -> dict[str, Any]:
        attrs = {a: {"type": "array", "items": {"enum": v}, "maxItems": 3} for a, v in self.vocab.attr_values.items()}
        year = {"anyOf": [{"type": "integer", "minimum": 1800, "maximum": 2100}, {"type": "null"}]}
        titles = {"type": "array", "items": {"type": "string", "maxLength": 60}, "maxItems": 3}
        return {
            "type": "object",
            "properties": {
                "liked_titles": titles,
                "disliked_titles": titles,
                "include": {"type": "object", "properties": attrs, "additionalProperties": False},
                "exclude": {"type": "object", "properties": attrs, "additionalProperties": False},
                "year_min": year,
                "year_max": year,
                "mood": {"type": "string", "maxLength": 60},
            },
            "required": ["liked_titles", "disliked_titles", "include", "exclude", "year_min", "year_max", "mood"],
            "additionalProperties": False,
        }

    def wants(self, q: ChatQuery) -> bool:
        """Whether a message is worth an LLM parse ("more" is not; nor a language the rules cannot
        check; with ``only_unsure``, nor a message in which the rules found something)."""
        if q.more or q.language not in PARSED_LANGUAGES:
            return False
        return not (self.only_unsure and rules_found(q))

    def prompt(self, renderer: Any, message: str) -> str:
        return renderer.prompt("parse_query", request=message, attributes=self.vocab.attr_values, item_noun=self.noun)

    def generate(self, llm: Any, renderer: Any, messages: list[str], max_tokens: int) -> list[str]:
        """The model's raw JSON answers, one per message (one engine call)."""
        prompts = [self.prompt(renderer, m) for m in messages]
        return llm.generate(prompts, max_tokens=max_tokens, temperature=0.0, json_schema=self.schema)

    # --- grounding --------------------------------------------------------------------------

    def ground(self, message: str, parse: RuleParse, text: str) -> LLMFields:
        """The fields of the JSON ``text`` that ``message`` backs up (``parse``: the rules' reading)."""
        out = LLMFields()
        try:
            parsed = LLMQuery.model_validate(json.loads(text))
        except (json.JSONDecodeError, ValidationError) as e:
            out.valid = False
            out.notes.append(f"LLM JSON invalid ({type(e).__name__}): rules only")
            return out
        q = parse.query
        msg_norm = " " + fold(normalize_title(message)) + " "
        negative = bool(self.rules.negator_rx.search(fold(message)) or self.rules.dislike.search(fold(message)))
        for titles, target, other, kind in (
            (parsed.liked_titles, out.liked, q.disliked, "liked"),
            (parsed.disliked_titles, out.disliked, q.liked, "disliked"),
        ):
            for title in titles:
                n = fold(normalize_title(title))
                written = bool(n) and any(f" {k} " in msg_norm for k in (n, _ARTICLE.sub("", n)) if k)
                item = self.titles.resolve(title) if written else None
                if item is None or item in other or (kind == "disliked" and not negative):
                    out.notes.append(
                        f"LLM {kind} title {title!r} not backed by the message or not in the catalog: ignored"
                    )
                elif item not in target:
                    target.append(item)
        wanted, refused = parse.mentions.include, parse.mentions.exclude
        for part, mine, backed, target in (
            ("include", parsed.include, wanted, out.include),
            ("exclude", parsed.exclude, refused, out.exclude),
        ):
            for attr, vals in mine.items():
                for v in vals:
                    if v not in backed.get(attr, []):
                        out.notes.append(f"LLM {part} {attr}={v!r} not backed by the message: ignored")
                    elif v not in target.get(attr, []):
                        target.setdefault(attr, []).append(v)
        written = {int(y) for y in re.findall(r"\b(1[89]\d\d|20\d\d)\b", parse.rest)}
        for name in ("year_min", "year_max"):
            v = getattr(parsed, name)
            if v is None:
                continue
            if parse.years.negated or v not in written or not self.vocab.min_year - 5 <= v <= self.vocab.max_year + 1:
                out.notes.append(f"LLM {name}={v} not backed by the message: ignored")
            else:
                setattr(out, name, v)
        if out.year_min is not None and out.year_max is not None and out.year_min > out.year_max:
            out.notes.append(f"LLM years {out.year_min}>{out.year_max}: ignored")
            out.year_min = out.year_max = None
        out.mood = self._ground_mood(message, parse, parsed.mood.strip(), out.notes)
        return out

    def _ground_mood(self, message: str, parse: RuleParse, mood: str, notes: list[str]) -> str:
        """The model's mood, when every word of it is the message's own, outside titles, years,
        refusals and dislikes ("no horror" must not send the retriever looking for "horror",
        nor "Titanic hat mir nicht gefallen" for "Titanic")."""
        if not mood:
            return ""
        mood_words = {w for w, _, _ in tokenize(fold(mood)) if len(w) >= 3 and w[0].isalpha()} - self.rules.fillers
        free = {w for w, _, _ in tokenize(parse.free_text)}
        if not mood_words or not mood_words <= free:
            notes.append(
                f"LLM mood {mood!r} not in the message's own words (titles, years, refusals left out): ignored"
            )
            return ""
        return mood

    # --- merging ----------------------------------------------------------------------------

    def merge(self, parse: RuleParse, got: LLMFields) -> None:
        """Add ``got`` to the rules' query (rules win conflicts) and record each path's share."""
        q = parse.query
        q.notes += got.notes
        if not got.valid:
            q.parse_path = "rules"
            return
        for item in got.liked:
            if item not in q.liked and item not in q.disliked:
                q.liked.append(item)
                q.liked_titles.append(self.titles.catalog.title(item))
                n = normalize_title(self.titles.catalog.title(item))
                q.unknown_titles = [u for u in q.unknown_titles if fold(normalize_title(u)) != fold(n)]
        for item in got.disliked:
            if item not in q.liked and item not in q.disliked:
                q.disliked.append(item)
        for mine, target, opposite in ((got.include, q.include, q.exclude), (got.exclude, q.exclude, q.include)):
            for attr, vals in mine.items():
                for v in vals:
                    if v not in target.get(attr, []) and v not in opposite.get(attr, []):
                        target.setdefault(attr, []).append(v)
        if q.year_min is None and q.year_max is None:  # a range is one unit: never half from each path
            q.year_min, q.year_max = got.year_min, got.year_max
        if got.mood:
            q.mood = got.mood
        # what the LLM supplied that is in the final query (a grounded field the rules overrode is not)
        final = set(query_fields(q))
        llm = [f for f in query_fields(as_query(got)) if f in final and (f != "mood" or q.mood == got.mood)]
        llm = [f for f in llm if f not in ("year_min", "year_max") or getattr(q, f) == getattr(got, f)]
        rules = q.contributions.get("rules", [])
        q.contributions["llm"] = llm
        from_rules = bool(set(rules) - set(llm) - {"mood"}) or ("mood" in rules and not got.mood)
        q.parse_path = "llm+rules" if llm and from_rules else "llm" if llm else "rules"
        if not llm:
            q.notes.append("LLM output carried nothing grounded in the message: rules only")


def as_query(got: LLMFields) -> ChatQuery:
    """``got`` as a :class:`~recagent.chat.ChatQuery` (the LLM path alone, for measuring it)."""
    return ChatQuery(
        liked=list(got.liked), disliked=list(got.disliked), include={a: list(v) for a, v in got.include.items()},
        exclude={a: list(v) for a, v in got.exclude.items()}, year_min=got.year_min, year_max=got.year_max,
        mood=got.mood, parse_path="llm",
    )  # fmt: skip


def rules_found(q: ChatQuery) -> bool:
    """Whether the rules read a constraint from the message: a title (known or not), a genre or other
    attribute, a year. (Not the mood: that is the message's leftover words, nearly always set.)"""
    return bool(q.liked or q.disliked or q.unknown_titles or q.include or q.exclude or q.reset
                or q.year_min is not None or q.year_max is not None)  # fmt: skip
