"""CLI: ``python -m data_modules.synthetic --out data.parquet [--num-queries N] [--seed S]``.

Writes the synthetic table as parquet and prints a summary (rows, queries, per-region label
rates).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

import polars as pl

from data_modules.synthetic.config import SyntheticConfig
from data_modules.synthetic.generator import summarise, write_synthetic


def main(argv: Sequence[str] | None = None) -> int:
    """Parses arguments, writes the parquet file, prints the summary; returns the exit code."""
    defaults = SyntheticConfig()
    parser = argparse.ArgumentParser(prog="python -m data_modules.synthetic", description=__doc__)
    parser.add_argument("--out", required=True, help="output parquet path")
    parser.add_argument("--num-queries", type=int, default=defaults.num_queries, help="total")
    parser.add_argument("--num-products", type=int, default=defaults.num_products)
    parser.add_argument("--list-size", type=int, default=defaults.list_size)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--regions",
        default=",".join(defaults.region_names),
        help="comma-separated default region names (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        config = SyntheticConfig(
            num_products=args.num_products,
            num_queries=args.num_queries,
            list_size=args.list_size,
            seed=args.seed,
            regions=tuple(r.strip() for r in args.regions.split(",") if r.strip()),
        )
    except ValueError as err:
        parser.error(str(err))
    start = time.perf_counter()
    table = write_synthetic(config, args.out)
    elapsed = time.perf_counter() - start
    print(
        f"wrote {args.out}: {table.height} rows, {table['query_id'].n_unique()} queries, "
        f"{table['product_id'].n_unique()} products, seed {config.seed} ({elapsed:.2f} s)"
    )
    with pl.Config(tbl_rows=-1, tbl_hide_dataframe_shape=True, float_precision=3):
        print(summarise(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
