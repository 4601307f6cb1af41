"""The convolutional autoencoder whose bottleneck is the 50-number embedding.

Core (pure numpy, no Keras): :func:`scale_input`, :func:`scale_raw`,
:func:`crop_padding`, :func:`fit_config_to_grid`.
Keras (imported lazily, with an install hint): :func:`build_autoencoder`,
:func:`encoder_of`, :func:`decoder_of`, :func:`load_model`.
Model directory: :func:`read_metadata`, :func:`write_metadata`, :func:`model_hash`,
:class:`ModelDir` (a directory as a :class:`wxdask.models.ModelSource`, with its
typed :class:`ModelInfo`), :func:`resolve_model` (which directory a stage uses)
and :func:`check_model` (is it the model that made the store's embedding).
Decoding to dBZ: :func:`decode_dbz`, the one place a decoder's output is clipped
and scaled (decode, interpolate, kmeans and the plots all use it).

Two architectures (``model.arch``): ``eof``, the default, is the EOF autoencoder
of :mod:`wxdask.eof` (linear paths started at the PCA of the training images,
plus convolutional branches; nested ``encoder`` and ``decoder`` sub-models).
``seed`` is the seed's (Lakshmanan 2020): crop the grid to a multiple
of ``pool ** n_layers``; ``n_layers`` blocks of Conv2D (ReLU, same padding)
followed by max-pooling; Flatten; a linear ``Dense(n_latent)`` named
``refc_embedding``; a Dense back to the pooled shape; a mirrored decoder of
Conv2D + upsampling; a final 3x3 Conv2D to one channel; zero padding back to the
grid. Both use only ``keras.layers``, so one ``.keras`` file loads under the
tensorflow, jax and torch backends with the default ``safe_mode``.

A model directory holds ``model.keras`` (the trained model),
``metadata.json`` (config, grid, scaling, split, losses, versions, hash and,
after evaluation, held-out scores) and, while training, ``checkpoint-<epoch>.keras``
with ``checkpoint.json``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypedDict, runtime_checkable

import numpy as np

from wxdask.config import ModelConfig
from wxdask.errors import ConfigError, ModelError

if TYPE_CHECKING:  # pragma: no cover
    import keras

__all__ = [
    "LEARNING_RATES",
    "learning_rate",
    "Predictor",
    "ModelInfo",
    "ModelDir",
    "RAW_SCALE",
    "decode_dbz",
    "resolve_model",
    "check_model",
    "load_checkpoint",
    "MODEL_FILE",
    "METADATA_FILE",
    "EMBEDDING_LAYER",
    "GRIDS",
    "scale_input",
    "scale_raw",
    "crop_padding",
    "fit_config_to_grid",
    "build_autoencoder",
    "encoder_of",
    "decoder_of",
    "load_model",
    "read_metadata",
    "write_metadata",
    "model_hash",
    "file_hash",
]

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
EMBEDDING_LAYER = "refc_embedding"
#: Named grids and their shapes ``(ny, nx)``.
GRIDS = {"coarse": (66, 112), "hrrr": (1059, 1799)}
#: Scale of the stored ``refc`` integers: 1/16 dBZ.
RAW_SCALE = 0.0625
#: Smallest pooled bottleneck side a model may have (fewer rows/columns lose the layout).
MIN_POOLED = 2


def _keras() -> Any:
    try:
        import keras
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "wxdask's autoencoder needs Keras 3 and a backend: "
            "`pip install keras tensorflow-cpu` (or `keras jax`, `keras torch`)"
        ) from exc
    if int(keras.__version__.split(".")[0]) < 3:  # pragma: no cover
        raise ImportError(f"wxdask needs Keras 3, found keras {keras.__version__}: `pip install -U keras`")
    return keras


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


# ----------------------------------------------------------------------------- Keras


def build_autoencoder(cfg: ModelConfig, grid_shape: tuple[int, int]) -> keras.Model:
    """Build the (uncompiled) autoencoder for one grid.

    Parameters
    ----------
    cfg : ModelConfig
        Layers, pool, filters, kernel and embedding size (used as given; see
        :func:`fit_config_to_grid` for a small grid).
    grid_shape : tuple of int
        ``(ny, nx)`` of the images.

    Returns
    -------
    keras.Model
        Input ``(ny, nx, 1)`` float32 scaled by :func:`scale_input`; output the
        same shape, in scaled units (times ``clip_max`` is dBZ). The bottleneck
        layer is named ``refc_embedding``.

    Raises
    ------
    ConfigError
        If the grid is smaller than ``pool ** n_layers``.
    ImportError
        If Keras 3 is not installed.
    """
    if cfg.arch == "eof":
        from wxdask.eof import build_eof_autoencoder

        return build_eof_autoencoder(cfg, grid_shape)
    keras = _keras()
    layers = keras.layers
    ny, nx = (int(s) for s in grid_shape)
    crop = crop_padding((ny, nx), cfg.pool**cfg.n_layers)

    inp = keras.Input(shape=(ny, nx, 1), dtype="float32", name="refc_input")
    x = layers.Cropping2D(cropping=crop, name="cropped")(inp)
    for i, f in enumerate(cfg.filters):
        x = layers.Conv2D(f, cfg.kernel, activation="relu", padding="same", name=f"encoder_conv_{i}")(x)
        x = layers.MaxPooling2D(cfg.pool, padding="same", name=f"encoder_pool_{i}")(x)
    pooled_shape = tuple(int(s) for s in x.shape[1:])
    x = layers.Flatten(name="encoder_flatten")(x)
    x = layers.Dense(cfg.n_latent, activation=None, name=EMBEDDING_LAYER)(x)
    x = layers.Dense(int(np.prod(pooled_shape)), activation=None, name="decoder_dense")(x)
    x = layers.Reshape(pooled_shape, name="decoder_reshape")(x)
    for i, f in enumerate(reversed(cfg.filters)):
        conv = layers.Conv2D(f, cfg.kernel, activation="relu", padding="same", name=f"decoder_conv_{i}")
        up = layers.UpSampling2D(cfg.pool, name=f"decoder_upsamp_{i}")
        x = conv(up(x)) if cfg.upsample_first else up(conv(x))
    x = layers.Conv2D(1, 3, activation="relu", padding="same", name="before_padding")(x)
    out = layers.ZeroPadding2D(padding=crop, name="refc_reconstructed")(x)
    return keras.Model(inp, out, name="autoencoder")


def encoder_of(model: keras.Model) -> keras.Model:
    """The encoder: image ``(ny, nx, 1)`` -> embedding ``(n_latent,)``.

    Raises
    ------
    ModelError
        If the model has no ``refc_embedding`` layer.
    """
    keras = _keras()
    layer = _embedding_layer(model)
    nested = _sub_model(model, "encoder")
    if nested is not None:
        return nested
    return keras.Model(model.inputs, layer.output, name="encoder")


def decoder_of(model: keras.Model) -> keras.Model:
    """The decoder, rebuilt from the embedding layer onward: ``(n_latent,)`` -> ``(ny, nx, 1)``.

    The layers (and weights) are shared with ``model``. The output is in scaled
    units: multiply by ``clip_max`` for dBZ.

    Raises
    ------
    ModelError
        If the model has no ``refc_embedding`` layer.
    """
    keras = _keras()
    layer = _embedding_layer(model)
    nested = _sub_model(model, "decoder")
    if nested is not None:
        return nested
    names = [lyr.name for lyr in model.layers]
    after = model.layers[names.index(layer.name) + 1 :]
    z = keras.Input(shape=(layer.units,), dtype="float32", name="embedding_input")
    x = z
    for lyr in after:
        x = lyr(x)
    return keras.Model(z, x, name="decoder")


def _sub_model(model: Any, name: str) -> Any:
    """The nested ``encoder`` or ``decoder`` of an EOF autoencoder; None for the seed's flat model."""
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def _embedding_layer(model: Any) -> Any:
    try:
        encoder = _sub_model(model, "encoder")
        return (encoder if encoder is not None else model).get_layer(EMBEDDING_LAYER)
    except ValueError:
        raise ModelError(f"model {model.name!r} has no {EMBEDDING_LAYER!r} layer; it is not a wxdask "
                         "autoencoder") from None


