"""Loaders: the shipped MovieLens copy, the other MovieLens layouts, the generic format, bad files."""

from __future__ import annotations

import json
import zipfile

import pandas as pd
import pytest

from recagent.data import load_dataset, load_generic, load_movielens, read_table
from recagent.errors import DataError, EmptyInputError, UnknownIdError


def test_shipped_movielens(ml_small):
    assert len(ml_small.catalog) == 9742
    assert len(ml_small.interactions) == 100836
    assert len(ml_small.interactions.users) == 610
    toy = ml_small.catalog.get("1")
    assert toy["title"] == "Toy Story (1995)"
    assert toy["year"] == 1995
    assert "Animation" in toy["genres"]
    assert "pixar" in toy["tags"]
    hist = ml_small.interactions.user_frame("1")
    assert hist["timestamp"].is_monotonic_increasing
    assert set(ml_small.catalog.list_attributes) == {"genres", "tags"}


def test_unknown_ids_are_named(ml_small):
    with pytest.raises(UnknownIdError, match="'nope'"):
        ml_small.interactions.history("nope")
    with pytest.raises(UnknownIdError, match="item id"):
        ml_small.catalog.require(["1", "999999999"])


def test_movielens_zip_and_missing(tmp_path, ml_small):
    src = ml_small  # the folder copy is the reference
    zpath = tmp_path / "ml-latest-small.zip"
    from recagent.data import SHIPPED_DATASETS

    with zipfile.ZipFile(zpath, "w") as z:
        for f in ("movies.csv", "ratings.csv", "tags.csv"):
            z.write(SHIPPED_DATASETS["ml-latest-small"] / f, f"ml-latest-small/{f}")
    ds = load_movielens(zpath)
    assert len(ds.interactions) == len(src.interactions)
    assert ds.catalog.title("2") == src.catalog.title("2")
    with pytest.raises(DataError, match="not found"):
        load_movielens(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no MovieLens files"):
        load_movielens(tmp_path / "empty")


def test_ml_100k_and_1m_layouts(tmp_path):
    d100 = tmp_path / "ml-100k"
    d100.mkdir()
    genres = "|".join(["0"] * 19)
    (d100 / "u.item").write_text(
        f"1|Toy Story (1995)|01-Jan-1995||http://x|{genres[:-1]}1\n2|GoldenEye (1995)|01-Jan-1995||http://x|{genres}\n",
        encoding="latin-1",
    )
    (d100 / "u.data").write_text("1\t1\t5\t874965758\n1\t2\t3\t874965759\n2\t1\t4\t874965760\n")
    (d100 / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    ds = load_movielens(d100)
    assert ds.catalog.get("1")["genres"] == ["Western"]
    assert ds.interactions.history("1") == ["1", "2"]
    assert ds.profile("2") == {"age": "53", "gender": "F", "occupation": "other"}

    d1m = tmp_path / "ml-1m"
    d1m.mkdir()
    (d1m / "movies.dat").write_text(
        "1::Toy Story (1995)::Animation|Comedy\n2::Heat (1995)::Action\n", encoding="latin-1"
    )
    (d1m / "ratings.dat").write_text("7::2::4::978300760\n7::1::5::978300700\n")
    (d1m / "users.dat").write_text("7::F::1::10::48067\n")
    ds = load_movielens(d1m)
    assert ds.interactions.history("7") == ["1", "2"]  # chronological
    assert ds.profile("7")["gender"] == "F"
    (d1m / "ratings.dat").write_text("7::2::4\n")
    with pytest.raises(DataError, match=r"ratings.dat, row 1"):
        load_movielens(d1m)


def _write_generic(tmp_path, fmt: str):
    items = pd.DataFrame(
        {
            "item_id": ["p1", "p2", "p3"],
            "title": ["Trail shoe", "Road shoe", "Rain jacket"],
            "text": ["grippy", "light", "waterproof"],
            "brand": ["acme", "acme", "zeta"],
            "tags": [["trail", "running"], ["road"], ["rain"]],
            "price": [120.0, 90.0, 150.0],
        }
    )
    inter = pd.DataFrame(
        {"user_id": ["u1", "u1", "u2"], "item_id": ["p1", "p3", "p2"], "timestamp": [3, 1, 2], "rating": [5, 4, 3]}
    )
    if fmt == "csv":
        items = items.assign(tags=items["tags"].map("|".join))
        items.to_csv(tmp_path / "catalog.csv", index=False)
        inter.to_csv(tmp_path / "interactions.csv", index=False)
    elif fmt == "jsonl":
        (tmp_path / "catalog.jsonl").write_text("\n".join(json.dumps(r) for r in items.to_dict("records")))
        (tmp_path / "interactions.jsonl").write_text("\n".join(json.dumps(r) for r in inter.to_dict("records")))
    else:
        items.to_parquet(tmp_path / "catalog.parquet")
        inter.to_parquet(tmp_path / "interactions.parquet")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_generic_formats(tmp_path, fmt):
    _write_generic(tmp_path, fmt)
    ds = load_dataset(tmp_path)
    p1 = ds.catalog.get("p1")
    assert p1["brand"] == "acme"
    assert p1["tags"] == ["trail", "running"]
    assert p1["price"] == 120.0
    assert ds.catalog.list_attributes == ("tags",)
    assert ds.interactions.history("u1") == ["p3", "p1"]  # ordered by timestamp
    assert ds.catalog.search_title("SHOE") == ["p2", "p1"]  # shortest title first


def test_generic_users_and_iso_timestamps(tmp_path):
    (tmp_path / "catalog.csv").write_text("item_id,title\na,Alpha\nb,Beta\n")
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\nu,b,2024-01-02\nu,a,2024-01-01\n")
    (tmp_path / "users.csv").write_text("user_id,age,text\nu,31,likes quiet films\n")
    ds = load_dataset(tmp_path)
    assert ds.interactions.history("u") == ["a", "b"]
    assert ds.profile("u")["text"] == "likes quiet films"


def test_missing_timestamps_are_an_error_unless_file_order_is_asked_for(tmp_path, monkeypatch):
    (tmp_path / "catalog.csv").write_text("item_id,title\na,Alpha\nb,Beta\n")
    (tmp_path / "interactions.csv").write_text("user_id,item_id\nu,b\nu,a\n")
    monkeypatch.delenv("RECAGENT_FILE_ORDER", raising=False)
    with pytest.raises(DataError, match="no 'timestamp' column") as e:
        load_dataset(tmp_path)
    assert "RECAGENT_FILE_ORDER=1" in (e.value.hint or "")
    monkeypatch.setenv("RECAGENT_FILE_ORDER", "1")
    assert load_dataset(tmp_path).interactions.history("u") == ["b", "a"]  # the row order, as asked


@pytest.mark.parametrize(
    ("catalog", "interactions", "match"),
    [
        (
            "item_id,title\na,Alpha\na,Again\n",
            "user_id,item_id,timestamp\nu,a,1\n",
            r"catalog.csv, row 3, column 'item_id': duplicate item id 'a'",
        ),
        (
            "item_id,name\na,Alpha\n",
            "user_id,item_id,timestamp\nu,a,1\n",
            r"catalog.csv.*missing column\(s\) \['title'\]",
        ),
        (
            "item_id,title\na,Alpha\n",
            "user_id,item_id,timestamp\nu,a,1\nu,zz,2\n",
            r"interactions.csv, row 3, column 'item_id': item id 'zz' is not in the catalog",
        ),
        (
            "item_id,title\na,Alpha\n",
            "user_id,item_id,timestamp\nu,a,yesterday\n",
            r"interactions.csv, row 2, column 'timestamp'",
        ),
        (
            "item_id,title\na,Alpha\n",
            "user_id,item_id,timestamp,rating\nu,a,1,five\n",
            r"row 2, column 'rating': expected a number",
        ),
        ("item_id,title\na,Alpha\n", "user_id,item_id,timestamp\n,a,1\n", r"row 2, column 'user_id': empty id"),
        ("item_id,title\na,Alpha\n", "user_id,item_id,timestamp\n", r"no interactions"),
    ],
)
def test_bad_generic_files(tmp_path, catalog, interactions, match):
    (tmp_path / "catalog.csv").write_text(catalog)
    (tmp_path / "interactions.csv").write_text(interactions)
    with pytest.raises(DataError, match=match):
        load_generic(tmp_path / "interactions.csv", tmp_path / "catalog.csv")


def test_bad_jsonl_and_types(tmp_path):
    p = tmp_path / "catalog.jsonl"
    p.write_text('{"item_id": "a", "title": "A"}\n{not json}\n')
    with pytest.raises(DataError, match=r"catalog.jsonl, row 2: invalid JSON"):
        read_table(p)
    (tmp_path / "catalog.xlsx").write_text("")
    with pytest.raises(DataError, match="unsupported file type"):
        read_table(tmp_path / "catalog.xlsx")
    with pytest.raises(DataError, match="file not found"):
        read_table(tmp_path / "nope.csv")
    (tmp_path / "empty_catalog.csv").write_text("item_id,title\n")
    (tmp_path / "i.csv").write_text("user_id,item_id,timestamp\nu,a,1\n")
    with pytest.raises(EmptyInputError, match="catalog is empty"):
        load_generic(tmp_path / "i.csv", tmp_path / "empty_catalog.csv")


def test_unknown_dataset_name():
    with pytest.raises(DataError, match="data set not found"):
        load_dataset("ml-nonexistent")
