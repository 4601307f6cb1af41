"""Sections of the autoencoder: its architecture, training, evaluation, encoding and decoding.

:class:`ModelConfig`, :class:`TrainConfig`, :class:`EvaluateConfig`,
:class:`EmbedConfig` and :class:`DecodeConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wxdask.config.parse import _bool, _int, _path, _positive_float, _positive_int
from wxdask.errors import ConfigError

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
