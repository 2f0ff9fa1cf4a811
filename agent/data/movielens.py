"""MovieLens releases from a folder or zip: latest-small/latest/20m/25m/32m, 1m, 100k."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pandas as pd

from ..errors import DataError
from .budget import check_interactions
from .readers import _build_catalog, _build_interactions, _to_int64, estimate_rows
from .tables import Catalog, Dataset, top_tags

__all__ = ["load_movielens", "DATA_DIR", "SHIPPED_DATASETS"]

DATA_DIR = Path(__file__).resolve().parent.parent.parent / "data"
SHIPPED_DATASETS = {"ml-latest-small": DATA_DIR / "ml-latest-small"}


# ----------------------------------------------------------------------------------------
# MovieLens


class _Source:
    """A folder or a zip file, read by member name wherever the member sits."""

    def __init__(self, path: Path):
        self.path = path
        self.zip = zipfile.ZipFile(path) if path.is_file() and zipfile.is_zipfile(path) else None
        if path.is_file() and self.zip is None:
            raise DataError(
                "not a folder or zip file", file=str(path), hint="point at an unpacked MovieLens folder or its .zip"
            )

    def find(self, name: str) -> str | None:
        if self.zip is not None:
            for n in self.zip.namelist():
                if n.rsplit("/", 1)[-1] == name:
                    return n
            return None
        hits = sorted(self.path.rglob(name))
        return str(hits[0]) if hits else None

    def open_text(self, member: str, encoding: str = "utf-8") -> io.StringIO:
        raw = self.zip.read(member) if self.zip is not None else Path(member).read_bytes()
        return io.StringIO(raw.decode(encoding, errors="replace"))

    def estimate_rows(self, member: str) -> int:
        """Lines of a text member from its size and its first MB, without reading it all."""
        if self.zip is None:
            return estimate_rows(member) or 0
        with self.zip.open(member) as f:
            sample = f.read(2**20)
        return estimate_rows(member, sample, self.zip.getinfo(member).file_size) or 0

    def open_binary(self, member: str):
        """The member as a binary stream: pandas decodes it in chunks, never the whole file at once."""
        return self.zip.open(member) if self.zip is not None else open(member, "rb")

    def label(self, member: str) -> str:
        return f"{self.path}:{member}" if self.zip is not None else member


def load_movielens(path: str | Path | None = None) -> Dataset:
    """Load a MovieLens release from a folder or zip: latest-small/latest/20m/25m/32m, 100k or 1m."""
    path = Path(path) if path is not None else SHIPPED_DATASETS["ml-latest-small"]
    if not path.exists():
        raise DataError(
            "MovieLens path not found",
            file=str(path),
            hint="pass the unpacked folder or the .zip as downloaded from GroupLens",
        )
    src = _Source(path)
    name = path.stem if src.zip is not None else path.name
    if src.find("ratings.csv") and src.find("movies.csv"):
        return _load_ml_csv(src, name)
    if src.find("ratings.dat") and src.find("movies.dat"):
        return _load_ml_1m(src, name)
    if src.find("u.data") and src.find("u.item"):
        return _load_ml_100k(src, name)
    raise DataError(
        "no MovieLens files found (ratings.csv+movies.csv, ratings.dat+movies.dat, or u.data+u.item)",
        file=str(path),
        hint="point at a MovieLens release, or a folder with interactions.csv and catalog.csv (the generic format, see the README)",
    )


def _read_csv_member(src: _Source, name: str, required: list[str], **kw) -> tuple[pd.DataFrame, str]:
    member = src.find(name)
    label = src.label(member)
    try:
        with src.open_binary(member) as f:  # ratings.csv of ml-32m is 0.9 GB: no decoded copy of it
            df = pd.read_csv(f, encoding=kw.pop("encoding", "utf-8"), encoding_errors="replace", dtype=str,
                             keep_default_na=False, **kw)  # fmt: skip
    except (pd.errors.ParserError, ValueError) as e:
        raise DataError(f"cannot parse: {e}", file=label) from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {list(df.columns)}", file=label, column=missing[0])
    return df, label


def _ml_catalog(
    titles: pd.Series, ids: pd.Series, genres: pd.Series, label: str, tags: pd.DataFrame | None = None
) -> Catalog:
    df = pd.DataFrame(
        {"item_id": ids, "title": titles, "genres": genres.str.replace("(no genres listed)", "", regex=False)}
    )
    if tags is not None and len(tags):
        # the 10 most frequent tags per movie, lower-cased: attributes for filters and the knowledge graph
        df["tags"] = df["item_id"].map(top_tags(tags)).map(lambda v: v if isinstance(v, list) else [])
    cat = _build_catalog(df, label)
    return Catalog(cat.items, cat.list_attributes, item_noun="movie")


def _load_ml_csv(src: _Source, name: str) -> Dataset:
    movies, mlabel = _read_csv_member(src, "movies.csv", ["movieId", "title", "genres"])
    tags = None
    if src.find("tags.csv"):
        tdf, tlabel = _read_csv_member(src, "tags.csv", ["userId", "movieId", "tag", "timestamp"])
        tags = tdf.rename(columns={"userId": "user_id", "movieId": "item_id"})[["user_id", "item_id", "tag", "timestamp"]]
        tags = tags.assign(timestamp=_to_int64(tags["timestamp"], file=tlabel, column="timestamp"))
    catalog = _ml_catalog(movies["title"], movies["movieId"], movies["genres"], mlabel, tags)
    member = src.find("ratings.csv")
    check_interactions(src.estimate_rows(member), source=src.label(member))  # before reading: refuse rather than swap
    ratings, rlabel = _read_csv_member(src, "ratings.csv", ["userId", "movieId", "rating", "timestamp"])
    ratings = ratings.rename(columns={"userId": "user_id", "movieId": "item_id"})
    return Dataset(name, catalog, _build_interactions(ratings, rlabel, catalog), tag_events=tags)


def _load_ml_1m(src: _Source, name: str) -> Dataset:
    def dat(fname: str, cols: list[str]) -> tuple[pd.DataFrame, str]:
        member = src.find(fname)
        text = src.open_text(member, "latin-1").getvalue()
        rows = [line.split("::") for line in text.splitlines() if line.strip()]
        bad = next((i for i, r in enumerate(rows) if len(r) != len(cols)), None)
        if bad is not None:
            raise DataError(f"expected {len(cols)} '::'-separated fields", file=src.label(member), row=bad + 1)
        return pd.DataFrame(rows, columns=cols), src.label(member)

    movies, mlabel = dat("movies.dat", ["item_id", "title", "genres"])
    catalog = _ml_catalog(movies["title"], movies["item_id"], movies["genres"], mlabel)
    ratings, rlabel = dat("ratings.dat", ["user_id", "item_id", "rating", "timestamp"])
    users = None
    if src.find("users.dat"):
        u, _ = dat("users.dat", ["user_id", "gender", "age", "occupation", "zip"])
        users = u.set_index("user_id").drop(columns=["zip"])
    return Dataset(name, catalog, _build_interactions(ratings, rlabel, catalog), users)


_ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


def _load_ml_100k(src: _Source, name: str) -> Dataset:
    member = src.find("u.item")
    rows = [line.split("|") for line in src.open_text(member, "latin-1").getvalue().splitlines() if line.strip()]
    genres = ["|".join(g for g, flag in zip(_ML100K_GENRES, r[5:], strict=False) if flag.strip() == "1") for r in rows]
    catalog = _ml_catalog(
        pd.Series([r[1] for r in rows]), pd.Series([r[0] for r in rows]), pd.Series(genres), src.label(member)
    )
    dmember = src.find("u.data")
    ratings = pd.read_csv(
        src.open_text(dmember), sep="\t", names=["user_id", "item_id", "rating", "timestamp"], dtype=str
    )
    users = None
    if src.find("u.user"):
        users = (
            pd.read_csv(
                src.open_text(src.find("u.user")),
                sep="|",
                names=["user_id", "age", "gender", "occupation", "zip"],
                dtype=str,
            )
            .set_index("user_id")
            .drop(columns=["zip"])
        )
    return Dataset(name, catalog, _build_interactions(ratings, src.label(dmember), catalog), users)
