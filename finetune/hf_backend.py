"""A transformers model behind the LLM backend interface, for training-time validation.

The ranker renders prompts and reads label log-probabilities through :class:`LLMBackend`; this
backend answers ``score_labels`` with one forward pass of the model being trained, so validation
during training runs exactly the serving code path without starting vLLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from recagent.errors import ConfigError
from recagent.llm import LLMBackend, LLMConfig

__all__ = ["TransformersScorer", "left_pad"]


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded input ids, attention mask and position ids (positions restart at each prompt's start)."""
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, n - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, n - len(s) :] = 1
    pos = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return ids, mask, pos


class TransformersScorer(LLMBackend):
    """``score_labels`` on a (peft) transformers model; no generation."""

    def __init__(
        self, model: Any, tokenizer: Any, model_path: str | Path, *, max_model_len: int = 4096, batch_size: int = 8
    ):
        self.config = LLMConfig()
        self.model, self.tokenizer = model, tokenizer
        self.model_path = Path(model_path)
        self.max_model_len = max_model_len
        self.batch_size = batch_size

    @torch.no_grad()
    def _score(self, ids, allowed, adapter):
        was_training = self.model.training
        self.model.eval()
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        device = next(self.model.parameters()).device
        out: list[dict[int, float]] = []
        try:
            for start in range(0, len(ids), self.batch_size):
                x, m, p = (t.to(device) for t in left_pad(ids[start : start + self.batch_size], pad))
                logits = (
                    self.model(input_ids=x, attention_mask=m, position_ids=p, logits_to_keep=1).logits[:, -1].float()
                )
                for row, allow in zip(logits, allowed[start : start + self.batch_size], strict=True):
                    lp = torch.log_softmax(row[allow], dim=-1)
                    out.append({t: float(v) for t, v in zip(allow, lp.tolist(), strict=True)})
        finally:
            self.model.train(was_training)
        return out

    def _generate(self, ids, *args, **kwargs):
        raise ConfigError("the training-time scorer does not generate text", hint="use a vLLM backend to generate")
