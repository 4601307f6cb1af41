"""One typed configuration for every stage.

:class:`Config` holds one frozen dataclass per stage. Build it with
:meth:`Config.from_yaml` (a YAML file plus ``section.key=value`` overrides) or
:meth:`Config.from_dict`; :meth:`Config.to_dict` gives back plain data that is
written into the store's attributes. Each stage receives only its own section.
Dask's own settings (memory limits, fusion, comms) stay in ``dask.config``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from wxdask.errors import ConfigError

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

logger = logging.getLogger(__name__)

#: First initialisation time in the HRRR archive on AWS.
ARCHIVE_START = np.datetime64("2014-09-30T00", "h")
#: Longest HRRR forecast lead (00/06/12/18z runs of HRRRv4), in hours.
MAX_LEAD = 48


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def _int(name: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (minimum is not None and value < minimum):
        what = "an int" if minimum is None else f"an int >= {minimum}"
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    return int(value)


def _path(name: str, value: Any, *, optional: bool = True) -> str | None:
    """A path or URL: a non-empty string (``None`` when optional), never a number or a list."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        what = "a non-empty path or URL" + (" or null" if optional else "")
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    return value


def _mapping(name: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        # the type, not the value: a credential pasted in the wrong place must not reach the terminal
        raise ConfigError(f"{name} must be a mapping (key: value), got a value of type {type(value).__name__}")
    return dict(value)


def _byte_size(name: str, value: Any) -> str | int | float:
    """A byte size for Dask (``"4GiB"``, an int of bytes, a fraction of memory, or ``"auto"``)."""
    from dask.utils import parse_bytes

    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{name} must be a byte size like 4GiB, got {value!r}")
    if isinstance(value, (int, float)):
        if not value > 0:
            raise ConfigError(f"{name} must be a positive byte size like 4GiB, got {value!r}")
        return value
    if isinstance(value, str) and value.strip().lower() == "auto":
        return value
    try:
        n = parse_bytes(value) if isinstance(value, str) else None
    except (ValueError, TypeError):
        n = None
    if n is None or n <= 0:
        raise ConfigError(f"{name} must be a byte size like 4GiB or 500MB (or 'auto'), got {value!r}")
    return value


#: Schemes of Dask comm addresses, and those that need ``host:port``.
_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")
_PORTED = ("tcp", "tls", "ws", "wss")


def parse_scheduler_address(value: Any, name: str = "dask.scheduler") -> str | None:
    """Check a Dask scheduler address such as ``tcp://host:8786`` (the scheme defaults to tcp).

    Raises
    ------
    ConfigError
        If the scheme is not a Dask comm (tcp, tls, ws, wss, ucx, inproc) or
        a tcp/tls/ws/wss address has no valid port.

    Examples
    --------
    >>> parse_scheduler_address("tcp://10.0.0.2:8786")
    'tcp://10.0.0.2:8786'
    """
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be an address like tcp://host:8786, got {value!r}")
    scheme, sep, rest = value.strip().partition("://")
    if not sep:
        scheme, rest = "tcp", value.strip()
    if scheme not in _SCHEMES:
        raise ConfigError(f"{name} {value!r} has an unknown scheme {scheme!r}; valid: {', '.join(_SCHEMES)}")
    if scheme in _PORTED:
        host, colon, port = rest.rpartition(":")
        if not colon or not host:
            raise ConfigError(f"{name} {value!r} has no port; write it as {scheme}://host:8786")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name} {value!r} has no valid port ({port!r}); write it as {scheme}://host:8786")
        if ":" in host and not host.startswith("["):
            raise ConfigError(f"{name} {value!r}: write an IPv6 host in brackets, {scheme}://[::1]:8786")
    return value.strip()


#: Key names whose values are secrets (matched case-insensitively anywhere in a key).
SECRET_KEY_PATTERN = re.compile(
    r"key|secret|token|passw|credential|auth|signature|private", re.IGNORECASE)
#: Keys that match the pattern but hold no secret.
_NOT_SECRET = {"key_prefix", "keys", "signature_version", "auth_type"}
#: What replaces a secret value.
REDACTED = "***"


