"""One typed configuration for every stage.

:class:`Config` holds one frozen dataclass per stage. Build it with
:meth:`Config.from_yaml` (a YAML file plus ``section.key=value`` overrides) or
:meth:`Config.from_dict`; :meth:`Config.to_dict` gives back plain data that is
written into the store's attributes. Each stage receives only its own section.
Dask's own settings (memory limits, fusion, comms) stay in ``dask.config``.
"""

from __future__ import annotations

# The configuration lives in submodules; every name the single module had is re-exported here, so callers
# import (and tests patch) ``wxdask.config.X`` as before.
from wxdask.config.analysis import InterpolateConfig, KMeansConfig, SearchConfig, TilesConfig
from wxdask.config.data import DaskConfig, IngestConfig, StoreConfig
from wxdask.config.load import (  # noqa: F401 - private names, re-exported for callers
    _SECTIONS,
    Config,
    _one_line,
    _override_items,
    _plain,
    _set_dotted,
)
from wxdask.config.model import (  # noqa: F401 - private names, re-exported for callers
    _SEED_DEFAULTS,
    _SEED_ONLY,
    ARCHITECTURES,
    DecodeConfig,
    EmbedConfig,
    EvaluateConfig,
    ModelConfig,
    TrainConfig,
    _plain_value,
)
from wxdask.config.parse import (  # noqa: F401 - private names, re-exported for callers
    _OFFSET,
    _PORTED,
    _SCHEMES,
    ARCHIVE_START,
    MAX_LEAD,
    _bool,
    _byte_size,
    _int,
    _lead,
    _mapping,
    _path,
    _positive_float,
    _positive_int,
    _utc,
    logger,
    parse_duration,
    parse_leads,
    parse_scheduler_address,
    parse_time,
)
from wxdask.config.redact import _NOT_SECRET, REDACTED, SECRET_KEY_PATTERN, redacted  # noqa: F401
from wxdask.errors import ConfigError  # noqa: F401 - importable from here, as before

__all__ = [
    "ARCHIVE_START",
    "MAX_LEAD",
    "StoreConfig",
    "DaskConfig",
    "IngestConfig",
    "ModelConfig",
    "TrainConfig",
    "EvaluateConfig",
    "EmbedConfig",
    "DecodeConfig",
    "SearchConfig",
    "InterpolateConfig",
    "KMeansConfig",
    "TilesConfig",
    "Config",
    "parse_time",
    "parse_leads",
    "parse_duration",
    "parse_scheduler_address",
    "redacted",
    "SECRET_KEY_PATTERN",
]
