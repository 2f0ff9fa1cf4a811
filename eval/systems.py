"""Every evaluable system by name: the CF baselines and pipeline configurations.

``retriever`` is the fused Chroma retriever alone; ``llm`` is the retriever followed by the
verbalizer ranker (LlamaRec protocol) or the ranker alone over the given candidates (LLMRank
protocol). Both are :class:`~recagent.pipeline.Pipeline` objects — the same class serving runs —
so a prompt or a fusion rule cannot differ between what is measured and what is served.
vLLM and sentence-transformers are imported only when a system needs them.

>>> systems = build_systems(["ease", "retriever", "llm"], split=split)
>>> systems = build_systems(["llm"], split=split, llm=LLMOptions(url="http://127.0.0.1:8000", served_model="qwen"))
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recagent.components import Component
from recagent.errors import ConfigError, ModelPathError

from .baselines import BASELINES, make_baseline
from .splits import Split

__all__ = ["build_systems", "SYSTEM_NAMES", "LLMOptions", "adapter_kind", "PROTOCOLS"]

SYSTEM_NAMES = (*BASELINES, "retriever", "llm")
PROTOCOLS = ("llamarec", "llmrank")

_SEEDED = {"bpr", "als", "sasrec"}


@dataclass
class LLMOptions:
    """Which LLM the ``llm`` system ranks with: the bundled model in-process by default, a local
    model folder (``model``), a LoRA adapter or merged folder (``adapter``), or an
    OpenAI-compatible vLLM server (``url`` + ``served_model``)."""

    model: str | None = None
    adapter: str | None = None
    url: str | None = None
    served_model: str | None = None
    engine: Any = None  # an already running backend to share (tests, benchmarks)


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


def llm_backend(opts: LLMOptions, max_model_len: int | None = 4096):
    """(backend, adapter name to rank with) for ``opts``."""
    from recagent.llm import LLMConfig, OpenAIServerBackend, VLLMEngine

    lora = opts.adapter is not None and adapter_kind(opts.adapter) == "lora"
    if opts.engine is not None:
        if lora:
            opts.engine.add_adapter("tuned", opts.adapter)
        return opts.engine, "tuned" if lora else None
    if opts.url:
        cfg = LLMConfig(backend="openai", base_url=opts.url, served_model=opts.served_model, model=opts.model,
                        tokenizer=opts.model, adapters={"tuned": ""} if lora else {})  # fmt: skip
        backend = OpenAIServerBackend(cfg)
        backend.check_label_logprobs()
        return backend, "tuned" if lora else None
    model = opts.adapter if opts.adapter is not None and not lora else opts.model
    adapters = {"tuned": opts.adapter} if lora else {}
    rank = int(json.loads((Path(opts.adapter) / "adapter_config.json").read_text())["r"]) if lora else 16
    cfg = LLMConfig(model=model, adapters=adapters, max_lora_rank=max(8, rank), max_model_len=max_model_len)
    return VLLMEngine(cfg), "tuned" if lora else None


def build_systems(names: list[str], *, split: Split, seed: int = 0, protocol: str = "llamarec",
                  llm: LLMOptions | None = None, options: dict[str, dict[str, Any]] | None = None) -> list[Component]:  # fmt: skip
    """Fresh, unfitted systems; ``options[name]`` are that system's config fields (``--set``)."""
    from recagent.pipeline import Pipeline

    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}", hint=f"use one of {PROTOCOLS}")
    unknown = [n for n in names if n not in SYSTEM_NAMES]
    if unknown:
        raise ConfigError(f"unknown system(s) {unknown}", hint=f"choose from {', '.join(SYSTEM_NAMES)}")
    options = options or {}
    out: list[Component] = []
    retriever = None
    for name in names:
        opts = dict(options.get(name, {}))
        if name in BASELINES:
            if name in _SEEDED:
                opts.setdefault("seed", seed)
            out.append(make_baseline(name, **opts))
            continue
        if name == "retriever":
            retriever = retriever or _retriever(split, options.get("retriever", {}), seed)
            out.append(Pipeline(retriever, name="retriever", n_candidates=opts.pop("candidates", 20)))
            continue
        # llm: retriever → verbalizer (LlamaRec), or the verbalizer over the given candidates (LLMRank)
        from recagent.ranking import VerbalizerRanker

        n_cand = opts.pop("candidates", 20)
        max_len = opts.pop("max_model_len", 4096)
        backend, adapter = llm_backend(llm or LLMOptions(), max_len)
        ranker = VerbalizerRanker(backend, split.dataset.catalog, adapter=adapter, **opts)
        if protocol == "llmrank":
            out.append(Pipeline(None, ranker, name="llm", score_given=False, n_candidates=n_cand))
        else:
            retriever = retriever or _retriever(split, options.get("retriever", {}), seed)
            out.append(Pipeline(retriever, ranker, name="llm", n_candidates=n_cand))
    return out


def _retriever(split: Split, opts: dict[str, Any], seed: int):
    from recagent.retrieval import Retriever
    from recagent.store import IndexConfig, ItemIndex

    opts = dict(opts)
    path = opts.pop("index_path", None) or tempfile.mkdtemp(prefix="recagent-eval-chroma-")
    model = opts.pop("embedding_model", None)
    name = "eval-" + "".join(c if c.isalnum() or c in "._-" else "-" for c in split.dataset.name)[:40]
    opts.setdefault("seed", seed)
    return Retriever(ItemIndex(IndexConfig(path=path, name=name, model=model, progress=False)), opts)
