"""LLM re-rankers: the one-pass verbalizer (LlamaRec) and listwise generation (LLMRank).

:class:`VerbalizerRanker` labels the candidates A, B, C, ... in a prompt built from the
user's profile and history (``prompts/rank.jinja``), runs one forward pass with sampling
restricted to the label tokens, and scores each candidate by the log-probability of its label
as the first answer token. No text is parsed, so every candidate gets exactly one score.

>>> from recagent.data import load_dataset
>>> from recagent.llm import LLMConfig, make_backend
>>> ds = load_dataset("ml-latest-small")
>>> ranker = VerbalizerRanker(make_backend(LLMConfig()), ds.catalog, VerbalizerConfig(item_noun="movie"))
>>> q = RankQuery.for_user(ds, "1", candidates=["1", "260", "296", "318"])
>>> res = ranker.rank(q)
>>> res.item_ids, res.scores, res.fallback

Many users go to the engine in one batch: ``ranker.rank_many([q1, q2, ...])``.

Candidates beyond the label alphabet (26 letters by default): ``overflow="error"`` (default)
raises :class:`ConfigError`; ``overflow="tail"`` lets the LLM rank the first 26 (retriever
order) and keeps the rest below them in retriever order (``n_llm_ranked`` says how many the
LLM ordered).

Position bias: the 135M model prefers early labels. ``permutations=K`` scores K rotations of the
candidate list (each candidate appears at K evenly spaced positions) and averages the
probabilities; :func:`measure_position_bias` measures the bias LLMRank-style.

Failures never pass silently: an invalid LLM answer (missing or non-finite label scores, no
parsable ranking) or a backend error yields the retriever order with ``fallback=True`` and a
``fallback_reason``. Bad input (no candidates, duplicates, unknown ids, neither history nor
profile) raises a :class:`~recagent.errors.RecAgentError` instead.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from .data import Catalog, Dataset, as_list
from .errors import ConfigError, EmptyInputError, RecAgentError
from .llm import LLMBackend, LLMBackendError, PromptTooLongError
from .prompts.render import PromptRenderer

__all__ = [
    "RankQuery",
    "RankResult",
    "VerbalizerConfig",
    "GenerationConfig",
    "VerbalizerRanker",
    "GenerationRanker",
    "validate_query",
    "taste_summary",
    "parse_ranking",
    "measure_position_bias",
    "PositionBiasReport",
    "DEFAULT_LABELS",
]

log = logging.getLogger(__name__)

DEFAULT_LABELS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


# ------------------------------------------------------------------------------------------
# inputs and outputs


@dataclass
class RankQuery:
    """One user's ranking request.

    ``history``: item ids, oldest first (may be empty for a cold-start user with a profile);
    ``ratings``: one per history item (``None``/NaN where unknown) or ``None``;
    ``profile``: demographics and/or ``{"text": "free description"}``;
    ``candidates``: item ids in retriever order (the fallback order).
    """

    candidates: Sequence[str]
    history: Sequence[str] = ()
    ratings: Sequence[float | None] | None = None
    profile: Mapping[str, Any] | None = None
    user_id: str | None = None

    @classmethod
    def for_user(
        cls, dataset: Dataset, user_id: str, candidates: Sequence[str], *, before_timestamp: int | None = None
    ) -> RankQuery:
        """The user's history (and ratings, profile) from a dataset; optionally only events before a time."""
        frame = dataset.interactions.user_frame(user_id)
        if before_timestamp is not None:
            frame = frame[frame["timestamp"] < before_timestamp]
        return cls(
            candidates=[str(c) for c in candidates],
            history=frame["item_id"].tolist(),
            ratings=frame["rating"].tolist(),
            profile=dataset.profile(user_id),
            user_id=str(user_id),
        )