def redacted(data: Any) -> Any:
    """A copy of nested plain data with the values of secret-looking keys replaced by ``"***"``.

    Keys are matched case-insensitively on ``key``, ``secret``, ``token``,
    ``passw``, ``credential``, ``auth``, ``signature`` and ``private``
    (so ``key``, ``secret``, ``token``, ``aws_access_key_id``,
    ``aws_secret_access_key``, ``aws_session_token``, ``password``, ``passwd``
    ...) at any depth, in mappings and in lists of mappings. This is the one
    function through which a configuration is recorded (store attributes) or
    shown (``wxdask config show``, logs).

    Examples
    --------
    >>> redacted({"store": {"storage_options": {"key": "AKIA", "client_kwargs": {"endpoint_url": "http://x"}}}})
    {'store': {'storage_options': {'key': '***', 'client_kwargs': {'endpoint_url': 'http://x'}}}}
    """
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            secret = isinstance(k, str) and k.lower() not in _NOT_SECRET and SECRET_KEY_PATTERN.search(k)
            out[k] = REDACTED if secret and v is not None and not isinstance(v, (dict, list, tuple)) else redacted(v)
        return out
    if isinstance(data, (list, tuple)):
        return [redacted(v) for v in data]
    return data


_OFFSET = re.compile(r"(?:[+-]\d{2}(?::?\d{2})?|Z)$")


def _utc(value: Any, name: str) -> Any:
    """Turn a datetime/date (YAML timestamps) or an ISO string with a UTC offset into naive UTC ISO text."""
    if isinstance(value, np.datetime64) or value is None:
        return value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            utc = value.astimezone(_dt.UTC).replace(tzinfo=None)
            logger.info("%s %s converted to UTC: %s", name, value.isoformat(), utc.isoformat())
            value = utc
        return value.replace(tzinfo=None).isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat() + "T00"
    if isinstance(value, str):
        text = value.strip()
        if "T" in text or " " in text:
            _, _, clock = text.replace(" ", "T").partition("T")
            if _OFFSET.search(clock) and not clock.endswith("Z"):
                try:
                    parsed = _dt.datetime.fromisoformat(text)
                except ValueError:
                    raise ConfigError(f"{name} must be an ISO time like 2019-09-20T05, got {value!r}") from None
                return _utc(parsed, name)
        return text
    raise ConfigError(f"{name} must be an ISO time like 2019-09-20T05, got {value!r}")


def parse_time(value: Any, name: str = "time") -> np.datetime64:
    """Parse an initialisation time that must lie on the hour, in the archive.

    Parameters
    ----------
    value : str, datetime.datetime, datetime.date or numpy.datetime64
        ISO time such as ``"2019-09-20T05"`` or ``"2019-09-20T05:00"`` (UTC,
        with or without a trailing ``Z``). A time with a UTC offset
        (``"2019-09-20T07+02:00"``, or a YAML timestamp with one) is converted
        to UTC, and the conversion is logged; a ``datetime`` without one (what
        YAML makes of ``2019-09-20 05:00:00``) is taken as UTC.
    name : str
        Name used in the error message.

    Returns
    -------
    numpy.datetime64
        The time at hour precision.

    Raises
    ------
    ConfigError
        If the value is not a time, not on the hour, or before 2014-09-30.

    Examples
    --------
    >>> parse_time("2019-09-20T05")
    np.datetime64('2019-09-20T05','h')
    """
    value = _utc(value, name)
    try:
        t = np.datetime64(str(value).rstrip("Z"))
    except ValueError:
        raise ConfigError(f"{name} must be an ISO time like 2019-09-20T05, got {value!r}") from None
    if np.isnat(t):
        raise ConfigError(f"{name} must be an ISO time like 2019-09-20T05, got {value!r}")
    hour = t.astype("datetime64[h]")
    if hour != t:
        raise ConfigError(f"{name} must be on the hour (HRRR runs hourly), got {value!r}")
    if hour < ARCHIVE_START:
        raise ConfigError(f"{name} {value!r} is before the archive starts ({ARCHIVE_START})")
    return hour


