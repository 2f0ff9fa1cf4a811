"""Every evaluable system by name: the CF baselines, a random order and pipeline configurations.

``retriever`` is the fused Chroma retriever alone; ``llm`` is the retriever followed by the
verbalizer ranker (LlamaRec protocol) or the ranker alone over the given candidates (LLMRank
protocol). Both are :class:`~recagent.pipeline.Pipeline` objects — the same class serving runs —
so a prompt or a fusion rule cannot differ between what is measured and what is served.
vLLM and sentence-transformers are imported only when a system needs them.

Which LLM ranks (:class:`LLMOptions`): the bundled model in-process by default; ``model`` a local
folder; ``adapter`` ``"auto"`` (the ranker card shipped for the data set, applied as the agent
applies it: :func:`recagent.agent.apply_card`), ``"none"``, a ranker card folder, a PEFT LoRA
folder or a merged model folder; ``url`` + ``served_model`` a model served by an
OpenAI-compatible vLLM server (checked: label log-probabilities and tokenizer).

>>> systems = build_systems(["ease", "retriever", "llm"], split=split)
>>> systems = build_systems(["llm"], split=split, protocol="llmrank",
...                         llm=LLMOptions(url="http://127.0.0.1:8000", served_model="qwen", model="/models/qwen"))
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from recagent.cf import BASELINES, RandomOrder, make_baseline
from recagent.components import Component
from recagent.errors import ConfigError, ModelPathError
from recagent.pipeline import Pipeline

from .splits import Split

__all__ = [
    "build_systems",
    "SYSTEM_NAMES",
    "LLMOptions",
    "LLMPipeline",
    "adapter_kind",
    "PROTOCOLS",
    "check_server_tokenizer",
    "resolve_llm",
    "make_retriever",
]

log = logging.getLogger(__name__)

SYSTEM_NAMES = (*BASELINES, "random", "retriever", "llm")
PROTOCOLS = ("llamarec", "llmrank")

_SEEDED = {"bpr", "als", "sasrec", "random"}


@dataclass
class LLMOptions:
    """Which LLM the ``llm`` system ranks with (see the module docstring)."""

    model: str | None = None
    """Local HF model folder (in-process), or the served model's tokenizer folder (with ``url``)."""
    adapter: str | None = None
    """None / "none", "auto", a ranker card, PEFT or merged folder; with ``url``, a served adapter name."""
    url: str | None = None
    served_model: str | None = None
    engine: Any = None  # an already running backend to share (tests, benchmarks)


def adapter_kind(path: str | Path) -> str:
    """``"card"`` for a ranker card, ``"lora"`` for a PEFT adapter folder, ``"merged"`` for a model folder."""
    p = Path(path)
    if (p / "card.json").exists():
        return "card"
    if (p / "adapter_config.json").exists():
        return "lora"
    if (p / "config.json").exists():
        return "merged"
    raise ModelPathError(
        f"{p} is neither a ranker card (card.json), a LoRA adapter (adapter_config.json) nor a model folder (config.json)",
        hint="pass a folder written by `recagent finetune` (adapter/ or merged/), a ranker card, 'auto' or 'none'",
        param="adapter",
    )


def resolve_llm(
    opts: LLMOptions, dataset_name: str, retriever: dict[str, Any] | None = None
) -> tuple[LLMOptions, dict[str, Any], dict[str, Any]]:
    """(options with the ranker card folded in, ranker settings from the card, what was applied).

    ``retriever``: the evaluated retriever's overrides (``--set retriever.KEY``), checked against
    the card's retriever settings.

    With a card (``"auto"`` = the one shipped for the data set), the ``llm`` system is the card's
    ``best_llm`` variant (its model and fusion weight); the card's ``default`` governs serving only."""
    adapter = opts.adapter
    if adapter in (None, "", "none"):
        return LLMOptions(opts.model, None, opts.url, opts.served_model, opts.engine), {}, {"adapter": "none"}
    if opts.url:
        if adapter == "auto":
            log.info("--adapter auto: a ranker card is not applied to a served model; it ranks as it is")
            return (
                LLMOptions(opts.model, None, opts.url, opts.served_model),
                {},
                {"adapter": "none (auto: served model)"},
            )
        if not Path(adapter).exists():
            return opts, {}, {"adapter": f"served adapter {adapter!r}"}
        raise ConfigError(f"--adapter {adapter} is a folder, but the model is served at {opts.url}",
                              hint="start the server with --enable-lora --lora-modules NAME=FOLDER and pass --adapter NAME",
                              param="adapter")  # fmt: skip
    if adapter != "auto" and adapter_kind(adapter) != "card":
        return opts, {}, {"adapter": f"{adapter_kind(adapter)} {adapter}"}
    from recagent.agent import AgentConfig, apply_card
    from recagent.llm import LLMConfig
    from recagent.ranking.card import RankerCard, shipped_card

    card = shipped_card(dataset_name) if adapter == "auto" else RankerCard.load(adapter)
    from recagent.retrieval import RetrieverConfig

    overrides = {k: v for k, v in (retriever or {}).items() if k in RetrieverConfig.model_fields}
    cfg = AgentConfig(adapter=adapter, llm=LLMConfig(model=opts.model), retriever=overrides)
    # eval measures the card's best LLM variant; its `default` (possibly the retriever order) governs serving
    applied, _ = apply_card(cfg, dataset_name, variant=card.best_llm if card is not None else None)
    if applied is cfg:
        log.info("--adapter auto: no ranker card fits %s with this model: zero-shot", dataset_name)
        return (
            LLMOptions(opts.model, None, opts.url, opts.served_model, opts.engine),
            {},
            {"adapter": "none (auto: no card)"},
        )
    ranker = {
        k: getattr(applied.ranker, k) for k in ("history_len", "template", "evidence", "retrieval_weight", "combiner")
    }
    info = {"adapter": "card", "card": card.describe(), "variant": card.best_llm,
            "retrieval_weight": applied.ranker.retrieval_weight, "evidence": applied.ranker.evidence,
            "combiner": None if applied.ranker.combiner is None else applied.ranker.combiner.describe(),
            "why": f"the llm system is the card's best LLM variant on validation ({card.best_llm}); "
                   f"serving uses the card's default ({card.default})"}  # fmt: skip
    log.info(
        "ranker card %s: evaluating its best LLM variant %s (serving default: %s)",
        card.folder,
        card.best_llm,
        card.default,
    )
    engine = opts.engine if applied.llm.model == opts.model else None  # a fine-tuned variant needs its merged model
    return LLMOptions(applied.llm.model, None, None, None, engine), ranker, info