def load_model(model_dir: str | os.PathLike) -> keras.Model:
    """Load ``DIR/model.keras`` (safe mode; any Keras 3 backend), uncompiled.

    Stages do not call this: they go through the per-process cache
    (:func:`wxdask.models.get_model` with a :class:`ModelDir`), which loads
    each model once.

    Parameters
    ----------
    model_dir : str or path
        Model directory.

    Raises
    ------
    ModelError
        If the file is missing or cannot be loaded.
    """
    return _load_keras(model_dir, MODEL_FILE, compile=False)


def load_checkpoint(model_dir: str | os.PathLike, filename: str) -> keras.Model:
    """Load a training checkpoint ``DIR/checkpoint-<epoch>.keras`` compiled (optimizer and loss restored).

    Raises
    ------
    ModelError
        If the file is missing or cannot be loaded.
    """
    return _load_keras(model_dir, filename, compile=True)


def _load_keras(model_dir: str | os.PathLike, filename: str, *, compile: bool) -> keras.Model:
    path = Path(model_dir) / filename
    if not path.is_file():
        raise ModelError(f"no model at {str(path)!r}; train one with `wxdask train --model {model_dir}`")
    keras = _keras()
    try:
        model = keras.saving.load_model(str(path), compile=compile)
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, KeyError from a corrupt file
        raise ModelError(f"cannot load model {str(path)!r} ({type(exc).__name__}: {exc}); retrain it") from None
    _embedding_layer(model)
    return model


