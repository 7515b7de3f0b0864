"""``python -m experiments.predict ckpt_path=<ckpt> [data=...] [split=test|all]``: TREC run."""

import hydra
from omegaconf import DictConfig

from ranking.cli import run_or_exit
from ranking.serving import predict


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_or_exit(predict, cfg)


if __name__ == "__main__":
    main()
