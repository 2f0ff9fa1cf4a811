"""``recagent eval`` as a function: settings in, a run folder out.

The CLI builds :class:`EvalSettings` from its flags and calls :func:`run_eval`; tests and bench
scripts call it the same way. Everything cheap is checked before any model loads
(:meth:`EvalSettings.check`): names, protocol, flags that need one another, adapter folders, the
candidate file, the number of candidates against the catalog.

>>> report, out = run_eval(EvalSettings(systems=["popularity", "ease"], protocol="llmrank", users=100))
>>> json.loads((out / "results.json").read_text())["systems"]["ease"]["metrics"]["NDCG@10"]
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recagent.errors import ConfigError

from .candidates import CandidateLists, read_candidates, sample_candidates, write_candidates
from .harness import Report, run_experiment
from .report import write_run
from .splits import STAGES, Split, llamarec_split
from .systems import PROTOCOLS, SYSTEM_NAMES, LLMOptions, adapter_kind, build_systems

__all__ = ["EvalSettings", "run_eval", "select_users"]

log = logging.getLogger(__name__)


@dataclass
class EvalSettings:
    """What ``recagent eval`` runs (each field is a CLI flag; see ``recagent eval --help``)."""

    data: str = "ml-latest-small"
    systems: list[str] = field(default_factory=lambda: ["popularity", "itemknn", "bpr", "als", "ease"])
    protocol: str = "llamarec"
    stage: str = "test"
    n_candidates: int = 20
    candidates: str | None = None
    """An LLMRank candidate file; None = seeded random candidates (LLMRank protocol only)."""
    skip_unknown: bool = False
    permutations: int = 1
    users: int | None = None
    """A seeded random sample of this many users; None = all."""
    seed: int = 0
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    llm: LLMOptions = field(default_factory=LLMOptions)
    out: Path | None = None
    progress: bool = True
    ray: Any = None
    """A :class:`recagent.distributed.RayConfig`: each system is fitted and asked on a Ray actor
    pool, and scored here as usual (LlamaRec protocol); None = in this process."""

    def check(self) -> None:
        """Refuse what cannot work, before the data or any model loads."""
        unknown = [n for n in self.systems if n not in SYSTEM_NAMES]
        if not self.systems or unknown:
            raise ConfigError(f"unknown system(s) {unknown}" if unknown else "no systems to evaluate",
                              hint=f"choose from {', '.join(SYSTEM_NAMES)}", param="systems")  # fmt: skip
        if self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"unknown protocol {self.protocol!r}", hint=f"use one of {', '.join(PROTOCOLS)}", param="protocol"
            )
        if self.stage not in STAGES:
            raise ConfigError(f"unknown stage {self.stage!r}", hint=f"use one of {', '.join(STAGES)}", param="stage")
        extra = set(self.options) - set(self.systems)
        if extra:
            raise ConfigError(
                f"--set names systems not being evaluated: {sorted(extra)}", hint=f"evaluated: {self.systems}"
            )
        if self.users is not None and self.users <= 0:
            raise ConfigError("--users must be positive", hint="omit it to evaluate every user", param="users")
        if self.protocol != "llmrank" and (self.candidates or self.skip_unknown):
            raise ConfigError("--candidates-file and --skip-unknown belong to the LLMRank protocol",
                              hint="add --protocol llmrank", param="candidates")  # fmt: skip
        if self.n_candidates < 2:
            raise ConfigError(f"--n-candidates {self.n_candidates} is too few", hint="pass 2 or more (LLMRank uses 20)")
        if self.permutations < 1:
            raise ConfigError("--permutations must be at least 1", hint="1 = one pass; K > 1 averages K rotations")
        if self.permutations > 1 and "llm" not in self.systems:
            raise ConfigError("--permutations applies to the llm system", hint="add llm to --systems, or leave it out")
        llm = self.llm
        if llm.served_model and not llm.url:
            raise ConfigError("--llm-model names a model on a server", hint="pass --llm-url too", param="llm_model")
        if (
            "llm" in self.systems
            and llm.adapter not in (None, "", "none", "auto")
            and not (llm.url and not Path(llm.adapter).exists())
        ):
            adapter_kind(llm.adapter)  # a folder that is no card, adapter or model is an error now, not after loading
        if self.ray is not None and self.protocol != "llamarec":
            raise ConfigError(
                "--ray runs the LlamaRec protocol", hint="leave out --ray for --protocol llmrank", param="ray"
            )
        if self.candidates and not Path(self.candidates).is_file():
            raise ConfigError(f"candidate file not found: {self.candidates}",
                              hint="pass a file with one line per user: user_id<TAB>item item ...", param="candidates")  # fmt: skip

    def system_options(self) -> dict[str, dict[str, Any]]:
        opts = {k: dict(v) for k, v in self.options.items()}
        if self.permutations > 1:
            opts.setdefault("llm", {}).setdefault("permutations", self.permutations)
        return opts

    def describe(self) -> dict[str, Any]:
        """What results.json records under ``config``."""
        llm = {k: v for k, v in vars(self.llm).items() if k != "engine"}
        return {"data": self.data, "systems": self.systems, "protocol": self.protocol, "stage": self.stage,
                "n_candidates": self.n_candidates if self.protocol == "llmrank" else None, "candidates": self.candidates,
                "skip_unknown": self.skip_unknown, "permutations": self.permutations, "users": self.users, "seed": self.seed,
                "options": self.options, "llm": llm,
                "ray": self.ray.model_dump() if self.ray is not None else None}  # fmt: skip


def select_users(n_users: int, sample: int | None, seed: int) -> np.ndarray:
    """Row positions of a seeded random sample (sorted), or all rows."""
    if sample is None or sample >= n_users:
        return np.arange(n_users)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n_users, size=sample, replace=False))


def _candidates(s: EvalSettings, split: Split) -> CandidateLists:
    if s.candidates:
        cands = read_candidates(
            s.candidates, split, s.stage, n=s.n_candidates, seed=s.seed, skip_unknown=s.skip_unknown
        )
        if cands.skipped:
            log.warning(
                "%s: skipped %s",
                s.candidates,
                ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in cands.skipped.items()),
            )
    else:
        cands = sample_candidates(split, s.stage, n=s.n_candidates, seed=s.seed)
    if cands.in_history:
        log.warning("%d candidates were in their user's history; every system ranks them last", cands.in_history)
    return cands.subset(select_users(len(cands.users), s.users, s.seed))


def run_eval(s: EvalSettings, *, command: str | None = None, split: Split | None = None) -> tuple[Report, Path]:
    """Check, load, build the systems, evaluate, write the run folder; (report, folder)."""
    s.check()
    if split is None:
        from recagent.data import load_dataset

        split = llamarec_split(load_dataset(s.data))
    cands = _candidates(s, split) if s.protocol == "llmrank" else None
    users = cands.users if cands is not None else np.arange(split.n_users)[select_users(split.n_users, s.users, s.seed)]
    if s.ray is not None:  # each system is built, fitted and asked on a Ray actor pool
        from .on_ray import RayEvaluated

        opts, llm = s.system_options(), s.describe()["llm"]  # the LLM options as results.json records them
        systems: list[Any] = [RayEvaluated(n, data=s.data, stage=s.stage, users=users, ray_cfg=s.ray, seed=s.seed,
                                           options=opts.get(n, {}), llm=llm) for n in s.systems]  # fmt: skip
    else:
        systems = build_systems(s.systems, split=split, seed=s.seed, protocol=s.protocol, llm=s.llm, options=s.system_options(),
                                n_candidates=s.n_candidates if cands is not None else None, progress=s.progress)  # fmt: skip
    protocol: dict[str, Any] = {"name": s.protocol}
    if cands is not None:
        protocol.update(n_candidates=cands.n, candidates=cands.describe())
    try:
        report = run_experiment(systems, split, s.stage, users=users, candidates=None if cands is None else cands.items,
                                protocol=protocol, progress=s.progress)  # fmt: skip
    finally:
        for system in systems:  # release engines (an in-process vLLM holds GiBs) even when a run fails
            backend = getattr(getattr(system, "ranker", None), "backend", None)
            if backend is not None and backend is not s.llm.engine:
                backend.close()
    out = s.out or Path("runs") / f"eval-{time.strftime('%Y%m%d-%H%M%S')}"
    write_run(
        report, out, title=f"recagent eval on {split.dataset.name} ({s.protocol})", command=command, config=s.describe()
    )
    if cands is not None:
        write_candidates(cands, split, Path(out) / "candidates.tsv")
    return report, Path(out)
