"""Embedding: every image in the store to its ``n_latent``-number embedding, on GPU workers.

Core (pure numpy): :func:`embed_block`, :func:`todo_block`,
:func:`chunk_spans`.
Lazy wrapper: :func:`embed`, one Dask task per chunk of the ``embedding`` variable
(whole images, ``embed.images_per_task`` of them along ``time``), annotated for
the ``GPU`` resource.
I/O: :func:`run`, the only layer that reads, writes or computes.

Models reach the workers as a :class:`ModelSource` (a path and a class, a few
bytes), never pickled: each worker process loads the model once and keeps it in
a per-process cache keyed by the source, its path and the model's hash
(:func:`get_model`). Images travel to the framework as stored (int16 in
1/16 dBZ) and are scaled there (:class:`KerasRawEncoder`).

Where the encoder tasks run is set by ``resources={"GPU": 1}`` given to
``Client.compute`` for a graph that is not optimized (no low-level fusion, which
would drop the annotation): on a cluster with GPU workers they run only there;
without GPU workers they run on any worker.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import sys
import threading
import time as _time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Protocol, runtime_checkable

import numpy as np

from wxdask.errors import ModelError, StoreLayoutError
from wxdask.model import scale_raw

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr
    from dask.delayed import Delayed
    from distributed import Client

    from wxdask.config import Config, EmbedConfig, StoreConfig

__all__ = [
    "Predictor",
    "ModelSource",
    "KerasModelSource",
    "KerasRawEncoder",
    "GPU_MEMORY_ENV",
    "embed_block",
    "todo_block",
    "chunk_spans",
    "embed",
    "run",
    "get_model",
    "get_encoder",
    "LOAD_COUNTS",
]

logger = logging.getLogger(__name__)

#: Scale of the stored ``refc`` integers: 1/16 dBZ.
RAW_SCALE = 0.0625
#: Value of ``status`` for a slot whose image is in the store (CF flag "ok").
STATUS_OK = 1

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


# ----------------------------------------------------------------------------- protocols


@runtime_checkable
class Predictor(Protocol):
    """Anything with ``predict(x) -> numpy.ndarray`` (a Keras model, a numpy fake)."""

    def predict(self, x: np.ndarray) -> np.ndarray: ...


class ModelSource(Protocol):
    """Where a model comes from; small and picklable (a path, not weights).

    ``metadata()`` runs on the client; ``load``, ``encoder`` and ``decoder``
    run in worker processes, through the per-process cache.
    """

    path: str

    def metadata(self) -> dict:
        """``{"hash": str, "grid": (ny, nx), "n_latent": int, "clip_max": float}``."""

    def load(self) -> Any:
        """The model (once per process, through :func:`get_model`)."""

    def encoder(self, model: Any, *, batch_size: int) -> Predictor:
        """Predictor: stored int16 images ``(n, ny, nx)`` -> float32 ``(n, n_latent)``."""

    def decoder(self, model: Any, *, batch_size: int) -> Predictor:
        """Predictor: embeddings ``(n, n_latent)`` -> scaled images ``(n, ny, nx[, 1])``."""


# ----------------------------------------------------------------------------- core (pure)


def embed_block(x: np.ndarray, encoder: Predictor, *, batch_size: int) -> np.ndarray:
    """Encode stored images to embeddings, ``batch_size`` images per encoder call.

    Pure: no I/O, no dask; the encoder is an argument.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, ny, nx)`` images as stored (int16); the encoder scales them.
    encoder : Predictor
        Maps ``(b, ny, nx)`` stored images to ``(b, n_latent)``.
    batch_size : int
        Images per ``encoder.predict`` call.

    Returns
    -------
    numpy.ndarray
        ``(n, n_latent)`` float32.

    Examples
    --------
    >>> class Mean:
    ...     def predict(self, x):
    ...         return scale_raw(x).mean(axis=(1, 2))[:, None]
    >>> x = np.full((5, 2, 3), 480, dtype=np.int16)
    >>> embed_block(x, Mean(), batch_size=2)[:, 0]
    array([0.5, 0.5, 0.5, 0.5, 0.5], dtype=float32)
    """
    n = x.shape[0]
    if n == 0:
        raise ValueError("embed_block needs at least one image, got 0")
    parts = [np.asarray(encoder.predict(x[i : i + batch_size]), dtype=np.float32) for i in range(0, n, batch_size)]
    out = np.concatenate(parts, axis=0)
    if out.ndim != 2 or out.shape[0] != n:
        raise ModelError(f"encoder returned shape {out.shape} for {n} images; expected ({n}, n_latent)")
    return out


def todo_block(ok: np.ndarray, embedded: np.ndarray) -> np.ndarray:
    """Slots to embed: the image is in the store and has no embedding yet.

    Parameters
    ----------
    ok : numpy.ndarray of bool
        ``(time, lead_time)``: ``status`` is ok.
    embedded : numpy.ndarray of bool
        ``(time, lead_time)``: the embedding is finite.

    Returns
    -------
    numpy.ndarray of bool

    Examples
    --------
    >>> todo_block(np.array([True, True, False]), np.array([True, False, False]))
    array([False,  True, False])
    """
    return np.asarray(ok, dtype=bool) & ~np.asarray(embedded, dtype=bool)


def chunk_spans(touch: np.ndarray, chunk: int) -> list[tuple[int, int]]:
    """Time spans ``[t0, t1)`` of whole chunks that hold any slot to touch.

    Parameters
    ----------
    touch : numpy.ndarray of bool
        ``(time, ...)``: slots whose embedding is written.
    chunk : int
        Chunk length of ``embedding`` along ``time``.

    Returns
    -------
    list of tuple
        One span per chunk to write, in time order; the last may be short.

    Examples
    --------
    >>> chunk_spans(np.array([[0], [0], [1], [0], [0], [1], [1]], dtype=bool), 2)
    [(2, 4), (4, 6), (6, 7)]
    """
    touch = np.asarray(touch, dtype=bool)
    n = touch.shape[0]
    per_time = touch.reshape(n, -1).any(axis=1)
    return [(t0, min(t0 + chunk, n)) for t0 in range(0, n, chunk) if per_time[t0 : t0 + chunk].any()]


# ----------------------------------------------------------------------------- models in workers


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


def _metadata_value(meta: dict, *names: str) -> Any:
    """First of ``names`` found in ``meta``, its ``config``/``model`` sections, or ``scaling``."""
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
class KerasModelSource:
    """A trained model directory (``model.keras`` + ``metadata.json``, see :mod:`wxdask.model`).

    Parameters
    ----------
    path : str
        Model directory.
    """

    path: str

    def metadata(self) -> dict:
        """Hash, grid, embedding size and clip of the model, from its directory (no Keras import).

        Raises
        ------
        ModelError
            If the directory holds no model or its metadata lacks the grid.
        """
        from wxdask import model as wm

        model_hash = wm.model_hash(self.path)
        meta = wm.read_metadata(self.path)
        grid = _metadata_value(meta, "grid_shape", "grid")
        if isinstance(grid, dict):
            grid = grid.get("shape")
        if isinstance(grid, str):
            grid = wm.GRIDS.get(grid)
        if not (isinstance(grid, (list, tuple)) and len(grid) == 2):
            raise ModelError(f"model metadata in {self.path!r} does not give the grid shape; retrain the model")
        return {
            "hash": model_hash,
            "grid": (int(grid[0]), int(grid[1])),
            "n_latent": int(_metadata_value(meta, "n_latent") or 50),
            "clip_max": float(_metadata_value(meta, "clip_max") or 60.0),
        }

    def load(self) -> Any:
        from wxdask import model as wm

        return wm.load_model(self.path)

    def encoder(self, model: Any, *, batch_size: int) -> Predictor:
        from wxdask import model as wm

        return KerasRawEncoder(wm.encoder_of(model), clip_max=self.metadata()["clip_max"], batch_size=batch_size)

    def decoder(self, model: Any, *, batch_size: int) -> Predictor:
        from wxdask import model as wm

        return _KerasPredictor(wm.decoder_of(model), batch_size=batch_size)


class _KerasPredictor:
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


# ----------------------------------------------------------------------------- tasks


def _read_images(store_cfg: StoreConfig, t0: int, slots: np.ndarray) -> np.ndarray:
    """Stored images of ``slots`` (rows of relative time, lead index), in that order."""
    from wxdask import store

    out = None
    for lead in np.unique(slots[:, 1]):
        rows = np.flatnonzero(slots[:, 1] == lead)
        times = t0 + slots[rows, 0]
        sel = slice(int(times[0]), int(times[-1]) + 1) if np.all(np.diff(times) == 1) else times
        block = store.read_region(store_cfg, "refc", (sel, int(lead), slice(None), slice(None)))
        if len(rows) == len(slots):  # one lead: the block is the answer, no copy
            return block
        if out is None:
            out = np.empty((len(slots), *block.shape[1:]), dtype=block.dtype)
        out[rows] = block
    assert out is not None
    return out


def _prefetched(items: list, read: Any) -> Iterator[tuple[Any, np.ndarray]]:
    """``(item, read(item))`` in order, reading the next item while the caller works."""
    if not items:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="wxdask-read") as pool:
        future = pool.submit(read, items[0])
        for i, item in enumerate(items):
            data = future.result()
            if i + 1 < len(items):
                future = pool.submit(read, items[i + 1])
            yield item, data


def _worker_address() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"local-{os.getpid()}"


def _embed_chunk(
    store_cfg: StoreConfig,
    t0: int,
    todo: np.ndarray,
    ok: np.ndarray,
    source: ModelSource,
    model_hash: str,
    batch_size: int,
    read_size: int,
) -> dict:
    """Embed the slots ``todo`` of the chunk starting at ``t0`` and write the whole chunk.

    Runs in a worker. Existing embeddings of the chunk are kept, slots whose
    image is no longer ok become NaN.
    """
    from wxdask import store

    start = _time.perf_counter()
    t1 = t0 + todo.shape[0]
    encoder = get_encoder(source, model_hash, batch_size=batch_size)
    out = store.read_region(store_cfg, "embedding", (slice(t0, t1),)).astype(np.float32, copy=True)
    out[~ok] = np.nan
    slots = np.argwhere(todo)
    # a short first group, so the device starts while the rest is read; then read_size at a time
    edges = [0, *range(min(batch_size, read_size), len(slots), read_size), len(slots)]
    groups = [slots[a:b] for a, b in zip(edges[:-1], edges[1:]) if b > a]
    for group, images in _prefetched(groups, lambda g: _read_images(store_cfg, t0, g)):
        z = embed_block(images, encoder, batch_size=batch_size)
        if z.shape[1] != out.shape[2]:
            raise ModelError(f"encoder gives {z.shape[1]} numbers per image, the store's embedding has {out.shape[2]}")
        out[group[:, 0], group[:, 1]] = z
    store.write_region(store_cfg, {"embedding": out}, (slice(t0, t1),))
    return {
        "t0": t0,
        "embedded": int(len(slots)),
        "seconds": _time.perf_counter() - start,
        "worker": _worker_address(),
        "pid": os.getpid(),
    }


# ----------------------------------------------------------------------------- lazy wrapper


def embed(
    store_cfg: StoreConfig,
    ok: np.ndarray,
    todo: np.ndarray,
    chunk: int,
    source: ModelSource,
    model_hash: str,
    cfg: EmbedConfig,
    *,
    stale: np.ndarray | None = None,
    resources: dict | None = None,
) -> list[Delayed]:
    """One lazy task per chunk of ``embedding`` that has slots to embed (or to clear).

    Never computes. Each task reads its images from the store, encodes them in
    batches of ``cfg.batch_size`` and writes its chunk; it returns a small
    summary dict. Compute the tasks with ``optimize_graph=False`` and the same
    ``resources`` so the ``GPU`` placement holds.

    Parameters
    ----------
    store_cfg : StoreConfig
        The store.
    ok, todo : numpy.ndarray of bool
        ``(time, lead_time)``: image present; slot to embed.
    chunk : int
        Chunk length of ``embedding`` along ``time``.
    source : ModelSource
        The model, loaded in the workers.
    model_hash : str
        Its hash, checked in the workers.
    cfg : EmbedConfig
        Batch size.
    stale : numpy.ndarray of bool, optional
        Slots that hold an embedding but no longer an image (cleared to NaN).
    resources : dict, optional
        ``{"GPU": 1}`` to run on GPU workers.

    Returns
    -------
    list of dask.delayed.Delayed
    """
    import dask

    touch = todo if stale is None else todo | stale
    read_size = 4 * cfg.batch_size
    run_id = uuid.uuid4().hex[:8]
    tasks = []
    with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
        for t0, t1 in chunk_spans(touch, chunk):
            tasks.append(dask.delayed(_embed_chunk, pure=False)(
                store_cfg, t0, todo[t0:t1], ok[t0:t1], source, model_hash, cfg.batch_size, read_size,
                dask_key_name=f"embed-chunk-{t0}-{run_id}",
            ))
    return tasks


# ----------------------------------------------------------------------------- run


def _ok_code(status: xr.DataArray) -> int:
    """The ``ok`` code from the CF flag attributes (1 by the store contract)."""
    values = status.attrs.get("flag_values")
    meanings = status.attrs.get("flag_meanings")
    if values is not None and isinstance(meanings, str):
        names = meanings.split()
        values = list(np.atleast_1d(values))
        if "ok" in names and len(names) == len(values):
            return int(values[names.index("ok")])
    return STATUS_OK


def _create_embedding(cfg: Config, ds: xr.Dataset, meta: dict, chunk: int) -> None:
    import dask.array as da
    import xarray as xr

    from wxdask import store

    nt, nl, nz = ds.sizes["time"], ds.sizes["lead_time"], meta["n_latent"]
    data = da.full((nt, nl, nz), np.nan, dtype=np.float32, chunks=(chunk, nl, nz))
    template = xr.Dataset(
        {"embedding": (("time", "lead_time", "latent"), data, _embedding_attrs(cfg, meta))},
        coords={"time": ds["time"], "lead_time": ds["lead_time"], "latent": np.arange(nz, dtype=np.int32)},
    )
    encoding = {"embedding": {"chunks": (chunk, nl, nz), "dtype": "float32", "_FillValue": np.float32(np.nan)}}
    store.init_output(cfg.store, template, encoding)


def _embedding_attrs(cfg: Config, meta: dict) -> dict:
    return {
        "long_name": "autoencoder embedding of composite reflectivity",
        "model_hash": meta["hash"],
        "model_dir": cfg.embed.model_dir or cfg.train.model_dir,
        "clip_max_dBZ": meta["clip_max"],
        "comment": "NaN where the slot has no image (see status) or was not embedded yet",
    }


def run(cfg: Config, client: Client | None, *, source: ModelSource | None = None) -> str:
    """Embed every image of the store that has no embedding yet, and write ``embedding``.

    A store whose embeddings come from another model (hash) is re-embedded
    whole, after a warning that says so. Slots without an image stay NaN.

    Parameters
    ----------
    cfg : Config
        Uses ``cfg.store``, ``cfg.embed`` and ``cfg.dask``.
    client : distributed.Client or None
        The cluster; ``None`` runs in this process (tests, small stores).
    source : ModelSource, optional
        The model (default: :class:`KerasModelSource` of ``cfg.embed.model_dir``, else ``cfg.train.model_dir``).

    Returns
    -------
    str
        One line: what was embedded, how fast, where, into which store.

    Raises
    ------
    StoreLayoutError
        If the store has no ``refc``/``status``.
    ModelError
        If the model is missing or made for another grid.
    """
    from wxdask import store
    from wxdask.client import gpu_workers

    start = _time.perf_counter()
    source = source if source is not None else KerasModelSource(cfg.embed.model_dir or cfg.train.model_dir)
    meta = source.metadata()
    ds = store.open_input(cfg.store, ["refc", "status"], decode=False)
    grid = (ds.sizes["y"], ds.sizes["x"])
    if tuple(meta["grid"]) != grid:
        raise ModelError(
            f"model {source.path!r} was built for a {meta['grid'][0]}x{meta['grid'][1]} grid; "
            f"store {cfg.store.url!r} holds {grid[0]}x{grid[1]} images"
        )
    exists = "embedding" in ds.data_vars
    if exists:
        emb = ds["embedding"]
        if emb.dims != ("time", "lead_time", "latent"):
            raise StoreLayoutError(f"store {cfg.store.url!r} holds embedding with dims {emb.dims}")
        old = emb.attrs.get("model_hash")
        if old != meta["hash"] or ds.sizes.get("latent") != meta["n_latent"]:
            logger.warning(
                "store %s holds embeddings of model %s; model %s (%s) differs, so every image is embedded again",
                cfg.store.url, old, meta["hash"], source.path,
            )
            drop = ["embedding"]
            if ds.sizes.get("latent") != meta["n_latent"]:  # everything on the old latent axis goes too
                drop = [v for v in ds.variables if "latent" in ds[v].dims]
                logger.warning("embedding size changes from %s to %d: deleting %s",
                               ds.sizes.get("latent"), meta["n_latent"], ", ".join(drop))
            store.drop_variables(cfg.store, drop)
            exists = False
    if exists:
        chunk = int(ds["embedding"].encoding.get("chunks", ds["embedding"].data.chunksize)[0])
    else:
        chunk = min(max(1, cfg.embed.images_per_task // ds.sizes["lead_time"]), ds.sizes["time"])
        _create_embedding(cfg, ds, meta, chunk)

    whole = (slice(None), slice(None))
    ok = store.read_region(cfg.store, "status", whole) == _ok_code(ds["status"])
    embedded = np.isfinite(store.read_region(cfg.store, "embedding", whole)).all(axis=-1)
    todo = todo_block(ok, embedded)
    stale = embedded & ~ok
    n_todo, n_done, n_missing = int(todo.sum()), int((ok & embedded).sum()), int((~ok).sum())
    logger.info("embed: %d images to embed, %d already embedded, %d slots without an image",
                n_todo, n_done, n_missing)

    gpus = gpu_workers(client) if client is not None else []
    resources = {"GPU": 1} if gpus else None
    tasks = embed(cfg.store, ok, todo, chunk, source, meta["hash"], cfg.embed, stale=stale, resources=resources)
    results = _compute(client, tasks, resources, n_todo)
    n_embedded = sum(r["embedded"] for r in results)
    workers = sorted({r["worker"] for r in results})
    store.set_attrs(cfg.store, _embedding_attrs(cfg, meta), variable="embedding")
    store.consolidate(cfg.store)
    seconds = _time.perf_counter() - start
    where = f"{len(gpus)} GPU worker(s)" if gpus else ("CPU workers" if client is not None else "this process")
    rate = f", {n_embedded / seconds:.3g} images/s" if n_embedded else ""
    return (
        f"embedded {n_embedded} images in {seconds:.1f} s{rate} on {where} ({len(workers)} used); "
        f"{n_done} already embedded, {n_missing} slots without an image stay NaN; "
        f"model {meta['hash']}; {cfg.store.url}:embedding"
    )


def _compute(client: Client | None, tasks: list, resources: dict | None, n_images: int, *,
             count: str = "embedded", stage: str = "embed") -> list[dict]:
    """Run the chunk tasks (unfused, so the resource placement holds), logging progress."""
    if not tasks:
        return []
    if client is None:
        import dask

        return list(dask.compute(*tasks, scheduler="synchronous", optimize_graph=False))
    from distributed import as_completed

    futures = client.compute(tasks, optimize_graph=False, resources=resources)
    results, done, next_log = [], 0, 0.1
    for future in as_completed(futures):
        result = future.result()
        results.append(result)
        done += result[count]
        if n_images and done / n_images >= next_log:
            logger.info("%s: %d/%d images (%.0f%%)", stage, done, n_images, 100 * done / n_images)
            next_log = done / n_images + 0.1
    return results
