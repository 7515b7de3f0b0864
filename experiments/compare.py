"""``python -m experiments.compare DIR [--metric M] [--baseline VARIANT] [--with random,bm25]``.

Gathers every run under DIR (a Hydra multirun directory) into ``compare_<metric>.md/.csv/.json``
and PNG plots, with 95% bootstrap intervals over queries and paired tests against a baseline
variant (see :mod:`ranking.analysis.compare`). Works without W&B.
"""

from __future__ import annotations

import argparse
import sys

from data_modules.errors import ShoprankError
from ranking.analysis.sweep_report import compare


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.compare", description=__doc__)
    parser.add_argument("dir", help="multirun directory (or any directory of runs)")
    parser.add_argument("--metric", action="append", help="metric spec; repeatable (ndcg@10)")
    parser.add_argument("--baseline", help="variant to compare against (default: first job)")
    parser.add_argument(
        "--with", dest="scorers", default="", help="baseline scorers to add, e.g. random,bm25"
    )
    parser.add_argument("--out", help="output directory (default: DIR)")
    parser.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    parser.add_argument(
        "--wandb",
        action="store_true",
        help="also log the plots and table as a W&B run in the sweep's group (offline unless "
        "WANDB_MODE is set)",
    )
    args = parser.parse_args(argv)
    scorers = [s for s in args.scorers.split(",") if s]
    try:
        for metric in args.metric or ["ndcg@10"]:
            paths = compare(
                args.dir, metric, args.baseline, scorers, args.out, resamples=args.resamples
            )
            print(paths["markdown"].read_text())
            print("written:", *[str(p) for p in paths.values()], sep="\n  ")
            if args.wandb:
                from experiments.workflows.wandb_run import log_comparison

                run_id = log_comparison(paths, args.dir, metric)
                print(f"W&B run: {run_id}" if run_id else "W&B is disabled (WANDB_MODE)")
    except ShoprankError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
