"""Catalog, interactions and user profiles for any item domain, and their loaders.

Ids are strings everywhere in the public API (MovieLens' integer ids become ``"1"``, ``"2"``...).

The generic format (any domain: movies, products, news, music) is three tables, each a CSV,
JSONL or Parquet file:

* interactions: ``user_id``, ``item_id``, ``timestamp`` (int seconds or ISO date), optional
  ``rating`` (float);
* catalog: ``item_id``, ``title``, optional ``text`` (free description), optional ``year`` and
  any other attribute columns. List attributes (``genres``, ``tags``, ``brand``...) are lists in
  JSONL/Parquet, or ``|``-separated strings in CSV;
* users (optional): ``user_id`` and any of ``age``, ``gender``, ``occupation``, ``text``.

>>> ds = load_dataset("ml-latest-small")          # the copy shipped in data/
>>> ds.catalog.title("1")
'Toy Story (1995)'
>>> ds.interactions.history("1")[:3]              # chronological item ids
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .errors import DataError, EmptyInputError, UnknownIdError

__all__ = [
    "Catalog",
    "Interactions",
    "Dataset",
    "load_dataset",
    "load_movielens",
    "load_generic",
    "read_table",
    "iter_jsonl",
    "as_list",
    "as_year",
    "DATA_DIR",
    "SHIPPED_DATASETS",
]

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SHIPPED_DATASETS = {"ml-latest-small": DATA_DIR / "ml-latest-small"}
LIST_SEP = "|"
_YEAR_RE = re.compile(r"\((\d{4})\)\s*$")


@dataclass
class Catalog:
    """Items indexed by string id: ``title``, ``text``, ``year`` and attribute columns.

    ``list_attributes`` names the columns whose cells are lists of strings (genres, tags...).
    """

    items: pd.DataFrame
    list_attributes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.items) == 0:
            raise EmptyInputError(
                "the catalog is empty", hint="load a catalog with at least one item"
            )
        self.items.index = self.items.index.astype(str)
        self.items.index.name = "item_id"
        for col in ("title", "text"):
            if col not in self.items:
                self.items[col] = ""
        self.items["title"] = self.items["title"].fillna("").astype(str)
        self.items["text"] = self.items["text"].fillna("").astype(str)

    def __len__(self) -> int:
        return len(self.items)

    def __contains__(self, item_id: object) -> bool:
        return str(item_id) in self.items.index

    @property
    def ids(self) -> list[str]:
        return self.items.index.tolist()

    @property
    def attributes(self) -> list[str]:
        """Filterable attribute columns (everything but title and text)."""
        return [c for c in self.items.columns if c not in ("title", "text")]

    def require(self, item_ids: Iterable[str]) -> list[str]:
        """Return the ids as strings, raising :class:`UnknownIdError` for any not in the catalog."""
        ids = [str(i) for i in item_ids]
        missing = [i for i in ids if i not in self.items.index]
        if missing:
            raise UnknownIdError("item", missing, hint="use ids from the catalog (see /items or `recagent search`)")
        return ids

    def get(self, item_id: str) -> dict[str, Any]:
        """All fields of one item as plain Python values."""
        (item_id,) = self.require([item_id])
        row = self.items.loc[item_id]
        out: dict[str, Any] = {"item_id": item_id}
        for col, val in row.items():
            out[col] = _plain(val)
        return out

    def title(self, item_id: str) -> str:
        return str(self.items.at[str(item_id), "title"])

    def view(self, item_id: str) -> dict[str, Any]:
        """What prompts and answers show of an item: ``item_id``, ``title``, ``year``, ``genres``, ``tags``."""
        row = self.items.loc[str(item_id)]
        return {
            "item_id": str(item_id),
            "title": row["title"] or str(item_id),
            "year": as_year(row.get("year")),
            "genres": as_list(row.get("genres")),
            "tags": as_list(row.get("tags")),
        }

    def describe(self, item_id: str) -> str:
        """The text that represents an item for content embeddings: title, attributes, text."""
        row = self.items.loc[str(item_id)]
        parts = [row["title"]]
        for col in self.list_attributes:
            vals = row[col]
            if isinstance(vals, (list, tuple, np.ndarray)) and len(vals):
                parts.append(f"{col}: {', '.join(map(str, vals))}")
        if row["text"]:
            parts.append(row["text"])
        return ". ".join(parts)

    def search_title(self, query: str, limit: int = 5) -> list[str]:
        """Item ids whose title contains ``query`` (case-insensitive), shortest titles first."""
        q = query.strip().lower()
        if not q:
            return []
        titles = self.items["title"].str.lower()
        hits = titles[titles.str.contains(q, regex=False)]
        return hits.str.len().sort_values(kind="stable").index[:limit].tolist()


@dataclass
class Interactions:
    """User–item events: ``user_id``, ``item_id`` (str), ``timestamp`` (int64), ``rating`` (float, NaN if absent)."""

    df: pd.DataFrame
    _by_user: dict[str, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.df = self.df.sort_values(["user_id", "timestamp", "item_id"], kind="stable").reset_index(drop=True)
        if len(self.df):
            groups = self.df.groupby("user_id", sort=False).indices
            self._by_user = {u: idx for u, idx in groups.items()}

    def __len__(self) -> int:
        return len(self.df)

    @property
    def users(self) -> list[str]:
        return list(self._by_user)

    def __contains__(self, user_id: object) -> bool:
        return str(user_id) in self._by_user

    def history(self, user_id: str) -> list[str]:
        """The user's item ids, oldest first."""
        return self.user_frame(user_id)["item_id"].tolist()

    def user_frame(self, user_id: str) -> pd.DataFrame:
        """The user's events, oldest first."""
        idx = self._by_user.get(str(user_id))
        if idx is None:
            raise UnknownIdError(
                "user", [user_id], hint="use a user id from the interactions, or pass a history/profile for a new user"
            )
        return self.df.iloc[idx]


