"""Ranker cards: a LoRA adapter with what it was trained on, how it measured, and how to serve it.

A card folder holds ``adapter/`` (PEFT), ``fusion.json`` (the validation-fitted retrieval
weight), ``card.json`` (data set, base model fingerprint, prompt settings, metrics, the default
ranker) and ``README.md`` (the model card for people). ``finetune/adapters/<data set>/`` ships
one per data set; :func:`shipped_card` finds it, and the agent and ``recagent eval`` use it by
default when the card says it measured better than the retriever's order on validation.

>>> card = RankerCard.load("finetune/adapters/ml-latest-small")
>>> card.check_base(resolve_llm_path(None))      # an adapter for another base model is refused
>>> card.merged_model()                          # LoRA folded into the base, cached (full speed on CPU)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from recagent.errors import ConfigError, DataError, ModelPathError
from recagent.models import cache_dir, merge_lora, resolve_llm_path

from .combine import Combiner

__all__ = ["RankerCard", "BaseFingerprint", "shipped_card", "fingerprint", "ADAPTERS_DIR", "load_fusion", "load_combiner",
           "save_fusion"]  # fmt: skip

log = logging.getLogger(__name__)

# The shipped cards are data of the recagent.finetune package (finetune/adapters/<data set>/); this module
# only reads them, so no code of the training layer is imported here.
ADAPTERS_DIR = Path(str(resources.files("recagent.finetune"))) / "adapters"
_FINGERPRINT_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")


class BaseFingerprint(BaseModel):
    """Enough of the base model's config.json to refuse an adapter made for another model."""

    model_config = ConfigDict(extra="forbid")
    name: str
    model_type: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    vocab_size: int


def fingerprint(model_path: str | Path, name: str | None = None) -> BaseFingerprint:
    cfg = json.loads((Path(model_path) / "config.json").read_text())
    return BaseFingerprint(name=name or Path(model_path).name, **{k: cfg[k] for k in _FINGERPRINT_KEYS})


class RankerCard(BaseModel):
    """``card.json``: see the module docstring."""

    model_config = ConfigDict(extra="allow")
    data: str
    base_model: BaseFingerprint
    history_len: int
    template: str = "rank"
    """The prompt template its variants were trained and measured with (cards written before this
    field: ``rank``); serving renders the same one, whatever the zero-shot default is."""
    evidence: bool = False
    """The prompt shows the retriever's evidence on each candidate line (RankerConfig.evidence)."""
    default: str
    """What the agent serves by default: an LLM variant that beat the retriever order on validation
    (paired p < 0.05), else "retriever"."""
    best_llm: str
    """The LLM variant with the best validation NDCG@10 (what ``recagent eval --systems llm`` runs)."""
    variants: dict[str, dict[str, Any]]
    """Variant → {"model": "base" | "finetuned", "retrieval_weight": w} and, optionally, its own
    prompt settings ("history_len", "template", "evidence") and a learned "combiner" (features, weights)."""
    command: str
    retriever: dict[str, Any] | None = None
    """The :class:`~recagent.retrieval.RetrieverConfig` the card was measured with (its seed aside):
    the candidates and ranks its fusion weight was fitted on. None (older cards) = not checked."""
    folder: Path | None = None

    @model_validator(mode="after")
    def _names_are_variants(self) -> RankerCard:
        for key, name in (("default", self.default), ("best_llm", self.best_llm)):
            if name not in self.variants and not (key == "default" and name == "retriever"):
                raise ValueError(f"{key} {name!r} is not one of the variants {sorted(self.variants)}")
        return self

    @classmethod
    def load(cls, folder: str | Path) -> RankerCard:
        folder = Path(folder)
        path = folder / "card.json"
        hint = "pass a ranker card folder (card.json, fusion.json, adapter/) written by bench/finetune.py --ship"
        if not path.is_file():
            raise ModelPathError(f"no card.json in {folder}", hint=hint, param="adapter")
        try:
            card = cls.model_validate({**json.loads(path.read_text()), "folder": folder})
        except json.JSONDecodeError as e:
            raise ModelPathError(f"{path} is malformed: {e}", hint=hint, param="adapter") from None
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ModelPathError(f"{path} is malformed: {where + ': ' if where else ''}{err['msg']}", hint=hint,
                                 param="adapter") from None  # fmt: skip
        if not (folder / "adapter" / "adapter_config.json").is_file():
            raise ModelPathError(f"no adapter/adapter_config.json in {folder}", hint=hint, param="adapter")
        card.retrieval_weight  # noqa: B018 - a missing or malformed fusion.json is an error now, not at serving time
        return card

    @property
    def adapter(self) -> Path:
        return self.folder / "adapter"

    @property
    def retrieval_weight(self) -> float:
        return load_fusion(self.folder / "fusion.json")

    @property
    def uses_llm(self) -> bool:
        return self.default != "retriever"

    def variant(self, name: str) -> tuple[bool, float]:
        """(uses the fine-tuned model, fusion weight) of a measured variant."""
        if name not in self.variants:
            raise ModelPathError(
                f"{self.folder}/card.json has no variant {name!r}", hint=f"variants: {sorted(self.variants)}"
            )
        v = self.variants[name]
        return v["model"] == "finetuned", float(v["retrieval_weight"])

    def ranker_settings(self, name: str) -> dict[str, Any]:
        """The :class:`~recagent.ranking.VerbalizerConfig` fields a measured variant ranks with."""

        _, weight = self.variant(name)
        v = self.variants[name]
        try:
            combiner = None if v.get("combiner") is None else Combiner.model_validate(v["combiner"])
        except ValueError as e:
            raise ModelPathError(f"{self.folder}/card.json: variant {name!r} has a malformed combiner ({str(e).splitlines()[0]})",
                                 hint="re-run bench/finetune.py --ship", param="adapter") from None  # fmt: skip
        return {"history_len": int(v.get("history_len", self.history_len)), "template": str(v.get("template", self.template)),
                "evidence": bool(v.get("evidence", self.evidence)),
                "retrieval_weight": weight, "combiner": combiner}  # fmt: skip

    def check_base(self, model_path: str | Path) -> None:
        """Refuse a base model whose shape differs from the one the adapter was trained on."""
        got = fingerprint(model_path, self.base_model.name)
        if got != self.base_model:
            raise ModelPathError(
                f"the adapter in {self.folder} was trained on {self.base_model.name} "
                f"({self.base_model.model_dump(exclude={'name'})}), not on {model_path} ({got.model_dump(exclude={'name'})})",
                hint="serve it with its base model (leave --model unset for the bundled one), or pass --adapter none",
                param="adapter",
            )

    def check_retriever(self, config: Any) -> None:
        """Refuse a retriever whose settings differ from the ones this card was measured with: its
        ranker would see other candidates and ranks than it was validated on, silently."""
        if self.retriever is None:
            return
        from recagent.retrieval import RetrieverConfig

        want, got = RetrieverConfig.model_validate(self.retriever).model_dump(), config.model_dump()
        diff = sorted(k for k in want if k != "seed" and want[k] != got[k])
        if diff:
            raise ConfigError(
                f"the ranker card {self.folder} was measured with retriever settings "
                f"{ {k: want[k] for k in diff} }, but this retriever has { {k: got[k] for k in diff} }",
                hint="drop those retriever settings ([agent.retriever] of --config, AgentConfig.retriever, --cf-model), "
                "or rank without the card: --adapter none (zero-shot LLM) or --no-llm-rank (retriever order)",
                param="retriever",
            )

    def merged_model(self, base: str | Path | None = None) -> Path:
        """The base model with this adapter folded in, built once into the cache (full speed on CPU)."""
        base_path = resolve_llm_path(base)
        self.check_base(base_path)
        digest = hashlib.sha256()
        for f in sorted(self.adapter.iterdir()):
            if f.is_file():
                digest.update(f.name.encode() + f.read_bytes())
        out = cache_dir() / "models" / f"{base_path.name}-{self.data}-{digest.hexdigest()[:12]}"
        if not (out / "config.json").is_file():
            log.info("folding the %s adapter into %s (once) → %s", self.data, base_path.name, out)
            out.parent.mkdir(parents=True, exist_ok=True)
            merge_lora(self.adapter, out, base_path)
        return out

    def describe(self) -> dict[str, Any]:
        return {"card": str(self.folder), "data": self.data, "default": self.default, "best_llm": self.best_llm}


