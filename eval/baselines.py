"""Classic collaborative-filtering baselines behind one interface.

Every system — these baselines, the Chroma retriever, the LLM ranker — is a :class:`Recommender`:
``fit(split, stage)`` learns from the users' histories for that stage (``val`` or ``test``),
``topk(users, k)`` returns the k best item codes per user with the user's history excluded.
Full-ranking scorers only implement ``score(users)``; the base class does the masking and top-k.

>>> split = llamarec_split(load_dataset("ml-latest-small"))
>>> ease = EASE().fit(split, "test")
>>> ease.topk(np.arange(3), 10).shape
(3, 10)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from tqdm.auto import tqdm

from recagent.errors import ConfigError

from .splits import Split

__all__ = [
    "Recommender",
    "Popularity",
    "ItemKNN",
    "BPR",
    "ALS",
    "EASE",
    "SASRec",
    "BASELINES",
    "make_baseline",
]

log = logging.getLogger(__name__)


class Recommender:
    """The one scorer interface shared by every system the harness evaluates."""

    name: ClassVar[str] = "recommender"

    @dataclass
    class Config:
        pass

    def __init__(self, config: Any = None, **overrides: Any):
        cfg = config if config is not None else self.Config()
        unknown = set(overrides) - set(asdict(cfg))
        if unknown:
            raise ConfigError(
                f"{self.name}: unknown option(s) {sorted(unknown)}", hint=f"options are {sorted(asdict(cfg))}"
            )
        self.config = type(cfg)(**{**asdict(cfg), **overrides})
        self.split: Split | None = None
        self.stage: str | None = None

    def fit(self, split: Split, stage: str) -> Recommender:
        self.split, self.stage = split, stage
        self._seen = split.history_matrix(stage)
        self._fit(split, stage)
        return self

    def _fit(self, split: Split, stage: str) -> None:  # noqa: B027 - optional hook
        pass

    def score(self, users: np.ndarray) -> np.ndarray:
        """Scores of all items for each user, shape (len(users), n_items); higher is better."""
        raise NotImplementedError

    def topk(self, users: np.ndarray, k: int) -> np.ndarray:
        """The k best unseen item codes per user (-1 pads when fewer items remain)."""
        if self.split is None:
            raise ConfigError(f"{self.name} is not fitted", hint="call fit(split, stage) first")
        users = np.asarray(users)
        out = np.full((len(users), k), -1, dtype=np.int64)
        for start in range(0, len(users), 256):
            batch = users[start : start + 256]
            s = np.asarray(self.score(batch), dtype=np.float64)
            seen = self._seen[batch]
            s[seen.nonzero()] = -np.inf
            kk = min(k, s.shape[1])
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
            order = np.argsort(-np.take_along_axis(s, part, axis=1), axis=1, kind="stable")
            top = np.take_along_axis(part, order, axis=1)
            top[~np.isfinite(np.take_along_axis(s, top, axis=1))] = -1
            out[start : start + len(batch), :kk] = top
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.config)}


class Popularity(Recommender):
    """Most-interacted items first: the floor every other system must beat."""

    name = "popularity"

    def _fit(self, split: Split, stage: str) -> None:
        self._pop = split.popularity(stage).astype(np.float64)

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self._pop, (len(users), len(self._pop))).copy()


class ItemKNN(Recommender):
    """Item-based kNN on cosine similarity of item interaction columns (implicit)."""

    name = "itemknn"

    @dataclass
    class Config:
        neighbours: int = 100

    def _fit(self, split: Split, stage: str) -> None:
        from implicit.nearest_neighbours import CosineRecommender

        model = CosineRecommender(K=self.config.neighbours, num_threads=0)
        model.fit(self._seen.astype(np.float32), show_progress=False)
        self._sim = model.similarity.tocsr()

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.asarray((self._seen[users] @ self._sim).todense())


class _Factors(Recommender):
    """Shared part of matrix-factorisation models from ``implicit``."""

    def _model(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit(self, split: Split, stage: str) -> None:
        self.model = self._model()
        self.model.fit(self._seen.astype(np.float32), show_progress=False)

    def score(self, users: np.ndarray) -> np.ndarray:
        return self.model.user_factors[users] @ self.model.item_factors.T

    def item_factors(self) -> np.ndarray:
        """Item vectors; with ``user_factors_for`` their inner product is the score."""
        return np.asarray(self.model.item_factors)

    def user_factors_for(self, history: np.ndarray) -> np.ndarray:
        """A user vector computed from a history of item codes without retraining."""
        row = sp.csr_matrix(
            (np.ones(len(history), dtype=np.float32), (np.zeros(len(history), dtype=int), np.asarray(history))),
            shape=(1, self.split.n_items),
        )
        row.sum_duplicates()
        row.data[:] = 1.0
        return np.asarray(self.model.recalculate_user(0, row)).ravel()


class ALS(_Factors):
    """Implicit-feedback ALS (Hu, Koren & Volinsky 2008)."""

    name = "als"

    @dataclass
    class Config:
        factors: int = 64
        regularization: float = 0.05
        alpha: float = 2.0
        iterations: int = 20
        seed: int = 0

    def _model(self):
        from implicit.cpu.als import AlternatingLeastSquares

        c = self.config
        return AlternatingLeastSquares(
            factors=c.factors, regularization=c.regularization, alpha=c.alpha, iterations=c.iterations, random_state=c.seed
        )


class BPR(_Factors):
    """Bayesian personalised ranking matrix factorisation (Rendle et al. 2009)."""

    name = "bpr"

    @dataclass
    class Config:
        factors: int = 64
        learning_rate: float = 0.05
        regularization: float = 0.001
        iterations: int = 200
        seed: int = 0

    def _model(self):
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        c = self.config
        return BayesianPersonalizedRanking(
            factors=c.factors, learning_rate=c.learning_rate, regularization=c.regularization,
            iterations=c.iterations, random_state=c.seed,
        )  # fmt: skip

    def user_factors_for(self, history: np.ndarray) -> np.ndarray:
        # BPR has no closed-form user update; average the history's item vectors instead.
        v = self.item_factors()[np.asarray(history)].mean(axis=0)
        return v


class EASE(Recommender):
    """Embarrassingly shallow autoencoder (Steck 2019): closed-form item–item weights."""

    name = "ease"

    @dataclass
    class Config:
        l2: float = 500.0

    def _fit(self, split: Split, stage: str) -> None:
        x = self._seen.astype(np.float64)
        g = (x.T @ x).toarray()
        g[np.diag_indices_from(g)] += self.config.l2
        p = np.linalg.inv(g)
        b = p / (-np.diag(p))
        b[np.diag_indices_from(b)] = 0.0
        self._b = b

    def score(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self._seen[users] @ self._b)


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

    @dataclass
    class Config:
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

    def _fit(self, split: Split, stage: str) -> None:
        c = self.config
        torch.manual_seed(c.seed)
        torch.set_num_threads(c.threads)
        rng = np.random.default_rng(c.seed)
        self.net = _SASRecNet(split.n_items, c.dim, c.layers, c.heads, c.max_len, c.dropout).to(self._device)
        opt = torch.optim.AdamW(self.net.parameters(), lr=c.lr, weight_decay=c.weight_decay)
        hist = [split.history(u, stage) for u in range(split.n_users)]
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
        self._hist = hist

    @torch.no_grad()
    def score(self, users: np.ndarray) -> np.ndarray:
        return self.net.logits(self._last_state([self._hist[u] for u in users])).cpu().numpy()

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


BASELINES: dict[str, type[Recommender]] = {
    cls.name: cls for cls in (Popularity, ItemKNN, BPR, ALS, EASE, SASRec)
}


def make_baseline(name: str, **options: Any) -> Recommender:
    """Build a baseline by name (``popularity``, ``itemknn``, ``bpr``, ``als``, ``ease``, ``sasrec``)."""
    try:
        cls = BASELINES[name]
    except KeyError:
        raise ConfigError(f"unknown baseline {name!r}", hint=f"choose from {sorted(BASELINES)}") from None
    return cls(**options)


