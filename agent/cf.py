"""Classic collaborative-filtering baselines on the one component contract.

Every baseline is a :class:`~recagent.components.Component`: ``fit(data)`` learns from a
:class:`~recagent.data.TrainData` (``split.train_data(stage)`` in evaluation), and
``baseline(query, items=None, n=None)`` returns the best unseen items for the query's history —
the full catalog ranked, or only the ``items`` given (LLMRank protocol). A user known to the
training data with the same history uses its learned representation; any other history is folded
in without retraining. Full-ranking scorers only implement ``_score_users`` / ``_score_histories``;
the base class masks the history and exclusions and takes the top n.

>>> split = llamarec_split(load_dataset("ml-latest-small"))
>>> ease = EASE().fit(split.train_data("test"))
>>> ease.batch([split.query(u, "test") for u in range(3)], n=10)[0].ids
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from recagent.components import Component, ComponentConfig, ItemList, Query
from recagent.data import TrainData
from recagent.data.budget import check_memory
from recagent.errors import ConfigError, EmptyInputError

__all__ = [
    "Recommender",
    "Popularity",
    "ItemKNN",
    "BPR",
    "ALS",
    "EASE",
    "SASRec",
    "RandomOrder",
    "BASELINES",
    "make_baseline",
]

log = logging.getLogger(__name__)


class Recommender(Component):
    """A CF model on the component contract: ranks the catalog (or given items) for a history."""

    name = "recommender"
    needs_history = True  # False: scores do not depend on the user (popularity)
    chunk = 256  # queries scored per matrix product

    def __init__(self, config: Any = None, **overrides: Any):
        super().__init__(config, **overrides)
        self.data: TrainData | None = None

    def fit(self, data: TrainData) -> Recommender:
        self.data = data
        self._seen = data.matrix()
        self._fit(data)
        return self

    def _fit(self, data: TrainData) -> None:  # noqa: B027 - optional hook
        pass

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        """Scores of all items for training users (rows of the training data), (len(users), n_items)."""
        return self._score_histories([self.data.sequences[u] for u in users])

    def _score_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        """Scores of all items for histories of item codes (no retraining)."""
        raise NotImplementedError

    def _check(self, queries: Sequence[Query]) -> TrainData:
        if self.data is None:
            raise ConfigError(
                f"{self.name} is not fitted", hint="call fit(data) first, e.g. fit(split.train_data('test'))"
            )
        for q in queries:
            if q.filters:
                raise ConfigError(
                    f"{self.name} does not apply filters",
                    hint="filter with the retriever (recagent.retrieval)",
                    param="filters",
                )
            self.data.catalog.require(q.history)
        return self.data

    def batch(
        self, queries: Sequence[Query], items: Sequence[ItemList] | None = None, n: int | None = None
    ) -> list[ItemList]:
        data = self._check(queries)
        if items is not None:
            if len(items) != len(queries):
                raise ConfigError(f"{len(items)} item lists for {len(queries)} queries", hint="pass one list per query")
            for lst in items:
                data.catalog.require(lst.ids)
        out: list[ItemList] = []
        for start in range(0, len(queries), self.chunk):
            part = list(queries[start : start + self.chunk])
            scores = self._scores(data, part)
            for j, q in enumerate(part):
                s = scores[j]
                seen = data.codes(q.seen)
                s[seen[seen >= 0]] = -np.inf
                given = None if items is None else items[start + j]
                out.append(self._select(data, s, given, n))
        return out

    def _scores(self, data: TrainData, queries: list[Query]) -> np.ndarray:
        rows = np.empty((len(queries), data.n_items))
        known, folded = [], []
        for j, q in enumerate(queries):
            u = data.user_code(q.user_id)
            codes = data.codes(q.history)
            codes = codes[codes >= 0]
            if u >= 0 and np.array_equal(codes, data.sequences[u]):
                known.append((j, u))
            elif len(codes) or not self.needs_history:
                folded.append((j, codes))
            else:
                raise EmptyInputError(
                    f"{self.name}: user {q.user_id!r} has no history the model knows",
                    hint="pass history items that occur in the training data",
                    param="history",
                )
        if known:
            rows[[j for j, _ in known]] = self._score_users(np.array([u for _, u in known]))
        if folded:
            rows[[j for j, _ in folded]] = self._score_histories([c for _, c in folded])
        return rows.astype(np.float64, copy=False)

    @staticmethod
    def _select(data: TrainData, s: np.ndarray, given: ItemList | None, n: int | None) -> ItemList:
        if given is not None:
            codes = data.codes(given.ids)
            vals = np.where(codes >= 0, s[np.maximum(codes, 0)], -np.inf)  # unknown to the model: last
            order = np.argsort(-vals, kind="stable")  # ties keep the given order
            order = order[:n] if n is not None else order
            return given.select(order.tolist(), vals[order].tolist())
        n = data.n_items if n is None else min(n, data.n_items)
        ok = np.isfinite(s)
        d = min(n, int(ok.sum()))
        if d == 0:
            return ItemList([], [])
        part = np.argpartition(-s, d - 1)[:d]
        part = part[np.argsort(-s[part], kind="stable")]
        return ItemList.of([str(data.item_ids[c]) for c in part], s[part].tolist())


class Popularity(Recommender):
    """Most-interacted items first: the floor every other system must beat."""

    name = "popularity"
    needs_history = False

    def _fit(self, data: TrainData) -> None:
        self._pop = data.popularity().astype(np.float64)

    def _score_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        return np.broadcast_to(self._pop, (len(histories), len(self._pop))).copy()


class RandomOrder(Recommender):
    """A seeded random order: the floor of the LLMRank protocol (LLMRank's "random" row). A user
    gets the same order in every run with the same seed, whatever the batch. Not a CF baseline,
    so not in :data:`BASELINES`; ``recagent eval --systems random`` runs it."""

    name = "random"
    needs_history = False

    class Config(ComponentConfig):
        seed: int = 0

    def _scores(self, data: TrainData, queries: list[Query]) -> np.ndarray:
        rows = np.empty((len(queries), data.n_items))
        for j, q in enumerate(queries):
            key = f"{self.config.seed}|{q.user_id}|{'|'.join(q.history[-5:])}".encode()
            rows[j] = np.random.default_rng(zlib.crc32(key)).random(data.n_items)
        return rows


def _rows(data: TrainData, histories: list[np.ndarray]) -> sp.csr_matrix:
    """Binary rows for histories of item codes."""
    indptr = np.cumsum([0, *[len(np.unique(h)) for h in histories]])
    cols = np.concatenate([np.unique(h) for h in histories]) if histories else np.zeros(0, dtype=np.int64)
    return sp.csr_matrix((np.ones(len(cols), dtype=np.float32), cols, indptr), shape=(len(histories), data.n_items))


class ItemKNN(Recommender):
    """Item-based kNN on cosine similarity of item interaction columns (implicit)."""

    name = "itemknn"

    class Config(ComponentConfig):
        neighbours: int = 100

    def _fit(self, data: TrainData) -> None:
        from implicit.nearest_neighbours import CosineRecommender

        model = CosineRecommender(K=self.config.neighbours, num_threads=0)
        model.fit(self._seen.astype(np.float32), show_progress=False)
        self._sim = model.similarity.tocsr()

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        return np.asarray((self._seen[users] @ self._sim).todense())

    def _score_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        return np.asarray((_rows(self.data, histories) @ self._sim).todense())


class _Factors(Recommender):
    """Shared part of matrix-factorisation models from ``implicit``."""

    def _model(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit(self, data: TrainData) -> None:
        from threadpoolctl import threadpool_limits

        # one BLAS thread (implicit's own advice): faster, and the fit does not depend on how a
        # multi-threaded BLAS splits its sums, so every process fits the same factors
        with threadpool_limits(1, "blas"):
            self.model = self._model()
            self.model.fit(self._seen.astype(np.float32), show_progress=False)

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        return self.model.user_factors[users] @ self.model.item_factors.T

    def _score_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        return np.stack([self.user_factors_for(h) for h in histories]) @ self.model.item_factors.T

    def item_factors(self) -> np.ndarray:
        """Item vectors; with ``user_factors_for`` their inner product is the score."""
        return np.asarray(self.model.item_factors)

    def user_factors_for(self, history: np.ndarray) -> np.ndarray:
        """A user vector computed from a history of item codes without retraining."""
        row = _rows(self.data, [np.asarray(history)])
        return np.asarray(self.model.recalculate_user(0, row)).ravel()


class _FactorsConfig(ComponentConfig):
    factors: int = 64
    regularization: float = 0.05
    iterations: int = 20
    seed: int = 0


class ALS(_Factors):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008)."""

    name = "als"

    class Config(_FactorsConfig):
        alpha: float = 2.0

    def _model(self):
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(alpha=self.config.alpha, **self._common())

    def _common(self) -> dict[str, Any]:
        c = self.config
        return {
            "factors": c.factors,
            "regularization": c.regularization,
            "iterations": c.iterations,
            "random_state": c.seed,
        }


class BPR(_Factors):
    """Bayesian personalised ranking matrix factorisation (Rendle et al. 2009)."""

    name = "bpr"

    class Config(_FactorsConfig):
        learning_rate: float = 0.05
        regularization: float = 0.001
        iterations: int = 200

    def _model(self):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking(learning_rate=self.config.learning_rate, **ALS._common(self))

    def user_factors_for(self, history: np.ndarray) -> np.ndarray:
        # BPR has no closed-form user update; average the history's item vectors instead.
        return self.item_factors()[np.asarray(history)].mean(axis=0)


class EASE(Recommender):
    """Embarrassingly shallow autoencoder (Steck 2019): closed-form item–item weights."""

    name = "ease"

    class Config(ComponentConfig):
        l2: float = 500.0

    def _fit(self, data: TrainData) -> None:
        n = data.n_items
        # the Gram matrix, its inverse and the weights: three dense items × items float64 arrays
        check_memory(f"EASE on {n:,} items (three dense {n:,} × {n:,} float64 matrices)", 3 * 8 * n * n,
                     hint="use als, bpr or itemknn (memory linear in items), or keep fewer items")  # fmt: skip
        x = self._seen.astype(np.float64)
        g = (x.T @ x).toarray()
        g[np.diag_indices_from(g)] += self.config.l2
        p = np.linalg.inv(g)
        b = p / (-np.diag(p))
        b[np.diag_indices_from(b)] = 0.0
        self._b = b

    def _score_users(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self._seen[users] @ self._b)

    def _score_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        return np.asarray(_rows(self.data, histories) @ self._b)


class _SASRecNet(torch.nn.Module):
    def __init__(self, n_items: int, d: int, layers: int, heads: int, max_len: int, dropout: float):
        super().__init__()
        self.items = torch.nn.Embedding(n_items + 1, d, padding_idx=0)  # code + 1; 0 = padding
        self.pos = torch.nn.Embedding(max_len, d)
        self.drop = torch.nn.Dropout(dropout)
        layer = torch.nn.TransformerEncoderLayer(d, heads, 4 * d, dropout, batch_first=True, norm_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(d)
        torch.nn.init.normal_(self.items.weight, std=d**-0.5)  # unit-scale inputs after the sqrt(d) factor
        torch.nn.init.normal_(self.pos.weight, std=d**-0.5)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        n = seq.shape[1]
        h = self.items(seq) * self.items.embedding_dim**0.5 + self.pos(torch.arange(n, device=seq.device))
        causal = torch.nn.Transformer.generate_square_subsequent_mask(n, device=seq.device)
        # right padding + causal mask: real positions never see padding, so no key mask is needed
        h = self.encoder(self.drop(h), mask=causal, is_causal=True)
        return self.norm(h)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.items.weight[1:].T


class SASRec(Recommender):
    """Self-attentive sequential recommendation (Kang & McAuley 2018), trained with full softmax."""

    name = "sasrec"

    class Config(ComponentConfig):
        dim: int = 64
        layers: int = 2
        heads: int = 2
        max_len: int = 200
        dropout: float = 0.5  # tuned on the validation stage: bench/results/sasrec_tune.md
        epochs: int = 100
        batch_size: int = 64
        lr: float = 1e-3
        weight_decay: float = 0.0
        seed: int = 0
        threads: int = 2
        device: str = "auto"  # "auto" = CUDA when available, else CPU
        progress: bool = True

    @property
    def _device(self) -> torch.device:
        d = self.config.device
        return torch.device("cuda" if d == "auto" and torch.cuda.is_available() else ("cpu" if d == "auto" else d))

    def _pad(self, seqs: list[np.ndarray]) -> torch.Tensor:
        n = self.config.max_len
        out = np.zeros((len(seqs), n), dtype=np.int64)
        for i, s in enumerate(seqs):
            s = s[-n:] + 1
            out[i, : len(s)] = s  # right-padded: position len-1 holds the newest item
        return torch.from_numpy(out).to(self._device)

    def _fit(self, data: TrainData) -> None:
        c = self.config
        torch.manual_seed(c.seed)
        torch.set_num_threads(c.threads)
        rng = np.random.default_rng(c.seed)
        self.net = _SASRecNet(data.n_items, c.dim, c.layers, c.heads, c.max_len, c.dropout).to(self._device)
        opt = torch.optim.AdamW(self.net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        hist = data.sequences
        # windows of max_len+1 items: inputs are the first max_len, labels the next ones
        seqs = self._pad([h[:-1] for h in hist])
        labels = self._pad([h[1:] for h in hist]) - 1  # -1 marks padding
        labels[seqs == 0] = -1
        self.losses: list[float] = []
        self.net.train()
        bar = tqdm(range(c.epochs), desc="SASRec", disable=not c.progress, leave=False)
        for _ in bar:
            order = rng.permutation(len(seqs))
            total, count = 0.0, 0
            for start in range(0, len(order), c.batch_size):
                idx = torch.from_numpy(order[start : start + c.batch_size]).to(self._device)
                x, y = seqs[idx], labels[idx]
                keep = y >= 0
                h = self.net(x)[keep]
                loss = torch.nn.functional.cross_entropy(self.net.logits(h), y[keep])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
                count += len(idx)
            self.losses.append(total / count)
            bar.set_postfix(loss=f"{self.losses[-1]:.3f}")
        self.net.eval()

    @torch.no_grad()
    def _score_histories(self, histories: list[np.ndarray]) -> np.ndarray:
        return self.net.logits(self._last_state(histories)).cpu().numpy()

    def _last_state(self, seqs: list[np.ndarray]) -> torch.Tensor:
        """Hidden state at each sequence's newest item: the user's next-item query vector."""
        h = self.net(self._pad(seqs))
        last = torch.tensor([min(len(s), self.config.max_len) - 1 for s in seqs], device=h.device)
        return h[torch.arange(len(seqs), device=h.device), last]

    def item_factors(self) -> np.ndarray:
        return self.net.items.weight[1:].detach().cpu().numpy().copy()

    @torch.no_grad()
    def user_factors_for(self, history: np.ndarray) -> np.ndarray:
        return self._last_state([np.asarray(history)])[0].cpu().numpy()


BASELINES: dict[str, type[Recommender]] = {cls.name: cls for cls in (Popularity, ItemKNN, BPR, ALS, EASE, SASRec)}


def make_baseline(name: str, **options: Any) -> Recommender:
    """Build a baseline by name (``popularity``, ``itemknn``, ``bpr``, ``als``, ``ease``, ``sasrec``)."""
    try:
        cls = BASELINES[name]
    except KeyError:
        raise ConfigError(f"unknown baseline {name!r}", hint=f"choose from {sorted(BASELINES)}") from None
    return cls(options)