def check_server_tokenizer(backend) -> None:
    """Refuse a local tokenizer that encodes differently from the served model's: prompts go to the
    server as token ids, so a mismatch would rank garbage without any error."""
    import httpx

    probe = backend.chat_prompt(
        [{"role": "user", "content": "Rank these: A. Toy Story (1995) B. Heat (1995). Answer:"}]
    )
    try:
        r = httpx.post(f"{backend.base_url}/tokenize", json={"model": backend.served_model, "prompt": probe,
                       "add_special_tokens": False}, headers={"Authorization": f"Bearer {backend.config.api_key}"},
                       timeout=30)  # fmt: skip
    except httpx.HTTPError as e:
        log.warning("cannot check the served tokenizer (%s); make sure --model names its folder", e)
        return
    if r.status_code != 200:
        log.warning(
            "the server has no /tokenize (%s): cannot check that --model is the served model's tokenizer", r.status_code
        )
        return
    if r.json().get("tokens") != backend.encode(probe):
        raise ConfigError(
            f"the tokenizer of {backend.model_path} encodes differently from {backend.served_model!r} at {backend.base_url}",
            hint="pass --model with the served model's local folder (its tokenizer files), or serve the bundled model",
            param="model",
        )


def llm_backend(opts: LLMOptions, max_model_len: int | None = 4096):
    """(backend, adapter name to rank with) for resolved ``opts``."""
    from recagent.llm import LLMConfig, OpenAIServerBackend, VLLMEngine

    if opts.url:
        served_adapter = opts.adapter
        cfg = LLMConfig(backend="openai", base_url=opts.url, served_model=opts.served_model, model=opts.model,
                        tokenizer=opts.model, adapters={served_adapter: ""} if served_adapter else {})  # fmt: skip
        backend = OpenAIServerBackend(cfg)
        backend.check_label_logprobs()
        check_server_tokenizer(backend)
        return backend, served_adapter
    kind = None if opts.adapter is None else adapter_kind(opts.adapter)
    lora = kind == "lora"
    if opts.engine is not None:
        if kind == "merged":
            raise ConfigError("a shared engine cannot switch to a merged model folder", hint="start an engine on that folder",
                              param="adapter")  # fmt: skip
        if lora:
            opts.engine.add_adapter("tuned", opts.adapter)
        return opts.engine, "tuned" if lora else None
    model = opts.adapter if opts.adapter is not None and not lora else opts.model
    adapters = {"tuned": opts.adapter} if lora else {}
    rank = int(json.loads((Path(opts.adapter) / "adapter_config.json").read_text())["r"]) if lora else 16
    cfg = LLMConfig(model=model, adapters=adapters, max_lora_rank=max(8, rank), max_model_len=max_model_len)
    return VLLMEngine(cfg), "tuned" if lora else None


