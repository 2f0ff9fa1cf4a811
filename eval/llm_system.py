"""Retriever → LLM ranker as one harness system (the LlamaRec protocol end to end).

The fused Chroma retriever proposes ``candidates`` items (20 in LlamaRec); the verbalizer ranker
re-orders them on vLLM; a user whose true item is not among the candidates scores 0 because it
is absent from the list. ``adapter`` may be a PEFT LoRA folder (served through vLLM's LoRA path)
or a merged model folder (LoRA folded into the weights: the fast path on CPU).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recagent.errors import ConfigError, ModelPathError

from .splits import Split

__all__ = ["LLMRankerSystem", "adapter_kind"]

log = logging.getLogger(__name__)


def adapter_kind(path: str | Path) -> str:
    """``"lora"`` for a PEFT adapter folder, ``"merged"`` for a full model folder."""
    p = Path(path)
    if (p / "adapter_config.json").exists():
        return "lora"
    if (p / "config.json").exists():
        return "merged"
    raise ModelPathError(
        f"{p} is neither a LoRA adapter (adapter_config.json) nor a model folder (config.json)",
        hint="pass the adapter/ or merged/ folder written by `recagent finetune`",
        param="adapter",
    )


class LLMRankerSystem:
    """``fit`` builds the retriever and starts vLLM; ``topk`` returns the LLM-ranked candidates."""

    name = "llm"

    @dataclass
    class Config:
        candidates: int = 20  # retrieved per user, all re-ranked by the LLM
        model: str | None = None  # base model folder; None = bundled SmolLM2-135M-Instruct
        adapter: str | None = None  # LoRA adapter or merged model folder
        permutations: int = 1  # K rotations averaged against position bias
        history_len: int = 20
        batch_users: int = 64  # users per vLLM call
        retriever: dict[str, Any] = field(default_factory=dict)  # RetrieverSystem options
        max_model_len: int | None = 4096

    def __init__(self, config: LLMRankerSystem.Config | None = None, *, adapter: str | Path | None = None,
                 retriever_system: Any = None, engine: Any = None, **overrides: Any):  # fmt: skip
        cfg = config or self.Config()
        unknown = set(overrides) - set(asdict(cfg))
        if unknown:
            raise ConfigError(f"llm: unknown option(s) {sorted(unknown)}", hint=f"options are {sorted(asdict(cfg))}")
        for k, v in overrides.items():
            setattr(cfg, k, v)
        if adapter is not None:
            cfg.adapter = str(adapter)
        if cfg.adapter is not None:
            adapter_kind(cfg.adapter)  # fail before any work
        self.config = cfg
        self._retriever = retriever_system
        self._engine = engine
        self.results: list[Any] = []

    @property
    def label(self) -> str:
        return self.name if self.config.adapter is None else f"{self.name}+{Path(self.config.adapter).name}"

    def _backend(self):
        from recagent.llm import LLMConfig, VLLMEngine

        cfg = self.config
        model, adapters = cfg.model, {}
        if cfg.adapter is not None:
            if adapter_kind(cfg.adapter) == "merged":
                model = cfg.adapter
            else:
                adapters = {"tuned": cfg.adapter}
        if self._engine is not None:
            if adapters:
                self._engine.add_adapter("tuned", cfg.adapter)
            return self._engine
        r = int(json.loads((Path(cfg.adapter) / "adapter_config.json").read_text())["r"]) if adapters else 16
        self._engine = VLLMEngine(LLMConfig(model=model, adapters=adapters, max_lora_rank=max(8, r), max_model_len=cfg.max_model_len))
        return self._engine

    def fit(self, split: Split, stage: str) -> LLMRankerSystem:
        from recagent.ranker import VerbalizerConfig, VerbalizerRanker
        from recagent.retriever import RetrieverSystem

        self.split, self.stage = split, stage
        if self._retriever is None:
            self._retriever = RetrieverSystem(**self.config.retriever)
        if getattr(self._retriever, "split", None) is not split or getattr(self._retriever, "stage", None) != stage:
            self._retriever.fit(split, stage)
        backend = self._backend()
        lora = "tuned" if self.config.adapter is not None and adapter_kind(self.config.adapter) == "lora" else None
        self.ranker = VerbalizerRanker(
            backend,
            split.dataset.catalog,
            VerbalizerConfig(permutations=self.config.permutations, history_len=self.config.history_len, adapter=lora),
        )
        return self

    def topk(self, users: np.ndarray, k: int) -> np.ndarray:
        from recagent.ranker import RankQuery

        users = np.asarray(users)
        n = self.config.candidates
        cands = self._retriever.topk(users, n)
        out = np.full((len(users), k), -1, dtype=np.int64)
        ids = self.split.item_ids
        self.results = []
        for start in range(0, len(users), self.config.batch_users):
            chunk = users[start : start + self.config.batch_users]
            queries = []
            for u, row in zip(chunk, cands[start : start + len(chunk)], strict=True):
                hist = self.split.history(int(u), self.stage)
                queries.append(
                    RankQuery(
                        candidates=[ids[c] for c in row if c >= 0],
                        history=[ids[c] for c in hist],
                        ratings=list(self.split.history_ratings(int(u), self.stage)),
                        profile=self.split.dataset.profile(self.split.user_ids[u]),
                        user_id=str(self.split.user_ids[u]),
                    )
                )
            results = self.ranker.rank_many(queries)
            self.results.extend(results)
            for j, res in enumerate(results):
                ranked = [self.split.item_code(i) for i in res.item_ids[:k]]
                out[start + j, : len(ranked)] = ranked
        fallbacks = sum(r.fallback for r in self.results)
        if fallbacks:
            log.warning("%d of %d users fell back to the retriever order", fallbacks, len(self.results))
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self.config)}
