"""The item–item co-occurrence graph behind the ``sequence`` source, built in bounded memory.

Row ``i`` says where users go around item ``i``: an item ``d`` steps after it in a timeline adds
``1 / d**power``, one ``d`` steps before it ``backward / d**power`` (the next items matter more
for "what comes next"; tuned on the validation stage). Rows are normalised to sum 1 over all
their neighbours, then only the ``top_k`` heaviest are kept (ties: lower column first), so a kept
weight equals the unbounded graph's weight exactly.

The build never holds all pairs at once. Interactions are one flat int32 array; its positions
are grouped by item, and items are processed in row blocks whose pairs fit ``scratch_bytes``:
each block's pairs are summed (sparse), pruned to the top ``k`` per row and appended. Peak memory
is ~16 bytes per interaction + ``scratch_bytes`` + the result (≤ 8 bytes × items × ``top_k``),
whatever the number of interactions × window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from ..data.budget import check_memory

__all__ = ["sequence_graph", "graph_from_codes", "cooccurrence_graph", "SCRATCH_BYTES"]

SCRATCH_BYTES = 256 * 2**20
"""Working memory for one block of pairs (~48 bytes a pair with the sparse sum's copies)."""
_BYTES_PER_PAIR = 48


def sequence_graph(
    sequences: Iterable[Sequence[str]], pos: Mapping[str, int], window: int, backward: float, power: float,
    *, top_k: int | None = None, scratch_bytes: int = SCRATCH_BYTES,
) -> sp.csr_matrix | None:  # fmt: skip
    """The graph over catalog positions ``pos`` from timelines of item ids (ids not in ``pos``
    are skipped); ``None`` when no timeline has two items."""
    flat: list[int] = []
    offsets = [0]
    for seq in sequences:
        flat.extend(pos[i] for i in seq if i in pos)
        offsets.append(len(flat))
    return cooccurrence_graph(np.asarray(flat, dtype=np.int32), np.asarray(offsets, dtype=np.int64), len(pos),
                              window, backward, power, top_k=top_k, scratch_bytes=scratch_bytes)  # fmt: skip


def graph_from_codes(
    sequences: Sequence[np.ndarray], code_pos: np.ndarray, n: int, window: int, backward: float, power: float,
    *, top_k: int | None = None, scratch_bytes: int = SCRATCH_BYTES,
) -> sp.csr_matrix | None:  # fmt: skip
    """Same graph from timelines of item codes (``TrainData.sequences``); ``code_pos[code]`` is
    the code's catalog position, ``-1`` for an item the catalog lacks (skipped). Vectorised: no
    Python work per interaction."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    if lengths.sum() == 0:
        return None
    bounds = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=bounds[1:])
    flat = np.asarray(code_pos, dtype=np.int32)[np.concatenate(sequences, dtype=np.int32, casting="same_kind")]
    keep = flat >= 0
    if keep.all():
        return cooccurrence_graph(flat, bounds, n, window, backward, power, top_k=top_k, scratch_bytes=scratch_bytes)
    kept_before = np.zeros(len(flat) + 1, dtype=np.int64)
    np.cumsum(keep, out=kept_before[1:])
    return cooccurrence_graph(flat[keep], kept_before[bounds], n, window, backward, power, top_k=top_k,
                              scratch_bytes=scratch_bytes)  # fmt: skip


def cooccurrence_graph(
    flat: np.ndarray, offsets: np.ndarray, n: int, window: int, backward: float, power: float,
    *, top_k: int | None = None, scratch_bytes: int = SCRATCH_BYTES,
) -> sp.csr_matrix | None:  # fmt: skip
    """The graph from all timelines concatenated: ``flat[offsets[u]:offsets[u+1]]`` is user
    ``u``'s timeline of item positions in ``range(n)``. float32 weights, int32 indices."""
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} must be >= 1 (or None for every neighbour)")
    offsets = np.asarray(offsets, dtype=np.int64)
    if not (np.diff(offsets) >= 2).any():
        return None
    if top_k is None:
        lengths = np.diff(offsets)
        pairs = 2 * float(np.sum(np.minimum(lengths - 1, window).clip(0) * lengths))
        check_memory(f"the unbounded sequence graph ({n:,} items, up to {min(pairs, n * n):,.0f} pairs)",
                     16 * min(pairs, float(n) * n), hint="set sequence_top_k (e.g. 200) to keep the top neighbours per item")  # fmt: skip
    flat = np.asarray(flat, dtype=np.int32)
    steps = np.arange(1, window + 1)
    delta = np.concatenate([steps, -steps])  # later items, then earlier ones
    weight = np.concatenate([1.0 / steps**power, backward / steps**power])
    # positions grouped by item: a block of rows is a contiguous slice of `by_item`
    by_item = np.argsort(flat, kind="stable").astype(np.int32 if len(flat) < 2**31 else np.int64)
    starts = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(flat, minlength=n), out=starts[1:])
    max_occ = max(1, scratch_bytes // (_BYTES_PER_PAIR * len(delta)))
    indptr, indices, data = [np.zeros(1, dtype=np.int64)], [], []
    lo = 0
    while lo < n:
        # as many rows as fit the scratch (at least one: a very frequent item is summed in parts)
        hi = max(lo + 1, int(np.searchsorted(starts, starts[lo] + max_occ, side="right")) - 1)
        hi = min(hi, n)
        block = None
        occ = by_item[starts[lo] : starts[hi]]
        for s in range(0, len(occ), max_occ):
            part = _pairs(flat, offsets, occ[s : s + max_occ], lo, hi, n, delta, weight)
            block = part if block is None else block + part
        if block is None:
            block = sp.csr_matrix((hi - lo, n), dtype=np.float64)
        cols, vals, counts = _top_k_rows(block, top_k)
        indptr.append(indptr[-1][-1] + np.cumsum(counts))
        indices.append(cols.astype(np.int32, copy=False))  # int32/float32 already per block: no big copy later
        data.append(vals.astype(np.float32, copy=False))
        lo = hi
    ptr = np.concatenate(indptr)
    idx_dtype = np.int32 if ptr[-1] < 2**31 else np.int64
    return sp.csr_matrix(
        (np.concatenate(data), np.concatenate(indices).astype(idx_dtype, copy=False), ptr.astype(idx_dtype)),
        shape=(n, n),
    )


def _pairs(flat, offsets, t, lo, hi, n, delta, weight) -> sp.csr_matrix:
    """Summed weights of (item at position t, item at t ± d) within each timeline: rows lo..hi-1."""
    t = t.astype(np.int64)
    user = np.searchsorted(offsets, t, side="right") - 1
    other = t[:, None] + delta[None, :]
    valid = (other >= offsets[user][:, None]) & (other < offsets[user + 1][:, None])
    rows = np.broadcast_to(flat[t][:, None] - lo, other.shape)[valid]
    cols = flat[other[valid]]
    w = np.broadcast_to(weight, other.shape)[valid]
    ok = cols != rows + lo  # an item repeated within the window is not its own neighbour
    m = sp.coo_matrix((w[ok], (rows[ok], cols[ok])), shape=(hi - lo, n)).tocsr()
    m.sum_duplicates()
    return m


def _top_k_rows(block: sp.csr_matrix, top_k: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(columns, weights normalised by the full row sum, kept per row) of each row's ``top_k``
    heaviest entries (ties: lower column first), in column order."""
    block.sum_duplicates()
    block.eliminate_zeros()
    counts = np.diff(block.indptr)
    rows = np.repeat(np.arange(block.shape[0]), counts)
    sums = np.bincount(rows, weights=block.data, minlength=block.shape[0])
    cols, vals = block.indices, block.data
    if top_k is not None and (counts > top_k).any():
        order = np.lexsort((cols, -vals, rows))  # per row: heaviest first, then lower column
        rank = np.arange(len(order)) - block.indptr[rows[order]]
        keep = np.sort(order[rank < top_k])  # back to (row, column) order
        rows, cols, vals = rows[keep], cols[keep], vals[keep]
        counts = np.minimum(counts, top_k)
    return cols, vals / sums[rows], counts
