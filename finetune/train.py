"""LoRA fine-tuning of the verbalizer ranker (peft + transformers Trainer; QLoRA on CUDA).

    recagent finetune --out runs/ft                        # bundled SmolLM2-135M on this CPU
    recagent finetune --model /models/Qwen2.5-1.5B-Instruct --qlora --train-users 610 --epochs 1   # a GPU
    recagent eval --systems retriever,llm --adapter runs/ft/merged

The loss is LlamaRec's: cross-entropy over the candidate labels' logits at the answer position
(one forward pass with ``logits_to_keep=1``), so the model learns to put the true item's label
first. The run folder holds config.json, metrics.jsonl, curves.png, checkpoints/, adapter/
(PEFT, what vLLM loads with enable_lora) and merged/ (LoRA folded in: the fast path on CPU).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recagent.errors import ConfigError, ModelPathError

from .config import FinetuneConfig

__all__ = ["FinetuneConfig", "finetune", "verbalizer_loss"]

log = logging.getLogger(__name__)


def verbalizer_loss(
    logits: torch.Tensor, label_ids: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over the label tokens' logits at the last position; also the label logits."""
    label_logits = logits.float().gather(1, label_ids)
    return torch.nn.functional.cross_entropy(label_logits, targets), label_logits


def _ndcg_at(label_logits: torch.Tensor, targets: torch.Tensor, k: int = 10) -> np.ndarray:
    true = label_logits.gather(1, targets[:, None])
    rank = (label_logits > true).sum(dim=1).numpy()  # ties count in the model's favour
    return np.where(rank < k, 1.0 / np.log2(rank + 2.0), 0.0)


class _Collator:
    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[Any]) -> dict[str, torch.Tensor]:
        from .hf_backend import left_pad

        x, m, p = left_pad([e.input_ids for e in batch], self.pad_id)
        return {
            "input_ids": x,
            "attention_mask": m,
            "position_ids": p,
            "label_ids": torch.tensor([e.label_ids for e in batch]),
            "targets": torch.tensor([e.target for e in batch]),
        }


