"""Reading CSV / JSONL / Parquet files and the generic format; every error names file, row and column."""

from __future__ import annotations

import gzip
import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .budget import check_interactions
from .tables import Catalog, Dataset, Interactions

__all__ = ["read_table", "iter_jsonl", "load_generic", "estimate_rows"]


LIST_SEP = "|"
_YEAR_RE = re.compile(r"\((\d{4})\)\s*$")
# ----------------------------------------------------------------------------------------
# reading files


def read_table(path: str | Path, *, required: Iterable[str] = (), sep: str | None = None) -> pd.DataFrame:
    """Read a CSV / JSONL / Parquet file, checking that ``required`` columns exist."""
    path = Path(path)
    if not path.exists():
        raise DataError(
            "file not found", file=str(path), hint="pass the path of an existing CSV, JSONL or Parquet file"
        )
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


def estimate_rows(path: str | Path, sample: bytes | None = None, size: int | None = None) -> int | None:
    """Rows of a table file without reading it: Parquet metadata, or for CSV / JSONL the size
    over the mean line length of the first MB (``sample`` and ``size`` for a zip member);
    ``None`` for compressed text, which cannot be sized this way."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return None
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except (OSError, ValueError):
            return None  # read_table reports the broken file with its own message
    if sample is None:
        with open(path, "rb") as f:
            sample = f.read(2**20)
        size = path.stat().st_size
    lines = sample.count(b"\n")
    return int(size * lines / len(sample)) if lines else 1


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
        raise DataError(f"expected an integer, got {values.iloc[i]!r}", file=file, row=i + row_offset, column=column)
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
    three = (s.str.len() == 3).to_numpy()  # lower-case only cells that can be "nan": no copy of every id
    nan_text = np.zeros(len(s), dtype=bool)
    nan_text[three] = (s[three].str.lower() == "nan").to_numpy()
    empty = (s == "") | nan_text | values.isna()
    if empty.any():
        i = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataError("empty id", file=file, row=i + row_offset, column=column)
    return s


def _split_list(v: Any) -> list[str]:
    if isinstance(v, (list, tuple, np.ndarray)):
        return [str(x) for x in v if str(x)]
    if v is None or (isinstance(v, float) and np.isnan(v)) or v == "":
        return []
    return [p.strip() for p in str(v).split(LIST_SEP) if p.strip()]


FILE_ORDER_ENV = "RECAGENT_FILE_ORDER"


def file_order_allowed() -> bool:
    """Whether an interactions file without timestamps may use its row order as time (opt-in)."""
    return os.environ.get(FILE_ORDER_ENV, "").strip().lower() in ("1", "true", "yes")


def _build_interactions(df: pd.DataFrame, file: str, catalog: Catalog | None) -> Interactions:
    # the split is chronological: silently using the file order would change every result
    if "timestamp" not in df and not file_order_allowed():
        raise DataError("no 'timestamp' column: the leave-one-out split needs each interaction's time",
                        file=file, column="timestamp",
                        hint=f"add timestamp (int seconds or ISO date), or set {FILE_ORDER_ENV}=1 to take the row order as time")  # fmt: skip
    out = pd.DataFrame(
        {
            "user_id": _check_ids(df["user_id"], file=file, column="user_id"),
            "item_id": _check_ids(df["item_id"], file=file, column="item_id"),
            "timestamp": _to_int64(df["timestamp"], file=file, column="timestamp")
            if "timestamp" in df
            else np.arange(len(df), dtype="int64"),
            "rating": _to_float(
                df["rating"].astype(str) if "rating" in df and df["rating"].dtype == object else df["rating"],
                file=file,
                column="rating",
            )
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
        if (
            col in lists
            or col in ("title", "text", "year")
            or items[col].dtype != object
            and str(items[col].dtype) != "str"
        ):
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
    rows = estimate_rows(interactions)
    if rows is not None:
        check_interactions(rows, source=str(interactions))  # before reading: refuse rather than swap
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
