"""Model access at run time: one per-process cache of loaded models, and the Keras predictors.

Every stage and the plots get their model through here. A model travels to the
workers as a :class:`ModelSource` (a path and a class, a few bytes), never
pickled: each process loads it once and keeps it in a cache keyed by the
source's class, its absolute path and the model's hash (:func:`get_model`),
then hands out the raw-int16 encoder (:class:`KerasRawEncoder`) and the decoder
built from it (:func:`get_encoder`, :func:`get_decoder`). :data:`LOAD_COUNTS`
counts the loads (tests read it with ``client.run``).

Which model directory a stage uses, and whether it is the one that made the
store's embedding, is decided by :func:`wxdask.model.resolve_model` and
:func:`wxdask.model.check_model`; the directory itself is a
:class:`wxdask.model.ModelDir`. :class:`wxdask.testing.FakeModelSource` is the
numpy test double of the same protocol.
"""

from __future__ import annotations

import collections
import logging
import os
import sys
import threading
import time as _time
from typing import Any, Protocol

import numpy as np

from wxdask.errors import ModelError
from wxdask.model import RAW_SCALE, ModelInfo, Predictor, check_model, resolve_model

__all__ = [
    "GPU_MEMORY_ENV",
    "KerasPredictor",
    "KerasRawEncoder",
    "LOAD_COUNTS",
    "ModelSource",
    "Predictor",
    "decoder_for",
    "encoder_for",
    "ensure_framework_env",
    "get_decoder",
    "get_encoder",
    "get_model",
]

logger = logging.getLogger(__name__)

#: Environment that stops a Keras framework from taking the whole GPU when
#: several processes share it. Set in each worker before the framework is
#: imported (:func:`ensure_framework_env`); set it in the worker's environment
#: (Helm values, ``dask worker`` shell) to be sure it comes first.
GPU_MEMORY_ENV = {
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # jax: allocate on demand, not 75% up front
    "TF_FORCE_GPU_ALLOW_GROWTH": "true",  # tensorflow: grow, do not take all memory
    "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True",  # torch: less fragmentation
    "TF_CPP_MIN_LOG_LEVEL": "2",
}


class ModelSource(Protocol):
    """Where a model comes from; small and picklable (a path, not weights).

    ``metadata()`` runs on the client; ``load``, ``encoder`` and ``decoder``
    run in worker processes, through the per-process cache.
    """

    @property
    def path(self) -> str:
        """The model's location (a directory path or URL)."""

    def metadata(self) -> ModelInfo:
        """Hash, grid ``(ny, nx)``, embedding size and clip of the model (no framework import)."""

    def load(self) -> Any:
        """The model (once per process, through :func:`get_model`)."""

    def encoder(self, model: Any, *, batch_size: int) -> Predictor:
        """Predictor: stored int16 images ``(n, ny, nx)`` -> float32 ``(n, n_latent)``."""

    def decoder(self, model: Any, *, batch_size: int) -> Predictor:
        """Predictor: embeddings ``(n, n_latent)`` -> scaled images ``(n, ny, nx[, 1])``."""


# ----------------------------------------------------------------------------- the per-process cache


#: Models loaded by this process, by (kind, path) -- tests read it with ``client.run``.
LOAD_COUNTS: collections.Counter = collections.Counter()
_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.RLock()


def ensure_framework_env() -> None:
    """Set :data:`GPU_MEMORY_ENV` (where unset) before a framework is imported here.

    Logs a warning when a framework was already imported in this process, since
    its memory settings were then fixed already.
    """
    late = [m for m in ("jax", "tensorflow", "torch") if m in sys.modules]
    unset = [k for k in GPU_MEMORY_ENV if k not in os.environ]
    for key in unset:
        os.environ[key] = GPU_MEMORY_ENV[key]
    if late and unset and unset != ["TF_CPP_MIN_LOG_LEVEL"] and _in_worker():
        logger.warning(
            "%s was imported in this worker before %s was set; set them in the worker's environment",
            ", ".join(late), ", ".join(unset),
        )