def build_systems(names: list[str], *, split: Split, seed: int = 0, protocol: str = "llamarec",
                  llm: LLMOptions | None = None, options: dict[str, dict[str, Any]] | None = None,
                  n_candidates: int | None = None, progress: bool = False) -> list[Component]:  # fmt: skip
    """Fresh, unfitted systems; ``options[name]`` are that system's config fields (``--set``).

    ``n_candidates`` (LLMRank) is checked against the ranker's labels before any model loads.
    """
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
        if name in BASELINES or name == "random":
            if name in _SEEDED:
                opts.setdefault("seed", seed)
            out.append(RandomOrder(opts) if name == "random" else make_baseline(name, **opts))
            continue
        if name == "retriever":
            retriever = retriever or make_retriever(split, options.get("retriever", {}), seed, progress)
            out.append(Pipeline(retriever, name="retriever", n_candidates=opts.pop("candidates", 20)))
            continue
        # llm: retriever → verbalizer (LlamaRec), or the verbalizer over the given candidates (LLMRank)
        from recagent.ranking import RANKERS, VerbalizerConfig, VerbalizerRanker

        kind = opts.pop("kind", "verbalizer")  # AgentConfig.ranker_kind; the cards are verbalizers
        RANKERS.resolve(kind)  # an unknown one is a ConfigError before any model loads
        n_cand = opts.pop("candidates", 20)
        max_len = opts.pop("max_model_len", 4096)
        labels = opts.get("labels", VerbalizerConfig.model_fields["labels"].default)
        if (
            protocol == "llmrank"
            and n_candidates
            and n_candidates > len(labels)
            and opts.get("overflow", "error") == "error"
        ):
            raise ConfigError(f"{n_candidates} candidates but the ranker has {len(labels)} labels",
                              hint=f"pass --n-candidates {len(labels)} or less, or --set llm.overflow=tail "
                                   "(the LLM ranks the first ones, the rest keep their order below)")  # fmt: skip
        llm_opts = llm or LLMOptions()
        if kind != "verbalizer":  # as serving (agent.apply_card): a ranker card holds a verbalizer ranker
            if llm_opts.adapter not in (None, "", "none", "auto"):
                raise ConfigError(f"--adapter {llm_opts.adapter} is a verbalizer ranker card, but the llm system's "
                                  f"kind is {kind!r}", hint="leave the adapter at auto or none", param="adapter")  # fmt: skip
            llm_opts = replace(llm_opts, adapter=None)  # not the card's model either: the base model
        resolved, card_ranker, applied = resolve_llm(llm_opts, split.dataset.name, options.get("retriever"))
        if kind != "verbalizer":
            applied = {**applied, "ranker_kind": kind, "note": "a ranker of its own: no ranker card"}
        if protocol == "llmrank" and (card_ranker.get("retrieval_weight") or card_ranker.get("combiner")):
            # the given lists are shuffled: fusing with their order would add noise, not the retriever's rank
            card_ranker["retrieval_weight"] = applied["retrieval_weight"] = 0.0
            card_ranker["combiner"] = None
            applied["note"] = "the card's fusion is not used: LLMRank candidates carry no retriever rank or evidence"
        user_set = {k: v for k, v in card_ranker.items() if k in opts}
        if user_set:
            applied["overridden_by_set"] = sorted(user_set)  # --set wins over the card, and it is recorded
        opts = {**card_ranker, **opts}
        backend, adapter = llm_backend(resolved, max_len)
        settings = VerbalizerRanker.parse_config(None, adapter=adapter, **opts)  # --set errors name the options
        ranker = RANKERS.make(kind, backend, split.dataset.catalog, settings)
        info = {**applied, "backend": "server" if resolved.url else "in-process", "model": str(backend.model_path),
                "served_model": getattr(backend, "served_model", None), "url": resolved.url}  # fmt: skip
        if protocol == "llmrank":
            out.append(LLMPipeline(None, ranker, name="llm", score_given=False, n_candidates=n_cand, llm_info=info))
        else:
            retriever = retriever or make_retriever(split, options.get("retriever", {}), seed, progress)
            out.append(LLMPipeline(retriever, ranker, name="llm", n_candidates=n_cand, llm_info=info))
    return out


class LLMPipeline(Pipeline):
    """A pipeline whose ``describe()`` also says how its LLM was chosen (model, adapter or card,
    server), so results.json records what ranked."""

    def __init__(self, *stages: Any, llm_info: dict[str, Any], **kwargs: Any):
        super().__init__(*stages, **kwargs)
        self.llm_info = llm_info

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "llm_choice": self.llm_info}


def make_retriever(split: Split, opts: dict[str, Any] | None = None, seed: int = 0, progress: bool = False):
    """The retriever every evaluation path uses (``recagent eval``, ``recagent finetune``, bench/),
    unfitted: :class:`~recagent.retrieval.RetrieverConfig` defaults — the one retriever
    configuration, the one serving uses too — plus ``opts`` (``--set retriever.KEY=VALUE``;
    ``index_path`` and ``embedding_model`` pick the Chroma folder and the embedding model).
    Fit it on ``split.train_data(stage)``."""
    from recagent.retrieval import Retriever
    from recagent.store import IndexConfig, ItemIndex

    opts = dict(opts or {})
    path = opts.pop("index_path", None) or tempfile.mkdtemp(prefix="recagent-eval-chroma-")
    model = opts.pop("embedding_model", None)
    name = (
        opts.pop("index_name", None)
        or "eval-" + "".join(c if c.isalnum() or c in "._-" else "-" for c in split.dataset.name)[:40]
    )
    opts.setdefault("seed", seed)
    return Retriever(ItemIndex(IndexConfig(path=path, name=name, model=model, progress=progress)), opts)