@dataclass
class RankResult:
    """A ranked candidate list. ``scores`` align with ``item_ids`` (higher is better).

    Verbalizer scores are label log-probabilities (averaged in probability space over
    permutations); generation scores are ``n - position``. On fallback the order is the
    retriever's and the scores are ``-position``.
    """

    item_ids: list[str]
    scores: list[float]
    method: str
    fallback: bool = False
    fallback_reason: str | None = None
    user_id: str | None = None
    n_llm_ranked: int = 0
    history_used: int = 0
    history_dropped: int = 0
    prompt_tokens: int = 0
    raw_output: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def top(self, k: int) -> list[str]:
        return self.item_ids[:k]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def validate_query(query: RankQuery, catalog: Catalog) -> None:
    """Raise a clear error for input no ranker can handle (checked before any LLM call)."""
    cands = [str(c) for c in query.candidates]
    if not cands:
        raise EmptyInputError(
            "no candidates to rank",
            hint="pass at least one candidate item id (e.g. the retriever's top-N)",
            param="candidates",
        )
    dup = sorted({c for c, n in Counter(cands).items() if n > 1})
    if dup:
        raise RecAgentError(
            f"duplicate candidate ids: {dup[:5]}",
            hint="pass each candidate once (deduplicate the retriever output)",
            param="candidates",
        )
    catalog.require(cands)
    catalog.require(query.history)
    if query.ratings is not None and len(query.ratings) != len(query.history):
        raise RecAgentError(
            f"{len(query.ratings)} ratings for {len(query.history)} history items",
            hint="pass one rating per history item (None where unknown), or ratings=None",
            param="ratings",
        )
    if not query.history and not query.profile:
        raise EmptyInputError(
            "the user has neither history nor a profile",
            hint="pass history item ids, or a profile such as {'text': 'likes 90s sci-fi'} for a cold-start user",
            param="history",
        )


def _clean_rating(r: Any) -> float | None:
    if r is None:
        return None
    try:
        f = float(r)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f



def taste_summary(
    catalog: Catalog,
    history: Sequence[str],
    ratings: Sequence[float | None] | None = None,
    *,
    top_genres: int = 3,
    top_tags: int = 5,
) -> dict[str, Any] | None:
    """Top genres/tags over the user's history (liked items only when ratings say which), mean rating.

    "Liked" = rated at least the user's own mean, so a harsh rater's favourites still count.
    """
    if not len(history):
        return None
    rs = [_clean_rating(r) for r in ratings] if ratings is not None else [None] * len(history)
    known = [r for r in rs if r is not None]
    mean = float(np.mean(known)) if known else None
    liked = [h for h, r in zip(history, rs, strict=True) if mean is None or r is None or r >= mean] or list(history)
    items = catalog.items.loc[[str(i) for i in liked]]
    out: dict[str, Any] = {"n_items": len(history), "mean_rating": round(mean, 1) if mean is not None else None}
    for col, k, key in (("genres", top_genres, "top_genres"), ("tags", top_tags, "top_tags")):
        if col in items and k > 0:
            counts = Counter(g for cell in items[col] for g in as_list(cell))
            out[key] = [g for g, _ in counts.most_common(k)]
        else:
            out[key] = []
    return out




# ------------------------------------------------------------------------------------------
# configs


class _CommonConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    template_dir: str | None = None
    """A folder whose .jinja files override the shipped prompts."""
    item_noun: str = "item"
    """How the prompt names items: "movie", "product", "article"..."""
    history_len: int = Field(20, ge=0)
    """The last H history items go into the prompt (LlamaRec uses 20)."""
    labels: str = DEFAULT_LABELS
    """Candidate labels, each a single token of the tokenizer (checked at startup)."""
    overflow: Literal["error", "tail"] = "error"
    """More candidates than labels: raise, or LLM-rank the first len(labels) and keep the rest below."""
    adapter: str | None = None
    """A LoRA adapter registered in the backend, or None for the base model."""
    fallback_on_error: bool = True
    """A backend failure gives the retriever order (fallback=True) instead of raising."""
    top_genres: int = 3
    top_tags: int = 5