def parse_leads(value: Any) -> tuple[int, ...]:
    """Parse forecast leads in whole hours (``"0,1,2"`` or a sequence).

    Raises
    ------
    ConfigError
        If a lead is not an integer in ``0..48`` or a lead repeats.

    Examples
    --------
    >>> parse_leads("0,1, 2")
    (0, 1, 2)
    """
    items: list[Any]
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
    else:
        raise ConfigError(f"leads must be a list of whole hours 0..{MAX_LEAD} (or '0,1,2'), got {value!r}")
    leads = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int, np.integer)):
            raise ConfigError(f"leads must be whole hours 0..{MAX_LEAD}, got {item!r}")
        try:
            lead = int(str(item).strip())
        except ValueError:
            raise ConfigError(f"leads must be whole hours 0..{MAX_LEAD}, got {item!r}") from None
        if not 0 <= lead <= MAX_LEAD:
            raise ConfigError(f"leads must be whole hours 0..{MAX_LEAD}, got {lead}")
        leads.append(lead)
    if not leads:
        raise ConfigError("leads must name at least one lead hour, got none")
    if len(set(leads)) != len(leads):
        raise ConfigError(f"leads must not repeat, got {value!r}")
    return tuple(sorted(leads))


def parse_duration(value: Any, name: str = "duration") -> np.timedelta64:
    """Parse a duration in whole hours such as ``"24h"``, ``"2d"`` or ``"0"``.

    Examples
    --------
    >>> parse_duration("2d")
    np.timedelta64(48,'h')
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, np.integer)):
        raise ConfigError(f"{name} must look like 24h or 2d, got {value!r}")
    text = str(value).strip().lower()
    units = {"h": 1, "d": 24}
    try:
        if text in ("0", "none", ""):
            return np.timedelta64(0, "h")
        if text[-1] in units:
            hours = int(text[:-1]) * units[text[-1]]
        else:
            hours = int(text)
    except (ValueError, IndexError):
        raise ConfigError(f"{name} must look like 24h or 2d, got {value!r}") from None
    if hours < 0:
        raise ConfigError(f"{name} must not be negative, got {value!r}")
    return np.timedelta64(hours, "h")


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
        _path("ingest.endpoint_url", self.endpoint_url)
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


#: Autoencoder architectures (``model.arch``).
ARCHITECTURES = ("eof", "seed")
#: ModelConfig fields that only the seed architecture reads.
_SEED_ONLY = ("n_layers", "pool", "filters", "kernel", "upsample_first")


def _plain_value(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


@dataclass(frozen=True)
class ModelConfig:
    """Autoencoder architecture (the EOF autoencoder by default; ``arch: seed`` for the seed's).

    Parameters
    ----------
    n_layers : int
        Conv + pool blocks in the encoder (and mirrored in the decoder).
    pool : int
        Pool and upsampling factor per block.
    filters : tuple of int
        Filters of each encoder block; its length must equal ``n_layers``.
    kernel : int
        Convolution kernel size.
    n_latent : int
        Size of the embedding (the ``refc_embedding`` Dense layer).
    clip_max : float
        dBZ clipped to ``0..clip_max`` and divided by it for the model input.
    upsample_first : bool
        Decoder blocks upsample, then convolve (the convolution refines the
        upsampled field), instead of the seed's convolve-then-upsample, whose
        last upsampling leaves ``pool`` x ``pool`` blocks. Same parameter count.
    arch : {"eof", "seed"}
        ``eof`` (default): the EOF autoencoder of :mod:`wxdask.eof`, started at
        the PCA of the training images; ``seed``: the seed's convolutional
        autoencoder (``n_layers``, ``pool``, ``filters``, ``kernel`` and
        ``upsample_first`` apply to it only).
    branch_filters : tuple of int
        ``eof``: filters of the encoder's strided convolutional branch (one
        stride-2 3x3 layer each).
    refine_filters, refine_layers : int
        ``eof``: width and depth of the decoder's convolutional refinement.
    linear_max_points : int
        ``eof``: the linear (EOF) path works on the image block-averaged until
        it has at most this many points (the full HRRR grid: 4x4 blocks).
    """

    n_layers: int = 4
    pool: int = 4
    filters: tuple[int, ...] = (16, 32, 64, 128)
    kernel: int = 4
    n_latent: int = 50
    clip_max: float = 60.0
    upsample_first: bool = False
    arch: str = "eof"
    branch_filters: tuple[int, ...] = (16, 32, 32)
    refine_filters: int = 8
    refine_layers: int = 3
    linear_max_points: int = 150_000

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise ConfigError(f"model.arch must be one of {', '.join(ARCHITECTURES)}, got {self.arch!r}")
        if not isinstance(self.branch_filters, (list, tuple)) or not self.branch_filters:
            raise ConfigError(f"model.branch_filters must be a list of positive ints, got {self.branch_filters!r}")
        for f in self.branch_filters:
            _positive_int("model.branch_filters[]", f)
        object.__setattr__(self, "branch_filters", tuple(self.branch_filters))
        _positive_int("model.refine_filters", self.refine_filters)
        _positive_int("model.refine_layers", self.refine_layers)
        _positive_int("model.linear_max_points", self.linear_max_points)
        if not isinstance(self.upsample_first, bool):
            raise ConfigError(f"model.upsample_first must be true or false, got {self.upsample_first!r}")
        if self.arch != "seed":
            seed_only = [f"model.{name}" for name in _SEED_ONLY
                         if _plain_value(getattr(self, name)) != _plain_value(getattr(_SEED_DEFAULTS, name))]
            if seed_only:
                raise ConfigError(f"{', '.join(seed_only)} apply to the seed architecture only; "
                                  f"set model.arch: seed to use them (model.arch is {self.arch!r})")
        if not isinstance(self.filters, (list, tuple)):
            raise ConfigError(f"model.filters must be a list of {self.n_layers} positive ints, got {self.filters!r}")
        _positive_int("model.n_layers", self.n_layers)
        _positive_int("model.pool", self.pool)
        _positive_int("model.kernel", self.kernel)
        _positive_int("model.n_latent", self.n_latent)
        _positive_float("model.clip_max", self.clip_max)
        filters = tuple(self.filters)
        for f in filters:
            _positive_int("model.filters[]", f)
        if len(filters) != self.n_layers:
            raise ConfigError(
                f"model.filters must have n_layers={self.n_layers} entries, got {list(filters)}"
            )
        object.__setattr__(self, "filters", filters)


_SEED_DEFAULTS = ModelConfig(arch="seed")


@dataclass(frozen=True)
class TrainConfig:
    """Training of the autoencoder.

    Parameters
    ----------
    model_dir : str
        Directory for ``model.keras``, checkpoints and ``metadata.json``.
    epochs, batch_size : int
        Training length and batch size.
    learning_rate : float, optional
        Adam learning rate; by default the architecture's own
        (:data:`wxdask.model.LEARNING_RATES`: 3e-4 for ``eof``, which starts at
        PCA and is only refined, 1e-3 for ``seed``).
    holdout_every : int
        Every ``holdout_every``-th day (counted from the first day in the store)
        is held out, whole, for evaluation.
    seed : int
        Seed for shuffling and weight initialisation.
    on_gpu_worker : bool
        Run training as a task on a worker with the ``GPU`` resource.
    lr_schedule : {"constant", "cosine"}
        ``cosine`` decays the learning rate to 5% of ``learning_rate`` over
        ``epochs`` (fixed when training starts; a resumed run keeps it).
    cache_mb : int
        Memory for images already read (stored int16, least recently used
        out first), shared by the training and held-out batches; 0 reads
        every batch from the store. Bounds memory, never the archive size.
    eof_max_images : int
        ``model.arch: eof``: the PCA that starts the model is fitted on a
        seeded sample of at most this many training images.
    """

    model_dir: str = "wxdask-model"
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float | None = None
    holdout_every: int = 5
    seed: int = 0
    on_gpu_worker: bool = False
    lr_schedule: str = "constant"
    cache_mb: int = 1024
    eof_max_images: int = 2000

    def __post_init__(self) -> None:
        _path("train.model_dir", self.model_dir, optional=False)
        _positive_int("train.eof_max_images", self.eof_max_images)
        _int("train.seed", self.seed)
        _bool("train.on_gpu_worker", self.on_gpu_worker)
        if isinstance(self.cache_mb, bool) or not isinstance(self.cache_mb, int) or self.cache_mb < 0:
            raise ConfigError(f"train.cache_mb must be an int >= 0 (MiB), got {self.cache_mb!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"train.lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        _positive_int("train.epochs", self.epochs)
        _positive_int("train.batch_size", self.batch_size)
        if self.learning_rate is not None:
            _positive_float("train.learning_rate", self.learning_rate)
        if isinstance(self.holdout_every, bool) or not isinstance(self.holdout_every, int) or self.holdout_every < 2:
            raise ConfigError(f"train.holdout_every must be an int >= 2, got {self.holdout_every!r}")


@dataclass(frozen=True)
class EvaluateConfig:
    """Held-out evaluation of the autoencoder against a PCA baseline.

    Parameters
    ----------
    model_dir : str or None
        Trained model directory; ``None`` uses ``train.model_dir``.
    batch_size : int
        Images per autoencoder call and per PCA block.
    n_examples : int
        Held-out times drawn side by side (original, autoencoder, PCA) in a PNG.
    pca_max_train : int
        Training images the PCA baseline is fitted on at most (a seeded sample).
    pca_power_iter : int
        Power iterations of the randomized SVD (dask-ml's default of 0 gives a
        poor, unfairly weak baseline).
    seed : int
        Seed of the PCA sample and SVD.
    """

    model_dir: str | None = None
    batch_size: int = 32
    n_examples: int = 4
    pca_max_train: int = 4000
    pca_power_iter: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        _path("evaluate.model_dir", self.model_dir)
        _int("evaluate.seed", self.seed)
        _positive_int("evaluate.batch_size", self.batch_size)
        _positive_int("evaluate.n_examples", self.n_examples)
        _positive_int("evaluate.pca_max_train", self.pca_max_train)
        if isinstance(self.pca_power_iter, bool) or not isinstance(self.pca_power_iter, int) or self.pca_power_iter < 0:
            raise ConfigError(f"evaluate.pca_power_iter must be an int >= 0, got {self.pca_power_iter!r}")


@dataclass(frozen=True)
class EmbedConfig:
    """Encoding every image to its embedding.

    Parameters
    ----------
    model_dir : str or None
        Trained model directory; ``None`` uses ``train.model_dir``.
    batch_size : int
        Images per encoder call.
    images_per_task : int
        Images one Dask task reads and encodes.
    """

    model_dir: str | None = None
    batch_size: int = 64
    images_per_task: int = 256

    def __post_init__(self) -> None:
        _path("embed.model_dir", self.model_dir)
        _positive_int("embed.batch_size", self.batch_size)
        _positive_int("embed.images_per_task", self.images_per_task)


@dataclass(frozen=True)
class DecodeConfig:
    """Decoding embeddings back to images.

    Parameters
    ----------
    model_dir : str or None
        The model that made the embeddings; ``None`` uses ``train.model_dir``.
    batch_size : int
        Embeddings per decoder call.
    """

    model_dir: str | None = None
    batch_size: int = 64

    def __post_init__(self) -> None:
        _path("decode.model_dir", self.model_dir)
        _positive_int("decode.batch_size", self.batch_size)


@dataclass(frozen=True)
class SearchConfig:
    """All-pairs nearest-neighbour (analog) search.

    Parameters
    ----------
    k : int
        Neighbours per slot.
    exclude_window : str
        Slots within this time of the query are not neighbours (``"24h"``).
    lead : int or None
        Search one lead only; ``None`` searches all slots together.
    block_size : int
        Queries per task.
    chunk_size : int
        Database rows per GEMM within a task (a task holds at most a
        ``block_size x chunk_size`` float32 matrix).
    model_dir : str or None
        Model for image queries and pictures (default: the one that made the embedding).
    """

    k: int = 10
    exclude_window: str = "24h"
    lead: int | None = None
    block_size: int = 4096
    chunk_size: int = 4096
    model_dir: str | None = None

    def __post_init__(self) -> None:
        _positive_int("search.k", self.k)
        _positive_int("search.block_size", self.block_size)
        _positive_int("search.chunk_size", self.chunk_size)
        parse_duration(self.exclude_window, "search.exclude_window")
        _path("search.model_dir", self.model_dir)
        if self.lead is not None:
            _lead("search.lead", self.lead)


@dataclass(frozen=True)
class InterpolateConfig:
    """Interpolation residuals between neighbouring hours.

    Parameters
    ----------
    n_decode : int
        Times whose interpolated embedding is decoded and scored in dBZ.
    model_dir : str or None
        Model whose decoder scores them (default: the one that made the embedding).
    plot : str or None
        Write a PNG of residual and step over time here.
    """

    n_decode: int = 4
    model_dir: str | None = None
    plot: str | None = None

    def __post_init__(self) -> None:
        _path("interpolate.model_dir", self.model_dir)
        _path("interpolate.plot", self.plot)
        if isinstance(self.n_decode, bool) or not isinstance(self.n_decode, int) or self.n_decode < 0:
            raise ConfigError(f"interpolate.n_decode must be an int >= 0, got {self.n_decode!r}")


@dataclass(frozen=True)
class KMeansConfig:
    """K-means weather regimes (dask-ml).

    Parameters
    ----------
    k : int
        Number of clusters.
    lead : int or None
        Cluster one lead only; ``None`` clusters all slots.
    max_iter : int
        Lloyd iterations at most.
    tol : float
        Absolute tolerance on centre movement (dask-ml's meaning).
    oversampling_factor : float
        ``k-means||`` oversampling; dask-ml's default of 2 undersamples.
    seed : int
        Random state.
    init_max_iter : int or None
        Rounds of ``k-means||`` (default 3 for the lloyd engine, with
        ``oversampling_factor * k`` candidates expected per round, and 5 for
        dask-ml, which reduces its candidates unweighted; dask-ml's own default,
        about log of the first cost, takes minutes on a million slots).
    block_size : int
        Slots per task.
    model_dir : str or None
        Model whose decoder draws the centroids (default: the one that made the embedding).
    plot : str or None
        PNG panel of the decoded centroids (default: ``<store>-centroids.png`` beside a local store).
    engine : {"lloyd", "dask-ml"}
        Who fits the centroids: Lloyd iterations on Dask arrays (wxdask.kmeans),
        or dask-ml's KMeans (slower; see wxdask/kmeans.py). Both use k-means||.
    """

    k: int = 5
    lead: int | None = None
    max_iter: int = 100
    tol: float = 1e-6
    oversampling_factor: float = 10.0
    seed: int = 0
    init_max_iter: int | None = None
    block_size: int = 131072
    model_dir: str | None = None
    plot: str | None = None
    engine: str = "lloyd"

    def __post_init__(self) -> None:
        _positive_int("kmeans.k", self.k)
        if self.engine not in ("lloyd", "dask-ml"):
            raise ConfigError(f"kmeans.engine must be 'lloyd' or 'dask-ml', got {self.engine!r}")
        _positive_int("kmeans.max_iter", self.max_iter)
        _positive_float("kmeans.tol", self.tol)
        _positive_float("kmeans.oversampling_factor", self.oversampling_factor)
        _positive_int("kmeans.block_size", self.block_size)
        if self.init_max_iter is not None:
            _positive_int("kmeans.init_max_iter", self.init_max_iter)
        _int("kmeans.seed", self.seed)
        _path("kmeans.model_dir", self.model_dir)
        _path("kmeans.plot", self.plot)
        if self.lead is not None:
            _lead("kmeans.lead", self.lead)


def _lead(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= MAX_LEAD:
        raise ConfigError(f"{name} must be a whole hour 0..{MAX_LEAD} or null, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class TilesConfig:
    """Tiles of the grid (mesoscale analogs and regimes) and their autoencoder.

    Parameters
    ----------
    size_km : float
        Wanted tile side; rounded to a multiple of the tile model's
        ``pool ** n_layers`` pixels (see :func:`wxdask.tiles.tiling_for`).
    stride_km : float or None
        Distance between tiles (default: the size, no overlap).
    echo_threshold : float
        Tiles whose share of points with echo (> 0 dBZ) is below this are not
        trained on, embedded, searched or clustered (NaN in the outputs).
    model_dir : str
        Directory of the tile model (``wxdask train --tiles``).
    n_layers, pool, kernel : int
        The tile autoencoder's blocks (the whole-image model's code, on tiles).
    filters : tuple of int
        Filters per block.
    epochs, batch_size : int
        Tile training.
    k : int
        Neighbours per tile (``search --tiles``).
    exclude_window : str
        As ``search.exclude_window``.
    anywhere : bool
        Search every tile against every tile (``True``) or the same tile index only.
    n_clusters : int
        Tile regimes (``cluster --tiles``).
    """

    size_km: float = 500.0
    stride_km: float | None = None
    echo_threshold: float = 0.05
    model_dir: str = "tile-model"
    n_layers: int = 3
    pool: int = 2
    kernel: int = 3
    filters: tuple[int, ...] = (16, 32, 64)
    epochs: int = 10
    batch_size: int = 64
    k: int = 10
    exclude_window: str = "24h"
    anywhere: bool = False
    n_clusters: int = 6

    def __post_init__(self) -> None:
        _positive_float("tiles.size_km", self.size_km)
        if self.stride_km is not None:
            _positive_float("tiles.stride_km", self.stride_km)
        if isinstance(self.echo_threshold, bool) or not isinstance(self.echo_threshold, (int, float)) \
                or not 0 <= self.echo_threshold <= 1:
            raise ConfigError(f"tiles.echo_threshold must be a share 0..1, got {self.echo_threshold!r}")
        if not isinstance(self.model_dir, str) or not self.model_dir:
            raise ConfigError(f"tiles.model_dir must be a directory path, got {self.model_dir!r}")
        for name in ("n_layers", "pool", "kernel", "epochs", "batch_size", "k", "n_clusters"):
            _positive_int(f"tiles.{name}", getattr(self, name))
        filters = tuple(self.filters) if isinstance(self.filters, (list, tuple)) else None
        if filters is None or len(filters) != self.n_layers:
            raise ConfigError(f"tiles.filters must have n_layers={self.n_layers} entries, got {self.filters!r}")
        for f in filters:
            _positive_int("tiles.filters[]", f)
        object.__setattr__(self, "filters", filters)
        if not isinstance(self.anywhere, bool):
            raise ConfigError(f"tiles.anywhere must be true or false, got {self.anywhere!r}")
        parse_duration(self.exclude_window, "tiles.exclude_window")

    def model_config(self, n_latent: int = 50, clip_max: float = 60.0) -> ModelConfig:
        """The tile autoencoder's architecture, as a :class:`ModelConfig`."""
        return ModelConfig(n_layers=self.n_layers, pool=self.pool, filters=self.filters, kernel=self.kernel,
                           n_latent=n_latent, clip_max=clip_max, upsample_first=True, arch="seed")


