"""``python -m experiments.engagement_check [data=mix]``: does relevance drive simulated engagement?

Loads the data config's table, applies its engagement simulator (``data.engagement``) and prints,
per region and label, NDCG@k of the relevance ranking vs the display order vs random
(:mod:`ranking.engagement_check`).
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from data_modules.engagement import EngagementSimulator
from ranking.cli import run_or_exit
from ranking.config import instantiate, plain
from ranking.engagement_check import engagement_signal, signal_markdown
from ranking.errors import ConfigError


def check(cfg: DictConfig) -> tuple[dict, dict]:
    engagement = plain(cfg.data.get("engagement"))
    if not engagement:
        raise ConfigError(
            "data.engagement is null: nothing simulated to check (data/engagement=...)"
        )
    source = instantiate(cfg.data.source, "data.source")
    table = EngagementSimulator(**engagement).apply(source.load(), source.name)
    frame = engagement_signal(table, k=int(cfg.k), seed=int(cfg.seed))
    text = signal_markdown(frame, int(cfg.k))
    print(text)
    if cfg.get("out"):
        Path(str(cfg.out)).write_text(text + "\n")
    return {"rows": frame.to_dicts()}, {"frame": frame}


@hydra.main(version_base="1.3", config_path="../conf", config_name="engagement_check")
def main(cfg: DictConfig) -> None:
    run_or_exit(check, cfg)


if __name__ == "__main__":
    main()