@dataclass
class Dataset:
    """A catalog, its interactions and optional user profiles (indexed by user id)."""

    name: str
    catalog: Catalog
    interactions: Interactions
    users: pd.DataFrame | None = None

    def profile(self, user_id: str) -> dict[str, Any]:
        """Profile fields of a user (empty when the data has none)."""
        if self.users is None or str(user_id) not in self.users.index:
            return {}
        return {k: _plain(v) for k, v in self.users.loc[str(user_id)].items() if not _is_missing(v)}


# ----------------------------------------------------------------------------------------
# reading files


def read_table(path: str | Path, *, required: Iterable[str] = (), sep: str | None = None) -> pd.DataFrame:
    """Read a CSV / JSONL / Parquet file, checking that ``required`` columns exist."""
    path = Path(path)
    if not path.exists():
        raise DataError("file not found", file=str(path), hint="pass the path of an existing CSV, JSONL or Parquet file")
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()
    try:
        if suffix in (".csv", ".csv.gz", ".tsv"):
            df = pd.read_csv(path, sep=sep or ("\t" if suffix == ".tsv" else ","), dtype=str, keep_default_na=False)
        elif suffix in (".jsonl", ".json", ".jsonl.gz", ".ndjson"):
            df = _read_jsonl(path)
        elif suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            raise DataError(
                f"unsupported file type {path.suffix!r}", file=str(path), hint="use .csv, .tsv, .jsonl or .parquet"
            )
    except DataError:
        raise
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
        raise DataError(f"cannot parse: {e}", file=str(path)) from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(
            f"missing column(s) {missing}; found {list(df.columns)}",
            file=str(path),
            column=missing[0],
            hint=f"the file needs columns {list(required)}",
        )
    return df


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-empty line of a JSONL file (``.gz`` too); a bad line is a
    DataError naming it."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"invalid JSON ({e.msg})", file=str(path), row=lineno) from e
            if not isinstance(obj, dict):
                raise DataError("each line must be a JSON object", file=str(path), row=lineno)
            yield lineno, obj


def _read_jsonl(path: Path) -> pd.DataFrame:
    return pd.DataFrame([obj for _, obj in iter_jsonl(path)])


def _to_int64(values: pd.Series, *, file: str, column: str, row_offset: int = 2) -> np.ndarray:
    """Parse ints (or ISO dates for timestamps); the first bad cell is named in the error."""
    num = pd.to_numeric(values, errors="coerce")
    bad = num.isna() & values.notna()
    if bad.any() and column == "timestamp":
        dates = pd.to_datetime(values[bad], errors="coerce", utc=True)
        num = num.astype("float64")
        num[bad] = dates.astype("int64", errors="ignore") // 10**9 if dates.notna().all() else np.nan
        bad = num.isna()
    if bad.any() or num.isna().any():
        i = int(np.flatnonzero((num.isna()).to_numpy())[0])
        raise DataError(
            f"expected an integer, got {values.iloc[i]!r}", file=file, row=i + row_offset, column=column
        )
    return num.astype("int64").to_numpy()


def _to_float(values: pd.Series, *, file: str, column: str, row_offset: int = 2) -> np.ndarray:
    s = values.replace("", np.nan)
    num = pd.to_numeric(s, errors="coerce")
    bad = num.isna() & s.notna()
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"expected a number, got {values.iloc[i]!r}", file=file, row=i + row_offset, column=column)
    return num.astype("float64").to_numpy()


def _check_ids(values: pd.Series, *, file: str, column: str, row_offset: int = 2) -> pd.Series:
    s = values.astype(str).str.strip()
    empty = (s == "") | (s.str.lower() == "nan") | values.isna()
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataError("empty id", file=file, row=i + row_offset, column=column)
    return s


