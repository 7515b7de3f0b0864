"""``python -m experiments.predict ckpt_path=<ckpt> [data=...] [split=test|all]``: TREC run."""

import hydra
from omegaconf import DictConfig

from experiments.workflows.cli import run_or_exit
from experiments.workflows.launch import run_job
from experiments.workflows.predict import predict


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_or_exit(run_job, predict, cfg)


if __name__ == "__main__":
    main()
