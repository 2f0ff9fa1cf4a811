"""The explainer: a short reason per recommended item, grounded in the user's own history.

Grounded by construction. For each picked item we find the user's liked history items that
truly relate to it (a shared genre or tag, or a content neighbour: :mod:`.grounding`). One LLM
call per batch then *chooses*, per item, one of those titles and one shared attribute, through
structured output: a JSON schema whose enums are exactly those options (``prompts/explain.jinja``
shows them). The reason is composed by us from the choice, so it cannot cite an unrelated or
invented item; ``reason_source="llm"``. With the LLM off or failed, the best option (the most
similar related item) gives a templated reason, ``reason_source="template"``. An item related
to nothing in the history gets an honest generic reason citing nothing (also "template"), and
``notes["explain"]`` says how many reasons did not come from the LLM, and why.

Adds the fields ``reason``, ``reason_source`` and ``cites`` (history ids) to each item list.
:meth:`Explainer.stream` yields the reasons of one list one by one as the LLM writes them.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field

from ..components import Component, ComponentConfig, ItemList, Query
from ..data import Catalog
from ..errors import RecAgentError
from ..llm import LLMBackend, LLMBackendError
from ..prompts.render import PromptRenderer
from ..ranking import taste_summary
from ..store import ItemIndex
from .grounding import Option, compose, generic_reason, related_options

__all__ = ["Explainer", "ExplainerConfig", "Reason"]

Reason = tuple[str, str, list[str]]
"""(reason text, reason_source, cited history ids)."""

_KEY = re.compile(r'"([A-Z])"\s*:\s*')


class ExplainerConfig(ComponentConfig):
    use_llm: bool = True
    """Let the LLM choose among the grounded options (templated reasons when False or when it fails)."""
    history: int = Field(8, ge=1, le=30)
    """Related history items offered per recommended item (the most similar first)."""
    min_similarity: float = Field(0.65, ge=-1.0, le=1.0)
    """Cosine similarity of content vectors from which a history item counts as a content neighbour
    (MiniLM on ml-latest-small: 0.65 is the 99th percentile of all pairs, about the 30th nearest
    of 9,742 movies for a median movie)."""
    recent: int = Field(50, ge=1, le=1000)
    """Newest liked history items searched for related ones."""
    tokens_per_item: int = Field(30, ge=8, le=200)
    """Token budget per item on top of its longest option (the JSON around it)."""
    reason_chars: int = Field(100, ge=20, le=500)
    """Kept for config compatibility: reasons are composed, not free text."""
    template_dir: str | None = None


@dataclass
class _Plan:
    """One list to explain: each item's options, and the prompt and schema when the LLM chooses."""

    query: Query
    ids: list[str]
    options: list[list[Option]]
    labels: dict[str, int] = field(default_factory=dict)  # label -> position, items with options only
    prompt: str | None = None
    schema: dict[str, Any] | None = None
    budget: int = 0
    note: str | None = None


