"""Sections of the analyses on the embeddings, and of tiles.

:class:`SearchConfig`, :class:`InterpolateConfig`, :class:`KMeansConfig` and
:class:`TilesConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass

from wxdask.config.model import ModelConfig
from wxdask.config.parse import _int, _lead, _path, _positive_float, _positive_int, parse_duration
from wxdask.errors import ConfigError


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
        or dask-ml's KMeans (slower; see wxdask/kmeans/). Both use k-means||.
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
