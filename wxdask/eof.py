"""The EOF autoencoder (``model.arch: eof``, the default) and the one PCA fit.

A meteorologist's baseline for compressing radar images into 50 numbers is
EOF analysis (PCA). This architecture starts *at* that baseline and learns what
a linear map cannot:

* **Encoder.** The embedding (the ``Dense`` layer named ``refc_embedding``)
  reads the flattened image (block-averaged by ``linear_factor`` on grids of
  more than ``model.linear_max_points`` points) concatenated with the features
  of a small strided convolutional branch on that same (block-averaged) image. Its weights start as the EOFs of
  the training images (the branch's rows at zero), so at initialisation the
  embedding *is* the PCA score vector.
* **Decoder.** A linear ``Dense`` back to the (block-averaged) image, starting
  as the EOFs plus the mean: the PCA reconstruction. A convolutional
  refinement sees that reconstruction together with a coarse context map of the
  embedding and adds a residual; its last layer starts at zero. The output is
  the linear reconstruction plus the residual.

Trained on the reconstruction loss from there, the model can only move away
from PCA where the training images reward it. Everything is plain Keras layers
(no Lambda), so the ``.keras`` file loads in safe mode under any backend.

:func:`fit_pca` is the one PCA fit: evaluation's baseline and this model's
initialisation both use it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from wxdask.config import ModelConfig
from wxdask.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = [
    "CONTEXT_FACTOR", "POWER_ITER", "build_eof_autoencoder", "fit_pca", "linear_factor", "pool_images", "set_eofs",
]

#: Downsampling of the embedding's context map in the decoder (times the linear path's block size).
CONTEXT_FACTOR = 8
#: Power iterations of the randomized PCA that starts the model (evaluation's default too).
POWER_ITER = 4


def linear_factor(grid_shape: tuple[int, int], max_points: int) -> int:
    """Block size of the linear (EOF) path: the smallest whose pooled grid has at most ``max_points`` points.

    Examples
    --------
    >>> linear_factor((66, 112), 150_000), linear_factor((1059, 1799), 150_000)
    (1, 4)
    """
    ny, nx = (int(s) for s in grid_shape)
    f = 1
    while math.ceil(ny / f) * math.ceil(nx / f) > max_points:
        f += 1
    return f


def pool_images(x: np.ndarray, factor: int) -> np.ndarray:
    """Block means of ``(n, ny, nx)`` images over ``factor`` x ``factor`` blocks, as Keras's "same" average pooling.

    Edge blocks average only the points they hold. Pure numpy.

    Examples
    --------
    >>> pool_images(np.arange(6.0).reshape(1, 2, 3), 2)
    array([[[2. , 3.5]]], dtype=float32)
    """
    x = np.asarray(x, dtype=np.float32)
    if factor == 1:
        return x
    n, ny, nx = x.shape
    py, px = math.ceil(ny / factor) * factor, math.ceil(nx / factor) * factor
    # Keras "same" pooling pads at the end first (and at the start when the pad is odd).
    top, left = (py - ny) // 2, (px - nx) // 2
    padded = np.full((n, py, px), np.nan, dtype=np.float32)
    padded[:, top:top + ny, left:left + nx] = x
    blocks = padded.reshape(n, py // factor, factor, px // factor, factor)
    return np.nanmean(blocks, axis=(2, 4)).astype(np.float32)


def fit_pca(x: Any, n_components: int, *, power_iter: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fit PCA with dask-ml's randomized solver; the mean and the components.

    Parameters
    ----------
    x : dask.array.Array or numpy.ndarray
        ``(n_images, n_points)`` scaled images, chunked along images only (a numpy array is
        fitted with the threaded scheduler in this process).
    n_components : int
        Number of components (at most ``min(x.shape)``).
    power_iter : int
        Power iterations of the randomized solver.
    seed : int
        Its random state.

    Returns
    -------
    mean : numpy.ndarray
        ``(n_points,)`` float32.
    components : numpy.ndarray
        ``(n_components, n_points)`` float32, orthonormal rows.
    """
    import contextlib

    import dask
    import dask.array as da
    from dask_ml.decomposition import PCA

    local: Any = contextlib.nullcontext()
    if not isinstance(x, da.Array):
        # Images already in this process's memory are fitted here, not shipped to a cluster.
        x = da.from_array(np.asarray(x, dtype=np.float32), chunks=(max(1, min(len(x), 256)), -1))
        local = dask.config.set(scheduler="threads")
    pca = PCA(n_components=n_components, svd_solver="randomized", iterated_power=power_iter, random_state=seed)
    with local:
        pca.fit(x)
    mean = np.asarray(pca.mean_.compute() if hasattr(pca.mean_, "compute") else pca.mean_, dtype=np.float32)
    return mean, np.asarray(pca.components_, dtype=np.float32)


