"""The model, core (pure numpy, no Keras): constants, the predictor protocol, scaling and sizing.

Part of :mod:`wxdask.model`, which re-exports every name: :func:`scale_input`,
:func:`scale_raw`, :func:`decode_dbz`, :func:`crop_padding`,
:func:`learning_rate` and :func:`fit_config_to_grid`, with the file and layer
names, :data:`GRIDS`, :data:`RAW_SCALE`, :class:`Predictor` and :class:`ModelInfo`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Protocol, TypedDict, runtime_checkable

import numpy as np

from wxdask.config import ModelConfig
from wxdask.errors import ConfigError

logger = logging.getLogger("wxdask.model")

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
EMBEDDING_LAYER = "refc_embedding"
#: Named grids and their shapes ``(ny, nx)``.
GRIDS = {"coarse": (66, 112), "hrrr": (1059, 1799)}
#: Scale of the stored ``refc`` integers: 1/16 dBZ.
RAW_SCALE = 0.0625
#: Smallest pooled bottleneck side a model may have (fewer rows/columns lose the layout).
MIN_POOLED = 2


@runtime_checkable
class Predictor(Protocol):
    """Anything with ``predict(x) -> numpy.ndarray`` (a Keras predictor, or a numpy fake in tests)."""

    def predict(self, x: np.ndarray) -> np.ndarray: ...


class ModelInfo(TypedDict):
    """What a stage needs to know of a model, read without importing a framework."""

    hash: str
    grid: tuple[int, int]
    n_latent: int
    clip_max: float


# ----------------------------------------------------------------------------- core (numpy)


def scale_input(x: np.ndarray, clip_max: float = 60.0) -> np.ndarray:
    """Scale reflectivity in dBZ to the model's input: clip to ``0..clip_max``, divide by ``clip_max``.

    NaN (a missing value) becomes 0, as no echo.

    Parameters
    ----------
    x : numpy.ndarray
        Reflectivity in dBZ, any shape.
    clip_max : float
        Upper clip in dBZ (the seed used 60).

    Returns
    -------
    numpy.ndarray
        float32 in ``[0, 1]``, same shape as ``x``.

    Examples
    --------
    >>> scale_input(np.array([-10.0, 0.0, 30.0, 75.0, np.nan]))
    array([0. , 0. , 0.5, 1. , 0. ], dtype=float32)
    """
    x = np.asarray(x, dtype=np.float32)
    out = np.clip(x, np.float32(0.0), np.float32(clip_max))
    out = np.nan_to_num(out, copy=False, nan=0.0)
    out /= np.float32(clip_max)
    return out


def scale_raw(x_int16: np.ndarray, clip_max: float = 60.0) -> np.ndarray:
    """Scale stored ``refc`` (int16 in 1/16 dBZ) to the model's input.

    The same result as ``scale_input(x_int16 / 16, clip_max)``, bit for bit
    (the fill value -32768 is negative, so it becomes 0).

    Parameters
    ----------
    x_int16 : numpy.ndarray
        Packed reflectivity as stored, any shape.
    clip_max : float
        Upper clip in dBZ.

    Returns
    -------
    numpy.ndarray
        float32 in ``[0, 1]``, same shape.

    Examples
    --------
    >>> scale_raw(np.array([-160, 0, 480, 1200], dtype=np.int16))
    array([0. , 0. , 0.5, 1. ], dtype=float32)
    """
    x = np.asarray(x_int16).astype(np.float32)
    x *= np.float32(0.0625)  # exact: a power of two
    return scale_input(x, clip_max)


def decode_dbz(z: np.ndarray, decoder: Predictor, *, clip_max: float, batch_size: int = 64) -> np.ndarray:
    """Decode embeddings to images in dBZ, clipped to ``0..clip_max`` as the model's input was.

    Pure: the decoder is an argument.

    Parameters
    ----------
    z : numpy.ndarray
        ``(n, n_latent)`` embeddings, ``n > 0``.
    decoder : Predictor
        ``(b, n_latent)`` -> ``(b, ny, nx[, 1])`` in scaled units (1 = ``clip_max`` dBZ).
    clip_max : float
        dBZ of a scaled 1.
    batch_size : int
        Embeddings per ``decoder.predict`` call.

    Returns
    -------
    numpy.ndarray
        ``(n, ny, nx)`` float32 dBZ in ``0..clip_max``.

    Raises
    ------
    ValueError
        If ``z`` is not ``(n, n_latent)`` with ``n > 0``.

    Examples
    --------
    >>> class Fake:
    ...     def predict(self, z):
    ...         return np.repeat(z[:, :1, None, None], 3, axis=2)
    >>> decode_dbz(np.array([[0.5], [1.2]]), Fake(), clip_max=60.0, batch_size=1)[:, 0, 0]
    array([30., 60.], dtype=float32)
    """
    z = np.asarray(z, dtype=np.float32)
    if z.ndim != 2 or z.shape[0] == 0:
        raise ValueError(f"decode_dbz takes (n, n_latent) embeddings with n > 0, got shape {z.shape}")
    parts = []
    for i in range(0, z.shape[0], batch_size):
        y = np.asarray(decoder.predict(z[i : i + batch_size]), dtype=np.float32)
        if y.ndim == 4 and y.shape[-1] == 1:
            y = y[..., 0]
        parts.append(y)
    out = np.concatenate(parts, axis=0)
    np.clip(out, np.float32(0.0), np.float32(1.0), out=out)
    out *= np.float32(clip_max)
    return out


def crop_padding(grid_shape: tuple[int, int], multiple: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """Rows and columns to crop (and pad back) so each side is a multiple of ``multiple``.

    The seed's split: the smaller half at the start (south/west), the larger at the end.

    Parameters
    ----------
    grid_shape : tuple of int
        ``(ny, nx)``.
    multiple : int
        ``pool ** n_layers``.

    Returns
    -------
    tuple
        ``((south, north), (west, east))`` as for ``keras.layers.Cropping2D``.

    Raises
    ------
    ConfigError
        If a side is smaller than ``multiple``.

    Examples
    --------
    >>> crop_padding((1059, 1799), 256)
    ((17, 18), (3, 4))
    >>> crop_padding((66, 112), 16)
    ((1, 1), (0, 0))
    """
    out = []
    for n in grid_shape:
        keep = (n // multiple) * multiple
        if keep == 0:
            raise ConfigError(
                f"grid {tuple(grid_shape)} is smaller than pool**n_layers={multiple}; "
                "use fewer model.n_layers or a smaller model.pool"
            )
        diff = n - keep
        out.append((diff // 2, diff - diff // 2))
    return (out[0], out[1])


#: Adam's learning rate for each architecture when ``train.learning_rate`` is not set: the EOF
#: autoencoder starts at PCA and is refined (a larger step overfits the short demo archive: held-out
#: RMSE 0.5-1% better than PCA at 1e-3, 2% at 3e-4); the seed's is trained from scratch.
LEARNING_RATES = {"eof": 3e-4, "seed": 1e-3}


def learning_rate(configured: float | None, cfg: ModelConfig) -> float:
    """The learning rate to train ``cfg`` with: ``train.learning_rate`` if set, else the architecture's.

    Examples
    --------
    >>> learning_rate(None, ModelConfig()), learning_rate(None, ModelConfig(arch="seed"))
    (0.0003, 0.001)
    >>> learning_rate(0.01, ModelConfig())
    0.01
    """
    return float(configured) if configured is not None else LEARNING_RATES[cfg.arch]


def fit_config_to_grid(cfg: ModelConfig, grid_shape: tuple[int, int]) -> ModelConfig:
    """The model config to use on a grid: ``cfg`` itself, or fewer layers for a small grid.

    The defaults (the seed's four 4x-pooling layers) need at least 256x256x
    ``MIN_POOLED``; on a smaller grid, when ``cfg`` has the default layers,
    trailing layers are dropped until the pooled bottleneck is at least
    ``MIN_POOLED`` on each side (the coarse 66x112 grid gets ``n_layers=2``,
    ``filters=(16, 32)``, a 4x7 bottleneck as at the full grid). A config set
    by hand that does not fit is an error.

    Parameters
    ----------
    cfg : ModelConfig
        Configured architecture.
    grid_shape : tuple of int
        ``(ny, nx)``.

    Returns
    -------
    ModelConfig
        The architecture to build.

    Raises
    ------
    ConfigError
        If a non-default architecture does not fit the grid.

    Examples
    --------
    >>> fit_config_to_grid(ModelConfig(arch="seed"), (66, 112)).filters
    (16, 32)
    >>> fit_config_to_grid(ModelConfig(arch="seed"), (1059, 1799)).n_layers
    4
    """

    def pooled(n_layers: int) -> int:
        m = cfg.pool**n_layers
        return min(s // m for s in grid_shape)

    if cfg.arch != "seed" or pooled(cfg.n_layers) >= MIN_POOLED:
        return cfg
    default = ModelConfig(arch="seed")
    if (cfg.n_layers, cfg.pool, cfg.filters) != (default.n_layers, default.pool, default.filters):
        raise ConfigError(
            f"model.n_layers={cfg.n_layers} with model.pool={cfg.pool} pools grid {tuple(grid_shape)} "
            f"below {MIN_POOLED}x{MIN_POOLED}; use fewer layers or a smaller pool"
        )
    n = cfg.n_layers
    while n > 1 and pooled(n) < MIN_POOLED:
        n -= 1
    if pooled(n) < 1:
        raise ConfigError(f"grid {tuple(grid_shape)} is too small for model.pool={cfg.pool}")
    fitted = dataclasses.replace(cfg, n_layers=n, filters=cfg.filters[:n])
    logger.info("grid %s: using %d layers with filters %s", tuple(grid_shape), n, fitted.filters)
    return fitted
