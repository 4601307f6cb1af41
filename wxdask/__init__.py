"""wxdask: HRRR radar archives to searchable, clusterable autoencoder embeddings, on Dask."""

from __future__ import annotations

from wxdask.config import Config
from wxdask.errors import (
    ClusterError,
    ConfigError,
    CorruptMessageError,
    ModelError,
    SourceError,
    SourceNotFoundError,
    StoreBusyError,
    StoreLayoutError,
    WxdaskError,
)

__all__ = [
    "Config",
    "WxdaskError",
    "ConfigError",
    "SourceNotFoundError",
    "SourceError",
    "CorruptMessageError",
    "StoreLayoutError",
    "ModelError",
    "ClusterError",
    "StoreBusyError",
]
