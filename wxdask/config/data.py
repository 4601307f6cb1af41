"""Sections for where the data lives, how it is computed and what is ingested.

:class:`StoreConfig`, :class:`DaskConfig` and :class:`IngestConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from wxdask.config.parse import (
    _bool,
    _byte_size,
    _mapping,
    _path,
    _positive_float,
    _positive_int,
    parse_endpoint_url,
    parse_leads,
    parse_scheduler_address,
    parse_time,
)
from wxdask.errors import ConfigError


@dataclass(frozen=True)
class StoreConfig:
    """Where the Zarr store lives.

    Parameters
    ----------
    url : str
        Local path or fsspec URL (``s3://bucket/prefix.zarr``).
    storage_options : dict
        Passed to fsspec for a remote store (endpoint, credentials from the
        environment are used when empty). Values of secret-looking keys
        (key, secret, token, password...) are never recorded or shown: see
        :func:`redacted`. Prefer credentials from the environment.
    lease_heartbeat : float
        Seconds between refreshes of the write lease a writing command holds
        on the store (:mod:`wxdask.lease`).
    lease_stale : float or None
        A lease whose last heartbeat is older than this many seconds is taken
        to be a dead run's and broken (default: 3 x ``lease_heartbeat``).
    """

    url: str = "wxdask.zarr"
    storage_options: dict = field(default_factory=dict)
    lease_heartbeat: float = 10.0
    lease_stale: float | None = None

    def __post_init__(self) -> None:
        _path("store.url", self.url, optional=False)
        object.__setattr__(self, "storage_options", _mapping("store.storage_options", self.storage_options))
        if self.storage_options and "://" not in self.url:
            raise ConfigError(
                f"store.storage_options are for an fsspec URL (s3://..., file://...), but store.url "
                f"{self.url!r} is a plain local path; drop them or write the URL with its protocol"
            )
        _positive_float("store.lease_heartbeat", self.lease_heartbeat)
        if self.lease_stale is not None:
            _positive_float("store.lease_stale", self.lease_stale)
            if self.lease_stale <= self.lease_heartbeat:
                raise ConfigError(
                    f"store.lease_stale ({self.lease_stale}) must be longer than store.lease_heartbeat "
                    f"({self.lease_heartbeat})"
                )

    @property
    def stale_after(self) -> float:
        """Seconds after its last heartbeat that a lease counts as a dead run's."""
        return float(self.lease_stale) if self.lease_stale is not None else 3.0 * self.lease_heartbeat


@dataclass(frozen=True)
class DaskConfig:
    """How to get a Dask cluster.

    Parameters
    ----------
    scheduler : str or None
        Address of an existing scheduler (``tcp://host:8786``). ``None`` starts
        a :class:`distributed.LocalCluster`.
    n_workers, threads_per_worker : int
        Size of the local cluster.
    gpu_workers : int
        How many of the local workers advertise the ``GPU`` resource.
    memory_limit : str
        Memory limit per local worker (``"4GiB"``, bytes, or ``"auto"``).
    performance_report : str or None
        Write a Dask performance report (HTML) to this path.
    progress : bool
        Show a progress bar on a terminal.
    host : str
        Interface the local cluster's scheduler and workers listen on
        (loopback by default: the local cluster is for this machine only).
    dashboard_address : str
        Where the local cluster serves its dashboard, which has no
        authentication: loopback by default. ``":8787"`` serves it on every
        interface.
    connect_timeout : float
        Seconds to wait for ``scheduler`` to answer before giving up with an error.
    start_timeout : float
        Seconds to wait for the local cluster's workers to start before giving
        up with an error.
    """

    scheduler: str | None = None
    n_workers: int = 2
    threads_per_worker: int = 1
    gpu_workers: int = 0
    memory_limit: str = "4GiB"
    performance_report: str | None = None
    progress: bool = True
    host: str = "127.0.0.1"
    dashboard_address: str = "127.0.0.1:8787"
    connect_timeout: float = 10.0
    start_timeout: float = 120.0

    def __post_init__(self) -> None:
        parse_scheduler_address(self.scheduler)
        _byte_size("dask.memory_limit", self.memory_limit)
        _path("dask.performance_report", self.performance_report)
        _bool("dask.progress", self.progress)
        _path("dask.host", self.host, optional=False)
        _path("dask.dashboard_address", self.dashboard_address, optional=False)
        _positive_float("dask.connect_timeout", self.connect_timeout)
        _positive_float("dask.start_timeout", self.start_timeout)
        _positive_int("dask.n_workers", self.n_workers)
        _positive_int("dask.threads_per_worker", self.threads_per_worker)
        if (isinstance(self.gpu_workers, bool) or not isinstance(self.gpu_workers, int)
                or not 0 <= self.gpu_workers <= self.n_workers):
            raise ConfigError(
                f"dask.gpu_workers must be an int in 0..{self.n_workers}, got {self.gpu_workers!r}"
            )


@dataclass(frozen=True)
class IngestConfig:
    """Which part of the HRRR archive to read.

    Parameters
    ----------
    start, end : str or None
        Initialisation times, ``end`` exclusive, on the hour, not before 2014-09-30.
        Kept as ``"YYYY-MM-DDTHH"`` UTC text whatever was given: a YAML timestamp
        (``2019-09-20 05:00:00``) is taken as UTC, and a time with an offset
        (``2019-09-20T07+02:00``) is converted to UTC (logged).
    leads : tuple of int
        Forecast leads in hours (0 = analysis).
    source : str
        Archive root, ``s3://noaa-hrrr-bdp-pds`` or a local directory holding the
        same layout.
    endpoint_url : str or None
        S3 endpoint (a local server in tests and the demo; AWS when ``None``).
    anon : bool
        Read the source anonymously, as the public bucket allows.
    retries : int
        Attempts for a transient S3 failure (5xx, timeout, dropped connection).
    backoff : float
        First retry delay in seconds; doubles each attempt.
    retry : tuple of str
        Slot statuses to fetch again even when their objects did not change
        (``absent``, ``corrupt``, ...; ``all`` for every one). ``not_tried``
        and ``failed`` slots are always fetched.
    """

    start: str | None = None
    end: str | None = None
    leads: tuple[int, ...] = (0,)
    source: str = "s3://noaa-hrrr-bdp-pds"
    endpoint_url: str | None = None
    anon: bool = True
    retries: int = 5
    backoff: float = 0.5
    retry: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "leads", parse_leads(self.leads))
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, str(parse_time(value, f"ingest.{name}")))
        _path("ingest.source", self.source, optional=False)
        parse_endpoint_url(self.endpoint_url)
        _bool("ingest.anon", self.anon)
        if self.retry:
            from wxdask.ingest import parse_retry  # the statuses live with the stage

            object.__setattr__(self, "retry", tuple(sorted(parse_retry(self.retry))))
        else:
            object.__setattr__(self, "retry", ())
        if self.start is not None and self.end is not None:
            if parse_time(self.end) <= parse_time(self.start):
                raise ConfigError(
                    f"ingest.end ({self.end}) must be after ingest.start ({self.start}); end is exclusive"
                )
        _positive_int("ingest.retries", self.retries)
        if isinstance(self.backoff, bool) or not isinstance(self.backoff, (int, float)) or self.backoff < 0:
            raise ConfigError(f"ingest.backoff must be a number >= 0, got {self.backoff!r}")

    def times(self) -> np.ndarray:
        """Hourly initialisation times from ``start`` (inclusive) to ``end`` (exclusive).

        Raises
        ------
        ConfigError
            If ``start`` or ``end`` is not set.
        """
        if self.start is None or self.end is None:
            raise ConfigError("ingest.start and ingest.end must both be set (e.g. --start 2019-09-20T00)")
        return np.arange(parse_time(self.start), parse_time(self.end), np.timedelta64(1, "h"))
