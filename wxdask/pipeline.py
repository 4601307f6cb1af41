"""The whole pipeline, stage after stage, from one config (``wxdask run``).

Every stage is resumable on its own (ingest skips slots already ok, training
resumes from its last checkpoint, embedding skips slots already embedded with
the same model), so a killed ``wxdask run`` started again continues from what
the store already holds.
"""

from __future__ import annotations

import importlib
import logging
import time
from typing import TYPE_CHECKING

from wxdask.errors import ConfigError

if TYPE_CHECKING:
    from distributed import Client

    from wxdask.config import Config

__all__ = ["STAGES", "parse_stages", "run"]

logger = logging.getLogger(__name__)

#: Stage name -> module whose ``run(cfg, client) -> str`` performs it, in pipeline order.
STAGES: dict[str, str] = {
    "ingest": "wxdask.ingest",
    "train": "wxdask.train",
    "evaluate": "wxdask.evaluate",
    "embed": "wxdask.embed",
    "decode": "wxdask.decode",
    "search": "wxdask.search",
    "interpolate": "wxdask.interpolate",
    "cluster": "wxdask.kmeans",
}


def parse_stages(text: str | None) -> list[str]:
    """Stages named in ``"ingest,embed"`` (all of them for ``None``), in pipeline order.

    Raises
    ------
    ConfigError
        Naming an unknown stage and the valid ones.

    Examples
    --------
    >>> parse_stages("search,ingest")
    ['ingest', 'search']
    """
    if not text:
        return list(STAGES)
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stage(s) {unknown}; valid: {', '.join(STAGES)}")
    return [s for s in STAGES if s in names]


def run(cfg: Config, client: Client | None, stages: list[str] | None = None) -> dict[str, str]:
    """Run ``stages`` (all by default) in order on ``client``.

    Returns
    -------
    dict
        Each stage's printable result, in order.
    """
    results: dict[str, str] = {}
    for name in stages or list(STAGES):
        module = importlib.import_module(STAGES[name])
        logger.info("stage %s: starting", name)
        start = time.perf_counter()
        results[name] = module.run(cfg, client)
        logger.info("stage %s: done in %.1f s", name, time.perf_counter() - start)
    return results
