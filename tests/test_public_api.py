"""The public API: what ``from recagent import ...`` offers is pinned here (a change is deliberate)."""

from __future__ import annotations

import subprocess
import sys

import recagent

PINNED = [
    "AgentConfig", "Component", "Dataset", "Explainer", "GenerationRanker", "IndexConfig", "ItemIndex", "ItemList",
    "LLMConfig", "MMR", "Pipeline", "Query", "RecAgent", "RecAgentError", "RecommendRequest", "Recommendation",
    "Retriever", "RetrieverConfig", "TrainData", "VerbalizerRanker", "build_systems", "evaluate", "llamarec_split",
    "load_dataset", "make_backend", "make_baseline", "run_experiment", "write_run",
]  # fmt: skip


def test_public_names_are_pinned_and_resolve():
    assert recagent.__all__ == sorted(PINNED)
    for name in recagent.__all__:
        assert getattr(recagent, name) is not None, name


def test_import_is_light():
    """``import recagent`` loads no engine or model library (the CLI imports it before parsing flags)."""
    code = "import sys, recagent; print(sorted(m for m in ('vllm', 'torch', 'chromadb', 'sentence_transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
