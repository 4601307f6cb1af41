"""The model, Keras (imported lazily, with an install hint): building, splitting and loading the autoencoder.

Part of :mod:`wxdask.model`, which re-exports every name: :func:`build_autoencoder`,
:func:`encoder_of`, :func:`decoder_of`, :func:`load_model` and :func:`load_checkpoint`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wxdask.config import ModelConfig
from wxdask.errors import ModelError
from wxdask.model.core import EMBEDDING_LAYER, MODEL_FILE, crop_padding

if TYPE_CHECKING:  # pragma: no cover
    import keras


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
