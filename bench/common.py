"""What the bench scripts share: ``--data``, output names that carry the data set's name, the
machine and load they ran on, and writing ``<name>.json`` + ``<name>.md`` (first line: the command).

    ap = argparse.ArgumentParser(); add_data_args(ap); args = ap.parse_args()
    split = load_split(args.data)
    write_results(out_stem(args.out, "baselines", split), payload, markdown_lines)
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

__all__ = [
    "RESULTS",
    "add_data_args",
    "load_split",
    "fitted_retriever",
    "out_stem",
    "command",
    "machine",
    "write_results",
]


def add_data_args(ap) -> None:
    """``--data`` (anything ``recagent.data.load_dataset`` reads) and ``--out`` (results folder)."""
    ap.add_argument(
        "--data", default="ml-latest-small", help="data set name or folder (what `recagent eval --data` takes)"
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder")


def load_split(data: str):
    """The LlamaRec split (5-core, leave-one-out) of ``data``."""
    from recagent.data import load_dataset
    from recagent.eval.splits import llamarec_split

    return llamarec_split(load_dataset(data))


def fitted_retriever(split, stage: str, index_path: str, seed: int = 0, **overrides):
    """The retriever the benches measure and re-rank: the one ``recagent eval`` builds
    (:func:`recagent.eval.systems.make_retriever`), fitted on what ``stage`` may see."""
    from recagent.eval.systems import make_retriever

    return make_retriever(split, {"index_path": index_path, **overrides}, seed=seed).fit(split.train_data(stage))


def prompt_tokens(ranker, retriever, split, stage: str, every: int = 10) -> float:
    """Mean prompt tokens per ranked user (every ``every``-th user): the ranker's prompt for the
    retriever's top 20, as served."""
    import numpy as np

    lens = [len(ranker.prepare(split.query(u, stage), retriever(split.query(u, stage), n=20)).prompts[0])
            for u in range(0, split.n_users, every)]  # fmt: skip
    return round(float(np.mean(lens)), 1)


def out_stem(out: Path, name: str, split, suffix: str = "") -> Path:
    """``out/<name>_<data set><suffix>`` (no extension), e.g. results/baselines_ml-latest-small."""
    data = "".join(c if c.isalnum() or c in "._-" else "-" for c in split.dataset.name)
    return Path(out) / f"{name}_{data}{suffix}"


def command() -> str:
    """The command line that produced this run, as a user would type it."""
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0]), *sys.argv[1:]])


def machine() -> dict[str, Any]:
    """CPU count, GPU if any, load averages (other jobs share the cores), platform."""
    info: dict[str, Any] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                            "load_average": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def write_results(stem: Path, payload: dict[str, Any], md_lines: list[str]) -> Path:
    """``stem.json`` (payload + command + machine at the end) and ``stem.md`` (first line: the command)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    cmd = command()
    full = {"command": cmd, **payload, "machine": machine()}
    stem.with_suffix(".json").write_text(json.dumps(full, indent=2, default=str) + "\n")
    md = [f"`{cmd}`", "", *md_lines, "", f"Machine: {full['machine']['cpus']} CPUs, load average "
          f"{full['machine']['load_average']} at the end of the run.", ""]  # fmt: skip
    stem.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))
    return stem