def _same_crop(have: tuple[int, int], want: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    dy, dx = have[0] - want[0], have[1] - want[1]
    return ((dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2))


def build_eof_autoencoder(cfg: ModelConfig, grid_shape: tuple[int, int]) -> Any:
    """Build the (uncompiled, not yet EOF-initialised) EOF autoencoder for one grid.

    Parameters
    ----------
    cfg : ModelConfig
        ``n_latent``, ``branch_filters``, ``refine_filters``, ``refine_layers``,
        ``linear_max_points`` (the others are the seed architecture's).
    grid_shape : tuple of int
        ``(ny, nx)``.

    Returns
    -------
    keras.Model
        ``autoencoder``, made of two sub-models, ``encoder`` (image -> embedding,
        ending in ``refc_embedding``) and ``decoder``; input and output as
        :func:`wxdask.model.build_autoencoder`'s. Call :func:`set_eofs` before
        training.
    """
    from wxdask.model import _keras

    keras = _keras()
    layers = keras.layers
    ny, nx = (int(s) for s in grid_shape)
    if min(ny, nx) < 2 ** len(cfg.branch_filters):
        raise ConfigError(f"grid {(ny, nx)} is too small for {len(cfg.branch_filters)} strided model.branch_filters")
    f = linear_factor((ny, nx), cfg.linear_max_points)
    ly, lx = math.ceil(ny / f), math.ceil(nx / f)

    inp = keras.Input(shape=(ny, nx, 1), dtype="float32", name="refc_input")
    pooled = layers.AveragePooling2D(f, padding="same", name="eof_pool")(inp) if f > 1 else inp
    lin = layers.Flatten(name="eof_flatten")(pooled)
    h = pooled
    for i, n in enumerate(cfg.branch_filters):
        h = layers.Conv2D(n, 3, strides=2, padding="same", activation="relu", name=f"branch_conv_{i}")(h)
    h = layers.Flatten(name="branch_flatten")(h)
    cat = layers.Concatenate(name="encoder_features")([lin, h])
    z = layers.Dense(cfg.n_latent, activation=None, name="refc_embedding")(cat)
    encoder = keras.Model(inp, z, name="encoder")

    zin = keras.Input(shape=(cfg.n_latent,), dtype="float32", name="embedding_input")
    x = layers.Dense(ly * lx, activation=None, name="eof_decode")(zin)
    x = layers.Reshape((ly, lx, 1), name="eof_image")(x)
    if f > 1:
        x = layers.UpSampling2D(f, interpolation="bilinear", name="eof_upsample")(x)
        x = layers.Cropping2D(_same_crop((ly * f, lx * f), (ny, nx)), name="eof_crop")(x)
    cf = CONTEXT_FACTOR * f
    cy, cx = math.ceil(ny / cf), math.ceil(nx / cf)
    c = layers.Dense(cy * cx * cfg.refine_filters, activation="relu", name="context_dense")(zin)
    c = layers.Reshape((cy, cx, cfg.refine_filters), name="context_map")(c)
    c = layers.UpSampling2D(cf, interpolation="bilinear", name="context_upsample")(c)
    c = layers.Cropping2D(((0, cy * cf - ny), (0, cx * cf - nx)), name="context_crop")(c)
    r = layers.Concatenate(name="refine_input")([x, c])
    for i in range(cfg.refine_layers):
        r = layers.Conv2D(cfg.refine_filters, 3, padding="same", activation="relu", name=f"refine_conv_{i}")(r)
    r = layers.Conv2D(1, 3, padding="same", kernel_initializer="zeros", name="refine_residual")(r)
    out = layers.Add(name="refc_reconstructed")([x, r])
    decoder = keras.Model(zin, out, name="decoder")
    return keras.Model(inp, decoder(encoder(inp)), name="autoencoder")


def set_eofs(model: Any, mean: np.ndarray, components: np.ndarray) -> None:
    """Start the model's linear paths at PCA: embedding = EOF scores, reconstruction = mean + EOFs.

    Parameters
    ----------
    model : keras.Model
        From :func:`build_eof_autoencoder`.
    mean : numpy.ndarray
        ``(n_points,)`` of the (block-averaged) scaled images.
    components : numpy.ndarray
        ``(k, n_points)``, ``k <= n_latent`` (missing components stay zero).
    """
    emb = model.get_layer("encoder").get_layer("refc_embedding")
    dec = model.get_layer("decoder").get_layer("eof_decode")
    kernel, _ = emb.get_weights()
    n_points = mean.size
    k = components.shape[0]
    new_kernel = np.zeros_like(kernel)
    new_kernel[:n_points, :k] = components.T
    bias = np.zeros(kernel.shape[1], dtype=np.float32)
    bias[:k] = -(mean @ components.T)
    emb.set_weights([new_kernel, bias])
    dec_kernel = np.zeros((kernel.shape[1], n_points), dtype=np.float32)
    dec_kernel[:k] = components
    dec.set_weights([dec_kernel, mean.astype(np.float32)])
    logger.info("EOF autoencoder initialised at PCA-%d (%d points)", k, n_points)