def shipped_card(dataset_name: str) -> RankerCard | None:
    """The card shipped for this data set, if any."""
    folder = ADAPTERS_DIR / dataset_name
    return RankerCard.load(folder) if (folder / "card.json").is_file() else None


def ship(run: str | Path, dest: str | Path, card: dict[str, Any], readme: str) -> Path:
    """Copy a run's adapter (as bf16: half the bytes, same served result) and write card.json,
    fusion.json and README.md into ``dest``."""
    import torch
    from safetensors.torch import load_file, save_file

    run, dest = Path(run), Path(dest)
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "adapter").mkdir(parents=True)
    for f in ("adapter_config.json",):
        shutil.copy(run / "adapter" / f, dest / "adapter" / f)
    tensors = load_file(run / "adapter" / "adapter_model.safetensors")
    save_file(
        {k: v.to(torch.bfloat16).contiguous() for k, v in tensors.items()},
        dest / "adapter" / "adapter_model.safetensors",
    )
    (dest / "card.json").write_text(json.dumps(card, indent=2, default=str) + "\n")
    (dest / "README.md").write_text(readme)
    return dest


# --- fusion.json: the fitted retrieval weight and the learned combiner ---------------------------


def save_fusion(path: str | Path, fitted: dict[str, Any], **extra: Any) -> Path:
    path = Path(path)
    path.write_text(json.dumps({**fitted, **extra}, indent=2) + "\n")
    return path


def load_combiner(path: str | Path) -> Combiner | None:
    """The learned combiner stored in a ``fusion.json`` (key ``combiner``), or None when it has none."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text()).get("combiner")
        return None if raw is None else Combiner.model_validate(raw)
    except (OSError, json.JSONDecodeError, ValueError) as e:
        raise DataError(f"malformed combiner in the fusion file ({str(e).splitlines()[0]})", file=str(path),
                        hint="re-run bench/finetune.py --ship, or remove the combiner key") from None  # fmt: skip


def load_fusion(path: str | Path) -> float:
    """The fitted ``retrieval_weight`` from a ``fusion.json``; a missing or malformed file is a clear error."""
    path = Path(path)
    hint = "re-run the fusion fit (bench/finetune.py) or pass --retrieval-weight explicitly"
    if not path.is_file():
        raise DataError("fusion weight file not found", file=str(path), hint=hint)
    try:
        w = float(json.loads(path.read_text())["retrieval_weight"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise DataError(f"malformed fusion weight file ({type(e).__name__}: {e})", file=str(path), hint=hint) from None
    if not (math.isfinite(w) and w >= 0):
        raise DataError(f"retrieval_weight must be a finite number >= 0, got {w}", file=str(path), hint=hint)
    return w
