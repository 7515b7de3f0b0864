"""``python -m experiments.engagement_check [data=mix]``: does relevance drive simulated engagement?

The workflow is :func:`experiments.workflows.engagement_check.check`.
"""

import hydra
from omegaconf import DictConfig

from experiments.workflows.cli import run_or_exit
from experiments.workflows.engagement_check import check
from experiments.workflows.launch import run_job


@hydra.main(version_base="1.3", config_path="../conf", config_name="engagement_check")
def main(cfg: DictConfig) -> None:
    run_or_exit(run_job, check, cfg)


if __name__ == "__main__":
    main()