class VerbalizerConfig(_CommonConfig):
    template: str = "rank"
    permutations: int = Field(1, ge=1)
    """K rotations of the candidate list, probabilities averaged: mitigates position bias (K× cost)."""


class GenerationConfig(_CommonConfig):
    template: str = "listwise"
    max_new_tokens: int | None = None
    """None = 3 tokens per candidate + 8 (``"A, B, C"`` is ~2 tokens per label)."""
    stop: list[str] = Field(default_factory=lambda: ["\n\n"])
    """Stop strings: the ranking is one line or one list; a blank line ends it."""


# ------------------------------------------------------------------------------------------
# shared machinery


@dataclass
class PreparedQuery:
    query: RankQuery
    cands: list[str]  # the candidates the LLM sees (≤ len(labels))
    tail: list[str]  # overflow candidates kept in retriever order
    history: list[dict[str, Any]] = field(default_factory=list)
    dropped: int = 0
    prompts: list[list[int]] = field(default_factory=list)
    orders: list[list[int]] = field(default_factory=list)  # prompt k shows cands[orders[k][j]] at label j
    error: str | None = None


class _LLMRanker:
    method = "llm"

    def __init__(self, backend: LLMBackend, catalog: Catalog, config: _CommonConfig):
        self.backend, self.catalog, self.config = backend, catalog, config
        if len(set(config.labels)) != len(config.labels) or not config.labels:
            raise ConfigError(f"labels must be distinct characters, got {config.labels!r}", param="labels")
        backend._check_adapter(config.adapter)
        self.renderer = PromptRenderer(backend.tokenizer, config.template_dir)
        self.max_prompt_tokens = backend.max_model_len - self._reserve(len(config.labels))
        self._label_ids: list[int] | None = None

    def _reserve(self, n: int) -> int:
        return 1

    @property
    def label_token_ids(self) -> list[int]:
        """Token id of each label right after the rendered prompt's end (looked up, never hard-coded)."""
        if self._label_ids is None:
            dummy = {"item_id": "x", "title": "x", "rating": None, "year": None, "genres": [], "tags": []}
            after = self._render_text([dummy], [dummy], None, None, [0])
            self._label_ids = [self.backend.single_token_id(lab, after=after) for lab in self.config.labels]
        return self._label_ids

    def _render(self, cands, history, profile, taste, order) -> list[int]:
        views = [self.catalog.view(c) for c in cands]
        return self.backend.encode(self._render_text(views, history, profile, taste, order))

    def _render_text(self, cand_views, history, profile, taste, order) -> str:
        labels = list(self.config.labels[: len(cand_views)])
        views = [dict(cand_views[i], label=lab) for lab, i in zip(labels, order, strict=True)]
        return self.renderer.prompt(
            self.config.template,
            item_noun=self.config.item_noun,
            profile=dict(profile or {}),
            taste=taste,
            history=history,
            candidates=views,
            labels=labels,
        )

    def _orders(self, n: int) -> list[list[int]]:
        return [list(range(n))]

    def prepare(self, query: RankQuery) -> PreparedQuery:
        """Validate a query and render its prompt per permutation as token ids (what the LLM sees;
        fine-tuning builds its examples with this too, so training and serving cannot drift)."""
        cfg = self.config
        validate_query(query, self.catalog)
        cands = [str(c) for c in query.candidates]
        if len(cands) > len(cfg.labels):
            if cfg.overflow == "error":
                raise ConfigError(
                    f"{len(cands)} candidates but only {len(cfg.labels)} labels",
                    hint=f"pass at most {len(cfg.labels)} candidates, longer labels, or overflow='tail' "
                    "(the LLM ranks the first ones, the rest keep retriever order below them)",
                    param="candidates",
                )
            cands, tail = cands[: len(cfg.labels)], cands[len(cfg.labels) :]
        else:
            tail = []
        hist = [str(h) for h in query.history]
        ratings = list(query.ratings) if query.ratings is not None else [None] * len(hist)
        taste = taste_summary(self.catalog, hist, ratings, top_genres=cfg.top_genres, top_tags=cfg.top_tags)
        keep = min(cfg.history_len, len(hist))
        views = [
            dict(self.catalog.view(h), rating=_clean_rating(r))
            for h, r in zip(hist[-keep:] if keep else [], ratings[-keep:] if keep else [], strict=True)
        ]
        prep = PreparedQuery(query, cands, tail)
        orders = self._orders(len(cands))
        # Cut the oldest history items until every permutation's prompt fits the context window.
        while True:
            prompts = [self._render(cands, views, query.profile, taste, o) for o in orders]
            longest = max(len(p) for p in prompts)
            if longest <= self.max_prompt_tokens:
                break
            if not views:
                prep.error = f"prompt too long even without history ({longest} > {self.max_prompt_tokens} tokens)"
                return prep
            # Drop roughly enough items in one go (estimated from the average line length), at least one.
            bare = len(self._render(cands, [], query.profile, taste, orders[0]))
            per_item = max(1, (longest - bare) // len(views))
            n_drop = max(1, math.ceil((longest - self.max_prompt_tokens) / per_item))
            views = views[n_drop:]
            prep.dropped = keep - len(views)
        if prep.dropped:
            log.warning(
                "user %s: prompt longer than the context window (%d tokens); cut the %d oldest history items",
                query.user_id,
                self.max_prompt_tokens,
                prep.dropped,
            )
        prep.history, prep.prompts, prep.orders = views, prompts, orders
        return prep

    def _fallback(self, prep: PreparedQuery | None, query: RankQuery, reason: str, timings: dict[str, float]) -> RankResult:
        log.warning("user %s: falling back to retriever order: %s", query.user_id, reason)
        cands = [str(c) for c in query.candidates]
        return RankResult(
            item_ids=cands,
            scores=[-float(i) for i in range(len(cands))],
            method=self.method,
            fallback=True,
            fallback_reason=reason,
            user_id=query.user_id,
            history_used=len(prep.history) if prep else 0,
            history_dropped=prep.dropped if prep else 0,
            prompt_tokens=max((len(p) for p in prep.prompts), default=0) if prep else 0,
            timings=dict(timings),
        )

    def _finish(
        self, prep: PreparedQuery, order: list[int], scores: list[float], timings: dict[str, float], raw: str | None = None
    ) -> RankResult:
        """Assemble the result and check it is a permutation of the input candidates."""
        ids = [prep.cands[i] for i in order] + prep.tail
        floor = min(scores, default=0.0)
        all_scores = list(scores) + [floor - 1.0 - i for i in range(len(prep.tail))]
        if sorted(ids) != sorted(str(c) for c in prep.query.candidates):
            return self._fallback(
                prep, prep.query, "internal check failed: ranking is not a permutation of the candidates", timings
            )
        return RankResult(
            item_ids=ids,
            scores=all_scores,
            method=self.method,
            user_id=prep.query.user_id,
            n_llm_ranked=len(prep.cands),
            history_used=len(prep.history),
            history_dropped=prep.dropped,
            prompt_tokens=max(len(p) for p in prep.prompts),
            raw_output=raw,
            timings=dict(timings),
        )

    def rank(self, query: RankQuery) -> RankResult:
        """Rank one user's candidates."""
        return self.rank_many([query])[0]

    __call__ = rank

    def rank_many(self, queries: Sequence[RankQuery]) -> list[RankResult]:
        """Rank many users' candidates with one engine call (all prompts in one batch)."""
        t0 = time.perf_counter()
        _ = self.label_token_ids  # fail early on labels the tokenizer splits
        preps = [self.prepare(q) for q in queries]
        t1 = time.perf_counter()
        jobs = [(i, k) for i, p in enumerate(preps) if p.error is None for k in range(len(p.prompts))]
        outputs: list[Any] = []
        error: str | None = None
        if jobs:
            try:
                outputs = self._call_llm(preps, jobs)
            except (LLMBackendError, PromptTooLongError) as e:
                if not self.config.fallback_on_error:
                    raise
                error = f"LLM call failed: {e.message}"
        t2 = time.perf_counter()
        timings = {
            "prepare_s": t1 - t0,
            "llm_s": t2 - t1,
            "batch_users": float(len(queries)),
            "batch_prompts": float(len(jobs)),
        }
        per_user: dict[int, list[tuple[int, Any]]] = {}
        for (i, k), out in zip(jobs, outputs if error is None else [None] * len(jobs), strict=True):
            per_user.setdefault(i, []).append((k, out))
        results = []
        for i, prep in enumerate(preps):
            if prep.error is not None:
                results.append(self._fallback(prep, prep.query, prep.error, timings))
            elif error is not None:
                results.append(self._fallback(prep, prep.query, error, timings))
            else:
                results.append(self._combine(prep, per_user.get(i, []), timings))
        total = time.perf_counter() - t0
        for r in results:
            r.timings["total_s"] = total
        return results

    def _call_llm(self, preps: list[PreparedQuery], jobs: list[tuple[int, int]]) -> list[Any]:
        raise NotImplementedError

    def _combine(self, prep: PreparedQuery, outs: list[tuple[int, Any]], timings: dict[str, float]) -> RankResult:
        raise NotImplementedError


# ------------------------------------------------------------------------------------------
# verbalizer


class VerbalizerRanker(_LLMRanker):
    """One forward pass per prompt; candidate score = logprob of its label as the first answer token."""

    method = "verbalizer"

    def __init__(self, backend: LLMBackend, catalog: Catalog, config: VerbalizerConfig | None = None):
        super().__init__(backend, catalog, config or VerbalizerConfig())
        self.config: VerbalizerConfig

    def _orders(self, n: int) -> list[list[int]]:
        # Rotations rather than random shuffles: with K of them every candidate sits at K evenly
        # spaced positions, the balanced design for cancelling a position effect.
        k = min(self.config.permutations, n)
        shifts = sorted({round(j * n / k) % n for j in range(k)})
        return [[(s + j) % n for j in range(n)] for s in shifts]

    def _call_llm(self, preps, jobs):
        label_ids = self.label_token_ids
        prompts = [preps[i].prompts[k] for i, k in jobs]
        allowed = [label_ids[: len(preps[i].cands)] for i, _ in jobs]
        return self.backend.score_labels(prompts, allowed, adapter=self.config.adapter)

    def _combine(self, prep, outs, timings):
        n = len(prep.cands)
        label_ids = self.label_token_ids[:n]
        probs = np.zeros(n)
        valid = 0
        problems = []
        for k, lp in outs:
            vals = [lp.get(t, math.nan) for t in label_ids]
            if set(lp) != set(label_ids) or not all(math.isfinite(v) for v in vals):
                problems.append(f"permutation {k}: labels scored {len([v for v in vals if math.isfinite(v)])}/{n}")
                continue
            order = prep.orders[k]
            for j, v in enumerate(vals):  # label j shows candidate order[j]
                probs[order[j]] += math.exp(v)
            valid += 1
        if valid == 0:
            return self._fallback(
                prep, prep.query, "invalid LLM answer: " + "; ".join(problems or ["no output"]), timings
            )
        if problems:
            log.warning("user %s: ignored invalid permutations: %s", prep.query.user_id, "; ".join(problems))
        with np.errstate(divide="ignore"):
            scores = np.log(probs / valid)
        scores = np.where(np.isfinite(scores), scores, -1e9)  # underflow to 0 probability
        order = sorted(range(n), key=lambda i: (-scores[i], i))  # ties keep retriever order
        return self._finish(prep, order, [float(scores[i]) for i in order], timings)


# ------------------------------------------------------------------------------------------
# listwise generation


_BULLET = re.compile(r"^\s*(?:[-*•]|\(?\d+[.):]|#\d+)?\s*")
_SPLIT = re.compile(r"[,;\n>|]+|\s+-\s+")


def _norm(s: str) -> str:
    s = re.sub(r"\(\d{4}\)\s*$", "", s.lower())  # titles are matched without the year
    return re.sub(r"[^a-z0-9]+", " ", s).strip()


def parse_ranking(text: str, labels: Sequence[str], titles: Sequence[str]) -> list[int]:
    """Candidate indices in the order the answer names them, by label or by title.

    Pieces are split on commas, semicolons, newlines and ``>``; list bullets and numbers are
    stripped. A piece is a label if it is one (``"C"``, ``"C."``, ``"C) Heat"``), else a title
    if it contains a candidate title (longest match wins). Repeats and unknown labels are ignored.
    """
    index = {lab: i for i, lab in enumerate(labels)}
    norm_titles = [_norm(t) for t in titles]
    seen: list[int] = []
    for piece in _SPLIT.split(text):
        piece = _BULLET.sub("", piece).strip().strip("\"'`*[]")
        if not piece:
            continue
        hit: int | None = None
        m = re.match(r"^([A-Za-z])(?:[.):\]]|$)", piece)
        if m and m.group(1).upper() in index:
            hit = index[m.group(1).upper()]
        else:
            np_ = _norm(piece)
            matches = [i for i, t in enumerate(norm_titles) if t and (t in np_ or (len(np_) >= 4 and np_ in t))]
            if matches:
                hit = max(matches, key=lambda i: len(norm_titles[i]))
            else:
                m = re.match(r"^([A-Z])\s", piece)  # "C Heat": a label followed by text
                if m and m.group(1) in index:
                    hit = index[m.group(1)]
        if hit is not None and hit not in seen:
            seen.append(hit)
    return seen


class GenerationRanker(_LLMRanker):
    """LLMRank-style: the model writes the ranking ("C, A, B, ..."), parsed by :func:`parse_ranking`.

    Candidates the answer leaves out follow the named ones in retriever order
    (``n_llm_ranked`` < n); an answer naming none is a fallback.
    """

    method = "generation"

    def __init__(self, backend: LLMBackend, catalog: Catalog, config: GenerationConfig | None = None):
        super().__init__(backend, catalog, config or GenerationConfig())
        self.config: GenerationConfig

    def _reserve(self, n: int) -> int:
        return self._max_new(n)

    def _max_new(self, n: int) -> int:
        return self.config.max_new_tokens or 3 * n + 8

    @property
    def label_token_ids(self) -> list[int]:
        return []  # labels are parsed from text, no token lookup needed

    def _call_llm(self, preps, jobs):
        # One generate call per distinct length budget (usually one: the same candidate count).
        budgets: dict[int, list[int]] = {}
        for j, (i, _) in enumerate(jobs):
            budgets.setdefault(self._max_new(len(preps[i].cands)), []).append(j)
        out: list[Any] = [None] * len(jobs)
        for budget, idx in budgets.items():
            texts = self.backend.generate(
                [preps[jobs[j][0]].prompts[jobs[j][1]] for j in idx],
                max_tokens=budget,
                temperature=0.0,
                adapter=self.config.adapter,
                stop=self.config.stop or None,
            )
            for j, t in zip(idx, texts, strict=True):
                out[j] = t
        return out

    def _combine(self, prep, outs, timings):
        text = outs[0][1] if outs else ""
        labels = self.config.labels[: len(prep.cands)]
        titles = [self.catalog.title(c) for c in prep.cands]
        named = parse_ranking(text or "", labels, titles)
        if not named:
            res = self._fallback(
                prep, prep.query, f"no candidate label or title found in the answer {text[:80]!r}", timings
            )
            res.raw_output = text
            return res
        n = len(prep.cands)
        order = named + [i for i in range(n) if i not in named]
        res = self._finish(prep, order, [float(n - r) for r in range(n)], timings, raw=text)
        res.n_llm_ranked = len(named)
        return res


# ------------------------------------------------------------------------------------------
# position bias


@dataclass
class PositionBiasReport:
    """Per fixed position of the true item: hit@1, NDCG@10, mean rank (1-based) over users;
    plus how often each position was ranked first overall (a flat share means no bias)."""

    positions: list[int]
    hit1: list[float]
    ndcg10: list[float]
    mean_rank: list[float]
    top1_share: list[float]
    n_users: int
    n_candidates: int
    fallbacks: int

    def as_markdown(self) -> str:
        rows = ["| true item at | HR@1 | NDCG@10 | mean rank |", "|---:|---:|---:|---:|"]
        for p, h, nd, mr in zip(self.positions, self.hit1, self.ndcg10, self.mean_rank, strict=True):
            rows.append(f"| {p + 1} | {h:.3f} | {nd:.3f} | {mr:.2f} |")
        return "\n".join(rows)


def measure_position_bias(
    ranker: _LLMRanker,
    cases: Sequence[tuple[RankQuery, str]],
    *,
    positions: Sequence[int] = (0, 4, 9, 14, 19),
    n_candidates: int = 20,
    seed: int = 0,
    item_pool: Sequence[str] | None = None,
) -> PositionBiasReport:
    """LLMRank's position-bias probe: the true item with n-1 random negatives, placed at each position.

    ``cases``: (query with history/profile, true item id); the query's own candidates are ignored.
    Negatives are drawn from ``item_pool`` (default: the whole catalog) minus the history; the
    same negatives are used at every position, so only the position changes.
    """
    if not cases:
        raise EmptyInputError("no cases to measure position bias on", hint="pass (query, true_item) pairs")
    bad = [p for p in positions if not 0 <= p < n_candidates]
    if bad:
        raise ConfigError(f"positions {bad} outside 0..{n_candidates - 1}", param="positions")
    rng = np.random.default_rng(seed)
    all_ids = np.array([str(i) for i in (item_pool if item_pool is not None else ranker.catalog.ids)])
    if len(all_ids) < 2 * n_candidates:
        raise ConfigError(f"item pool of {len(all_ids)} is too small for {n_candidates} candidates", param="item_pool")
    queries, truths = [], []
    for q, true in cases:
        exclude = set(map(str, q.history)) | {str(true)}
        negs: list[str] = []
        while len(negs) < n_candidates - 1:
            for c in rng.choice(all_ids, size=2 * n_candidates, replace=False):
                if c not in exclude and c not in negs and len(negs) < n_candidates - 1:
                    negs.append(str(c))
        for p in positions:
            cands = negs[:p] + [str(true)] + negs[p:]
            queries.append(RankQuery(cands, q.history, q.ratings, q.profile, q.user_id))
            truths.append(str(true))
    results = ranker.rank_many(queries)
    P = len(positions)
    ranks = np.array([r.item_ids.index(t) for r, t in zip(results, truths, strict=True)]).reshape(len(cases), P)
    top1_pos = Counter()
    for r, q in zip(results, queries, strict=True):
        top1_pos[list(q.candidates).index(r.item_ids[0])] += 1
    ndcg = np.where(ranks < 10, 1.0 / np.log2(ranks + 2), 0.0)
    return PositionBiasReport(
        positions=list(positions),
        hit1=(ranks == 0).mean(axis=0).tolist(),
        ndcg10=ndcg.mean(axis=0).tolist(),
        mean_rank=(ranks + 1).mean(axis=0).tolist(),
        top1_share=[top1_pos[i] / len(results) for i in range(n_candidates)],
        n_users=len(cases),
        n_candidates=n_candidates,
        fallbacks=sum(r.fallback for r in results),
    )
