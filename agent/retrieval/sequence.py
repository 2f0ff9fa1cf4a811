"""The item–item co-occurrence graph behind the ``sequence`` source."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

__all__ = ["sequence_graph"]


def sequence_graph(
    sequences: Iterable[Sequence[str]], pos: Mapping[str, int], window: int, backward: float, power: float
) -> sp.csr_matrix | None:
    """Item × item co-occurrence within ``window`` steps of each timeline, rows normalised to sum 1.

    Row ``i`` says where users go around item ``i``: an item ``d`` steps after it adds
    ``1 / d**power``, one ``d`` steps before it ``backward / d**power`` (the next items matter
    more for "what comes next"; tuned on the validation stage).
    """
    rows: list[np.ndarray] = []
    cols: list[np.ndarray] = []
    vals: list[np.ndarray] = []
    for seq in sequences:
        codes = np.array([pos[i] for i in seq if i in pos], dtype=np.int64)
        for d in range(1, min(window, len(codes) - 1) + 1):
            rows.append(codes[:-d])
            cols.append(codes[d:])
            vals.append(np.full(len(codes) - d, 1.0 / d**power))
    if not rows:
        return None
    n = len(pos)
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    m = sp.csr_matrix(
        (np.concatenate([v, backward * v]), (np.concatenate([r, c]), np.concatenate([c, r]))), shape=(n, n)
    )
    m.setdiag(0)
    m.eliminate_zeros()
    sums = np.asarray(m.sum(axis=1)).ravel()
    sums[sums == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / sums) @ m)