def _in_worker() -> bool:
    """Whether this code runs inside a Dask worker (where GPU memory settings matter)."""
    from distributed import get_worker

    try:
        get_worker()
    except ValueError:
        return False
    return True


def _source_key(source: ModelSource, model_hash: str) -> tuple:
    return (type(source).__module__, type(source).__qualname__, os.path.abspath(source.path), model_hash)


def get_model(source: ModelSource, model_hash: str) -> Any:
    """The model of ``source``, loaded once per process and cached by path and hash.

    Raises
    ------
    ModelError
        If the model found at the path now has another hash (it changed during
        the run).
    """
    key = ("model", *_source_key(source, model_hash))
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        ensure_framework_env()
        found = source.metadata()["hash"]
        if found != model_hash:
            raise ModelError(
                f"model at {source.path!r} has hash {found}, not {model_hash} as when the run began; "
                "it changed during the run: run again"
            )
        for old in [k for k in _CACHE if k[1:4] == key[1:4] and k[4] != model_hash]:
            del _CACHE[old]  # an older model at the same path: free it
        t0 = _time.perf_counter()
        model = source.load()
        LOAD_COUNTS[("model", os.path.abspath(source.path))] += 1
        logger.info("loaded model %s (%s) in %.1f s", source.path, model_hash, _time.perf_counter() - t0)
        _CACHE[key] = model
        return model


def _get_part(kind: str, source: ModelSource, model_hash: str, batch_size: int) -> Predictor:
    """``source.encoder`` or ``source.decoder`` of the cached model, built once per process."""
    key = (kind, *_source_key(source, model_hash), batch_size)
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = getattr(source, kind)(get_model(source, model_hash), batch_size=batch_size)
        return _CACHE[key]


def get_encoder(source: ModelSource, model_hash: str, *, batch_size: int) -> Predictor:
    """The raw-image encoder of ``source``, built once per process (see :func:`get_model`)."""
    return _get_part("encoder", source, model_hash, batch_size)


def get_decoder(source: ModelSource, model_hash: str, *, batch_size: int) -> Predictor:
    """The decoder of ``source``, built once per process (see :func:`get_model`)."""
    return _get_part("decoder", source, model_hash, batch_size)


def _for_store(explicit_dir: str | None, embedding_attrs: dict, store_url: str,
               source: ModelSource | None) -> tuple[ModelSource, ModelInfo]:
    source = source if source is not None else resolve_model(explicit_dir, embedding_attrs)
    return source, check_model(source, embedding_attrs, store_url)


def encoder_for(explicit_dir: str | None, embedding_attrs: dict, store_url: str, *, batch_size: int = 64,
                source: ModelSource | None = None) -> tuple[Predictor, ModelInfo]:
    """The raw-int16 encoder of the model that made a store's embedding, from the per-process cache.

    The model is :func:`wxdask.model.resolve_model`'s (``explicit_dir``, else
    the one recorded in ``embedding_attrs``), checked by
    :func:`wxdask.model.check_model`.

    Raises
    ------
    ModelError
        If there is no model, or it is not the one that made the embedding.
    """
    source, info = _for_store(explicit_dir, embedding_attrs, store_url, source)
    return get_encoder(source, info["hash"], batch_size=batch_size), info


def decoder_for(explicit_dir: str | None, embedding_attrs: dict, store_url: str, *, batch_size: int = 64,
                source: ModelSource | None = None) -> tuple[Predictor, ModelInfo]:
    """The decoder of the model that made a store's embedding (see :func:`encoder_for`).

    Raises
    ------
    ModelError
        If there is no model, or it is not the one that made the embedding.
    """
    source, info = _for_store(explicit_dir, embedding_attrs, store_url, source)
    return get_decoder(source, info["hash"], batch_size=batch_size), info


# ----------------------------------------------------------------------------- Keras predictors


