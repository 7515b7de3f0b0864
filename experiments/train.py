"""``python -m experiments.train [overrides]``: train, test, report beside a random baseline."""

import hydra
from omegaconf import DictConfig

from ranking.cli import run_or_exit
from ranking.pipeline import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    metrics, _ = run_or_exit(train, cfg)
    return metrics[cfg.monitor]  # the value a Hydra sweeper optimises


if __name__ == "__main__":
    main()
