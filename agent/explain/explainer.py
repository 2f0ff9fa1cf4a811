"""The explainer: a short reason per recommended item, grounded in the user's own history.

One LLM call per batch writes a reason per picked item from a prompt listing the user's history
items most similar to the picks (``prompts/explain.jinja``), as JSON constrained by a schema. A
reason is kept only if it cites one of those history titles (:func:`check_reason`); otherwise a
templated reason from facts we hold (the closest liked history item and shared genres) replaces
it, marked ``reason_source="template"``, with the count in ``notes["explain"]``.

Adds the fields ``reason``, ``reason_source`` and ``cites`` (history ids) to each item list.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
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
from .checks import check_reason, parse_reasons

__all__ = ["Explainer", "ExplainerConfig"]


class ExplainerConfig(ComponentConfig):
    use_llm: bool = True
    """Write reasons with the LLM (templated reasons when False or when a reason fails the check)."""
    history: int = Field(8, ge=1, le=30)
    """History items shown to the explainer (those most similar to the picks)."""
    tokens_per_item: int = Field(30, ge=8, le=200)
    """Token budget per reason (the JSON around it included)."""
    reason_chars: int = Field(100, ge=20, le=500)
    """Longest reason the structured output allows."""
    template_dir: str | None = None


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

    def batch(self, queries: Sequence[Query], items: Sequence[ItemList] | None = None, n: int | None = None) -> list[ItemList]:
        lists = [lst.head(n) for lst in (items or [])]
        grounding = [self._grounding(q, lst.ids) for q, lst in zip(queries, lists, strict=True)]
        reasons: list[dict[str, tuple[str, str, list[str]]]] = [{} for _ in lists]
        notes: list[dict[str, str]] = [{} for _ in lists]
        if self.config.use_llm and self.llm is not None:
            self._llm_reasons(queries, lists, grounding, reasons, notes)
        out = []
        for q, lst, shown, got, note in zip(queries, lists, grounding, reasons, notes, strict=True):
            templated = 0
            for i in lst.ids:
                if i not in got:
                    got[i] = self._template_reason(q, i, shown)
                    templated += 1
            if not self.config.use_llm:
                note.setdefault("explain", "LLM explanations off: templated reasons")
            elif templated and "explain" not in note:
                why = ("no LLM engine" if self.llm is None else "no history to cite" if not shown
                       else "LLM reason missing or not citing a history title")  # fmt: skip
                note["explain"] = f"{templated}/{len(lst)} reasons templated ({why})"
            res = lst.select(range(len(lst)))
            res.fields["reason"] = [got[i][0] for i in lst.ids]
            res.fields["reason_source"] = [got[i][1] for i in lst.ids]
            res.fields["cites"] = [got[i][2] for i in lst.ids]
            res.notes.update(note)
            out.append(res)
        return out

    # --- the LLM's reasons ---------------------------------------------------------------------

    def _llm_reasons(self, queries, lists, grounding, reasons, notes) -> None:
        prompts: list[tuple[int, str, list[str], list[dict[str, Any]]]] = []
        for j, (q, lst, shown) in enumerate(zip(queries, lists, grounding, strict=True)):
            if shown and len(lst):
                try:
                    prompts.append((j, *self._prompt(q, lst.ids, shown)))
                except RecAgentError as e:
                    notes[j]["explain"] = f"explain prompt failed: {e.message}"
        texts: dict[int, str] = {}
        # Structured outputs: one JSON string per label, each at most reason_chars long. The format
        # always parses and the length is bounded, so a rambling model cannot stall the request;
        # prompts are grouped by list length (one schema per group).
        groups: dict[int, list[int]] = {}
        for m, (_, _, labels, _) in enumerate(prompts):
            groups.setdefault(len(labels), []).append(m)
        for n_labels, members in groups.items():
            labels = [chr(ord("A") + i) for i in range(n_labels)]
            schema = {
                "type": "object",
                "properties": {lab: {"type": "string", "maxLength": self.config.reason_chars} for lab in labels},
                "required": labels,
                "additionalProperties": False,
            }
            budget = self.config.tokens_per_item * n_labels + 8
            try:
                with self.lock:
                    got = self.llm.generate([prompts[m][1] for m in members], max_tokens=budget, temperature=0.0, json_schema=schema)
                texts.update(zip(members, got, strict=True))
            except RecAgentError as e:
                if isinstance(e, LLMBackendError) and not self.llm.health():
                    raise
                for m in members:
                    notes[prompts[m][0]]["explain"] = f"LLM call failed: {e.message}"
        for m, (j, _, labels, hist_views) in enumerate(prompts):
            parsed = parse_reasons(texts.get(m, ""), labels)
            for label, item_id in zip(labels, lists[j].ids, strict=False):
                checked = check_reason(parsed.get(label), self.catalog.title(item_id), hist_views)
                if checked is not None:
                    reasons[j][item_id] = (checked[0], "llm", checked[1])

    def _prompt(self, q: Query, picked: list[str], shown: list[str]) -> tuple[str, list[str], list[dict[str, Any]]]:
        labels = [chr(ord("A") + i) for i in range(len(picked))]
        rating = dict(zip(q.history, q.rating_list(), strict=True))
        hist_views = [dict(self.catalog.view(h), rating=rating.get(h)) for h in shown]
        items = [dict(self.catalog.view(i), label=lab) for lab, i in zip(labels, picked, strict=True)]
        taste = taste_summary(self.catalog, q.history, q.rating_list()) if q.history else None
        prompt = self.renderer.prompt("explain", item_noun=self.catalog.item_noun, profile=dict(q.profile or {}),
                                      taste=taste, history=hist_views, items=items)  # fmt: skip
        return prompt, labels, hist_views

    # --- grounding and templated reasons -------------------------------------------------------

    def _grounding(self, q: Query, picked: Sequence[str]) -> list[str]:
        """History items to cite: among the user's liked recent items, those closest to the picks."""
        hist = list(dict.fromkeys(reversed(q.history)))[:50]  # newest first, unique
        if not hist:
            return []
        ratings = q.rating_list()
        rating = dict(zip(q.history, ratings, strict=True))
        known = [r for r in ratings if r is not None]
        mean = float(np.mean(known)) if known else None
        liked = [h for h in hist if mean is None or rating.get(h) is None or rating[h] >= mean] or hist
        vecs = self.index.vectors(liked + list(picked))
        picks = [vecs[i] for i in picked if i in vecs]
        if not picks:
            return liked[: self.config.history]
        p = np.stack(picks)
        score = {h: float((p @ vecs[h]).max()) if h in vecs else -1.0 for h in liked}
        return sorted(liked, key=lambda h: (-score[h], liked.index(h)))[: self.config.history]

    def _template_reason(self, q: Query, item_id: str, shown: list[str]) -> tuple[str, str, list[str]]:
        """A reason built from facts we hold: the most similar history item and shared attributes."""
        view = self.catalog.view(item_id)
        if shown:
            vecs = self.index.vectors([item_id, *shown])
            v = vecs.get(item_id)
            best = max(shown, key=lambda h: float(v @ vecs[h]) if v is not None and h in vecs else -1.0)
            shared = [g for g in view["genres"] if g in self.catalog.view(best)["genres"]]
            what = f"shares {', '.join(shared[:3])} with" if shared else "is close in content to"
            # grounding keeps liked items only (rated at least the user's mean, or unrated)
            return f"It {what} {self.catalog.title(best)}, which you liked.", "template", [best]
        if q.text:
            genres = f" ({', '.join(view['genres'][:3])})" if view["genres"] else ""
            return f"It matches your request “{q.text[:80]}”{genres}.", "template", []
        n = self.popularity.get(item_id, 0)
        return f"A popular {self.catalog.item_noun} ({n} ratings) that passes your filters.", "template", []