def _trainer_class():
    from transformers import Trainer

    class VerbalizerTrainer(Trainer):
        """Trainer with the verbalizer loss and NDCG@10 on the held-out users as its evaluation."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            label_ids, targets = inputs.pop("label_ids"), inputs.pop("targets")
            out = model(**inputs, logits_to_keep=1)
            loss, label_logits = verbalizer_loss(out.logits[:, -1], label_ids, targets)
            return (loss, label_logits) if return_outputs else loss

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            data = eval_dataset if eval_dataset is not None else self.eval_dataset
            model = self.model
            was_training = model.training
            model.eval()
            losses, ndcgs, hits = [], [], []
            t0 = time.perf_counter()
            with torch.no_grad():
                for batch in self.get_eval_dataloader(data):
                    batch = self._prepare_inputs(batch)
                    targets = batch["targets"]
                    loss, ll = self.compute_loss(model, dict(batch), return_outputs=True)
                    losses.append(float(loss) * len(targets))
                    ndcgs.extend(_ndcg_at(ll.cpu(), targets.cpu()).tolist())
                    hits.extend((ll.argmax(dim=1) == targets).cpu().tolist())
            model.train(was_training)
            metrics = {
                f"{metric_key_prefix}_loss": sum(losses) / len(ndcgs),
                f"{metric_key_prefix}_ndcg@10": float(np.mean(ndcgs)),
                f"{metric_key_prefix}_hit@1": float(np.mean(hits)),
                f"{metric_key_prefix}_runtime": time.perf_counter() - t0,
            }
            self.log(metrics)
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
            return metrics

    return VerbalizerTrainer


def _load_model(cfg: FinetuneConfig, path: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    kwargs: dict[str, Any] = {"dtype": torch.float32}
    if cfg.qlora:
        from transformers import BitsAndBytesConfig

        kwargs = {
            "quantization_config": BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_compute_dtype=torch.bfloat16,
                bnb_4bit_use_double_quant=True,
            ),
            "dtype": torch.bfloat16,
            "device_map": {"": 0},
        }
    elif torch.cuda.is_available():
        kwargs = {"dtype": torch.bfloat16, "device_map": {"": 0}}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok


def _wrap_lora(cfg: FinetuneConfig, model):
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    missing = [t for t in cfg.target_modules if t not in names]
    if missing:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(
            f"unknown LoRA target module(s) {missing} for this model",
            hint=f"choose from {linear}",
            param="target_modules",
        )
    if cfg.qlora:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.gradient_checkpointing)
    lcfg = LoraConfig(
        r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=list(cfg.target_modules),
        task_type="CAUSAL_LM",
    )  # fmt: skip
    return get_peft_model(model, lcfg)


class _TimeBudget:
    """Stops training (with a last evaluation and save) once the wall-time budget is spent."""

    def __new__(cls, minutes: float | None):
        from transformers import TrainerCallback

        class TimeBudget(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                self.t0 = time.perf_counter()

            def on_step_end(self, args, state, control, **kw):
                if minutes is not None and time.perf_counter() - self.t0 > 60 * minutes:
                    log.info("time budget of %.0f min spent at step %d: stopping", minutes, state.global_step)
                    control.should_training_stop = control.should_evaluate = control.should_save = True
                return control

        return TimeBudget()


def _plot(history: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    evals = [(h["step"], h["eval_loss"], h["eval_ndcg@10"]) for h in history if "eval_ndcg@10" in h]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    if train:
        a.plot(*zip(*train, strict=False), label="train loss")
    if evals:
        a.plot([e[0] for e in evals], [e[1] for e in evals], marker="o", label="validation loss")
        b.plot([e[0] for e in evals], [e[2] for e in evals], marker="o", color="#55A868")
    a.set_xlabel("step")
    a.set_title("verbalizer cross-entropy")
    a.legend()
    b.set_xlabel("step")
    b.set_title("validation NDCG@10 (held-out users, 20 candidates)")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)


def finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Build examples, train the LoRA adapter, export adapter/ and merged/; returns the summary."""
    from transformers import EarlyStoppingCallback, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    from recagent.data import load_dataset
    from recagent.eval.splits import llamarec_split
    from recagent.models import resolve_llm_path
    from recagent.ranking import VerbalizerRanker

    from .examples import build_examples, cut_data, split_users
    from .hf_backend import TransformersScorer

    cfg.validate()
    out = Path(cfg.out)
    ckpt_dir = out / "checkpoints"
    if out.exists() and any(ckpt_dir.glob("checkpoint-*")) and not cfg.resume:
        raise ConfigError(
            f"{out} already holds checkpoints", hint="pass --resume to continue that run, or choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model_path = resolve_llm_path(cfg.model)
    (out / "config.json").write_text(json.dumps({**asdict(cfg), "resolved_model": str(model_path)}, indent=2))

    # 1. examples: the retriever's candidates, rendered by the serving ranker on the trained model's tokenizer
    split = llamarec_split(load_dataset(cfg.data))
    model, tok = _load_model(cfg, model_path)
    train_u, val_u = split_users(split, cfg.val_users, cfg.seed)
    if cfg.train_users is not None:
        train_u = np.sort(
            np.random.default_rng(cfg.seed).choice(train_u, min(cfg.train_users, len(train_u)), replace=False)
        )
    data = cut_data(split, train_u, cfg.cuts_per_user)
    retriever = _retriever(split, out, cfg).fit(data)
    ranker = VerbalizerRanker(TransformersScorer(model, tok, model_path), data.catalog, history_len=cfg.history_len,
                              template=cfg.template, evidence=cfg.evidence)  # fmt: skip
    train_ex, train_stats = build_examples(split, ranker, retriever, train_u, mode="train", cuts_per_user=cfg.cuts_per_user,
                                           n_candidates=cfg.n_candidates, shuffle=cfg.shuffle, seed=cfg.seed,
                                           progress=cfg.progress)  # fmt: skip
    val_ex, val_stats = build_examples(split, ranker, retriever, val_u, mode="val", n_candidates=cfg.n_candidates,
                                       seed=cfg.seed + 1, progress=cfg.progress)  # fmt: skip
    tokens = sum(len(e.input_ids) for e in train_ex)
    log.info("%d training examples from %d cuts (%d tokens, %.0f per prompt), %d validation examples of %d users",
             len(train_ex), train_stats["cuts"], tokens, tokens / len(train_ex), len(val_ex), val_stats["cuts"])  # fmt: skip

    # 2. LoRA on the attention projections, trained with the verbalizer loss
    model = _wrap_lora(cfg, model)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.enable_input_require_grads()
    use_bf16 = cfg.bf16 and (torch.cuda.is_bf16_supported() if torch.cuda.is_available() else True)
    args = TrainingArguments(
        output_dir=str(ckpt_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=max(cfg.batch_size, 8),
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is a share of the total steps
        weight_decay=cfg.weight_decay,
        lr_scheduler_type="cosine",
        bf16=use_bf16,
        eval_strategy="steps",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.eval_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model="eval_ndcg@10",
        greater_is_better=True,
        logging_steps=max(1, min(10, cfg.eval_steps)),
        remove_unused_columns=False,
        report_to=[],
        seed=cfg.seed,
        disable_tqdm=not cfg.progress,
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train_ex,
        eval_dataset=val_ex,
        data_collator=_Collator(tok.pad_token_id),
        callbacks=[
            EarlyStoppingCallback(early_stopping_patience=cfg.early_stopping_patience),
            _TimeBudget(cfg.time_budget_min),
        ],
    )
    before = trainer.evaluate() if not cfg.resume else None
    resume_from = get_last_checkpoint(str(ckpt_dir)) if cfg.resume and ckpt_dir.exists() else None
    if cfg.resume and resume_from is None:
        raise ModelPathError(f"no checkpoint to resume in {ckpt_dir}", hint="run without --resume first")
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    import os

    load_start = round(os.getloadavg()[0], 2)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume_from)
    train_s = time.perf_counter() - t0
    after = trainer.evaluate()

    # 3. export: the PEFT adapter (vLLM enable_lora) and a merged model (full speed on CPU)
    adapter_dir = out / "adapter"
    model.save_pretrained(adapter_dir)
    tok.save_pretrained(adapter_dir)
    merged_dir = None
    if cfg.export_merged and not cfg.qlora:
        merged_dir = out / "merged"
        merged = model.merge_and_unload()
        merged.to(torch.bfloat16).save_pretrained(merged_dir)
        tok.save_pretrained(merged_dir)
    history = trainer.state.log_history
    with open(out / "metrics.jsonl", "w") as f:
        for h in history:
            f.write(json.dumps(h) + "\n")
    _plot(history, out)
    peak_gib = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else _peak_rss_gib()
    summary = {
        "load_average_1m_start": load_start,
        "load_average_1m_end": round(os.getloadavg()[0], 2),
        "steps": trainer.state.global_step,
        "train_examples": len(train_ex),
        "train_cuts": train_stats["cuts"],
        "val_examples": len(val_ex),
        "val_users": val_stats["cuts"],
        "train_seconds": round(train_s, 1),
        "tokens_per_second": _tokens_per_second(tokens, len(train_ex), trainer.state.global_step, cfg, train_s),
        "train_loss": round(result.training_loss, 4) if math.isfinite(result.training_loss) else None,
        "val_before": before,
        "val_after": after,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "peak_memory_gib": round(peak_gib, 2),
        "adapter": str(adapter_dir),
        "merged": str(merged_dir) if merged_dir else None,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    log.info("fine-tuning done: %s", summary)
    return summary


def _retriever(split, out: Path, cfg: FinetuneConfig):
    """The retriever that proposes the examples' candidates: the one evaluation and serving use
    (its index lives in the run folder)."""
    from recagent.eval.systems import make_retriever

    return make_retriever(split, {"index_path": cfg.index_path or str(out / "chroma"), "index_name": "finetune"},
                          seed=cfg.seed)  # fmt: skip


def _tokens_per_second(tokens: int, n_examples: int, steps: int, cfg: FinetuneConfig, seconds: float) -> float | None:
    """Training prompt tokens per second: whole epochs, or the examples the steps consumed with max_steps."""
    if seconds <= 0:
        return None
    if cfg.max_steps <= 0:
        return round(tokens * cfg.epochs / seconds, 1)
    seen = steps * cfg.batch_size * cfg.grad_accum
    return round(seen * tokens / n_examples / seconds, 1)


def _peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
