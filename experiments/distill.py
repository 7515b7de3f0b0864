"""``python -m experiments.distill teacher_ckpt=<ckpt> [overrides]``: distil into a bi-encoder."""

import hydra
from omegaconf import DictConfig

from experiments.workflows.cli import run_or_exit
from experiments.workflows.distill import distill
from experiments.workflows.launch import run_job


@hydra.main(version_base="1.3", config_path="../conf", config_name="distill")
def main(cfg: DictConfig) -> float:
    metrics, _ = run_or_exit(run_job, distill, cfg)
    return metrics[cfg.monitor]  # the value a Hydra sweeper optimises


if __name__ == "__main__":
    main()