def as_list(v: Any) -> list[str]:
    """A list cell as strings; anything that is not a list (missing, NaN) is ``[]``."""
    return [str(x) for x in v] if isinstance(v, (list, tuple, np.ndarray)) else []


def as_year(v: Any) -> int | None:
    """A year cell as an int, ``None`` when missing or not a number."""
    try:
        return None if v is None or pd.isna(v) else int(v)
    except (TypeError, ValueError):
        return None


def _split_list(v: Any) -> list[str]:
    if isinstance(v, (list, tuple, np.ndarray)):
        return [str(x) for x in v if str(x)]
    if v is None or (isinstance(v, float) and np.isnan(v)) or v == "":
        return []
    return [p.strip() for p in str(v).split(LIST_SEP) if p.strip()]


def _plain(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if _is_missing(v):
        return None
    return v


def _is_missing(v: Any) -> bool:
    try:
        return bool(pd.isna(v)) if not isinstance(v, (list, tuple, np.ndarray)) else False
    except (TypeError, ValueError):
        return False


def _build_interactions(df: pd.DataFrame, file: str, catalog: Catalog | None) -> Interactions:
    out = pd.DataFrame(
        {
            "user_id": _check_ids(df["user_id"], file=file, column="user_id"),
            "item_id": _check_ids(df["item_id"], file=file, column="item_id"),
            "timestamp": _to_int64(df["timestamp"], file=file, column="timestamp")
            if "timestamp" in df
            else np.arange(len(df), dtype="int64"),
            "rating": _to_float(df["rating"].astype(str) if "rating" in df and df["rating"].dtype == object else df["rating"], file=file, column="rating")
            if "rating" in df
            else np.full(len(df), np.nan),
        }
    )
    if len(out) == 0:
        raise DataError("no interactions", file=file, hint="the interactions file needs at least one row")
    if catalog is not None:
        unknown = ~out["item_id"].isin(catalog.items.index)
        if unknown.any():
            i = int(np.flatnonzero(unknown.to_numpy())[0])
            raise DataError(
                f"item id {out['item_id'].iloc[i]!r} is not in the catalog ({int(unknown.sum())} such rows)",
                file=file,
                row=i + 2,
                column="item_id",
                hint="add the item to the catalog or drop these interactions",
            )
    return Interactions(out)


def _build_catalog(df: pd.DataFrame, file: str, list_columns: Iterable[str] = ("genres", "tags")) -> Catalog:
    ids = _check_ids(df["item_id"], file=file, column="item_id")
    dup = ids.duplicated(keep="first")
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise DataError(
            f"duplicate item id {ids.iloc[i]!r}", file=file, row=i + 2, column="item_id", hint="item ids must be unique"
        )
    items = df.drop(columns=["item_id"]).copy()
    items.index = pd.Index(ids, name="item_id")
    lists = []
    for col in items.columns:
        if col in list_columns or items[col].map(lambda v: isinstance(v, (list, tuple, np.ndarray))).any():
            items[col] = items[col].map(_split_list)
            lists.append(col)
    for col in items.columns:
        if col in lists or col in ("title", "text", "year") or items[col].dtype != object and str(items[col].dtype) != "str":
            continue
        # CSV cells arrive as strings: numeric attributes (price, duration...) become numbers for range filters
        vals = items[col].replace("", np.nan)
        num = pd.to_numeric(vals, errors="coerce")
        if vals.notna().any() and (num.notna() == vals.notna()).all():
            items[col] = num
    if "year" in items:
        items["year"] = pd.to_numeric(items["year"].replace("", np.nan), errors="coerce").astype("Int64")
    elif "title" in items:
        items["year"] = items["title"].astype(str).str.extract(_YEAR_RE)[0].astype("Int64")
    return Catalog(items, tuple(lists))


def load_generic(
    interactions: str | Path, catalog: str | Path, users: str | Path | None = None, *, name: str | None = None
) -> Dataset:
    """Load the generic format described in the module docstring."""
    cat_df = read_table(catalog, required=["item_id", "title"])
    cat = _build_catalog(cat_df, str(catalog))
    int_df = read_table(interactions, required=["user_id", "item_id"])
    inter = _build_interactions(int_df, str(interactions), cat)
    prof = None
    if users is not None:
        u = read_table(users, required=["user_id"])
        u.index = _check_ids(u.pop("user_id"), file=str(users), column="user_id")
        if u.index.duplicated().any():
            i = int(np.flatnonzero(u.index.duplicated())[0])
            raise DataError(f"duplicate user id {u.index[i]!r}", file=str(users), row=i + 2, column="user_id")
        prof = u
    return Dataset(name or Path(interactions).parent.name, cat, inter, prof)


# ----------------------------------------------------------------------------------------
# MovieLens


class _Source:
    """A folder or a zip file, read by member name wherever the member sits."""

    def __init__(self, path: Path):
        self.path = path
        self.zip = zipfile.ZipFile(path) if path.is_file() and zipfile.is_zipfile(path) else None
        if path.is_file() and self.zip is None:
            raise DataError("not a folder or zip file", file=str(path), hint="point at an unpacked MovieLens folder or its .zip")

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

    def label(self, member: str) -> str:
        return f"{self.path}:{member}" if self.zip is not None else member


def load_movielens(path: str | Path | None = None) -> Dataset:
    """Load a MovieLens release from a folder or zip: latest-small/latest/20m/25m/32m, 100k or 1m."""
    path = Path(path) if path is not None else SHIPPED_DATASETS["ml-latest-small"]
    if not path.exists():
        raise DataError(
            "MovieLens path not found", file=str(path), hint="pass the unpacked folder or the .zip as downloaded from GroupLens"
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
        hint="point at a MovieLens release; for other data use the generic format (load_generic)",
    )


def _read_csv_member(src: _Source, name: str, required: list[str], **kw) -> tuple[pd.DataFrame, str]:
    member = src.find(name)
    label = src.label(member)
    try:
        df = pd.read_csv(src.open_text(member, kw.pop("encoding", "utf-8")), dtype=str, keep_default_na=False, **kw)
    except (pd.errors.ParserError, ValueError) as e:
        raise DataError(f"cannot parse: {e}", file=label) from e
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"missing column(s) {missing}; found {list(df.columns)}", file=label, column=missing[0])
    return df, label


