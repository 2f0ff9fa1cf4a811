"""Session fixtures for the retriever tests: a small real slice of ml-latest-small, its Chroma
index and a fitted retriever (ALS + all sources). Loaded from tests/conftest.py via
``pytest_plugins``. Embedding a few hundred items takes ~10 s, so they are built once."""

from __future__ import annotations

from pathlib import Path

import pytest

from recagent.data import Catalog, Dataset, Interactions, load_dataset
from recagent.eval.splits import Split, llamarec_split
from recagent.retrieval import Retriever
from recagent.store import IndexConfig, ItemIndex

__all__ = ["retr_dataset", "retr_split", "retr_index", "retr_system", "tiny_catalog"]


@pytest.fixture(scope="session")
def retr_dataset() -> Dataset:
    """The 250 most rated movies and the first 80 users of ml-latest-small."""
    ds = load_dataset("ml-latest-small")
    df = ds.interactions.df
    items = df["item_id"].value_counts().index[:250]
    users = sorted(df["user_id"].unique(), key=int)[:80]
    sub = df[df["item_id"].isin(items) & df["user_id"].isin(users)]
    return Dataset("ml-small-test", ds.catalog.subset(sorted(items, key=int)), Interactions(sub.copy()))


@pytest.fixture(scope="session")
def retr_split(retr_dataset: Dataset) -> Split:
    return llamarec_split(retr_dataset)


@pytest.fixture(scope="session")
def retr_index(tmp_path_factory, retr_split: Split) -> ItemIndex:
    """Index of the split's catalog (built once; tests must not modify it)."""
    index = ItemIndex(IndexConfig(path=str(tmp_path_factory.mktemp("chroma-shared")), name="shared", progress=False))
    index.build(retr_split.dataset.catalog)
    return index


@pytest.fixture(scope="session")
def retr_system(retr_split: Split, retr_index: ItemIndex) -> Retriever:
    """The fused retriever fitted on the test stage: ALS in Chroma, sequence/knowledge graphs, popularity."""
    return Retriever(retr_index, depth=50, cf_models={"cf": {"name": "als", "iterations": 5}}).fit(
        retr_split.train_data("test")
    )


@pytest.fixture(scope="session")
def tiny_catalog(retr_dataset: Dataset) -> Catalog:
    """30 movies: small enough to re-index in a second (mutation, server and process tests)."""
    return retr_dataset.catalog.subset(retr_dataset.catalog.ids[:30])


@pytest.fixture(scope="session")
def retr_data_folder(tmp_path_factory, retr_dataset: Dataset) -> Path:
    """The test slice as a generic data folder, for what loads data in another process (Ray
    actors, server replicas)."""
    folder = tmp_path_factory.mktemp("retr-data")
    cat = retr_dataset.catalog.items.reset_index()[["item_id", "title", "genres"]]
    cat["genres"] = cat["genres"].map("|".join)
    cat.to_csv(folder / "catalog.csv", index=False)
    retr_dataset.interactions.df.to_csv(folder / "interactions.csv", index=False)
    return folder
