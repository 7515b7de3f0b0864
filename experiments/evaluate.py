"""``python -m experiments.evaluate ckpt_path=<ckpt> [data=...] [data.path=...] [split=all]``."""

import hydra
from omegaconf import DictConfig

from experiments.workflows.cli import run_or_exit
from experiments.workflows.launch import run_job
from experiments.workflows.train import evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="eval")
def main(cfg: DictConfig) -> None:
    run_or_exit(run_job, evaluate, cfg)


if __name__ == "__main__":
    main()
