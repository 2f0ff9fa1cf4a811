"""Shared fixtures. Component-specific session fixtures live in fixtures_*.py plugin modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before torch loads: with spinning OpenMP workers, vLLM decoding beside another busy process ran
# ~10x slower (0.8 vs 7.8 tokens/s measured here).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# every tests/fixtures_*.py is a fixture plugin (the real vLLM engine, the Chroma index, ...)
import sys

sys.path.insert(0, str(Path(__file__).parent))  # the shared conformance class

pytest_plugins = sorted(p.stem for p in Path(__file__).parent.glob("fixtures_*.py"))


@pytest.fixture(scope="session")
def ml_small():
    """The shipped ml-latest-small data set."""
    from recagent.data import load_dataset

    return load_dataset("ml-latest-small")


@pytest.fixture(scope="session")
def ml_split(ml_small):
    """ml-latest-small after the LlamaRec filtering and leave-one-out split."""
    from recagent.eval.splits import llamarec_split

    return llamarec_split(ml_small)
