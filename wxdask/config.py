"""One typed configuration for every stage.

:class:`Config` holds one frozen dataclass per stage. Build it with
:meth:`Config.from_yaml` (a YAML file plus ``section.key=value`` overrides) or
:meth:`Config.from_dict`; :meth:`Config.to_dict` gives back plain data that is
written into the store's attributes. Each stage receives only its own section.
Dask's own settings (memory limits, fusion, comms) stay in ``dask.config``.
"""

from __future__ import annotations

import dataclasses
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
    "Config",
    "parse_time",
    "parse_leads",
    "parse_duration",
]

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


def parse_time(value: Any, name: str = "time") -> np.datetime64:
    """Parse an initialisation time that must lie on the hour, in the archive.

    Parameters
    ----------
    value : str or numpy.datetime64
        ISO time such as ``"2019-09-20T05"`` or ``"2019-09-20T05:00"`` (UTC).
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
    items = value.split(",") if isinstance(value, str) else list(value)
    leads = []
    for item in items:
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
    """Parse a duration such as ``"24h"``, ``"2d"``, ``"90m"`` or ``"0"``.

    Examples
    --------
    >>> parse_duration("2d")
    np.timedelta64(48,'h')
    """
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
        environment are used when empty).
    """

    url: str = "wxdask.zarr"
    storage_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.url, str) or not self.url:
            raise ConfigError(f"store.url must be a non-empty path or URL, got {self.url!r}")


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
        Memory limit per local worker.
    performance_report : str or None
        Write a Dask performance report (HTML) to this path.
    progress : bool
        Show a progress bar on a terminal.
    """

    scheduler: str | None = None
    n_workers: int = 2
    threads_per_worker: int = 1
    gpu_workers: int = 0
    memory_limit: str = "4GiB"
    performance_report: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        _positive_int("dask.n_workers", self.n_workers)
        _positive_int("dask.threads_per_worker", self.threads_per_worker)
        if not isinstance(self.gpu_workers, int) or not 0 <= self.gpu_workers <= self.n_workers:
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
        if self.retry:
            from wxdask.ingest import parse_retry  # the statuses live with the stage

            object.__setattr__(self, "retry", tuple(sorted(parse_retry(self.retry))))
        else:
            object.__setattr__(self, "retry", ())
        if self.start is not None:
            parse_time(self.start, "ingest.start")
        if self.end is not None:
            parse_time(self.end, "ingest.end")
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


@dataclass(frozen=True)
class ModelConfig:
    """Autoencoder architecture (the seed's by default).

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
    """

    n_layers: int = 4
    pool: int = 4
    filters: tuple[int, ...] = (16, 32, 64, 128)
    kernel: int = 4
    n_latent: int = 50
    clip_max: float = 60.0
    upsample_first: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.upsample_first, bool):
            raise ConfigError(f"model.upsample_first must be true or false, got {self.upsample_first!r}")
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


@dataclass(frozen=True)
class TrainConfig:
    """Training of the autoencoder.

    Parameters
    ----------
    model_dir : str
        Directory for ``model.keras``, checkpoints and ``metadata.json``.
    epochs, batch_size : int
        Training length and batch size.
    learning_rate : float
        Adam learning rate.
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
    """

    model_dir: str = "wxdask-model"
    epochs: int = 10
    batch_size: int = 32
    learning_rate: float = 1e-3
    holdout_every: int = 5
    seed: int = 0
    on_gpu_worker: bool = False
    lr_schedule: str = "constant"
    cache_mb: int = 1024

    def __post_init__(self) -> None:
        if isinstance(self.cache_mb, bool) or not isinstance(self.cache_mb, int) or self.cache_mb < 0:
            raise ConfigError(f"train.cache_mb must be an int >= 0 (MiB), got {self.cache_mb!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(f"train.lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        _positive_int("train.epochs", self.epochs)
        _positive_int("train.batch_size", self.batch_size)
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
        if self.model_dir is not None and (not isinstance(self.model_dir, str) or not self.model_dir):
            raise ConfigError(f"evaluate.model_dir must be a directory path or null, got {self.model_dir!r}")
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
        if self.lead is not None:
            parse_leads([self.lead])


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
        if self.lead is not None:
            parse_leads([self.lead])


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

    @classmethod
    def from_dict(cls, data: dict | None) -> Config:
        """Build from nested plain data; unknown sections or keys are errors.

        Raises
        ------
        ConfigError
            Naming the unknown section or key and the valid ones.
        """
        data = dict(data or {})
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
                    f"unknown key(s) {sorted(unknown)} in config section {name!r}; valid: {sorted(valid)}"
                )
            sections[name] = section_cls(**values)
        return cls(**sections)

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, overrides: dict | list | None = None) -> Config:
        """Load a YAML file (optional) and apply overrides.

        Parameters
        ----------
        path : str or Path, optional
            YAML file with one mapping per section.
        overrides : dict or list of str, optional
            ``{"ingest.start": "2019-09-20T00"}`` or ``["ingest.start=2019-09-20T00"]``;
            list values are parsed as YAML scalars. ``None`` values are ignored,
            so unset CLI options fall through to the file.

        Raises
        ------
        ConfigError
            If the file is missing or malformed, or a value is invalid.
        """
        data: dict = {}
        if path is not None:
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
            try:
                data = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"config file {str(path)!r} is not valid YAML: {exc}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections")
        for key, value in _override_items(overrides):
            section, _, name = key.partition(".")
            if not name:
                raise ConfigError(f"override {key!r} must look like section.key=value")
            data.setdefault(section, {})
            if data[section] is None:
                data[section] = {}
            data[section][name] = value
        return cls.from_dict(data)

    def to_dict(self) -> dict:
        """Plain nested data (tuples as lists), suitable for YAML and Zarr attrs."""
        return _plain(dataclasses.asdict(self))

    def replace(self, **sections: Any) -> Config:
        """Return a copy with keys of sections changed: ``cfg.replace(ingest={"leads": (0, 1)})``."""
        new = {}
        for name, values in sections.items():
            current = getattr(self, name)
            new[name] = dataclasses.replace(current, **values)
        return dataclasses.replace(self, **new)


def _override_items(overrides: dict | list | None) -> list[tuple[str, Any]]:
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return [(k, v) for k, v in overrides.items() if v is not None]
    items = []
    for text in overrides:
        key, sep, value = str(text).partition("=")
        if not sep:
            raise ConfigError(f"override {text!r} must look like section.key=value")
        items.append((key.strip(), yaml.safe_load(value)))
    return items


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
