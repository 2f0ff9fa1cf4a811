"""The memory budget: big structures are estimated from counts and refused before allocation.

The budget is ``RECAGENT_MEMORY_GB`` (GB, e.g. ``12``) when set, otherwise 80% of the machine's
RAM. Whatever would exceed it fails at once with a :class:`MemoryBudgetError` naming the need,
the budget and the alternative, instead of the process swapping or being killed half-way.

The per-interaction cost of the whole path (load, split, retriever fit, evaluation) is measured
by bench/scale_data.py (bench/results/scale_data.md); :func:`check_interactions` uses it before a
data set is read.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError

__all__ = [
    "ENV",
    "BYTES_PER_INTERACTION",
    "MemoryBudgetError",
    "memory_budget_gb",
    "check_memory",
    "check_interactions",
]

ENV = "RECAGENT_MEMORY_GB"
BYTES_PER_INTERACTION = 300
"""Peak bytes per interaction of load + split + retriever fit + evaluation: measured ≤ 0.2 GB
per million (~215 bytes) up to 32M interactions from Parquet (bench/results/scale_data.md),
rounded up to leave room for parsing CSV text."""
_BASE_GB = 2.5  # the process before data: torch, Chroma, the embedding model (measured intercept)


class MemoryBudgetError(ConfigError):
    """A structure would not fit the memory budget; raised before anything is allocated."""


def memory_budget_gb() -> float:
    """``RECAGENT_MEMORY_GB`` if set, else 80% of physical memory."""
    raw = os.environ.get(ENV, "").strip()
    if raw:
        try:
            gb = float(raw)
        except ValueError:
            gb = -1.0
        if not gb > 0:
            raise ConfigError(f"{ENV}={raw!r} is not a positive number of GB", hint=f"set e.g. {ENV}=12, or unset it")
        return gb
    return 0.8 * _physical_gb()


def _physical_gb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def check_memory(what: str, need_bytes: float, *, hint: str) -> None:
    """Raise :class:`MemoryBudgetError` when ``what`` needs more than the budget."""
    budget = memory_budget_gb()
    need = need_bytes / 2**30
    if need > budget:
        raise MemoryBudgetError(
            f"{what} needs ~{need:.1f} GB, over the memory budget of {budget:.1f} GB ({ENV} or 80% of RAM)",
            hint=hint,
        )


def check_interactions(n: int, *, source: str) -> None:
    """Refuse a data set of ``n`` interactions whose load-split-fit path would exceed the budget."""
    fits = int((memory_budget_gb() - _BASE_GB) * 2**30 / BYTES_PER_INTERACTION)
    hint = (
        f"sample users down to ≤ {fits:,} interactions, or raise {ENV} on a machine with more memory"
        if fits > 0
        else f"the process needs ~{_BASE_GB} GB before any data: raise {ENV}"
    )
    check_memory(f"{source}: {n:,} interactions", _BASE_GB * 2**30 + n * BYTES_PER_INTERACTION, hint=hint)
