"""Embedding: every image in the store to its ``n_latent``-number embedding, on GPU workers.

Core (pure numpy): :func:`embed_block`, :func:`todo_block`,
:func:`chunk_spans`.
Lazy wrapper: :func:`embed`, one Dask task per chunk of the ``embedding`` variable
(whole images, ``embed.images_per_task`` of them along ``time``), annotated for
the ``GPU`` resource.
I/O: :func:`run`, the only layer that reads, writes or computes.

Models reach the workers as a :class:`~wxdask.models.ModelSource` (a path and a
class, a few bytes), never pickled: each worker process loads the model once,
through the per-process cache of :mod:`wxdask.models`. Images travel to the
framework as stored (int16 in 1/16 dBZ) and are scaled there
(:class:`~wxdask.models.KerasRawEncoder`).

Where the encoder tasks run is set by ``resources={"GPU": 1}`` given to
``Client.compute`` for a graph that is not optimized (no low-level fusion, which
would drop the annotation): on a cluster with GPU workers they run only there;
without GPU workers they run on any worker.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time as _time
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from wxdask.errors import ModelError, StoreLayoutError
from wxdask.model import Predictor, scale_raw  # noqa: F401  # scale_raw: used by the doctests
from wxdask.models import ModelSource, get_encoder

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr
    from dask.delayed import Delayed
    from distributed import Client

    from wxdask.config import Config, EmbedConfig, StoreConfig

__all__ = [
    "embed_block",
    "todo_block",
    "chunk_spans",
    "embed",
    "run",
]

logger = logging.getLogger(__name__)


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
    per_time = np.asarray(touch.reshape(n, -1).any(axis=1))
    return [(t0, min(t0 + chunk, n)) for t0 in range(0, n, chunk) if per_time[t0 : t0 + chunk].any()]


# ----------------------------------------------------------------------------- tasks


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


def _embed_chunk(
    store_cfg: StoreConfig,
    out_cfg: StoreConfig,
    t0: int,
    todo: np.ndarray,
    ok: np.ndarray,
    source: ModelSource,
    model_hash: str,
    batch_size: int,
    read_size: int,
) -> dict:
    """Embed the slots ``todo`` of the chunk starting at ``t0`` and write the whole chunk.

    Runs in a worker. Images are read from ``store_cfg``, the chunk of
    ``embedding`` read from and written to ``out_cfg`` (the store itself, or
    the staging store of a run that replaces every embedding). Existing
    embeddings of the chunk are kept, slots whose image is no longer ok become NaN.
    """
    from wxdask import store
    from wxdask.client import worker_address

    start = _time.perf_counter()
    t1 = t0 + todo.shape[0]
    encoder = get_encoder(source, model_hash, batch_size=batch_size)
    out = store.read_region(out_cfg, "embedding", (slice(t0, t1),)).astype(np.float32, copy=True)
    out[~ok] = np.nan
    slots = np.argwhere(todo)
    # a short first group, so the device starts while the rest is read; then read_size at a time
    edges = [0, *range(min(batch_size, read_size), len(slots), read_size), len(slots)]
    groups = [slots[a:b] for a, b in zip(edges[:-1], edges[1:]) if b > a]
    for group, images in _prefetched(groups, lambda g: store.read_slots(store_cfg, t0 + g[:, 0], g[:, 1])):
        z = embed_block(images, encoder, batch_size=batch_size)
        if z.shape[1] != out.shape[2]:
            raise ModelError(f"encoder gives {z.shape[1]} numbers per image, the store's embedding has {out.shape[2]}")
        out[group[:, 0], group[:, 1]] = z
    store.write_region(out_cfg, {"embedding": out}, (slice(t0, t1),))
    return {
        "t0": t0,
        "embedded": int(len(slots)),
        "seconds": _time.perf_counter() - start,
        "worker": worker_address(),
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
    out_cfg: StoreConfig | None = None,
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
    out_cfg : StoreConfig, optional
        Where ``embedding`` is written (default: ``store_cfg``).

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
            tasks.append(
                dask.delayed(_embed_chunk, pure=False)(
                    store_cfg,
                    out_cfg or store_cfg,
                    t0,
                    todo[t0:t1],
                    ok[t0:t1],
                    source,
                    model_hash,
                    cfg.batch_size,
                    read_size,
                    dask_key_name=f"embed-chunk-{t0}-{run_id}",
                )
            )
    return tasks


# ----------------------------------------------------------------------------- run


def _create_embedding(cfg: Config, ds: xr.Dataset, meta: Mapping[str, Any], chunk: int, out_cfg: StoreConfig) -> None:
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
    store.init_output(out_cfg, template, encoding)


def _embedding_attrs(cfg: Config, meta: Mapping[str, Any]) -> dict:
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
        The model (default: the :class:`~wxdask.model.ModelDir` ``cfg.embed.model_dir``, else ``cfg.train.model_dir``).

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
    from wxdask.client import compute, gpu_workers
    from wxdask.model import resolve_model

    start = _time.perf_counter()
    source = source if source is not None else resolve_model(cfg.embed.model_dir or cfg.train.model_dir)
    meta = source.metadata()
    ds = store.open_input(cfg.store, ["refc", "status"])
    grid = (ds.sizes["y"], ds.sizes["x"])
    if tuple(meta["grid"]) != grid:
        raise ModelError(
            f"model {source.path!r} was built for a {meta['grid'][0]}x{meta['grid'][1]} grid; "
            f"store {cfg.store.url!r} holds {grid[0]}x{grid[1]} images"
        )
    # load and check the model before touching the store: an unloadable model fails here, not in a worker
    get_encoder(source, meta["hash"], batch_size=cfg.embed.batch_size)
    exists = "embedding" in ds.data_vars
    out_cfg, drop = cfg.store, []
    if exists:
        emb = ds["embedding"]
        if emb.dims != ("time", "lead_time", "latent"):
            raise StoreLayoutError(f"store {cfg.store.url!r} holds embedding with dims {emb.dims}")
        old = emb.attrs.get("model_hash")
        if old != meta["hash"] or ds.sizes.get("latent") != meta["n_latent"]:
            logger.warning(
                "store %s holds embeddings of model %s; model %s (%s) differs, so every image is embedded "
                "again (the old embeddings stay until the new ones are complete)",
                cfg.store.url, old, meta["hash"], source.path,
            )
            if ds.sizes.get("latent") != meta["n_latent"]:  # everything else on the old latent axis goes too
                drop = [str(v) for v in ds.data_vars if "latent" in ds[v].dims and v != "embedding"]
                logger.warning("embedding size changes from %s to %d: %s will be deleted",
                               ds.sizes.get("latent"), meta["n_latent"], ", ".join(drop) or "nothing else")
            out_cfg = store.staging(cfg.store)
            exists = False
    if exists:
        chunk = int(ds["embedding"].encoding.get("chunks", ds["embedding"].data.chunksize)[0])
    else:
        chunk = min(max(1, cfg.embed.images_per_task // ds.sizes["lead_time"]), ds.sizes["time"])
        _create_embedding(cfg, ds, meta, chunk, out_cfg)

    whole = (slice(None), slice(None))
    ok = store.ok_mask(ds)
    embedded = np.isfinite(store.read_region(out_cfg, "embedding", whole)).all(axis=-1)
    todo = todo_block(ok, embedded)
    stale = embedded & ~ok
    n_todo, n_done, n_missing = int(todo.sum()), int((ok & embedded).sum()), int((~ok).sum())
    logger.info("embed: %d images to embed, %d already embedded, %d slots without an image",
                n_todo, n_done, n_missing)

    gpus = gpu_workers(client) if client is not None else []
    resources = {"GPU": 1} if gpus else None
    tasks = embed(cfg.store, ok, todo, chunk, source, meta["hash"], cfg.embed, stale=stale, resources=resources,
                  out_cfg=out_cfg)
    results = compute(client, tasks, resources=resources, optimize_graph=False, count="embedded", total=n_todo,
                      stage="embed")
    n_embedded = sum(r["embedded"] for r in results)
    workers = sorted({r["worker"] for r in results})
    store.set_attrs(out_cfg, _embedding_attrs(cfg, meta), variable="embedding")
    if out_cfg is cfg.store:
        store.consolidate(cfg.store)
    else:  # the new embeddings are complete: replace the old ones in one commit
        store.commit(cfg.store, out_cfg, ["embedding", "latent"], drop=drop)
    seconds = _time.perf_counter() - start
    where = f"{len(gpus)} GPU worker(s)" if gpus else ("CPU workers" if client is not None else "this process")
    rate = f", {n_embedded / seconds:.3g} images/s" if n_embedded else ""
    return (
        f"embedded {n_embedded} images in {seconds:.1f} s{rate} on {where} ({len(workers)} used); "
        f"{n_done} already embedded, {n_missing} slots without an image stay NaN; "
        f"model {meta['hash']}; {cfg.store.url}:embedding"
    )
