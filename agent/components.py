"""The one contract every recommendation stage implements (after LensKit's components).

A component has a typed ``config`` (a pydantic model) and one call::

    component(query, items=None, n=None) -> ItemList

* ``query`` — who is asking: user id, history (oldest first) with ratings, profile, the request
  text, filters and items never to return (:class:`Query`);
* ``items`` — the candidates to score, or ``None`` for a component that finds its own (retrieval
  sources, the fused retriever, the CF baselines);
* ``n`` — how many items to return at most (``None`` = the component's own default).

It returns the items best first with their scores and per-item fields (:class:`ItemList`). Items
in the query's history or ``exclude`` never come back from a component that finds its own items.
Retrieval sources, the fusion, the fused retriever, the LLM ranker, MMR, the explainer and every
CF baseline implement it, so :class:`~recagent.pipeline.Pipeline` wires any of them the same way
for serving, evaluation, fine-tuning and benchmarks.

>>> ease = EASE().fit(split.train_data("test"))
>>> top = ease(Query(user_id="1", history=("1", "50")), n=10)        # full ranking
>>> some = ease(Query(history=("1", "50")), ItemList.of(["2", "3"]))   # score given items
>>> type(ease)(ease.config) .config == ease.config                      # config round trip
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import ConfigError

__all__ = ["Query", "ItemList", "Component", "ComponentConfig", "Registry"]


@dataclass(frozen=True)
class Query:
    """What a component knows about the request. ``history`` items are catalog ids, oldest first;
    ``ratings`` align with ``history`` (``None`` where unknown) or are empty."""

    user_id: str | None = None
    history: tuple[str, ...] = ()
    ratings: tuple[float | None, ...] = ()
    profile: Mapping[str, Any] = field(default_factory=dict)
    text: str | None = None
    """What the user asks for now, in words (chat, ``--query``); ``None`` in offline evaluation."""
    filters: Any = None
    """An :class:`~recagent.store.ItemFilter` (or its dict form) restricting the items."""
    exclude: frozenset[str] = frozenset()
    """Items never to return, besides the history."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "history", tuple(str(i) for i in self.history))
        object.__setattr__(self, "exclude", frozenset(str(i) for i in self.exclude))
        if self.ratings and len(self.ratings) != len(self.history):
            raise ConfigError(
                f"{len(self.ratings)} ratings for {len(self.history)} history items",
                hint="pass one rating per history item (None where unknown), or no ratings",
                param="ratings",
            )

    @property
    def seen(self) -> frozenset[str]:
        """History and exclusions: never recommended."""
        return self.exclude | frozenset(self.history)

    def rating_list(self) -> list[float | None]:
        """One rating per history item, ``None`` where unknown (NaN counts as unknown)."""
        if not self.ratings:
            return [None] * len(self.history)
        return [None if r is None or (isinstance(r, float) and math.isnan(r)) else float(r) for r in self.ratings]


@dataclass
class ItemList:
    """Items best first, a score each (higher is better), optional per-item ``fields`` (lists
    aligned with ``ids``), per-list ``notes`` (stage → why it fell back), ``info`` (what a stage
    reports: prompt tokens, which ranker ran, ...) and ``timings_ms``."""

    ids: list[str]
    scores: list[float]
    fields: dict[str, list[Any]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.scores) != len(self.ids) or any(len(v) != len(self.ids) for v in self.fields.values()):
            raise ValueError("ItemList: scores and fields must align with ids")

    @classmethod
    def of(cls, ids: Iterable[str], scores: Sequence[float] | None = None, **fields: Sequence[Any]) -> ItemList:
        """A list in the given order; without scores, ``-position`` keeps that order."""
        ids = [str(i) for i in ids]
        sc = [float(s) for s in scores] if scores is not None else [-float(i) for i in range(len(ids))]
        return cls(ids, sc, {k: list(v) for k, v in fields.items()})

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, positions: Sequence[int], scores: Sequence[float] | None = None) -> ItemList:
        """A new list of the items at ``positions`` (in that order), fields carried along."""
        return ItemList(
            [self.ids[p] for p in positions],
            [float(s) for s in scores] if scores is not None else [self.scores[p] for p in positions],
            {k: [v[p] for p in positions] for k, v in self.fields.items()},
            dict(self.notes),
            dict(self.timings_ms),
            dict(self.info),
        )

    def head(self, n: int | None) -> ItemList:
        return self if n is None or n >= len(self) else self.select(range(n))

    def field(self, name: str, default: Any = None) -> list[Any]:
        return self.fields.get(name, [default] * len(self.ids))


class ComponentConfig(BaseModel):
    """Base of every component config: typed, strict (a misspelt option is an error)."""

    model_config = ConfigDict(extra="forbid")


