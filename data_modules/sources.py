"""Where a canonical table comes from: a file, or the embedded synthetic generator.

Real datasets have their own adapters in :mod:`data_modules.adapters`; they share
:func:`read_table` and the optional ``report`` attribute described in :class:`TableSource`.
"""

from __future__ import annotations

import codecs
import csv
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from data_modules.errors import ConfigError, DataValidationError
from data_modules.schema import KEY_COLUMNS, TEXT_COLUMNS

log = logging.getLogger(__name__)

_READERS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv"}
_POLARS_ENCODINGS = ("utf8", "utf8-lossy")  # polars' own names; anything else is a Python codec


class TableSource(Protocol):
    """Anything that yields a canonical table (see ``data_modules.schema``).

    A source may also set ``report`` (a :class:`data_modules.validation.DropReport`) during
    ``load()`` to say which rows it removed or merged; the DataModule adds it to the run's drop
    report (printed, and recorded in ``metrics.json``).
    """

    name: str

    def load(self) -> pl.DataFrame: ...


def check_path(path: str | Path | None, key: str) -> Path:
    """The configured path as a :class:`Path`; a missing value is a :class:`ConfigError`."""
    if path in (None, "", "???"):
        raise ConfigError(f"{key} must name a file")
    return Path(str(path)).expanduser()


def check_encoding(encoding: str, key: str) -> str:
    """``encoding`` if Python knows it (``utf8``, ``latin-1``, ``cp1252``...), else one error line.

    Raises:
        ConfigError: An unknown encoding, naming ``key``.
    """
    if encoding in _POLARS_ENCODINGS:
        return encoding
    try:
        codecs.lookup(str(encoding))
    except (LookupError, TypeError):
        raise ConfigError(
            f"{key}: unknown text encoding {encoding!r}; use e.g. utf8, latin-1 or cp1252"
        ) from None
    return encoding


def check_csv_rows(path: Path, encoding: str = "utf8", separator: str = ",") -> None:
    """Every record of a CSV file has as many fields as its header, or one error naming the line.

    Polars fills a short row with nulls and stops on a long one without saying where; both
    change or lose data, so the file is checked first (with Python's ``csv`` module, which
    follows quoted fields over line breaks as polars does).

    Raises:
        DataValidationError: ``<file>: line N has F fields, the header has H``, N counting the
            header as line 1 (the line where the record ends).
    """
    python_encoding = "utf-8" if encoding in _POLARS_ENCODINGS else encoding
    errors = "replace" if encoding == "utf8-lossy" else "strict"
    try:
        with open(path, encoding=python_encoding, errors=errors, newline="") as handle:
            reader = csv.reader(handle, delimiter=separator)
            header = next(reader, None)
            if header is None:
                return
            for row, record in enumerate(reader):
                if len(record) != len(header) and record:  # a blank line is no record
                    raise DataValidationError(
                        f"{path}: line {reader.line_num} (data row {row}) has {len(record)} "
                        f"field(s), the header has {len(header)}; fix or quote that row"
                    )
    except (UnicodeDecodeError, csv.Error):
        return  # polars reports these below, with the encoding hint


def read_table(
    path: Path,
    encoding: str = "utf8",
    key: str = "data.path",
    text_columns: Iterable[str] = (),
) -> pl.DataFrame:
    """Read a parquet or CSV/TSV file (chosen by suffix) into a DataFrame.

    Args:
        path: The file.
        encoding: Text encoding of CSV files ("utf8" or e.g. "latin-1").
        key: Config key of the path and encoding options, quoted in error hints.
        text_columns: CSV columns read as text whatever they look like: ids (``00001`` stays
            ``00001``, and ``07`` and ``7`` stay two ids) and texts (a query ``007``). Parquet
            files carry their own types.

    Raises:
        DataValidationError: The file is absent, of an unknown type, unreadable (with a hint
            when the encoding is the likely cause) or a CSV row has another number of fields
            than the header.
    """
    if not path.is_file():
        raise DataValidationError(f"{path}: file does not exist (set {key})")
    kind = _READERS.get(path.suffix.lower())
    if kind is None:
        raise DataValidationError(
            f"{path}: unsupported file type '{path.suffix}' (use {sorted(_READERS)})"
        )
    try:
        if kind == "parquet":
            return pl.read_parquet(path)
        separator = "\t" if path.suffix.lower() == ".tsv" else ","
        check_csv_rows(path, encoding, separator)
        return pl.read_csv(
            path,
            separator=separator,
            encoding=encoding,
            infer_schema_length=10000,
            schema_overrides={c: pl.Utf8 for c in text_columns},
        )
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as err:
        hint = ""
        if "utf-8" in str(err).lower() or isinstance(err, UnicodeDecodeError):
            option = key.split()[0].rsplit(".", 1)[0] + ".encoding" if "." in key else "encoding"
            hint = f" (the file is not {encoding}: set {option}, e.g. latin-1)"
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataValidationError(f"{path}: cannot be read as {kind}: {detail}{hint}") from err


