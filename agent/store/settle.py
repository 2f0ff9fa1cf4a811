"""Embedded Chroma: leave no unpersisted HNSW tail after a write, so every open reads the same graph.

Chroma's local HNSW segment is written to disk only every ``sync_threshold`` operations (1000);
the operations after the last write stay in its log and are re-inserted into the graph, with
several threads, each time a process opens the folder. Two opens (two processes, or a Ray
actor's copy of the folder) then hold different graphs and return other approximate neighbours
for some queries (measured: 3 of 300 top-50 queries on the 9,742-item content collection).
Chroma has no call that forces the write (chroma-core/chroma#7463), so after our writes we
re-upsert identical rows until the threshold is crossed: the graph on disk is then the whole
graph, and every open reads it as it is. A tail shorter than Chroma's ``batch_size`` (100) is
searched exactly (brute force) and needs nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FINGERPRINT_KEY = "recagent_fingerprint"
BATCH_SIZE = 100  # Chroma's hnsw batch_size default: a shorter tail is searched exactly
_GET = 5000


def fingerprint(ids: Sequence[str], vectors: np.ndarray, metas: list[dict[str, Any]], space: str) -> str:
    """What a CF collection holds, as one hash (ids, exact vector bytes, metadata, space): a refit
    that gives the same factors then writes nothing, and the graph stays the one on disk."""
    h = hashlib.sha256(json.dumps([list(ids), metas, space], sort_keys=True, default=str).encode())
    h.update(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
    return h.hexdigest()


def pending_ops(folder: str | Path, collection_id: str) -> int | None:
    """Log entries of the collection not yet in its HNSW file; ``None`` where the folder does not
    have the layout of the pinned chromadb (then nothing is padded)."""
    db = Path(folder) / "chroma.sqlite3"
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            newest = con.execute(
                "SELECT MAX(seq_id) FROM embeddings_queue WHERE topic LIKE ?", (f"%/{collection_id}",)
            ).fetchone()[0]
            done = con.execute(
                "SELECT m.seq_id FROM max_seq_id m JOIN segments s ON s.id = m.segment_id "
                "WHERE s.collection = ? AND s.scope = 'VECTOR'",
                (collection_id,),
            ).fetchone()
    except sqlite3.Error as e:
        log.debug("cannot read the Chroma log of %s: %s", db, e)
        return None
    if newest is None:
        return 0
    return int(newest) - int(done[0] if done else 0)


def settle(col: Any, folder: str | Path) -> int:
    """Re-upsert identical rows of ``col`` until its HNSW graph is on disk whole; returns how many."""
    pending = pending_ops(folder, str(col.id))
    if not pending or pending < BATCH_SIZE:
        return 0
    threshold = int(((col.configuration_json or {}).get("hnsw") or {}).get("sync_threshold") or 1000)
    pad = threshold - pending % threshold if pending % threshold else 0
    written = 0
    ids = col.get(limit=min(pad, _GET), include=[])["ids"]
    while written < pad and ids:
        part = ids[: min(len(ids), pad - written)]
        rows = col.get(ids=part, include=["embeddings", "metadatas", "documents"])
        same = {k: rows[k] for k in ("metadatas", "documents") if rows.get(k) and all(v is not None for v in rows[k])}
        col.upsert(ids=rows["ids"], embeddings=rows["embeddings"], **same)
        written += len(part)
    left = pending_ops(folder, str(col.id))
    if left:
        log.info("Chroma collection %s: %d operations still in its log after settling", col.name, left)
    return written