class Explainer(Component):
    """Reasons for the items of each list; see the module docstring."""

    name = "explain"
    Config = ExplainerConfig

    def __init__(self, catalog: Catalog, index: ItemIndex, llm: LLMBackend | None, *, popularity: Mapping[str, int] | None = None,
                 lock: threading.RLock | None = None, config: Any = None, **overrides: Any):  # fmt: skip
        super().__init__(config, **overrides)
        self.catalog, self.index, self.llm = catalog, index, llm
        self.popularity = dict(popularity or {})
        self.lock = lock or threading.RLock()
        self.renderer = PromptRenderer(llm.tokenizer, self.config.template_dir) if llm is not None else None

    def fit(self, data: Any) -> Explainer:
        self.catalog = data.catalog
        return self

    @property
    def llm_on(self) -> bool:
        return self.config.use_llm and self.llm is not None

    def batch(
        self, queries: Sequence[Query], items: Sequence[ItemList] | None = None, n: int | None = None
    ) -> list[ItemList]:
        lists = [lst.head(n) for lst in (items or [])]
        plans = [self._plan(q, lst.ids) for q, lst in zip(queries, lists, strict=True)]
        texts = self._generate([p for p in plans if p.prompt is not None])
        out = []
        for plan, lst in zip(plans, lists, strict=True):
            reasons = self._resolve(plan, texts.get(id(plan), ""), final=True)
            res = lst.select(range(len(lst)))
            res.fields["reason"] = [reasons[j][0] for j in range(len(lst))]
            res.fields["reason_source"] = [reasons[j][1] for j in range(len(lst))]
            res.fields["cites"] = [reasons[j][2] for j in range(len(lst))]
            if (note := self._note(plan, reasons)) is not None:
                res.notes["explain"] = note
            out.append(res)
        return out

    def stream(self, query: Query, ids: Sequence[str]) -> Iterator[tuple[int, Reason]]:
        """The reasons of one list, ``(position, reason)`` in list order, each as soon as the LLM
        has written its choice (templated and generic ones without waiting). The last value of
        the generator (``StopIteration.value``) is the note :meth:`batch` would add, or None."""
        plan = self._plan(query, list(ids))
        done: dict[int, Reason] = {}
        nxt = 0
        if plan.prompt is not None:
            text = ""
            try:
                with self.lock:
                    for _, delta in self.llm.generate_stream([plan.prompt], max_tokens=plan.budget,
                                                             temperature=0.0, json_schema=[plan.schema], compact=True):  # fmt: skip
                        text += delta
                        done.update(self._resolve(plan, text, final=False))
                        while nxt in done:
                            yield nxt, done[nxt]
                            nxt += 1
            except RecAgentError as e:
                if isinstance(e, LLMBackendError) and not self.llm.health():
                    raise
                plan.note = f"LLM call failed: {e.message}"
                text = ""
            done = {**self._resolve(plan, text, final=True), **done}
        else:
            done = self._resolve(plan, "", final=True)
        while nxt < len(plan.ids):
            yield nxt, done[nxt]
            nxt += 1
        return self._note(plan, done)

    # --- planning ------------------------------------------------------------------------------

    def _plan(self, q: Query, ids: list[str]) -> _Plan:
        liked = self._liked(q)
        vecs = self.index.vectors(list(dict.fromkeys(liked + ids))) if liked else {}  # Chroma refuses repeated ids
        views = [self.catalog.view(h) for h in liked]
        options = [related_options(self.catalog.view(i), views, vecs, min_similarity=self.config.min_similarity,
                                   limit=self.config.history) for i in ids]  # fmt: skip
        plan = _Plan(q, ids, options)
        if not self.llm_on or not any(options):
            return plan
        labels = [chr(ord("A") + j) for j in range(len(ids))]
        plan.labels = {labels[j]: j for j in range(len(ids)) if options[j]}
        items = [dict(self.catalog.view(ids[j]), label=lab, options=options[j]) for lab, j in plan.labels.items()]
        taste = taste_summary(self.catalog, q.history, q.rating_list()) if q.history else None
        try:
            plan.prompt = self.renderer.prompt(
                "explain", item_noun=self.catalog.item_noun, taste=taste, history=None, items=items
            )
        except RecAgentError as e:
            plan.note = f"explain prompt failed: {e.message}"
            return plan
        # The schema's enums are the grounded options; properties come in label order, so a
        # streamed answer completes item after item.
        props = {
            lab: {
                "type": "object",
                "properties": {
                    "because": {"enum": [o.title for o in options[j]]},
                    "shared": {"enum": sorted({a for o in options[j] for a in o.attributes})},
                },
                "required": ["because", "shared"],
                "additionalProperties": False,
            }
            for lab, j in plan.labels.items()
        }
        plan.schema = {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}
        longest = [max(len(self.llm.encode(json.dumps(o.title))) + len(self.llm.encode(json.dumps(a)))
                       for o in options[j] for a in o.attributes) for j in plan.labels.values()]  # fmt: skip
        plan.budget = sum(longest) + self.config.tokens_per_item * len(longest) + 8
        return plan

    def _liked(self, q: Query) -> list[str]:
        """The newest liked history items (rated at least the user's mean, or unrated), unique."""
        ratings = dict(zip(q.history, q.rating_list(), strict=True))
        known = [r for r in ratings.values() if r is not None]
        mean = float(np.mean(known)) if known else None
        hist = list(dict.fromkeys(reversed(q.history)))
        liked = [h for h in hist if mean is None or ratings.get(h) is None or ratings[h] >= mean]
        return [h for h in liked if h in self.catalog][: self.config.recent]

    # --- the LLM's choices -----------------------------------------------------------------------

    def _generate(self, plans: list[_Plan]) -> dict[int, str]:
        """One engine call for every list that has options; its JSON text per plan."""
        if not plans:
            return {}
        try:
            with self.lock:
                got = self.llm.generate([p.prompt for p in plans], max_tokens=max(p.budget for p in plans),
                                        temperature=0.0, json_schema=[p.schema for p in plans], compact=True)  # fmt: skip
        except RecAgentError as e:
            if isinstance(e, LLMBackendError) and not self.llm.health():
                raise
            for p in plans:
                p.note = f"LLM call failed: {e.message}"
            return {}
        return {id(p): t for p, t in zip(plans, got, strict=True)}

    def _resolve(self, plan: _Plan, text: str, *, final: bool) -> dict[int, Reason]:
        """Reasons of the items whose choice is complete in ``text`` (all items when ``final``)."""
        out: dict[int, Reason] = {}
        for lab, j in plan.labels.items():
            choice = _choice(text, lab)
            if choice is None:
                continue
            by_title = {o.title: o for o in plan.options[j]}
            opt = by_title.get(choice.get("because"))
            if opt is not None:  # always, under the schema; checked so a backend without it cannot invent
                out[j] = (compose(opt, choice.get("shared")), "llm", [opt.item_id])
        if final:
            for j in range(len(plan.ids)):
                if j not in out:
                    out[j] = self._template(plan, j)
        return out

    def _template(self, plan: _Plan, j: int) -> Reason:
        if plan.options[j]:
            best = plan.options[j][0]
            return compose(best), "template", [best.item_id]
        view = self.catalog.view(plan.ids[j])
        text = generic_reason(
            view, has_history=bool(plan.query.history), request=plan.query.text, noun=self.catalog.item_noun
        )
        return text, "template", []

    def _note(self, plan: _Plan, reasons: Mapping[int, Reason]) -> str | None:
        templated = sum(r[1] == "template" for r in reasons.values())
        generic = sum(not r[2] for r in reasons.values())
        if not self.config.use_llm:
            return "LLM explanations off: templated reasons"
        if not templated:
            return None
        if plan.note:
            return f"{templated}/{len(plan.ids)} reasons templated ({plan.note})"
        why = "no LLM engine" if self.llm is None else "LLM choice missing"
        if generic and not plan.query.history:
            why = "no history to cite"
        elif generic:
            why = f"{generic} related to nothing in the history" + ("" if generic == templated else f"; {why}")
        return f"{templated}/{len(plan.ids)} reasons templated ({why})"


def _choice(text: str, label: str) -> dict[str, Any] | None:
    """The object after ``"label":`` in a (possibly unfinished) JSON answer, once it is complete."""
    for m in _KEY.finditer(text):
        if m.group(1) != label:
            continue
        try:
            value, _ = json.JSONDecoder().raw_decode(text, m.end())
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, dict) else None
    return None
