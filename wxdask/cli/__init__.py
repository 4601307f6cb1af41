"""The ``wxdask`` command: one sub-command per stage, plus ``run``, ``demo`` and tools.

Each stage command loads the config (``--config`` YAML plus its options as
overrides), gets a Dask client, calls ``<stage>.run(cfg, client)`` and echoes
where the result went. A :class:`~wxdask.errors.WxdaskError` becomes one red
line on stderr and exit status 1; anything else keeps its traceback.
Heavy imports stay inside the commands. Modules: ``base`` (the group, config
loading, the stage runner), ``data`` (ingest, status), ``learn`` (train,
evaluate, embed, decode, run), ``analytics`` (search, interpolate, cluster),
``tools`` (demo, serve-archive, synth, explore).
"""

from __future__ import annotations

from wxdask.cli import analytics, data, learn, tools  # noqa: F401 - each registers its commands on main
from wxdask.cli.base import cluster_options, load_config, main, run_stage

__all__ = ["main", "run_stage", "load_config", "cluster_options"]
