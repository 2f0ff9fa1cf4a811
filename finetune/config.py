"""The fine-tuning settings, with the recipe of the shipped ml-latest-small ranker as defaults.

Kept apart from the trainer so the CLI reads its defaults without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recagent.errors import ConfigError

__all__ = ["FinetuneConfig"]


@dataclass
class FinetuneConfig:
    # --- model -----------------------------------------------------------------------------
    model: str | None = None  # local HF causal LM; None = the bundled SmolLM2-135M-Instruct
    out: str = "runs/finetune"  # run folder
    # --- LoRA (LlamaRec defaults) ------------------------------------------------------------
    lora_r: int = 8
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    qlora: bool = False  # 4-bit base weights through bitsandbytes: CUDA only
    # --- data --------------------------------------------------------------------------------
    data: str = "ml-latest-small"
    train_users: int | None = None  # None = every user not held out for validation
    val_users: int = 150  # held out of training; their validation item (when retrieved) measures NDCG@10
    cuts_per_user: int = 20  # training targets per user: its last N training items
    n_candidates: int = 20  # the retriever's top N, in its order (as served); kept when the target is among them
    shuffle: bool = False  # permute each candidate list (augmentation; serving keeps the retriever order)
    history_len: int = 10  # history items in the prompt (10: 25% fewer tokens than 20)
    template: str = "rank"  # the ranking prompt (prompts/<template>.jinja); the shipped card's recipe
    evidence: bool = False  # candidate lines carry the retriever's sources and ranks (RankerConfig.evidence)
    index_path: str | None = None  # Chroma folder of the examples' retriever; None = <out>/chroma
    # --- optimisation ------------------------------------------------------------------------
    epochs: float = 1.0
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 4
    grad_accum: int = 2
    lr: float = 3e-4
    warmup_ratio: float = 0.05
    weight_decay: float = 0.0
    bf16: bool = True  # bf16 autocast where the hardware has it (CPUs with AVX512-BF16, Ampere+ GPUs)
    gradient_checkpointing: bool = False
    # --- validation, checkpoints --------------------------------------------------------------
    eval_steps: int = 25
    early_stopping_patience: int = 6  # evaluations without NDCG@10 gain before stopping
    time_budget_min: float | None = 80.0  # stop training after this many minutes (the best checkpoint is kept)
    save_total_limit: int = 2
    resume: bool = False  # continue from the newest checkpoint in out/checkpoints
    export_merged: bool = True
    seed: int = 0
    progress: bool = True

    def validate(self) -> None:
        import torch

        if self.qlora and not torch.cuda.is_available():
            raise ConfigError(
                "QLoRA needs a CUDA GPU (bitsandbytes 4-bit training loses gradients on the CPU)",
                hint="drop --qlora to train plain LoRA on this machine, or run on a GPU",
                param="qlora",
            )
        from recagent.prompts.render import PROMPTS_DIR

        if not (PROMPTS_DIR / f"{self.template}.jinja").is_file():
            shipped = sorted(p.stem for p in PROMPTS_DIR.glob("rank*.jinja"))
            raise ConfigError(
                f"no ranking prompt template {self.template!r}", hint=f"pass one of {shipped}", param="template"
            )
        for name in ("lora_r", "lora_alpha", "batch_size", "grad_accum", "n_candidates"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}", param=name)
        if not self.target_modules:
            raise ConfigError("target_modules is empty", hint="e.g. q_proj,v_proj", param="target_modules")
