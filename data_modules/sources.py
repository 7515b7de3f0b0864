"""Where a canonical table comes from: a file, or the embedded synthetic generator.

Real datasets have their own adapters in :mod:`data_modules.adapters`; they share
:func:`read_table` and the optional ``report`` attribute described in :class:`TableSource`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import polars as pl

from ranking.errors import ConfigError, DataValidationError

log = logging.getLogger(__name__)

_READERS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv"}


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


def read_table(path: Path, encoding: str = "utf8", key: str = "data.path") -> pl.DataFrame:
    """Read a parquet or CSV/TSV file (chosen by suffix) into a DataFrame.

    Args:
        path: The file.
        encoding: Text encoding of CSV files ("utf8" or e.g. "latin-1").
        key: Config key of the path and encoding options, quoted in error hints.

    Raises:
        DataValidationError: The file is absent, of an unknown type, or unreadable (with a hint
            when the encoding is the likely cause).
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
        return pl.read_csv(path, separator=separator, encoding=encoding, infer_schema_length=10000)
    except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as err:
        hint = ""
        if "utf-8" in str(err).lower() or isinstance(err, UnicodeDecodeError):
            option = key.split()[0].rsplit(".", 1)[0] + ".encoding" if "." in key else "encoding"
            hint = f" (the file is not {encoding}: set {option}, e.g. latin-1)"
        raise DataValidationError(f"{path}: cannot be read as {kind}: {err}{hint}") from err


def apply_rename(df: pl.DataFrame, rename: dict[str, str], source: str) -> pl.DataFrame:
    """``df`` with columns renamed ``{in file: canonical}``; absent names are an error."""
    missing = [c for c in rename if c not in df.columns]
    if missing:
        raise DataValidationError(
            f"{source}: data.rename names absent column(s) {missing}; columns found: "
            f"{', '.join(df.columns)}"
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
        self.encoding = encoding
        self.rename = dict(rename or {})
        self.region = region
        self.name = str(self.path)

    def load(self) -> pl.DataFrame:
        df = apply_rename(
            read_table(self.path, self.encoding, key="data.path"), self.rename, str(self.path)
        )
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
