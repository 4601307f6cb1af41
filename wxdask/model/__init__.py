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

Modules, by concern: :mod:`~wxdask.model.core` (the numpy core, the file and
layer names, :class:`Predictor`, :class:`ModelInfo`, learning rates),
:mod:`~wxdask.model.network` (the Keras architectures, encoder/decoder and
loading) and :mod:`~wxdask.model.directory` (the model directory,
:class:`ModelDir`, :func:`resolve_model`, :func:`check_model`).
"""

from __future__ import annotations

import logging

# The package lives in submodules; every name the single module had is re-exported here, so callers use
# ``wxdask.model.X`` as before. A test that patches a name to change how another function of the package
# behaves patches the submodule that holds that function (e.g. ``wxdask.model.directory.load_model``).
from wxdask.model.core import (  # noqa: F401 - private names, re-exported for callers
    EMBEDDING_LAYER,
    GRIDS,
    LEARNING_RATES,
    METADATA_FILE,
    MIN_POOLED,
    MODEL_FILE,
    RAW_SCALE,
    ModelInfo,
    Predictor,
    crop_padding,
    decode_dbz,
    fit_config_to_grid,
    learning_rate,
    scale_input,
    scale_raw,
)
from wxdask.model.directory import (  # noqa: F401 - private names, re-exported for callers
    ModelDir,
    _given,
    _json_default,
    _metadata_value,
    check_model,
    file_hash,
    model_hash,
    read_metadata,
    resolve_model,
    write_metadata,
)
from wxdask.model.network import (  # noqa: F401 - private names, re-exported for callers
    _embedding_layer,
    _keras,
    _load_keras,
    _sub_model,
    build_autoencoder,
    decoder_of,
    encoder_of,
    load_checkpoint,
    load_model,
)

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
