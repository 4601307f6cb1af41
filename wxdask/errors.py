"""Every error wxdask raises on purpose.

Each subclass also inherits the builtin it matches, so callers that catch
``ValueError`` or ``FileNotFoundError`` keep working. Messages name the bad
value and what would be valid. The CLI turns any :class:`WxdaskError` into one
red line on stderr and exit status 1.
"""

from __future__ import annotations

__all__ = [
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


class WxdaskError(Exception):
    """Base class of every error wxdask raises on purpose."""


class ConfigError(WxdaskError, ValueError):
    """A configuration value or command-line argument is invalid."""


class SourceNotFoundError(WxdaskError, FileNotFoundError):
    """The archive, a GRIB file or its ``.idx`` sidecar does not exist."""


class SourceError(WxdaskError, OSError):
    """The archive could not be read (permanent failure after retries)."""


class CorruptMessageError(WxdaskError, ValueError):
    """A GRIB message is truncated, malformed or holds impossible values."""


class StoreLayoutError(WxdaskError, ValueError):
    """A Zarr store does not hold what the stage needs, or holds something else."""


class ModelError(WxdaskError, ValueError):
    """A model directory is missing, incompatible with the data, or corrupt."""


class ClusterError(WxdaskError, ConnectionError):
    """The Dask scheduler cannot be reached or was lost."""


class StoreBusyError(WxdaskError, RuntimeError):
    """Another run holds the store's write lease (see :mod:`wxdask.lease`)."""
