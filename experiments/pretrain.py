"""``python -m experiments.pretrain [overrides]``: masked-LM domain pretraining of an encoder."""

import math

import hydra
from omegaconf import DictConfig

from experiments.workflows.cli import run_or_exit
from experiments.workflows.launch import run_job
from experiments.workflows.pretrain import pretrain


@hydra.main(version_base="1.3", config_path="../conf", config_name="pretrain")
def main(cfg: DictConfig) -> float:
    metrics, _ = run_or_exit(run_job, pretrain, cfg)
    value = metrics["val/mlm_loss"]
    return math.nan if value is None else value  # the value a Hydra sweeper minimises


if __name__ == "__main__":
    main()
