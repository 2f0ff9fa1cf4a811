"""The item index in Chroma: content vectors, collaborative (CF) vectors, metadata filters.

Two collections per index name ``NAME``:

* ``NAME-content`` — one record per catalog item: the text of :meth:`Catalog.describe` as the
  document, its MiniLM vector (cosine space) and the item's attributes as metadata;
* ``NAME-cf`` — item factors of a trained CF model (inner-product space by default, so a user
  vector's nearest items are its highest-scoring ones), with the same metadata so filters apply.

Metadata keeps list attributes (genres, tags) as Chroma list values (non-empty lists only; an
empty list is left out) and scalars as int/float/str/bool. Filters are written as an
:class:`ItemFilter` and translated to a Chroma ``where`` clause; a filter on an attribute the
catalog does not have raises :class:`~recagent.errors.ConfigError`.

>>> index = ItemIndex(IndexConfig(path="~/.cache/recagent/chroma"))   # or host="127.0.0.1", port=8000
>>> index.build(dataset.catalog)                  # idempotent: only new/changed items are embedded
>>> index.set_cf_vectors(dataset.catalog, item_ids, als.item_factors())
>>> index.query_content(texts=["feel-good animated film"], k=5,
...                     filters=ItemFilter(include={"genres": ["Animation"]}, ranges={"year": (1990, None)}))

Chroma embedded mode is thread-safe but not process-safe: one process owns a persistent folder;
several processes share an index through ``chroma run`` and ``IndexConfig(host=..., port=...)``.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from ..data import Catalog
from ..embeddings import SentenceEmbeddingFunction, VectorsOnlyEmbeddingFunction, encode
from ..errors import ConfigError, EmptyInputError
from .cache import current_cache
from .filters import AttrKind, ItemFilter, attribute_schema, item_metadata
from .search import MAX_GET, SCHEMA_KEY, Hit, nearest, stored_schema, with_removals
from .settle import FINGERPRINT_KEY, fingerprint, settle

__all__ = ["IndexConfig", "ItemIndex", "BuildReport", "Hit"]

log = logging.getLogger(__name__)
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9._-]{1,60}[a-zA-Z0-9]$")


@dataclass
class IndexConfig:
    """Where the index lives and how it is built.

    ``host`` set → ``chromadb.HttpClient(host, port)`` (a ``chroma run`` server); otherwise
    ``chromadb.PersistentClient(path)``.
    """

    path: str = "~/.cache/recagent/chroma"  # embedded store folder (ignored when host is set)
    host: str | None = None  # Chroma server host; None = embedded
    port: int = 8000  # Chroma server port
    name: str = "items"  # collection prefix: NAME-content, NAME-cf
    model: str | None = None  # sentence-transformers folder; None = bundled all-MiniLM-L6-v2
    batch_size: int = 256  # items per embed + upsert batch
    content_space: Literal["cosine", "ip", "l2"] = "cosine"  # MiniLM vectors are normalised
    ef_search: int = 200  # HNSW search breadth; ≥ the largest n_results keeps recall high
    # A collection created for at most this many items searches them all (ef_search = its size):
    # exact in cosine space however the graph was built (two builds' graphs differ: Chroma inserts
    # with several threads; an ip graph may still miss low-norm items). ~1 ms a query at 4k items.
    exact_up_to: int = 10_000
    # Largest unfiltered fetch used to apply a filter in memory when the caller knows which ids
    # pass it; beyond that Chroma's `where` is used. Measured here: `where` costs 6-13 ms a query,
    # an unfiltered search of 1200 neighbours 2-3 ms. 0 = always use `where`.
    post_filter_max: int = 2000
    progress: bool = True  # tqdm bars on builds

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name) or ".." in self.name:
            raise ConfigError(
                f"invalid index name {self.name!r}",
                hint="use 3-62 characters from [a-zA-Z0-9._-], starting and ending with a letter or digit",
                param="name",
            )
        if not (0 < int(self.port) < 65536):
            raise ConfigError(f"invalid port {self.port}", hint="use a TCP port between 1 and 65535", param="port")
        if self.post_filter_max < 0:
            raise ConfigError("post_filter_max must be ≥ 0", param="post_filter_max")
        if self.batch_size < 1:
            raise ConfigError("batch_size must be ≥ 1", param="batch_size")
        if self.content_space not in ("cosine", "ip", "l2"):
            raise ConfigError(f"unknown space {self.content_space!r}", hint="use cosine, ip or l2")


# ----------------------------------------------------------------------------------------
# the index


@dataclass
class BuildReport:
    """What a build changed: items embedded, metadata-only updates, deletions, seconds."""

    total: int
    embedded: int
    updated: int
    deleted: int
    seconds: float

    @property
    def items_per_s(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else float("inf")


class ItemIndex:
    """Item vectors and metadata in Chroma, embedded or on a server, one interface.

    Thread-safe within a process (Chroma's client is); a persistent folder belongs to one
    process at a time.
    """

    def __init__(self, config: IndexConfig | None = None, *, client: Any = None):
        self.config = config or IndexConfig()
        self._client = client
        self._lock = threading.RLock()
        self._collections: dict[str, Any] = {}
        self._ef = SentenceEmbeddingFunction(self.config.model)  # checks the model path now

    # --- connection and collections -------------------------------------------------------

    @property
    def client(self) -> Any:
        """The chromadb client (``PersistentClient`` or ``HttpClient``), created on first use."""
        with self._lock:
            if self._client is None:
                import chromadb

                # default Settings on purpose: Chroma refuses a second client for the same folder
                # with other settings, and users open the folder with plain PersistentClient(path)
                # (telemetry is switched off by ANONYMIZED_TELEMETRY=False in the environment)
                if self.config.host:
                    try:
                        self._client = chromadb.HttpClient(host=self.config.host, port=self.config.port)
                    except Exception as e:  # chromadb raises ValueError/ConnectError on a dead server
                        raise ConfigError(
                            f"cannot reach the Chroma server at {self.config.host}:{self.config.port}: {e}",
                            hint="start it with `chroma run --path DIR --host HOST --port PORT`, or unset host for embedded mode",
                            param="host",
                        ) from e
                else:
                    path = Path(self.config.path).expanduser()
                    path.mkdir(parents=True, exist_ok=True)
                    self._client = chromadb.PersistentClient(path=str(path))
            return self._client

    @property
    def content_name(self) -> str:
        return f"{self.config.name}-content"

    def cf_name(self, name: str = "cf") -> str:
        return f"{self.config.name}-{name}"

    def _hnsw(self, space: str, size: int | None) -> dict[str, Any]:
        ef, exact = self.config.ef_search, size is not None and size <= self.config.exact_up_to
        return {"hnsw": {"space": space, "ef_search": max(ef, size) if exact else ef}}

    def content(self, size: int | None = None) -> Any:
        """The content collection (created on first use, for ``size`` items, with the registered
        MiniLM function)."""
        with self._lock:
            col = self._collections.get(self.content_name)
            if col is None:
                col = self.client.get_or_create_collection(
                    self.content_name,
                    embedding_function=self._ef,
                    configuration=self._hnsw(self.config.content_space, size),
                )
                persisted = (col.configuration_json or {}).get("embedding_function") or {}
                stored_model = (persisted.get("config") or {}).get("model")
                if stored_model and stored_model != self._ef.model:
                    raise ConfigError(
                        f"collection {self.content_name!r} holds vectors of model {stored_model!r}, not {self._ef.model!r}",
                        hint="open it with the same model, or use another index name/path for the new model",
                        param="model",
                    )
                self._collections[self.content_name] = col
            return col

    def cf(self, name: str = "cf") -> Any:
        """An existing CF collection; :class:`ConfigError` if none was stored under ``name``."""
        full = self.cf_name(name)
        with self._lock:
            col = self._collections.get(full)
            if col is None:
                if full not in self._collection_names():
                    raise ConfigError(
                        f"no CF vectors stored under {full!r}",
                        hint="store item factors first with ItemIndex.set_cf_vectors(catalog, item_ids, factors)",
                    )
                col = self.client.get_collection(full, embedding_function=VectorsOnlyEmbeddingFunction())
                self._collections[full] = col
            return col

    def _collection_names(self) -> list[str]:
        return [c.name for c in self.client.list_collections()]

    def schema(self, cf: str | None = None) -> dict[str, AttrKind]:
        """Filterable attributes of the indexed catalog, as stored with the content collection
        (or with the CF collection ``cf``)."""
        return stored_schema(self.cf(cf) if cf else self.content())

    def count(self) -> int:
        return self.content().count()

    def ids(self) -> list[str]:
        return self.content().get(include=[])["ids"]

    # --- writes --------------------------------------------------------------------------

    def build(self, catalog: Catalog, *, show_progress: bool | None = None) -> BuildReport:
        """Make the content collection equal to ``catalog``: idempotent, incremental.

        New items and items whose text changed are embedded; items whose attributes changed get
        new metadata; items no longer in the catalog are deleted. A second build of the same
        catalog embeds nothing.
        """
        import time

        if catalog is None or len(catalog.items) == 0:
            raise EmptyInputError(
                "the catalog is empty: nothing to index", hint="build the index from a catalog with items"
            )
        t0 = time.perf_counter()
        schema = attribute_schema(catalog)
        col = self.content(len(catalog.items))
        ids = catalog.ids
        docs = [catalog.describe(i) for i in ids]
        metas = item_metadata(catalog, ids, schema)
        existing = self._get_all(col, include=["documents", "metadatas"])
        changed_text = [j for j, i in enumerate(ids) if existing.get(i, (None, None))[0] != docs[j]]
        changed_meta = [
            j for j, i in enumerate(ids) if i in existing and existing[i][0] == docs[j] and existing[i][1] != metas[j]
        ]
        stale = sorted(set(existing) - set(ids))
        for j in changed_text + changed_meta:
            # Chroma merges metadata on upsert/update: a key set to None is what removes it
            old = (existing.get(ids[j]) or (None, None))[1] or {}
            metas[j] = {**{key: None for key in old if key not in metas[j]}, **metas[j]}
        self._embed_and_upsert(col, [ids[j] for j in changed_text], [docs[j] for j in changed_text],
                               [metas[j] for j in changed_text], show_progress)  # fmt: skip
        for s in range(0, len(changed_meta), self.config.batch_size):
            part = changed_meta[s : s + self.config.batch_size]
            col.update(ids=[ids[j] for j in part], metadatas=[metas[j] for j in part])  # vectors stay as stored
        for s in range(0, len(stale), self.config.batch_size):
            col.delete(ids=stale[s : s + self.config.batch_size])
        self._set_schema(col, schema)
        self._settle(col)
        report = BuildReport(len(ids), len(changed_text), len(changed_meta), len(stale), time.perf_counter() - t0)
        log.info("index %s: %s", self.content_name, report)
        return report

    def upsert_items(self, catalog: Catalog, item_ids: Iterable[str] | None = None) -> int:
        """Embed and upsert the given catalog items now (item cold start); returns the count.

        Their metadata attributes are added to the stored schema (no attribute is dropped).
        """
        ids = catalog.require(item_ids if item_ids is not None else catalog.ids)
        if not ids:
            raise EmptyInputError("no items to upsert", hint="pass at least one item id from the catalog")
        schema = attribute_schema(catalog)
        col = self.content()
        metas = with_removals(col, ids, item_metadata(catalog, ids, schema))
        self._embed_and_upsert(col, ids, [catalog.describe(i) for i in ids], metas, show_progress=False)
        with self._lock:
            self._set_schema(col, {**self.schema(), **schema})
        self._settle(col, reopen=False)
        for name in self._cf_collections():
            # keep CF metadata in sync for items that already have factors there
            cf = self.client.get_collection(name, embedding_function=VectorsOnlyEmbeddingFunction())
            have = cf.get(ids=ids, include=[])["ids"]
            if have:
                cf.update(ids=have, metadatas=with_removals(cf, have, item_metadata(catalog, have, schema)))
                self._set_schema(cf, {**stored_schema(cf), **schema})
                self._settle(cf, reopen=False)
        return len(ids)

    def delete_items(self, item_ids: Iterable[str]) -> int:
        """Remove items from the content and every CF collection; unknown ids are ignored."""
        ids = [str(i) for i in item_ids]
        if not ids:
            return 0
        for col in [self.content()] + [self.client.get_collection(name, embedding_function=VectorsOnlyEmbeddingFunction())
                                       for name in self._cf_collections()]:  # fmt: skip
            col.delete(ids=ids)
            self._settle(col, reopen=False)
        return len(ids)

    def set_cf_vectors(
        self,
        catalog: Catalog,
        item_ids: Sequence[str],
        vectors: np.ndarray,
        *,
        space: Literal["ip", "cosine", "l2"] = "ip",
        name: str = "cf",
        show_progress: bool | None = None,
    ) -> int:
        """Store CF item vectors (row i ↔ ``item_ids[i]``) in ``NAME-<name>``; replaces what was there.

        Use ``space="ip"`` for factors scored by inner product (ALS, BPR, SASRec output layer),
        ``"cosine"`` for item–item similarity. Changing the dimension or space recreates the
        collection; ids missing from ``item_ids`` are deleted.
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        ids = [str(i) for i in item_ids]
        if vectors.ndim != 2 or vectors.shape[0] != len(ids):
            raise ConfigError(
                f"vectors have shape {vectors.shape}, expected ({len(ids)}, d)",
                hint="pass one row of factors per item id, in the same order",
            )
        if not ids:
            raise EmptyInputError("no CF vectors to store", hint="pass the item factors of a fitted CF model")
        catalog.require(ids)
        full = self.cf_name(name)
        meta = {"recagent_kind": "cf", "recagent_index": self.config.name, "recagent_dim": int(vectors.shape[1]),
                "recagent_space": space}  # fmt: skip
        with self._lock:
            self._collections.pop(full, None)
            if full in self._collection_names():
                old = self.client.get_collection(full, embedding_function=VectorsOnlyEmbeddingFunction())
                om = old.metadata or {}
                if om.get("recagent_dim") != meta["recagent_dim"] or om.get("recagent_space") != space:
                    self.client.delete_collection(full)
            col = self.client.get_or_create_collection(
                full,
                metadata=meta,
                embedding_function=VectorsOnlyEmbeddingFunction("CF item factors"),
                configuration=self._hnsw(space, len(ids)),
            )
            self._collections[full] = col
        schema = attribute_schema(catalog)
        metas = item_metadata(catalog, ids, schema)
        # A refit that gives the same factors leaves the collection as it is: re-upserting rewires
        # the HNSW graph, and every process then sees other approximate neighbours (Ray actors).
        fp = fingerprint(ids, vectors, metas, space)
        if (col.metadata or {}).get(FINGERPRINT_KEY) == fp and col.count() == len(ids):
            self._settle(col)  # an index written before settling existed
            return len(ids)
        metas = with_removals(col, ids, metas)
        bs = self.config.batch_size * 4  # no embedding cost: bigger batches
        bar = tqdm(total=len(ids), desc=f"CF vectors → {full}", unit="item", disable=not self._progress(show_progress))
        for s in range(0, len(ids), bs):
            col.upsert(ids=ids[s : s + bs], embeddings=vectors[s : s + bs], metadatas=metas[s : s + bs])
            bar.update(len(ids[s : s + bs]))
        bar.close()
        stale = sorted(set(self._get_all(col, include=[])) - set(ids))
        for s in range(0, len(stale), bs):
            col.delete(ids=stale[s : s + bs])
        self._set_schema(col, schema, {FINGERPRINT_KEY: fp})
        self._settle(col)
        return len(ids)

    def clear(self) -> None:
        """Delete the collections of this index (content and every CF collection)."""
        with self._lock:
            for name in [*self._cf_collections(), self.content_name]:
                if name in self._collection_names():
                    self.client.delete_collection(name)
            self._collections.clear()

    # --- reads ---------------------------------------------------------------------------

    def vectors(self, item_ids: Sequence[str], *, cf: str | None = None) -> dict[str, np.ndarray]:
        """Stored vectors of the given items (content, or the CF collection ``cf``); absent ids are skipped."""
        col = self.cf(cf) if cf else self.content()
        cache = current_cache()  # within one request, an id is fetched once (store/cache.py)
        wanted = list(dict.fromkeys(str(i) for i in item_ids))
        out: dict[str, np.ndarray] = {}
        ids = wanted if cache is None else [i for i in wanted if (col.name, i) not in cache]
        for s in range(0, len(ids), MAX_GET):
            r = col.get(ids=ids[s : s + MAX_GET], include=["embeddings"])
            for i, v in zip(r["ids"], r["embeddings"], strict=False):
                out[i] = np.asarray(v, dtype=np.float32)
        if cache is None:
            return out
        cache.update({(col.name, i): v for i, v in out.items()})
        return {i: cache[(col.name, i)] for i in wanted if (col.name, i) in cache}

    def query_content(
        self,
        *,
        embeddings: np.ndarray | None = None,
        texts: Sequence[str] | None = None,
        k: int = 20,
        filters: ItemFilter | Mapping[str, Any] | None = None,
        exclude: Iterable[str] = (),
        where: dict[str, Any] | None = None,
        allowed: Container[str] | None = None,
    ) -> list[list[Hit]]:
        """Nearest items to each query vector (or text, embedded with the index model).

        ``filters`` (or a ready ``where``) restrict the items; ``exclude`` drops ids (seen items)
        while still returning ``k`` hits; ``allowed``, the ids that pass the filter when the caller
        knows them, lets the index filter in memory instead (same result, faster).
        """
        if (embeddings is None) == (texts is None):
            raise ConfigError("pass exactly one of embeddings= or texts=", param="query")
        if texts is not None:
            if isinstance(texts, str):
                texts = [texts]
            if not texts or any(not str(t).strip() for t in texts):
                raise EmptyInputError("empty query text", hint="pass a non-empty description of what to find")
            embeddings = encode(list(texts), self.config.model)
        return nearest(self.content(), embeddings, k, filters, exclude, where, allowed, self.config.post_filter_max)

    def query_cf(
        self,
        embeddings: np.ndarray,
        *,
        k: int = 20,
        filters: ItemFilter | Mapping[str, Any] | None = None,
        exclude: Iterable[str] = (),
        where: dict[str, Any] | None = None,
        allowed: Container[str] | None = None,
        name: str = "cf",
    ) -> list[list[Hit]]:
        """Nearest items to each vector in the CF collection (highest inner product for ``ip``);
        arguments as in :meth:`query_content`."""
        return nearest(self.cf(name), embeddings, k, filters, exclude, where, allowed, self.config.post_filter_max)

    def where_for(
        self, filters: ItemFilter | Mapping[str, Any] | None, *, cf: str | None = None
    ) -> dict[str, Any] | None:
        """Validate ``filters`` against the stored schema and translate them to Chroma ``where``."""
        f = ItemFilter.parse(filters)
        return None if f is None else f.to_where(self.schema(cf))

    # --- helpers -------------------------------------------------------------------------

    def close(self) -> None:
        """Let go of the Chroma client (its files can then be copied whole); reopened on next use."""
        with self._lock:
            client, self._client = self._client, None
            self._collections.clear()
        if client is not None and hasattr(client, "close"):
            client.close()

    def _settle(self, col: Any, *, reopen: bool = True) -> None:
        """Embedded folders only (a server holds one graph in memory for all its clients). The
        writing process's graph in memory is not the one it wrote (3 of 300 top-50 queries differ
        from every later open), so after a build this client reopens from disk (where it is the
        folder's only one). Live item changes (cold start) do not reopen: queries may be running."""
        if not self.config.host and settle(col, Path(self.config.path).expanduser()) and reopen:
            self.close()

    def _progress(self, flag: bool | None) -> bool:
        return self.config.progress if flag is None else flag

    def _cf_collections(self) -> list[str]:
        # by metadata, not name prefix: index "items" must not claim the collections of "items-x"
        return [
            c.name
            for c in self.client.list_collections()
            if (c.metadata or {}).get("recagent_kind") == "cf"
            and (c.metadata or {}).get("recagent_index") == self.config.name
        ]

    def _set_schema(self, col: Any, schema: Mapping[str, AttrKind], extra: Mapping[str, str] | None = None) -> None:
        meta = dict(col.metadata or {})
        new = {**meta, SCHEMA_KEY: json.dumps(dict(sorted(schema.items()))), **(extra or {})}
        if new != meta:
            col.modify(metadata=new)

    @staticmethod
    def _get_all(col: Any, include: list[str]) -> dict[str, tuple[Any, Any]]:
        out: dict[str, tuple[Any, Any]] = {}
        total = col.count()
        for offset in range(0, total, MAX_GET):
            r = col.get(include=include, limit=MAX_GET, offset=offset)
            docs = r.get("documents") or [None] * len(r["ids"])
            metas = r.get("metadatas") or [None] * len(r["ids"])
            for i, d, m in zip(r["ids"], docs, metas, strict=False):
                out[i] = (d, m)
        return out

    def _embed_and_upsert(self, col, ids, docs, metas, show_progress) -> None:
        if not ids:
            return
        bs = self.config.batch_size
        bar = tqdm(
            total=len(ids), desc=f"embedding → {col.name}", unit="item", disable=not self._progress(show_progress)
        )
        for s in range(0, len(ids), bs):
            vecs = encode(docs[s : s + bs], self.config.model)
            col.upsert(ids=ids[s : s + bs], embeddings=vecs, documents=docs[s : s + bs], metadatas=metas[s : s + bs])
            bar.update(len(ids[s : s + bs]))
        bar.close()
