"""``python -m experiments.train [overrides]``: train, test, report beside a random baseline.

``--multirun`` sweeps (grid or ``hparams_search=optuna``) work with every Trainer strategy:
:func:`experiments.workflows.launch.run_job` makes DDP ranks >= 1 run exactly this job's config in
this job's directory and leaves no distributed state behind for the next job.
"""

import hydra
from omegaconf import DictConfig

from experiments.workflows.cli import run_or_exit
from experiments.workflows.launch import run_job, write_rank_record
from experiments.workflows.train import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    metrics, objects = run_or_exit(run_job, train, cfg)
    objective = float(metrics[cfg.monitor])  # the one value a Hydra sweeper optimises
    write_rank_record(cfg, objects["trainer"], objective)  # only with SHOPRANK_DEBUG_RANKS=1
    return objective


if __name__ == "__main__":
    main()