class KerasPredictor:
    """``model.predict`` with a fixed batch size and no progress bar."""

    def __init__(self, model: Any, *, batch_size: int) -> None:
        self.model = model
        self.batch_size = batch_size

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(x, batch_size=self.batch_size, verbose=0))


class KerasRawEncoder:
    """A Keras encoder that takes images as stored (int16) and scales them on the device.

    Wraps ``encoder`` (input ``(ny, nx, 1)`` scaled) in a model whose input is
    ``(ny, nx)`` int16: cast, times 1/16, clip to ``0..clip_max``, divide by
    ``clip_max``, all as framework ops, so the host sends half the bytes of
    float32 and does no arithmetic. Under the jax backend, batches are padded
    to ``batch_size`` (one compiled shape) and dispatched asynchronously
    through a jitted stateless call, so host-to-device copies overlap
    compute; other backends use ``model.predict_on_batch`` per batch (Keras's
    ``predict`` builds a dataset pipeline on every call, ~0.2 s each).

    Parameters
    ----------
    encoder : keras.Model
        Scaled image ``(ny, nx, 1)`` -> ``(n_latent,)``.
    clip_max : float
        Upper clip in dBZ of the model's scaling.
    batch_size : int
        Images per device call.
    fast : bool or None
        Use the jitted path under jax (default: yes, unless
        ``WXDASK_EMBED_PREDICT=1`` is set).
    """

    def __init__(self, encoder: Any, *, clip_max: float, batch_size: int, fast: bool | None = None) -> None:
        import keras

        ny, nx = (int(s) for s in encoder.input_shape[1:3])
        inp = keras.Input(shape=(ny, nx), dtype="int16", name="refc_raw")
        x = keras.ops.cast(inp, "float32") * RAW_SCALE
        x = keras.ops.clip(x, 0.0, float(clip_max)) / float(clip_max)
        x = keras.ops.expand_dims(x, -1)
        self.model = keras.Model(inp, encoder(x), name="raw_encoder")
        self.batch_size = int(batch_size)
        self.backend = keras.backend.backend()
        if fast is None:
            fast = os.environ.get("WXDASK_EMBED_PREDICT", "0") != "1"
        self._jit = self._jax_forward() if fast and self.backend == "jax" else None
        if self._jit is None and self.backend == "tensorflow":
            # two batch sizes now, so tf.function relaxes the batch dimension once, here,
            # instead of retracing for the first short batch of a run
            for n in (1, 2):
                self.model.predict_on_batch(np.zeros((n, ny, nx), dtype=np.int16))

    def _jax_forward(self) -> Any:
        import jax

        model = self.model

        def forward(tv: list, ntv: list, x: Any) -> Any:
            y, _ = model.stateless_call(tv, ntv, x, training=False)
            return y

        return jax.jit(forward)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Embeddings ``(n, n_latent)`` float32 of stored images ``(n, ny, nx)`` int16."""
        x = np.asarray(x)
        if x.dtype != np.int16:
            raise TypeError(f"KerasRawEncoder takes stored int16 images, got {x.dtype}")
        if self._jit is None:  # predict_on_batch: no per-call dataset pipeline, unlike predict
            bs = self.batch_size
            parts = [np.asarray(self.model.predict_on_batch(x[i : i + bs])) for i in range(0, x.shape[0], bs)]
            return np.concatenate(parts).astype(np.float32, copy=False)
        import jax

        bs, n = self.batch_size, x.shape[0]
        # current values, read per call: Keras's own predict may have replaced (donated) the old ones
        tv = [v.value for v in self.model.trainable_variables]
        ntv = [v.value for v in self.model.non_trainable_variables]
        pending = []
        for i in range(0, n, bs):
            b = x[i : i + bs]
            k = b.shape[0]
            if k < bs:  # one compiled shape: pad the last batch
                b = np.concatenate([b, np.zeros((bs - k, *b.shape[1:]), dtype=b.dtype)])
            pending.append((self._jit(tv, ntv, jax.device_put(b)), k))
        return np.concatenate([np.asarray(y)[:k] for y, k in pending]).astype(np.float32, copy=False)