_SECTIONS: dict[str, type] = {
    "store": StoreConfig,
    "dask": DaskConfig,
    "ingest": IngestConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "embed": EmbedConfig,
    "decode": DecodeConfig,
    "search": SearchConfig,
    "interpolate": InterpolateConfig,
    "kmeans": KMeansConfig,
    "tiles": TilesConfig,
}


@dataclass(frozen=True)
class Config:
    """The whole configuration: one frozen section per stage."""

    store: StoreConfig = field(default_factory=StoreConfig)
    dask: DaskConfig = field(default_factory=DaskConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    interpolate: InterpolateConfig = field(default_factory=InterpolateConfig)
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    tiles: TilesConfig = field(default_factory=TilesConfig)

    @classmethod
    def from_dict(cls, data: dict | None) -> Config:
        """Build from nested plain data; unknown sections or keys are errors.

        Every field's value is checked where its section is built (types
        included: a list where a mapping belongs, a number where a path
        belongs, ``maybe`` for a boolean...), so nothing invalid reaches a
        stage or the store.

        Raises
        ------
        ConfigError
            Naming the unknown section or key and the valid ones, or the bad value.
        """
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a mapping of sections, got {data!r}")
        sections = {}
        for name, values in data.items():
            if name not in _SECTIONS:
                raise ConfigError(f"unknown config section {name!r}; valid: {', '.join(_SECTIONS)}")
            if values is None:
                values = {}
            if not isinstance(values, dict):
                raise ConfigError(f"config section {name!r} must be a mapping, got {values!r}")
            section_cls = _SECTIONS[name]
            valid = {f.name for f in fields(section_cls)}
            unknown = set(values) - valid
            if unknown:
                raise ConfigError(
                    f"unknown key(s) {sorted(map(str, unknown))} in config section {name!r}; valid: {sorted(valid)}"
                )
            sections[name] = section_cls(**values)
        return cls(**sections)

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, overrides: dict | list | None = None,
                  options: dict | None = None) -> Config:
        """Load a YAML file (optional), apply overrides, then options: the one way a Config is built.

        Parameters
        ----------
        path : str or Path, optional
            YAML file with one mapping per section.
        overrides : dict or list of str, optional
            ``{"ingest.start": "2019-09-20T00"}`` or ``["ingest.start=2019-09-20T00"]``
            (the CLI's ``--set``); list values are parsed as YAML. A key may
            reach into a mapping: ``store.storage_options.client_kwargs.region_name=x``.
        options : dict, optional
            Flat ``section.key`` values applied last (a CLI command's own
            options). In both, ``None`` values are ignored, so unset CLI
            options fall through to the file.

        Raises
        ------
        ConfigError
            If the file is missing or malformed, an override is not valid YAML,
            or a value is invalid.
        """
        data: dict = {}
        if path is not None:
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise ConfigError(f"config file {str(path)!r} is not text (UTF-8)") from None
            try:
                data = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"config file {str(path)!r} is not valid YAML: {_one_line(exc)}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {data!r}")
        for key, value in _override_items(overrides) + _override_items(options):
            _set_dotted(data, key, value)
        return cls.from_dict(data)

    def to_dict(self, *, redact: bool = True) -> dict:
        """Plain, JSON-serialisable nested data (tuples as lists), for YAML, logs and Zarr attrs.

        Parameters
        ----------
        redact : bool
            Replace the values of secret-looking keys (credentials in
            ``store.storage_options``) by ``"***"`` (:func:`redacted`). The
            default, since this is what gets recorded and shown; ``False``
            only to hand a config to code that needs the credentials.
        """
        data = _plain(dataclasses.asdict(self))
        return redacted(data) if redact else data

    def replace(self, **sections: Any) -> Config:
        """Return a copy with keys of sections changed: ``cfg.replace(ingest={"leads": (0, 1)})``."""
        new = {}
        for name, values in sections.items():
            current = getattr(self, name)
            new[name] = dataclasses.replace(current, **values)
        return dataclasses.replace(self, **new)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _override_items(overrides: dict | list | None) -> list[tuple[str, Any]]:
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return [(str(k), v) for k, v in overrides.items() if v is not None]
    items = []
    for text in overrides:
        key, sep, value = str(text).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {text!r} must look like section.key=value")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {text!r}: the value is not valid YAML ({_one_line(exc)})") from None
        items.append((key.strip(), parsed))
    return items


def _set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``key="a.b.c"``, making mappings on the way."""
    parts = [p.strip() for p in key.split(".")]
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {key!r} must look like section.key=value")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict) and depth == 0:
            raise ConfigError(f"config section {part!r} must be a mapping, got {child!r}")
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            shown = redacted({part: child})[part]
            raise ConfigError(f"override {key!r}: {where} is {shown!r}, not a mapping")
        node = child
    node[parts[-1]] = value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (_dt.timedelta, np.timedelta64, np.datetime64)):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
