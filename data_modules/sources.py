"""Where a canonical table comes from: a file, or the embedded synthetic generator."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import polars as pl

from ranking.errors import ConfigError, DataValidationError

_READERS = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "csv"}


class TableSource(Protocol):
    """Anything that yields a canonical table (see ``data_modules.schema``)."""

    name: str

    def load(self) -> pl.DataFrame: ...


class FileSource:
    """A canonical table stored as parquet or CSV.

    Args:
        path: The file. Its suffix picks the reader (.parquet/.pq, .csv, .tsv).
        encoding: Text encoding of CSV files ("utf8" or e.g. "latin-1").
        rename: Optional ``{column in file: canonical column}`` applied after reading.
    """

    def __init__(
        self, path: str | Path, encoding: str = "utf8", rename: dict[str, str] | None = None
    ) -> None:
        if path in (None, "", "???"):
            raise ConfigError("data.path must name a parquet or CSV file")
        self.path = Path(path).expanduser()
        self.encoding = encoding
        self.rename = dict(rename or {})
        self.name = str(self.path)

    def load(self) -> pl.DataFrame:
        if not self.path.is_file():
            raise DataValidationError(f"{self.path}: file does not exist")
        kind = _READERS.get(self.path.suffix.lower())
        if kind is None:
            raise DataValidationError(
                f"{self.path}: unsupported file type '{self.path.suffix}' (use {sorted(_READERS)})"
            )
        try:
            if kind == "parquet":
                df = pl.read_parquet(self.path)
            else:
                separator = "\t" if self.path.suffix.lower() == ".tsv" else ","
                df = pl.read_csv(
                    self.path,
                    separator=separator,
                    encoding=self.encoding,
                    infer_schema_length=10000,
                )
        except (pl.exceptions.PolarsError, OSError, UnicodeDecodeError) as err:
            hint = ""
            if "utf-8" in str(err).lower() or isinstance(err, UnicodeDecodeError):
                hint = f" (the file is not {self.encoding}: set data.encoding, e.g. latin-1)"
            raise DataValidationError(
                f"{self.path}: cannot be read as {kind}: {err}{hint}"
            ) from err
        missing = [c for c in self.rename if c not in df.columns]
        if missing:
            raise DataValidationError(f"{self.path}: data.rename names absent column(s) {missing}")
        return df.rename(self.rename)


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
