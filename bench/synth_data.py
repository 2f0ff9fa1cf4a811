"""Synthetic data sets in the generic format, of any size, for scale tests and benchmarks.

    .venv/bin/python bench/synth_data.py --out /tmp/synth-4m --users 40000 --items 20000 --per-user 100
    .venv/bin/python bench/synth_data.py --out /tmp/synth-1m --interactions 1000000 --format parquet

Writes ``interactions.<fmt>`` (``user_id``, ``item_id``, ``timestamp``, ``rating``) and
``catalog.<fmt>`` (``item_id``, ``title``, ``genres``, ``year``) that
``recagent.data.load_dataset(DIR)`` reads. Shape, so retrieval has something to find:

* item popularity is Zipf-like (rank ``r`` drawn with weight ``1 / r**zipf``);
* items belong to ``clusters`` (one genre each); a user prefers two clusters, the first in the
  first half of their timeline and the second after it (so "what comes next" differs from
  "what goes together"), and draws ``taste`` of their items from them, the rest globally;
* history lengths are log-normal around ``per_user`` (at least ``min_per_user``); a user
  interacts with an item at most once.

Users are generated in chunks and appended to the file, so memory stays flat at any size; the
same seed gives the same files.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["SynthConfig", "generate", "GENRES"]

GENRES = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir",
    "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western", "Biography", "Sport",
)  # fmt: skip
_WORDS = (
    "red", "silent", "last", "golden", "hidden", "broken", "lost", "wild", "dark", "bright", "secret", "final",
    "river", "city", "night", "garden", "storm", "road", "dream", "house", "star", "winter", "island", "machine",
)  # fmt: skip
_FORMATS = ("csv", "parquet", "jsonl")


@dataclass
class SynthConfig:
    users: int = 10_000
    items: int = 10_000
    per_user: float = 100.0
    """Mean history length (log-normal, sigma 0.8)."""
    min_per_user: int = 5
    zipf: float = 1.0
    """Popularity skew: item of popularity rank r is drawn with weight 1 / r**zipf."""
    clusters: int = 20
    taste: float = 0.6
    """Share of a user's items drawn from their preferred clusters."""
    seed: int = 0
    interactions: int | None = None
    """Stop after the user whose history reaches this total (``users`` is then an upper bound)."""
    chunk_users: int = 20_000
    fmt: str = "parquet"


def _zipf_cdf(n: int, s: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    return np.cumsum(w) / w.sum()


def _draw(cdf: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, rng.random(size)), len(cdf) - 1)


def catalog_frame(cfg: SynthConfig) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """(catalog, popularity order, cluster members): ``order[r]`` is the item code of popularity
    rank ``r``; ``members[c, r]`` the code of rank ``r`` inside cluster ``c``."""
    rng = np.random.default_rng([cfg.seed, 1])
    n, c = cfg.items, min(cfg.clusters, cfg.items)
    order = rng.permutation(n)  # popularity rank → item code
    m = n // c
    members = order[: m * c].reshape(m, c).T  # cluster c holds ranks c, c+C, ...: same skew in each
    cluster = np.empty(n, dtype=np.int64)
    cluster[order] = np.arange(n) % c
    words = np.array(_WORDS)
    w1, w2 = rng.integers(0, len(words), n), rng.integers(0, len(words), n)
    second = rng.integers(0, len(GENRES), n)
    genres = [
        GENRES[g % len(GENRES)] + ("" if GENRES[s] == GENRES[g % len(GENRES)] else "|" + GENRES[s])
        for g, s in zip(cluster.tolist(), second.tolist(), strict=True)
    ]
    ids = np.arange(1, n + 1)
    df = pd.DataFrame(
        {
            "item_id": ids.astype(str),
            "title": [
                f"The {a.title()} {b.title()} {i}" for a, b, i in zip(words[w1], words[w2], ids.tolist(), strict=True)
            ],
            "genres": genres,
            "year": rng.integers(1950, 2025, n),
        }
    )
    return df, order, members