class Component:
    """Base class: a typed config and ``__call__(query, items=None, n=None) -> ItemList``.

    Subclasses define ``name``, a nested ``Config`` and either ``score_one`` (one query) or
    ``batch`` (many queries in one go: the LLM ranker batches its engine calls). Components that
    learn from interactions override ``fit(data)``.
    """

    name: ClassVar[str] = "component"
    Config: ClassVar[type[ComponentConfig]] = ComponentConfig

    def __init__(self, config: ComponentConfig | Mapping[str, Any] | None = None, **overrides: Any):
        self.config = self.parse_config(config, **overrides)

    @classmethod
    def parse_config(cls, config: ComponentConfig | Mapping[str, Any] | None = None, **overrides: Any):
        """The config from a model, a dict (JSON, ``--set`` options) and keyword overrides."""
        base = config.model_dump() if isinstance(config, BaseModel) else dict(config or {})
        try:
            return cls.Config.model_validate({**base, **overrides})
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err.get("loc", ()))
            known = sorted(cls.Config.model_fields)
            raise ConfigError(f"{cls.name}: option {where!r}: {err['msg']}", hint=f"options are {known}") from None

    def fit(self, data: Any) -> Component:
        """Learn from the interactions of ``data`` (a :class:`~recagent.data.TrainData`); a no-op by default."""
        return self

    def __call__(self, query: Query, items: ItemList | None = None, n: int | None = None) -> ItemList:
        return self.batch([query], None if items is None else [items], n)[0]

    def batch(
        self, queries: Sequence[Query], items: Sequence[ItemList] | None = None, n: int | None = None
    ) -> list[ItemList]:
        """Many queries; ``items`` is ``None`` or one list per query."""
        if items is not None and len(items) != len(queries):
            raise ConfigError(f"{len(items)} item lists for {len(queries)} queries", hint="pass one list per query")
        return [self.score_one(q, None if items is None else items[i], n) for i, q in enumerate(queries)]

    def score_one(self, query: Query, items: ItemList | None, n: int | None) -> ItemList:
        raise NotImplementedError(f"{type(self).__name__} implements neither score_one nor batch")

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **self.config.model_dump(mode="json")}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


class Registry:
    """The names a config may use for one kind of component: names registered once (the
    built-ins register themselves), or ``"package.module:Name"`` of one's own file, imported when
    the config is validated. ``Name`` is a factory function, or a class that ``from_class``
    turns into one (a source: ``cls(state)``; a ranker: ``cls(llm, catalog, config)``)."""

    def __init__(self, kind: str, param: str, base: type, from_class: Any):
        self.kind, self.param, self.base, self._from_class = kind, param, base, from_class
        self._factories: dict[str, Any] = {}

    def register(self, name: str, factory: Any) -> Any:
        """Make ``name`` usable in the config; ``factory`` builds the component."""
        if name in self._factories:
            raise ConfigError(f"{self.kind} {name!r} is already registered", hint="pick another name")
        self._factories[name] = factory
        return factory

    def names(self) -> list[str]:
        return sorted(self._factories)

    def _unknown(self, spec: str, why: str = "") -> ConfigError:
        return ConfigError(f"unknown {self.kind} {spec!r}{why}", param=self.param,
                           hint=f"use one of {self.names()} or 'package.module:Name' of a {self.base.__name__} "
                           "subclass or factory")  # fmt: skip

    def resolve(self, spec: str) -> Any:
        """The factory ``spec`` names; ConfigError (naming the registered ones) otherwise."""
        import importlib

        if spec in self._factories:
            return self._factories[spec]
        if ":" not in spec:
            raise self._unknown(spec)
        module, _, attr = spec.partition(":")
        try:
            obj = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError, ValueError) as e:
            raise self._unknown(spec, f" ({type(e).__name__}: {e})") from None
        if isinstance(obj, type) and issubclass(obj, self.base):
            return self._from_class(obj)
        if callable(obj) and not isinstance(obj, type):
            return obj
        raise self._unknown(spec, f" ({attr} is neither a {self.base.__name__} subclass nor a factory function)")

    def check(self, spec: str) -> str:
        """``spec``, once it names something (a ValueError inside a pydantic validator)."""
        try:
            self.resolve(spec)
        except ConfigError as e:
            raise ValueError(f"{e.message}; {e.hint}") from None
        return spec

    def make(self, spec: str, *args: Any) -> Any:
        """Build the component ``spec`` names with the factory's arguments."""
        made = self.resolve(spec)(*args)
        if not isinstance(made, self.base):
            raise ConfigError(f"{self.kind} {spec!r} built a {type(made).__name__}, not a {self.base.__name__}",
                              hint=f"return a {self.base.__name__} from the factory", param=self.param)  # fmt: skip
        return made
