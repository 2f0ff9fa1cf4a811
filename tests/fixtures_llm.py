"""Session fixtures for tests that need the real LLM: one in-process vLLM engine per session.

The engine runs the bundled SmolLM2-135M-Instruct (converted once into the recagent cache) with
LoRA enabled, so adapter tests share it. ``lora_adapter`` is a random-init PEFT LoRA for the
same model whose B matrices are non-zero, so it really changes the scores.
"""

from __future__ import annotations

import pytest

__all__ = ["llm_engine", "lora_adapter", "rank_dataset", "vllm_server"]

LORA_RANK = 8


@pytest.fixture(scope="session")
def lora_adapter(tmp_path_factory) -> str:
    """A tiny LoRA adapter (r=8 on q/k/v/o) for the bundled model, saved with peft."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from recagent.models import resolve_llm_path

    out = tmp_path_factory.mktemp("lora") / "adapter"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(resolve_llm_path(None), dtype=torch.float32)
    cfg = LoraConfig(
        r=LORA_RANK, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], lora_dropout=0.0
    )
    peft_model = get_peft_model(model, cfg)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:  # peft initialises B to zero, i.e. a no-op adapter
                p.normal_(0.0, 0.2)
    peft_model.save_pretrained(out)
    del peft_model, model
    return str(out)


@pytest.fixture(scope="session")
def llm_engine():
    """The shared in-process vLLM engine (bundled model, LoRA enabled, 1 GiB KV cache); ~15 s to start."""
    from recagent.llm import LLMConfig, VLLMEngine

    # rank up to 16 and 4 slots: other test files add their own small adapters to this engine
    engine = VLLMEngine(LLMConfig(enable_lora=True, max_lora_rank=16, max_loras=4, max_model_len=4096))
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def rank_dataset(ml_small):
    """The shipped ml-latest-small data set (conftest's ``ml_small``, loaded once per session)."""
    return ml_small


@pytest.fixture(scope="session")
def vllm_server(lora_adapter):
    """A real `vllm serve` on 127.0.0.1 (bundled model, adapter "random" = ``lora_adapter``); ~30 s to start."""
    from recagent.llm import VLLMServer

    # the tool parser lets LangChain agents call tools through this server (vLLM refuses tool_choice without one)
    with VLLMServer(
        adapters={"random": lora_adapter}, max_model_len=4096, max_lora_rank=LORA_RANK,
        extra_args=["--enable-auto-tool-choice", "--tool-call-parser", "hermes"],
    ) as server:  # fmt: skip
        yield server