def _ml_catalog(titles: pd.Series, ids: pd.Series, genres: pd.Series, label: str, tags: pd.DataFrame | None = None) -> Catalog:
    df = pd.DataFrame({"item_id": ids, "title": titles, "genres": genres.str.replace("(no genres listed)", "", regex=False)})
    if tags is not None and len(tags):
        # the 10 most frequent tags per movie, lower-cased: attributes for filters and the knowledge graph
        t = tags.assign(tag=tags["tag"].str.strip().str.lower())
        t = t[t["tag"] != ""].groupby(["item_id", "tag"]).size().rename("n").reset_index()
        t = t.sort_values(["item_id", "n", "tag"], ascending=[True, False, True]).groupby("item_id").head(10)
        tag_lists = t.groupby("item_id")["tag"].agg(list)
        df["tags"] = df["item_id"].map(tag_lists).map(lambda v: v if isinstance(v, list) else [])
    return _build_catalog(df, label)


def _load_ml_csv(src: _Source, name: str) -> Dataset:
    movies, mlabel = _read_csv_member(src, "movies.csv", ["movieId", "title", "genres"])
    tags = None
    if src.find("tags.csv"):
        tdf, _ = _read_csv_member(src, "tags.csv", ["movieId", "tag"])
        tags = tdf.rename(columns={"movieId": "item_id"})[["item_id", "tag"]]
    catalog = _ml_catalog(movies["title"], movies["movieId"], movies["genres"], mlabel, tags)
    ratings, rlabel = _read_csv_member(src, "ratings.csv", ["userId", "movieId", "rating", "timestamp"])
    ratings = ratings.rename(columns={"userId": "user_id", "movieId": "item_id"})
    return Dataset(name, catalog, _build_interactions(ratings, rlabel, catalog))


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
        users = pd.read_csv(
            src.open_text(src.find("u.user")), sep="|", names=["user_id", "age", "gender", "occupation", "zip"], dtype=str
        ).set_index("user_id").drop(columns=["zip"])
    return Dataset(name, catalog, _build_interactions(ratings, src.label(dmember), catalog), users)


def load_dataset(spec: str | Path = "ml-latest-small") -> Dataset:
    """Load by name (``ml-latest-small``, shipped) or by path (a MovieLens folder/zip, or a
    folder holding ``interactions.*``, ``catalog.*`` and optionally ``users.*`` in the generic format)."""
    if str(spec) in SHIPPED_DATASETS:
        return load_movielens(SHIPPED_DATASETS[str(spec)])
    path = Path(spec)
    if not path.exists():
        raise DataError(
            "data set not found",
            file=str(path),
            hint=f"pass one of {sorted(SHIPPED_DATASETS)} or a path to a MovieLens folder/zip or a generic-format folder",
        )
    if path.is_dir():
        found = {
            stem: next((p for p in sorted(path.iterdir()) if p.name.split(".")[0] == stem), None)
            for stem in ("interactions", "catalog", "users")
        }
        if found["interactions"] is not None and found["catalog"] is not None:
            return load_generic(found["interactions"], found["catalog"], found["users"], name=path.name)
    return load_movielens(path)