def _user_chunk(cfg: SynthConfig, start: int, stop: int, order: np.ndarray, members: np.ndarray) -> pd.DataFrame:
    """Interactions of users ``start..stop-1`` (deterministic per chunk)."""
    rng = np.random.default_rng([cfg.seed, 2, start])
    nu = stop - start
    mu = np.log(max(cfg.per_user, 1.0)) - 0.32  # log-normal with sigma 0.8 has mean exp(mu + 0.32)
    lengths = np.clip(np.rint(rng.lognormal(mu, 0.8, nu)), cfg.min_per_user, cfg.items // 2).astype(np.int64)
    # oversample, then keep each user's first draw of an item and cut at the drawn length
    drawn = np.ceil(lengths * 1.5).astype(np.int64) + 5
    user = np.repeat(np.arange(nu), drawn)
    pos = np.arange(len(user)) - np.repeat(np.cumsum(drawn) - drawn, drawn)
    half = pos >= (np.repeat(lengths, drawn) // 2)
    fav = rng.integers(0, members.shape[0], (nu, 2))
    cl = fav[user, half.astype(np.int64)]
    from_taste = rng.random(len(user)) < cfg.taste
    item = order[_draw(_zipf_cdf(len(order), cfg.zipf), rng, len(user))]
    local = members[cl, _draw(_zipf_cdf(members.shape[1], cfg.zipf), rng, len(user))]
    item = np.where(from_taste, local, item)
    key = user * cfg.items + item
    _, first = np.unique(key, return_index=True)
    first.sort()
    user, item = user[first], item[first]
    rank = np.arange(len(user)) - np.searchsorted(user, user)  # position among the kept draws
    keep = rank < lengths[user]
    user, item = user[keep], item[keep]
    base = rng.integers(946_684_800, 1_700_000_000, nu)  # 2000..2023
    gaps = rng.exponential(86_400.0, len(user)).astype(np.int64) + 1
    starts = np.searchsorted(user, np.arange(nu))
    ts = np.cumsum(gaps)
    ts = ts - np.repeat(ts[starts] - gaps[starts], np.diff(np.append(starts, len(user)))) + base[user]
    rating = rng.integers(1, 11, len(user)) / 2.0
    return pd.DataFrame(
        {
            "user_id": (user + start + 1).astype(str),
            "item_id": (item + 1).astype(str),
            "timestamp": ts,
            "rating": rating,
        }
    )


def _writer(path: Path, fmt: str):
    """A function appending DataFrames to ``path``, and a close function."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        state: dict = {}

        def write(df: pd.DataFrame) -> None:
            table = pa.Table.from_pandas(df, preserve_index=False)
            if "w" not in state:
                state["w"] = pq.ParquetWriter(path, table.schema)
            state["w"].write_table(table)

        return write, lambda: state["w"].close() if "w" in state else None
    first = [True]

    def write_text(df: pd.DataFrame) -> None:
        mode = "w" if first[0] else "a"
        if fmt == "csv":
            df.to_csv(path, mode=mode, header=first[0], index=False)
        else:
            with open(path, mode, encoding="utf-8") as f:
                df.to_json(f, orient="records", lines=True)
        first[0] = False

    return write_text, lambda: None


def generate(cfg: SynthConfig, out: str | Path) -> dict:
    """Write the data set to folder ``out``; returns its counts and the config (also ``synth.json``)."""
    if cfg.fmt not in _FORMATS:
        raise ValueError(f"format {cfg.fmt!r}: use one of {_FORMATS}")
    if cfg.users < 1 or cfg.items < 2 * cfg.min_per_user or cfg.per_user <= 0:
        raise ValueError("need users >= 1, items >= 2 * min_per_user and per_user > 0")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    catalog, order, members = catalog_frame(cfg)
    cat_path = out / f"catalog.{cfg.fmt}"
    write_cat, close_cat = _writer(cat_path, cfg.fmt)
    write_cat(catalog.assign(genres=catalog["genres"].str.split("|")) if cfg.fmt != "csv" else catalog)
    close_cat()
    write, close = _writer(out / f"interactions.{cfg.fmt}", cfg.fmt)
    total = users = 0
    for start in range(0, cfg.users, cfg.chunk_users):
        df = _user_chunk(cfg, start, min(start + cfg.chunk_users, cfg.users), order, members)
        if cfg.interactions is not None and total + len(df) >= cfg.interactions:
            # cut after the user whose last interaction reaches the target
            last = df["user_id"].iloc[cfg.interactions - total - 1]
            df = df.iloc[: int(np.flatnonzero((df["user_id"] == last).to_numpy())[-1]) + 1]
        total += len(df)
        users += df["user_id"].nunique()
        write(df)
        if cfg.interactions is not None and total >= cfg.interactions:
            break
    close()
    info = {"config": asdict(cfg), "users": users, "items": cfg.items, "interactions": total,
            "seconds": round(time.perf_counter() - t0, 2)}  # fmt: skip
    (out / "synth.json").write_text(json.dumps(info, indent=2))
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    ap.add_argument(
        "--interactions", type=int, default=None, help="stop at this total (--users becomes an upper bound)"
    )
    ap.add_argument("--users", type=int, default=SynthConfig.users)
    ap.add_argument("--items", type=int, default=SynthConfig.items)
    ap.add_argument("--per-user", type=float, default=SynthConfig.per_user)
    ap.add_argument("--zipf", type=float, default=SynthConfig.zipf)
    ap.add_argument("--clusters", type=int, default=SynthConfig.clusters)
    ap.add_argument("--taste", type=float, default=SynthConfig.taste)
    ap.add_argument("--seed", type=int, default=SynthConfig.seed)
    ap.add_argument("--format", dest="fmt", choices=_FORMATS, default=SynthConfig.fmt)
    a = ap.parse_args()
    users = a.users if a.interactions is None else max(a.users, 2 * round(a.interactions / a.per_user))
    cfg = SynthConfig(users=users, interactions=a.interactions, items=a.items, per_user=a.per_user, zipf=a.zipf, clusters=a.clusters,
                      taste=a.taste, seed=a.seed, fmt=a.fmt)  # fmt: skip
    print(json.dumps(generate(cfg, a.out)))


if __name__ == "__main__":
    main()