# ----------------------------------------------------------------------------- model directory


def file_hash(path: str | os.PathLike, length: int = 16) -> str:
    """sha256 of a file's bytes, hex, first ``length`` characters."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def model_hash(model_dir: str | os.PathLike) -> str:
    """Content hash of ``DIR/model.keras`` (sha256, 16 hex characters).

    Later stages record it with their outputs to name the model they used.

    Raises
    ------
    ModelError
        If there is no model file.
    """
    path = Path(model_dir) / MODEL_FILE
    if not path.is_file():
        raise ModelError(f"no model at {str(path)!r}; train one with `wxdask train --model {model_dir}`")
    return file_hash(path)


def read_metadata(model_dir: str | os.PathLike, filename: str = METADATA_FILE) -> dict:
    """Read ``DIR/metadata.json``.

    Raises
    ------
    ModelError
        If the file is missing or not valid JSON.
    """
    path = Path(model_dir) / filename
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ModelError(
            f"no model metadata at {str(path)!r}; train a model with `wxdask train --model {model_dir}`"
        ) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ModelError(f"model metadata {str(path)!r} is corrupt ({exc}); retrain the model") from None
    if not isinstance(data, dict):
        raise ModelError(f"model metadata {str(path)!r} is not a JSON object; retrain the model")
    return data


def write_metadata(model_dir: str | os.PathLike, data: dict, filename: str = METADATA_FILE) -> None:
    """Write ``DIR/metadata.json`` atomically (write a temporary file, then rename)."""
    path = Path(model_dir) / filename
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False, default=_json_default))
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


# ----------------------------------------------------------------------------- which model


def _metadata_value(meta: dict, *names: str) -> Any:
    """First of ``names`` found in ``meta``, its ``model``/``config``/``scaling`` sections."""
    places = [meta]
    for sec in ("model", "config", "scaling"):
        if isinstance(meta.get(sec), dict):
            places.append(meta[sec])
            if isinstance(meta[sec].get("model"), dict):
                places.append(meta[sec]["model"])
    for place in places:
        for name in names:
            if place.get(name) is not None:
                return place[name]
    return None


@dataclass(frozen=True)
class ModelDir:
    """A trained model directory (``model.keras`` + ``metadata.json``) as a model source.

    Small and picklable: workers load the model through
    :func:`wxdask.models.get_model`, once per process.

    Parameters
    ----------
    path : str
        Model directory.
    """

    path: str

    def metadata(self) -> ModelInfo:
        """Hash, grid, embedding size and clip of the model, from its directory (no Keras import).

        Raises
        ------
        ModelError
            If the directory holds no model or its metadata lacks the grid.
        """
        digest = model_hash(self.path)
        meta = read_metadata(self.path)
        grid = _metadata_value(meta, "grid_shape", "grid")
        if isinstance(grid, dict):
            grid = grid.get("shape")
        if isinstance(grid, str):
            grid = GRIDS.get(grid)
        if not (isinstance(grid, (list, tuple)) and len(grid) == 2):
            raise ModelError(f"model metadata in {self.path!r} does not give the grid shape; retrain the model")
        return ModelInfo(hash=digest, grid=(int(grid[0]), int(grid[1])),
                         n_latent=int(_metadata_value(meta, "n_latent") or 50),
                         clip_max=float(_metadata_value(meta, "clip_max") or 60.0))

    def load(self) -> keras.Model:
        """The whole autoencoder (call through :func:`wxdask.models.get_model`)."""
        return load_model(self.path)

    def encoder(self, model: Any, *, batch_size: int) -> Predictor:
        """Stored int16 images -> embeddings, scaled on the device (:class:`wxdask.models.KerasRawEncoder`)."""
        from wxdask.models import KerasRawEncoder

        return KerasRawEncoder(encoder_of(model), clip_max=self.metadata()["clip_max"], batch_size=batch_size)

    def decoder(self, model: Any, *, batch_size: int) -> Predictor:
        """Embeddings -> scaled images (:func:`decoder_of`)."""
        from wxdask.models import KerasPredictor

        return KerasPredictor(decoder_of(model), batch_size=batch_size)


def _given(value: Any) -> str | None:
    """A model directory that was given: not None, empty, or the text ``"None"`` of an old store."""
    if value is None or isinstance(value, float):
        return None
    text = os.fspath(value) if hasattr(value, "__fspath__") else str(value)
    return text if text.strip() and text != "None" else None


def resolve_model(explicit_dir: str | os.PathLike | None, embedding_attrs: Mapping[str, Any] | None = None) -> ModelDir:
    """The model directory a stage uses: the one configured, else the one recorded with the embedding.

    Parameters
    ----------
    explicit_dir : str or path or None
        The stage's configured ``model_dir`` (``--model``).
    embedding_attrs : mapping, optional
        Attributes of the store's ``embedding`` (``model_dir`` as written by ``wxdask embed``).

    Returns
    -------
    ModelDir

    Raises
    ------
    ModelError
        If neither names a directory.

    Examples
    --------
    >>> resolve_model("m1", {"model_dir": "m2"}).path, resolve_model(None, {"model_dir": "m2"}).path
    ('m1', 'm2')
    """
    found = _given(explicit_dir) or _given((embedding_attrs or {}).get("model_dir"))
    if found is None:
        raise ModelError("no model directory: give one with --model (the stage's model_dir); "
                         "the store's embedding records none")
    return ModelDir(found)


def check_model(source: Any, embedding_attrs: Mapping[str, Any], store_url: str) -> ModelInfo:
    """The model's metadata, after checking it is the model that made the store's embedding.

    Parameters
    ----------
    source : ModelSource
        A :class:`ModelDir` (or a test double with ``path`` and ``metadata()``).
    embedding_attrs : mapping
        Attributes of the store's ``embedding`` (its ``model_hash``).
    store_url : str
        The store, for the message.

    Returns
    -------
    ModelInfo

    Raises
    ------
    ModelError
        If the model is missing, or its hash is not the one recorded with the embedding.
    """
    meta = source.metadata()
    made_by = embedding_attrs.get("model_hash")
    if made_by != meta["hash"]:
        raise ModelError(
            f"the embeddings in {store_url!r} were made by model {made_by}, but {source.path!r} holds "
            f"model {meta['hash']}; use the model that made them, or re-embed with "
            f"`wxdask embed --store {store_url} --model {source.path}`"
        )
    return meta
