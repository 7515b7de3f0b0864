"""``check(cfg)``: does relevance drive the simulated engagement of a data config?

Loads the data config's table, applies its engagement simulator (``data.engagement``) and prints,
per region and label, NDCG@k of the relevance ranking vs the display order vs random
(:mod:`ranking.analysis.engagement_check`).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from data_modules.engagement import EngagementSimulator
from data_modules.errors import ConfigError
from experiments.workflows.config import instantiate, plain
from ranking.analysis.engagement_check import engagement_signal, signal_markdown


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