def canonical_text_columns(rename: Mapping[str, str] | None = None) -> list[str]:
    """File columns to read as text: the canonical id and text columns, under their file names.

    With ``rename`` (``{in file: canonical}``) a file column renamed onto one of them counts too.
    """
    canonical = [*KEY_COLUMNS, *TEXT_COLUMNS]
    renamed = [source for source, target in (rename or {}).items() if target in canonical]
    return [*canonical, *renamed]


def apply_rename(df: pl.DataFrame, rename: dict[str, str], source: str) -> pl.DataFrame:
    """``df`` with columns renamed ``{in file: canonical}``.

    Raises:
        DataValidationError: A name to rename is absent, or two columns would end with one
            name (a rename onto a column the file keeps, or two renames onto one name).
    """
    missing = [c for c in rename if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{source}: data.rename names absent column(s) {missing}; columns found: "
            f"{', '.join(df.columns)}"
        )
    final = [rename.get(c, c) for c in df.columns]
    repeated = sorted({name for name in final if final.count(name) > 1})
    if repeated:
        name = repeated[0]
        origins = [c for c in df.columns if rename.get(c, c) == name]
        raise DataValidationError(
            f"{source}: data.rename would give two columns the name '{name}' (from "
            f"{', '.join(repr(c) for c in origins)}); the file already has it: rename or drop "
            "one of them"
        )
    return df.rename(rename)


class FileSource:
    """A canonical table stored as parquet or CSV.

    Args:
        path: The file. Its suffix picks the reader (.parquet/.pq, .csv, .tsv).
        encoding: Text encoding of CSV files ("utf8" or e.g. "latin-1").
        rename: Optional ``{column in file: canonical column}`` applied after reading.
        region: Region of every row of a one-market file that has no ``region`` column
            (logged when used); a file with its own ``region`` column keeps it.
    """

    def __init__(
        self,
        path: str | Path,
        encoding: str = "utf8",
        rename: dict[str, str] | None = None,
        region: str = "default",
    ) -> None:
        if path in (None, "", "???"):
            raise ConfigError("data.path must name a parquet or CSV file")
        if not isinstance(region, str) or not region.strip():
            raise ConfigError(f"data.region must be a non-empty name, got {region!r}")
        self.path = Path(path).expanduser()
        self.encoding = check_encoding(encoding, "data.encoding")
        self.rename = dict(rename or {})
        self.region = region
        self.name = str(self.path)

    def load(self) -> pl.DataFrame:
        df = read_table(self.path, self.encoding, "data.path", canonical_text_columns(self.rename))
        df = apply_rename(df, self.rename, str(self.path))
        if "region" not in df.columns:
            # One market is the common case for a team's own log: no region column needed.
            log.info("%s: no region column, every row is region '%s'", self.path, self.region)
            df = df.with_columns(pl.lit(self.region).alias("region"))
        return df


class SyntheticSource:
    """The embedded synthetic multi-region generator (``data_modules.synthetic``).

    Args:
        **options: Fields of :class:`data_modules.synthetic.SyntheticConfig`.
    """

    def __init__(self, **options: Any) -> None:
        from data_modules.synthetic import SyntheticConfig

        fields = set(SyntheticConfig.__dataclass_fields__)
        unknown = sorted(set(options) - fields)
        if unknown:
            raise ConfigError(
                f"data.source has unknown synthetic option(s) {unknown}; valid: {sorted(fields)}"
            )
        for key, value in options.items():
            if isinstance(value, list):
                options[key] = tuple(value)
        self.config = SyntheticConfig(**options)
        self.name = f"synthetic(seed={self.config.seed})"

    def load(self) -> pl.DataFrame:
        from data_modules.synthetic import generate_synthetic

        return generate_synthetic(self.config)
