"""Dataset adapters: exact mappings on small files of each published layout, and every error."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from data_modules.adapters import (
    CrowdFlowerSource,
    EsciSource,
    HomeDepotSource,
    LogsSource,
    MixSource,
)
from data_modules.adapters.esci import EXAMPLES_FILE, PRODUCTS_FILE
from data_modules.adapters.esci_sample import write_esci_sample
from data_modules.datamodule import ListwiseDataModule
from data_modules.errors import ConfigError, DataValidationError

# --------------------------------------------------------------------------- ESCI


@pytest.fixture
def esci_dir(tmp_path: Path) -> Path:
    return write_esci_sample(tmp_path / "esci")


def rewrite(path: Path, change) -> None:
    change(pl.read_parquet(path)).write_parquet(path)


def test_esci_maps_labels_locales_and_product_text(esci_dir: Path) -> None:
    table = EsciSource(esci_dir).load()
    # 3 locales x 8 queries x 6 products, minus the two large-version-only queries (us, es).
    assert table.height == (3 * 8 - 2) * 6
    assert sorted(table.get_column("region").unique()) == ["es", "jp", "us"]
    by_label = table.group_by("esci_label").agg(
        pl.col("relevance").unique(), pl.col("grade").unique()
    )
    got = {r["esci_label"]: (r["relevance"], r["grade"]) for r in by_label.iter_rows(named=True)}
    assert got == {"E": ([1.0], [3]), "S": ([0.1], [2]), "C": ([0.01], [1]), "I": ([0.0], [0])}
    assert table.schema["query_id"] == pl.Utf8
    # The join is on (product_locale, product_id): every row carries its own product's text.
    products = pl.read_parquet(esci_dir / PRODUCTS_FILE)
    expected = dict(zip(products["product_id"], products["product_bullet_point"], strict=True))
    for row in table.head(12).iter_rows(named=True):
        assert row["product_bullet_point"] == expected[row["product_id"]]
    assert {"product_brand", "product_color", "product_description", "split"} <= set(table.columns)


def test_esci_small_version_and_locale_filters(esci_dir: Path) -> None:
    assert EsciSource(esci_dir, small_version=False).load().height == 3 * 8 * 6
    us = EsciSource(esci_dir, locales=["us"]).load()
    assert us.get_column("region").unique().to_list() == ["us"]
    assert us.height == 7 * 6
    with pytest.raises(ConfigError, match=r"locales.*\['fr'\].*present: \['es', 'jp', 'us'\]"):
        EsciSource(esci_dir, locales=["us", "fr"]).load()


def test_esci_official_gains_can_be_chosen(esci_dir: Path) -> None:
    official = {"E": 1.0, "S": 0.01, "C": 0.1, "I": 0.0}
    table = EsciSource(esci_dir, gains=official).load()
    pairs = set(table.select("esci_label", "relevance").unique().iter_rows())
    assert pairs == {("E", 1.0), ("S", 0.01), ("C", 0.1), ("I", 0.0)}
    with pytest.raises(ConfigError, match=r"gains must give a gain for each of E, S, C, I"):
        EsciSource(esci_dir, gains={"E": 1.0, "S": 0.1})
    with pytest.raises(ConfigError, match=r"gains must lie in \[0, 1\]"):
        EsciSource(esci_dir, gains={"E": 3.0, "S": 0.1, "C": 0.01, "I": 0.0})


def test_esci_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match=f"{EXAMPLES_FILE}: file does not exist"):
        EsciSource(tmp_path).load()
    with pytest.raises(ConfigError, match=r"data.source.path"):
        EsciSource("???")


def test_esci_missing_column_is_named(esci_dir: Path) -> None:
    rewrite(esci_dir / EXAMPLES_FILE, lambda df: df.drop("esci_label"))
    with pytest.raises(DataValidationError, match=f"{EXAMPLES_FILE}: missing .*'esci_label'"):
        EsciSource(esci_dir).load()


def test_esci_bad_label_names_file_column_and_row(esci_dir: Path) -> None:
    def corrupt(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(
            pl.when(pl.col("example_id") == 7)
            .then(pl.lit("X"))
            .otherwise("esci_label")
            .alias("esci_label")
        )

    rewrite(esci_dir / EXAMPLES_FILE, corrupt)
    with pytest.raises(
        DataValidationError,
        match=rf"{EXAMPLES_FILE}: column 'esci_label' has 1 values outside .* \(first at row 7\)",
    ):
        EsciSource(esci_dir).load()


def test_esci_bad_split_value_is_named(esci_dir: Path) -> None:
    rewrite(esci_dir / EXAMPLES_FILE, lambda df: df.with_columns(pl.lit("dev").alias("split")))
    with pytest.raises(DataValidationError, match=r"column 'split' has 144 values outside"):
        EsciSource(esci_dir).load()


def test_esci_example_without_product_is_an_error(esci_dir: Path) -> None:
    rewrite(esci_dir / PRODUCTS_FILE, lambda df: df.filter(pl.col("product_id") != "BUS000001"))
    with pytest.raises(DataValidationError, match=r"1 examples have no .* \(first at row 1\)"):
        EsciSource(esci_dir).load()


def test_esci_duplicated_product_is_an_error(esci_dir: Path) -> None:
    rewrite(esci_dir / PRODUCTS_FILE, lambda df: pl.concat([df, df.head(1)]))
    with pytest.raises(DataValidationError, match=r"repeating a .product_id, product_locale."):
        EsciSource(esci_dir).load()


def test_esci_untitled_products_are_dropped_and_reported(esci_dir: Path) -> None:
    def untitle(df: pl.DataFrame) -> pl.DataFrame:
        return df.with_columns(
            pl.when(pl.col("product_id").is_in(["BUS000000", "BES000801"]))
            .then(pl.lit(None, dtype=pl.Utf8))
            .otherwise("product_title")
            .alias("product_title")
        )

    rewrite(esci_dir / PRODUCTS_FILE, untitle)
    source = EsciSource(esci_dir)
    assert source.load().height == (3 * 8 - 2) * 6 - 2
    assert source.report.dropped == {"products without a title": (2, 2)}


# --------------------------------------------------------------------------- Home Depot

HOMEDEPOT_CSV = (
    "id,product_uid,product_title,search_term,relevance\n"
    "2,100001,Simpson Strong-Tie 12-Gauge Angle,angle bracket,3.0\n"
    "3,100001,Simpson Strong-Tie 12-Gauge Angle,l bracket,2.5\n"
    "4,100002,Briggs &amp; Stratton Mower,angle bracket,1.0\n"
    "5,100003,Caf\u00e9 Table,l bracket,2.33\n"
    "6,100003,Caf\u00e9 Table,l bracket,2.67\n"
)


def write(path: Path, content: str, encoding: str = "latin-1") -> Path:
    path.write_bytes(content.encode(encoding))
    return path


def test_homedepot_gains_ids_text_and_merged_duplicates(tmp_path: Path) -> None:
    source = HomeDepotSource(write(tmp_path / "train.csv", HOMEDEPOT_CSV), region="hd")
    table = source.load()
    assert table.columns[:6] == [
        "query_id", "query", "product_id", "product_title", "region", "relevance"
    ]  # fmt: skip
    rows = {(r["query_id"], r["product_id"]): r for r in table.iter_rows(named=True)}
    assert sorted(rows) == [
        ("angle bracket", "100001"),
        ("angle bracket", "100002"),
        ("l bracket", "100001"),
        ("l bracket", "100003"),
    ]
    assert rows[("angle bracket", "100001")]["relevance"] == 1.0
    assert rows[("angle bracket", "100002")]["relevance"] == 0.0
    assert rows[("l bracket", "100001")]["relevance"] == 0.75
    # Two ratings of one pair, averaged: (2.33 + 2.67) / 2 = 2.5 -> gain 0.75.
    assert rows[("l bracket", "100003")]["rating"] == pytest.approx(2.5)
    assert rows[("l bracket", "100003")]["relevance"] == pytest.approx(0.75)
    assert rows[("angle bracket", "100002")]["product_title"] == "Briggs & Stratton Mower"
    assert rows[("l bracket", "100003")]["product_title"] == "Caf\u00e9 Table"  # latin-1 read
    assert set(table.get_column("region")) == {"hd"}
    assert source.report.dropped == {
        "repeated (query, product) rows merged, ratings averaged": (1, 1)
    }


@pytest.mark.parametrize(
    ("value", "what"),
    [("3.5", r"labels outside \[1, 3\]"), ("", "missing or NaN labels"), ("high", "non-numeric")],
)
def test_homedepot_bad_rating_names_file_column_and_row(tmp_path: Path, value, what) -> None:
    content = HOMEDEPOT_CSV.replace("l bracket,2.5", f"l bracket,{value}")
    path = write(tmp_path / "train.csv", content)
    with pytest.raises(
        DataValidationError, match=rf"train.csv: column 'relevance' has 1 {what}.*first at row 1\)"
    ):
        HomeDepotSource(path).load()


def test_homedepot_missing_column_file_and_encoding(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", HOMEDEPOT_CSV.replace("search_term", "query"))
    with pytest.raises(DataValidationError, match=r"missing required column.*'search_term'"):
        HomeDepotSource(path).load()
    with pytest.raises(DataValidationError, match=r"nope.csv: file does not exist"):
        HomeDepotSource(tmp_path / "nope.csv").load()
    # The original is latin-1; read as utf-8 it fails with a hint.
    path = write(tmp_path / "train.csv", HOMEDEPOT_CSV)
    with pytest.raises(DataValidationError, match=r"not utf8: set data.source.encoding"):
        HomeDepotSource(path, encoding="utf8").load()


# --------------------------------------------------------------------------- CrowdFlower

CROWDFLOWER_CSV = (
    "id,query,product_title,product_description,median_relevance,relevance_variance\n"
    '1,bike lock,Key Cable Lock,"",3,0.0\n'
    "2,bike lock,Bell Lock,steel,4,0.4\n"
    '3,bike lock,Key Cable Lock,"Cable, 60 in.",4,0.0\n'
    "4,wine rack,Wall Rack,,1,0.0\n"
    "5,wine rack,Floor Rack,oak &amp; pine,2,0.0\n"
)


def test_crowdflower_gains_ids_and_merged_duplicates(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", CROWDFLOWER_CSV, "utf8")
    source = CrowdFlowerSource(path)
    table = source.load()
    rows = {(r["query_id"], r["product_id"]): r for r in table.iter_rows(named=True)}
    assert sorted(rows) == [
        ("bike lock", "Bell Lock"),
        ("bike lock", "Key Cable Lock"),
        ("wine rack", "Floor Rack"),
        ("wine rack", "Wall Rack"),
    ]
    merged = rows[("bike lock", "Key Cable Lock")]
    assert merged["rating"] == 3.5 and merged["relevance"] == pytest.approx(2.5 / 3)
    assert merged["product_description"] == "Cable, 60 in."  # first non-empty one
    assert rows[("wine rack", "Wall Rack")]["relevance"] == 0.0
    assert rows[("bike lock", "Bell Lock")]["relevance"] == 1.0
    assert rows[("wine rack", "Floor Rack")]["product_description"] == "oak & pine"
    assert set(table.get_column("region")) == {"crowdflower"}
    assert source.report.dropped == {
        "repeated (query, product title) rows merged, ratings averaged": (1, 1)
    }


def test_crowdflower_bad_rating_names_file_column_and_row(tmp_path: Path) -> None:
    path = write(tmp_path / "train.csv", CROWDFLOWER_CSV.replace("Wall Rack,,1", "Wall Rack,,5"))
    with pytest.raises(
        DataValidationError,
        match=r"column 'median_relevance' has 1 labels outside \[1, 4\] \(first at row 3\)",
    ):
        CrowdFlowerSource(path).load()


# --------------------------------------------------------------------------- logs


def logs_frame() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "search_term": ["red shoes"] * 3 + ["blue bag"] * 2,
            "sku": ["p1", "p2", "p1", "p3", "p4"],
            "product_title": ["red shoe", "green hat", "red shoe", "blue bag", "tote"],
            "clicked": [True, False, False, True, False],
            "purchase": [0, 0, 1, 0, 0],
            "position": [3, 1, 2, 1, 2],
        }
    )


def test_logs_rename_region_query_ids_and_bool_labels(tmp_path: Path) -> None:
    path = tmp_path / "logs.parquet"
    logs_frame().filter(pl.col("sku") != "p1").write_parquet(path)
    rename = {"search_term": "query", "sku": "product_id", "clicked": "click"}
    table = LogsSource(path, rename=rename, region="de").load()
    assert table.get_column("query_id").to_list() == ["red shoes", "blue bag", "blue bag"]
    assert table.get_column("click").to_list() == [0, 1, 0]
    assert table.schema["click"] == pl.Int64
    assert set(table.get_column("region")) == {"de"}


def test_logs_duplicate_impressions_merge_with_max(tmp_path: Path) -> None:
    path = tmp_path / "logs.csv"
    logs_frame().write_csv(path)
    rename = {"search_term": "query", "sku": "product_id", "clicked": "click"}
    source = LogsSource(path, rename=rename, region="de", duplicates="max")
    table = source.load()
    p1 = table.filter(pl.col("product_id") == "p1").row(0, named=True)
    assert (p1["click"], p1["purchase"], p1["position"]) == (1, 1, 2)
    assert table.height == 4
    assert list(source.report.dropped.values()) == [(1, 1)]
    # The default leaves duplicates to validation, which stops on them.
    from data_modules.validation import validate_table

    kept = LogsSource(path, rename=rename, region="de").load()
    with pytest.raises(DataValidationError, match=r"repeat a .query_id, product_id. pair"):
        validate_table(kept, "logs.csv", ["click"])


def test_logs_errors_are_named(tmp_path: Path) -> None:
    path = tmp_path / "logs.parquet"
    logs_frame().write_parquet(path)
    rename = {"search_term": "query", "sku": "product_id"}
    with pytest.raises(DataValidationError, match=r"missing column 'region'; set data.source"):
        LogsSource(path, rename=rename).load()
    with pytest.raises(DataValidationError, match=r"rename names absent column.*'serch'"):
        LogsSource(path, rename={"serch": "query"}).load()
    with pytest.raises(DataValidationError, match=r"no engagement column"):
        LogsSource(path, rename={**rename, "purchase": "sold"}, region="de").load()
    with pytest.raises(ConfigError, match=r"data.source.duplicates must be one of"):
        LogsSource(path, duplicates="sum")


# --------------------------------------------------------------------------- mix


class StaticSource:
    """A fixed table with a report, standing in for an adapter."""

    def __init__(self, name: str, table: pl.DataFrame, dropped: dict | None = None) -> None:
        from data_modules.validation import DropReport

        self.name, self.table = name, table
        self.report = DropReport(name)
        self.report.dropped = dict(dropped or {})

    def load(self) -> pl.DataFrame:
        return self.table


def small(region: str, query: str, **extra) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "query_id": ["q1", "q1"],
            "query": [query, query],
            "product_id": ["p1", "p2"],
            "product_title": ["a", "b"],
            "region": [region, region],
            "relevance": [1.0, 0.0],
            **extra,
        }
    )


def test_mix_regions_ids_and_reports() -> None:
    mix = MixSource(
        {
            "hd": StaticSource("hd", small("us", "drill"), {"merged": (3, 2)}),
            "cf": StaticSource("cf", small("us", "drill", product_description=["x", "y"])),
        }
    )
    table = mix.load()
    assert mix.name == "mix(hd+cf)"
    assert table.get_column("region").to_list() == ["hd", "hd", "cf", "cf"]
    assert table.get_column("source_region").to_list() == ["us"] * 4
    assert table.get_column("query_id").to_list() == ["hd:q1", "hd:q1", "cf:q1", "cf:q1"]
    assert table.get_column("product_id").to_list() == ["hd:p1", "hd:p2", "cf:p1", "cf:p2"]
    # Same query text in both sources: kept, so a split by query text keeps them together.
    assert set(table.get_column("query")) == {"drill"}
    assert table.get_column("product_description").to_list() == [None, None, "x", "y"]
    assert mix.report.dropped == {"hd: merged": (3, 2)}


def test_mix_errors_are_named() -> None:
    with pytest.raises(ConfigError, match=r"data.source.sources is empty"):
        MixSource({})
    with pytest.raises(ConfigError, match=r"without ':'"):
        MixSource({"a:b": StaticSource("x", small("us", "q"))})
    mix = MixSource(
        {
            "a": StaticSource("a", small("us", "q", click=[1, 0])),
            "b": StaticSource("b", small("us", "q")),
        }
    )
    with pytest.raises(DataValidationError, match=r"'click' is in source\(s\) \['a'\] but not"):
        mix.load()


# --------------------------------------------------------------------------- subsampling


def test_max_queries_keeps_a_seeded_subset_and_reports_it(esci_dir: Path) -> None:
    first = EsciSource(esci_dir, max_queries=5, seed=1)
    table = first.load()
    again = EsciSource(esci_dir, max_queries=5, seed=1).load()
    other = EsciSource(esci_dir, max_queries=5, seed=2).load()
    assert table.get_column("query_id").n_unique() == 5
    assert table.equals(again)
    assert set(table["query_id"]) != set(other["query_id"])
    ((reason, counts),) = first.report.dropped.items()
    assert "5 queries sampled" in reason and counts == ((22 - 5) * 6, 22 - 5)
    with pytest.raises(ConfigError, match=r"max_queries must be a positive integer"):
        EsciSource(esci_dir, max_queries=0).load()


# --------------------------------------------------------------------------- DataModule wiring


def test_datamodule_simulates_engagement_and_reports_adapter_drops(
    esci_dir: Path, tokenizer, tmp_path: Path
) -> None:
    dm = ListwiseDataModule(
        EsciSource(esci_dir, max_queries=18, seed=0),
        tokenizer,
        ["relevance", "click", "purchase"],
        max_length=24,
        split_column="split",
        splits={"train": 0.8, "val": 0.2, "test": 0.0},
        cache_dir=None,
        engagement={"seed": 3},
    )
    dm.setup()
    table = pl.concat(dm.tables.values())
    assert {"position", "click", "add_to_cart", "purchase"} <= set(table.columns)
    assert (table["purchase"] <= table["click"]).all()
    reasons = list(dm.drop_report.dropped)
    assert "not among the 18 queries sampled" in reasons[0]
    stats = dm.describe()
    assert set(stats["split"]) == {"train", "val", "test"}
    assert set(stats["region"]) == {"es", "jp", "us", "all"}
    totals = stats.filter(pl.col("region") == "all")
    assert totals["lists"].sum() == 18 and totals["rows"].sum() == 18 * 6
    assert {"relevance>0", "relevance_mean", "click>0", "min_list", "max_list"} <= set(
        stats.columns
    )
    dist = dm.label_distribution()
    assert set(dist["label"]) == {"relevance"}  # binary labels are in describe()
    assert set(dist["value"]) == {0.0, 0.01, 0.1, 1.0}
    assert "Label value shares" in dm.summary()


def test_datamodule_without_engagement_keeps_the_table_labels(esci_dir: Path, tokenizer) -> None:
    dm = ListwiseDataModule(
        EsciSource(esci_dir), tokenizer, ["relevance"], max_length=24, cache_dir=None
    )
    dm.setup()
    assert "click" not in pl.concat(dm.tables.values()).columns


# --------------------------------------------------------------------------- ids are text
# Number-looking ids keep their zeros in every adapter: "07" and "7" stay two lists.
def test_ids_are_text_in_the_file_and_logs_sources(tmp_path: Path) -> None:
    from data_modules.sources import FileSource

    path = write(
        tmp_path / "logs.csv",
        "qid,query,product_id,product_title,region,click\n"
        "00001,007,000025,shoe,01,1\n00001,007,000026,hat,01,0\n"
        "07,bag,25,bag,01,1\n07,bag,26,tote,01,0\n7,box,25,bag,01,0\n7,box,26,tote,01,1\n",
        "utf8",
    )
    for table in (
        FileSource(path, rename={"qid": "query_id"}).load(),
        LogsSource(path, rename={"qid": "query_id"}).load(),
    ):
        assert table["query_id"].to_list()[:3] == ["00001", "00001", "07"]
        assert set(table["query_id"]) == {"00001", "07", "7"}
        assert table["product_id"].to_list()[:2] == ["000025", "000026"]
        assert table["query"][0] == "007" and table["region"][0] == "01"
        assert table.schema["click"] == pl.Int64  # labels keep their numeric type


def test_ids_are_text_in_the_kaggle_adapters(tmp_path: Path) -> None:
    hd = write(
        tmp_path / "hd.csv",
        "id,product_uid,product_title,search_term,relevance\n"
        "1,000025,Angle,007,3\n2,000026,Bracket,007,1\n",
    )
    table = HomeDepotSource(hd).load()
    assert table["product_id"].to_list() == ["000025", "000026"]
    assert table["query_id"].to_list() == ["007", "007"] == table["query"].to_list()
    cf = write(
        tmp_path / "cf.csv",
        "id,query,product_title,product_description,median_relevance,relevance_variance\n"
        "1,0042,0001,x,4,0\n2,0042,0002,y,1,0\n",
        "utf8",
    )
    table = CrowdFlowerSource(cf).load()
    assert table["query_id"].to_list() == ["0042", "0042"]
    assert table["product_id"].to_list() == ["0001", "0002"]


def test_ids_are_text_in_esci_csv_and_in_a_mix(tmp_path: Path, esci_dir: Path) -> None:
    examples = pl.read_parquet(esci_dir / EXAMPLES_FILE)
    examples.with_columns(
        pl.format("{}", pl.col("query_id").cast(pl.Utf8).str.zfill(5)).alias("query_id")
    ).write_csv(esci_dir / "examples.csv")
    table = EsciSource(esci_dir, examples="examples.csv").load()
    assert table["query_id"][0] == "00000" and table.schema["query_id"] == pl.Utf8
    hd = write(
        tmp_path / "hd.csv",
        "id,product_uid,product_title,search_term,relevance\n1,000025,A,q,3\n2,000026,B,q,1\n",
    )
    mixed = MixSource({"hd": HomeDepotSource(hd)}).load()
    assert mixed["product_id"].to_list() == ["hd:000025", "hd:000026"]


# --------------------------------------------------------------------------- file errors
def test_a_ragged_csv_row_is_named_by_its_line(tmp_path: Path) -> None:
    from data_modules.sources import read_table

    ok = write(tmp_path / "ok.csv", 'a,b\n1,"two\nlines"\n3,4\n', "utf8")  # quoted line break
    assert read_table(ok).height == 2
    short = write(tmp_path / "short.csv", "a,b,c\n1,2,3\n4,5\n", "utf8")
    with pytest.raises(DataValidationError, match=r"line 3 \(data row 1\) has 2 field\(s\), the"):
        read_table(short)


def test_an_unknown_encoding_and_a_rename_collision_are_named(tmp_path: Path) -> None:
    from data_modules.sources import FileSource, apply_rename

    with pytest.raises(ConfigError, match=r"^data.encoding: unknown text encoding 'utf-9'"):
        FileSource(tmp_path / "x.csv", encoding="utf-9")
    with pytest.raises(ConfigError, match=r"^data.source.encoding: unknown text encoding"):
        HomeDepotSource(tmp_path / "x.csv", encoding="nope")
    frame = pl.DataFrame({"a": [1], "b": [2], "c": [3]})
    with pytest.raises(DataValidationError, match=r"two columns the name 'b' \(from 'a', 'b'\)"):
        apply_rename(frame, {"a": "b"}, "f.csv")
    with pytest.raises(DataValidationError, match=r"two columns the name 'x' \(from 'a', 'c'\)"):
        apply_rename(frame, {"a": "x", "c": "x"}, "f.csv")
    assert apply_rename(frame, {"a": "b", "b": "a"}, "f.csv").columns == ["b", "a", "c"]  # swap
