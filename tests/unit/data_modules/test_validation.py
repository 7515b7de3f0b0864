"""Every validation error path names the source, the column and the row."""

from __future__ import annotations

import math

import polars as pl
import pytest

from data_modules.errors import DataValidationError
from data_modules.validation import validate_table


def table(**changes) -> pl.DataFrame:
    base = {
        "query_id": ["q1", "q1", "q1", "q2", "q2"],
        "query": ["red shoes"] * 3 + ["blue bag"] * 2,
        "product_id": ["p1", "p2", "p3", "p4", "p5"],
        "product_title": ["red shoe", "green hat", "red boot", "blue bag", "tote"],
        "region": ["us", "us", "us", "de", "de"],
        "purchase": [1, 0, 0, 1, 0],
        "relevance": [3.0, 0.0, 2.0, 3.0, 1.0],
    }
    base.update(changes)
    return pl.DataFrame(base)


def test_valid_table_passes_with_canonical_dtypes() -> None:
    df, report = validate_table(table(), "t.parquet", ["purchase", "relevance"])
    assert df.height == 5
    assert df.schema["purchase"] == pl.Float64
    assert report.dropped == {}


def test_missing_column_names_file_and_column() -> None:
    with pytest.raises(
        DataValidationError, match=r"t\.parquet: missing required column\(s\) 'product_title'"
    ):
        validate_table(table().drop("product_title"), "t.parquet", ["purchase"])


def test_missing_label_column_is_named() -> None:
    with pytest.raises(DataValidationError, match="'click'"):
        validate_table(table(), "t.parquet", ["click"])


def test_nan_label_names_column_and_row() -> None:
    with pytest.raises(
        DataValidationError,
        match=r"column 'relevance' has 1 missing or NaN labels \(first at row 2\)",
    ):
        validate_table(table(relevance=[3.0, 0.0, math.nan, 3.0, 1.0]), "t.parquet", ["relevance"])


def test_null_label_is_an_error_not_dropped() -> None:
    with pytest.raises(DataValidationError, match="purchase"):
        validate_table(table(purchase=[1, None, 0, 1, 0]), "t.csv", ["purchase"])


def test_engagement_label_out_of_range() -> None:
    with pytest.raises(
        DataValidationError,
        match=r"'purchase' has 1 labels outside the allowed range \(0 or 1\) \(first at row 3\)",
    ):
        validate_table(table(purchase=[1, 0, 0, 2, 0]), "t.csv", ["purchase"])


def test_negative_relevance_is_rejected() -> None:
    with pytest.raises(DataValidationError, match="relevance"):
        validate_table(table(relevance=[3.0, -1.0, 2.0, 3.0, 1.0]), "t.csv", ["relevance"])


def test_mistyped_label_column() -> None:
    with pytest.raises(DataValidationError, match="'purchase' has type String"):
        validate_table(table(purchase=["yes", "no", "no", "yes", "no"]), "t.csv", ["purchase"])


def test_empty_text_names_row() -> None:
    with pytest.raises(
        DataValidationError, match=r"'product_title' has 1 empty texts \(first at row 1\)"
    ):
        validate_table(table(product_title=["a", "  ", "b", "c", "d"]), "t.csv", ["purchase"])


def test_missing_key_value() -> None:
    with pytest.raises(
        DataValidationError, match=r"'region' has 1 missing values \(first at row 4\)"
    ):
        validate_table(table(region=["us", "us", "us", "de", None]), "t.csv", ["purchase"])


def test_duplicate_pair_names_rows() -> None:
    with pytest.raises(
        DataValidationError, match=r"repeat a \(query_id, product_id\) pair \(first at rows 0, 1\)"
    ):
        validate_table(table(product_id=["p1", "p1", "p3", "p4", "p5"]), "t.csv", ["purchase"])


def test_query_id_with_two_regions_is_rejected() -> None:
    with pytest.raises(
        DataValidationError, match="query_id 'q1' has more than one value in column 'region'"
    ):
        validate_table(table(region=["us", "de", "us", "de", "de"]), "t.csv", ["purchase"])


def test_single_item_lists_are_dropped_and_reported() -> None:
    df = table(query_id=["q1", "q1", "q1", "q2", "q3"], query=["a", "a", "a", "b", "c"])
    out, report = validate_table(df, "t.csv", ["purchase"])
    assert out.get_column("query_id").unique().sort().to_list() == ["q1"]
    assert report.dropped == {"lists of one item carry no ranking signal": (2, 2)}
    assert "dropped 2 rows / 2 queries" in report.summary()


def test_empty_table() -> None:
    with pytest.raises(DataValidationError, match="empty"):
        validate_table(table().head(0), "t.csv", ["purchase"])


@pytest.mark.parametrize(
    ("column", "value", "what"),
    [
        ("product_title", "\u200b\ufeff ", "empty texts"),  # zero-width space, BOM, space
        ("query", "\u2060\u00ad", "empty texts"),  # word joiner, soft hyphen
        ("region", "", "empty values"),
        ("product_id", "\u200c", "empty values"),
    ],
)
def test_blank_values_with_invisible_characters_are_empty(column, value, what) -> None:
    values = table()[column].to_list()
    values[1] = value
    with pytest.raises(DataValidationError, match=rf"'{column}' has 1 {what} \(first at row 1\)"):
        validate_table(table(**{column: values}), "t", ["purchase"])


def test_text_with_a_visible_character_is_kept() -> None:
    titles = ["\u200bred shoe", *table()["product_title"].to_list()[1:]]
    df, _ = validate_table(table(product_title=titles), "t", ["purchase"])
    assert df["product_title"][0] == "\u200bred shoe"  # kept as given, not altered


def test_relevance_has_an_upper_bound() -> None:
    ok, _ = validate_table(table(relevance=[31.0, 0.0, 2.0, 3.0, 1.0]), "t", ["relevance"])
    assert ok["relevance"].max() == 31.0
    with pytest.raises(
        DataValidationError,
        match=r"'relevance' has 1 labels outside the allowed range \(0 \.\. 31\) \(first at row 0",
    ):
        validate_table(table(relevance=[1e6, 0.0, 2.0, 3.0, 1.0]), "t", ["relevance"])
