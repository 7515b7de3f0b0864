"""``python -m experiments.export ckpt_path=<ckpt> out=<dir>``: ship a trained ranker.

The workflow is :func:`experiments.workflows.export.export`.
"""

import hydra
from omegaconf import DictConfig

from experiments.workflows.cli import run_or_exit
from experiments.workflows.export import export
from experiments.workflows.launch import run_job


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run_or_exit(run_job, export, cfg)


if __name__ == "__main__":
    main()
