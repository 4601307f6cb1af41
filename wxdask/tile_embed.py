"""Tile embedding: every tile with echo of every image to the tile model's embedding, on GPU workers.

Core (pure numpy): :func:`embed_tiles_block`.
Lazy wrapper: :func:`embed_tiles`, one Dask task per time chunk of
``tile_embedding``, annotated for the ``GPU`` resource.
I/O: :func:`run`.

Writes (store contract, DESIGN.md "Tiles"): the tile coordinates of
:func:`wxdask.tiles.tile_coords`, ``tile_echo_fraction(time, lead_time, tile_y, tile_x)``
(NaN where the slot has no image) and ``tile_embedding(time, lead_time, tile_y,
tile_x, latent)`` (NaN where the slot has no image or the tile's echo fraction is
below ``tiles.echo_threshold``: clear sky). A slot is done when its echo
fractions are finite; each task writes the embedding of its chunk first, then the
echo fractions, so a killed run resumes where it stopped.

Tile outputs of another model (hash), tiling or threshold are replaced whole,
and a store without tile outputs gets them, through a staging store committed
at the end (:func:`wxdask.store.commit`): a failed run leaves the store as it
was. A rerun with the same model writes in place, only the slots not done yet.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time as _time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from wxdask import embed as wxembed
from wxdask import store as wxstore
from wxdask.errors import ModelError, StoreLayoutError
from wxdask.model import Predictor, read_metadata, resolve_model
from wxdask.models import ModelSource, get_encoder
from wxdask.tile_model import (
    gather_tiles,
    raw_to_dbz,
    select_tiles,
    store_grid,
    tiling_of_model,
)
from wxdask.tiles import Tiling, echo_fraction_block, tile_coords

if TYPE_CHECKING:  # pragma: no cover
    from dask.delayed import Delayed
    from distributed import Client

    from wxdask.config import Config, StoreConfig

__all__ = ["EMBEDDING", "ECHO", "embed_tiles_block", "embed_tiles", "run"]

logger = logging.getLogger(__name__)

EMBEDDING = "tile_embedding"
ECHO = "tile_echo_fraction"
COORDS = ("tile_y", "tile_x", "tile_y_min", "tile_y_max", "tile_x_min", "tile_x_max", "tile_latitude",
          "tile_longitude")


# ----------------------------------------------------------------------------- core (pure)


def embed_tiles_block(raw: np.ndarray, tiling: Tiling, threshold: float, encoder: Predictor, *,
                      batch_size: int, n_latent: int) -> tuple[np.ndarray, np.ndarray]:
    """Echo fractions and embeddings of the tiles of stored images; clear-sky tiles NaN.

    Parameters
    ----------
    raw : numpy.ndarray
        ``(n, ny, nx)`` images as stored (int16 sixteenths of a dBZ).
    tiling : Tiling
    threshold : float
        Tiles with a smaller echo fraction are not encoded.
    encoder : Predictor
        Stored int16 tiles ``(b, size, size)`` -> ``(b, n_latent)``.

    Returns
    -------
    tuple of numpy.ndarray
        ``echo`` ``(n, n_tile_y, n_tile_x)`` float32 and ``z``
        ``(n, n_tile_y, n_tile_x, n_latent)`` float32.

    Examples
    --------
    >>> class Sum:
    ...     def predict(self, x):
    ...         return x.sum(axis=(1, 2))[:, None].astype(np.float32)
    >>> raw = np.full((1, 2, 4), -160, np.int16); raw[0, :, :2] = 320
    >>> echo, z = embed_tiles_block(raw, Tiling((2, 4), 2, 2), 0.5, Sum(), batch_size=4, n_latent=1)
    >>> echo.tolist(), z[..., 0].tolist()
    ([[[1.0, 0.0]]], [[[1280.0, nan]]])
    """
    echo = echo_fraction_block(raw_to_dbz(raw), tiling)
    z = np.full((*echo.shape, n_latent), np.nan, dtype=np.float32)
    k, iy, ix = select_tiles(echo, threshold)
    if k.size:
        got = wxembed.embed_block(gather_tiles(raw, tiling, k, iy, ix), encoder, batch_size=batch_size)
        if got.shape[1] != n_latent:
            raise ModelError(
                f"encoder gives {got.shape[1]} numbers per tile, the store's tile_embedding has {n_latent}"
            )
        z[k, iy, ix] = got
    return echo, z


# ----------------------------------------------------------------------------- tasks


def _embed_tile_chunk(write_cfg: StoreConfig, read_cfg: StoreConfig, t0: int, todo: np.ndarray, ok: np.ndarray,
                      source: ModelSource, model_hash: str, tiling: Tiling, threshold: float, batch_size: int,
                      read_size: int) -> dict:
    """Embed the tiles of the slots ``todo`` of the chunk at ``t0``; write the chunk's embedding, then its echo."""
    from wxdask.client import worker_address

    start = _time.perf_counter()
    t1 = t0 + todo.shape[0]
    index = (slice(t0, t1),)
    encoder = get_encoder(source, model_hash, batch_size=batch_size)
    z = wxstore.read_region(write_cfg, EMBEDDING, index).astype(np.float32, copy=True)
    echo = wxstore.read_region(write_cfg, ECHO, index).astype(np.float32, copy=True)
    z[~ok], echo[~ok] = np.nan, np.nan
    slots = np.argwhere(todo)
    groups = [slots[i : i + read_size] for i in range(0, len(slots), read_size)]
    n_tiles = n_clear = 0
    for group, raw in wxembed._prefetched(groups, lambda g: wxstore.read_slots(read_cfg, t0 + g[:, 0], g[:, 1])):
        e, zz = embed_tiles_block(raw, tiling, threshold, encoder, batch_size=batch_size, n_latent=z.shape[-1])
        echo[group[:, 0], group[:, 1]], z[group[:, 0], group[:, 1]] = e, zz
        n_new = int(np.isfinite(zz[..., 0]).sum())
        n_tiles, n_clear = n_tiles + n_new, n_clear + e.size - n_new
    wxstore.write_region(write_cfg, {EMBEDDING: z, ECHO: echo}, index)  # in this order: echo marks done
    return {"t0": t0, "slots": len(slots), "tiles": n_tiles, "clear": n_clear,
            "seconds": _time.perf_counter() - start, "worker": worker_address(), "pid": os.getpid()}


def embed_tiles(write_cfg: StoreConfig, read_cfg: StoreConfig, ok: np.ndarray, todo: np.ndarray,
                stale: np.ndarray, chunk: int, source: ModelSource, model_hash: str, tiling: Tiling,
                threshold: float, batch_size: int, read_size: int, *, resources: dict | None = None) -> list[Delayed]:
    """One lazy task per time chunk of ``tile_embedding`` with slots to embed (or clear); never computes.

    Compute them with ``optimize_graph=False`` and the same ``resources`` so the ``GPU`` placement holds.
    """
    import dask

    run_id = uuid.uuid4().hex[:8]
    tasks = []
    with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
        for t0, t1 in wxembed.chunk_spans(todo | stale, chunk):
            tasks.append(dask.delayed(_embed_tile_chunk, pure=False)(
                write_cfg, read_cfg, t0, todo[t0:t1], ok[t0:t1], source, model_hash, tiling, threshold,
                batch_size, read_size, dask_key_name=f"tile-embed-chunk-{t0}-{run_id}"))
    return tasks


# ----------------------------------------------------------------------------- run


def _attrs(cfg: Config, source: ModelSource, meta: Mapping[str, Any], tiling: Tiling, grid_name: str) -> dict:
    return {
        "long_name": "tile autoencoder embedding of composite reflectivity",
        "model_hash": meta["hash"],
        "model_dir": source.path,
        "tile_size": int(tiling.size),
        "tile_stride": int(tiling.stride),
        "tile_offset": [int(v) for v in tiling.offset],
        "echo_threshold": float(cfg.tiles.echo_threshold),
        "grid_name": grid_name,
        "comment": "NaN where the slot has no image (see status), the tile's echo fraction is below "
                   "echo_threshold (clear sky), or it was not embedded yet",
    }


def _same(old: dict, new: dict) -> bool:
    keys = ("model_hash", "tile_size", "tile_stride", "tile_offset", "echo_threshold", "grid_name")
    return all(np.array_equal(np.asarray(old.get(k)), np.asarray(new[k])) for k in keys)


def _template(ds: Any, grid: Any, tiling: Tiling, n_latent: int, chunk: int, attrs: dict) -> tuple[Any, dict]:
    import dask.array as da
    import xarray as xr

    nt, nl = ds.sizes["time"], ds.sizes["lead_time"]
    ty, tx = tiling.shape
    echo = da.full((nt, nl, ty, tx), np.nan, dtype=np.float32, chunks=(chunk, nl, ty, tx))
    z = da.full((nt, nl, ty, tx, n_latent), np.nan, dtype=np.float32, chunks=(chunk, nl, ty, tx, n_latent))
    dims = ("time", "lead_time", "tile_y", "tile_x")
    template = xr.Dataset(
        {EMBEDDING: (dims + ("latent",), z, attrs),
         ECHO: (dims, echo, {"long_name": "share of the tile's points with echo (> 0 dBZ)", "units": "1",
                             "comment": "NaN where the slot has no image"})},
        coords={"time": ds["time"], "lead_time": ds["lead_time"], "latent": np.arange(n_latent, dtype=np.int32),
                **tile_coords(grid, tiling)},
    )
    fill = {"dtype": "float32", "_FillValue": np.float32(np.nan)}
    encoding = {
        EMBEDDING: {"chunks": (chunk, nl, ty, tx, n_latent), **fill},
        ECHO: {"chunks": (chunk, nl, ty, tx), **fill},
    }
    return template, encoding


def run(cfg: Config, client: Client | None, *, source: ModelSource | None = None) -> str:
    """Embed every tile with echo of every image whose tiles are not embedded yet.

    Parameters
    ----------
    cfg : Config
        Uses ``cfg.store``, ``cfg.tiles`` (model directory, echo threshold, batch
        size) and ``cfg.embed.images_per_task`` (time chunks).
    client : distributed.Client or None
        The cluster (GPU workers when it has any); ``None`` runs here.
    source : ModelSource, optional
        The tile model (default: :class:`~wxdask.model.ModelDir` ``cfg.tiles.model_dir``).

    Returns
    -------
    str
        One line: tiles embedded, tiles below the threshold, slots without image.

    Raises
    ------
    ModelError
        If the model is missing, not a tile model, or for another grid; or fails to load (the store is untouched).
    StoreLayoutError
        If the store lacks ``refc``/``status`` or holds a ``latent`` of another size.
    """
    from wxdask.client import compute, gpu_workers

    start = _time.perf_counter()
    source = source if source is not None else resolve_model(cfg.tiles.model_dir)
    meta = source.metadata()
    ds = wxstore.open_input(cfg.store, ["refc", "status"])
    grid = store_grid(ds)
    tiling = tiling_of_model(read_metadata(source.path), grid, source.path)
    if tuple(meta["grid"]) != (tiling.size, tiling.size):
        raise ModelError(f"tile model {source.path!r} takes {meta['grid']} inputs, its tiles are {tiling.size} px")
    n_latent = int(meta["n_latent"])
    if "latent" in ds.dims and ds.sizes["latent"] != n_latent:
        raise StoreLayoutError(f"store {cfg.store.url!r} has latent of size {ds.sizes['latent']}; the tile model "
                               f"{source.path!r} gives {n_latent} numbers; use a tile model of {ds.sizes['latent']}")
    attrs = _attrs(cfg, source, meta, tiling, grid.name)
    in_place = (
        EMBEDDING in ds.data_vars
        and ECHO in ds.data_vars
        and _same(ds[EMBEDDING].attrs, attrs)
        and ds[EMBEDDING].sizes.get("tile_y") == tiling.shape[0]
        and ds[EMBEDDING].sizes.get("tile_x") == tiling.shape[1]
    )
    if EMBEDDING in ds.data_vars and not in_place:
        logger.warning("store %s holds tile embeddings of model %s (tiles %s px, threshold %s); model %s differs, "
                       "so every tile is embedded again (the old ones stay until the new ones are committed)",
                       cfg.store.url, ds[EMBEDDING].attrs.get("model_hash"), ds[EMBEDDING].attrs.get("tile_size"),
                       ds[EMBEDDING].attrs.get("echo_threshold"), meta["hash"])
    nl = ds.sizes["lead_time"]
    if in_place:
        chunk = int(ds[EMBEDDING].encoding.get("chunks", ds[EMBEDDING].data.chunksize)[0])
    else:
        chunk = min(max(1, cfg.embed.images_per_task // nl), ds.sizes["time"])
    template, encoding = _template(ds, grid, tiling, n_latent, chunk, attrs)
    ok = wxstore.ok_mask(ds)
    if in_place:
        write_cfg = cfg.store
        wxstore.init_output(cfg.store, template, encoding)  # grows the tile outputs to new times, if any
        done = np.isfinite(wxstore.read_region(cfg.store, ECHO, (slice(None),))).all(axis=(-2, -1))
    else:
        write_cfg = wxstore.staging(cfg.store)
        wxstore.init_output(write_cfg, template, encoding)
        done = np.zeros_like(ok)
    todo, stale = ok & ~done, done & ~ok
    n_missing = int((~ok).sum())
    logger.info("embed --tiles: %d images to cut into %dx%d tiles of %d px, %d done already, %d slots without image",
                int(todo.sum()), *tiling.shape, tiling.size, int((ok & done).sum()), n_missing)

    gpus = gpu_workers(client) if client is not None else []
    resources = {"GPU": 1} if gpus else None
    bs = cfg.tiles.batch_size
    try:
        tasks = embed_tiles(write_cfg, cfg.store, ok, todo, stale, chunk, source, meta["hash"], tiling,
                            cfg.tiles.echo_threshold, bs, max(1, cfg.embed.batch_size), resources=resources)
        results = compute(client, tasks, resources=resources, optimize_graph=False, count="slots",
                          total=int(todo.sum()), stage="embed --tiles")
        if not in_place:
            names = [EMBEDDING, ECHO, *COORDS]
            if "latent" not in ds.variables:
                names.append("latent")
            stale_users = [str(v) for v in ds.data_vars if v not in names and {"tile_y", "tile_x"} & set(ds[v].dims)]
            tiling_changed = any(ds.sizes.get(d) not in (None, n) for d, n in zip(("tile_y", "tile_x"), tiling.shape))
            drop = stale_users if tiling_changed else []
            if drop:
                logger.warning("the tiling changed: deleting %s (made on the old tiles)", ", ".join(drop))
            wxstore.commit(cfg.store, write_cfg, names, drop=drop)
    except BaseException:
        if not in_place:
            wxstore.discard(write_cfg)
        raise
    wxstore.set_attrs(cfg.store, attrs, variable=EMBEDDING)
    wxstore.consolidate(cfg.store)
    n_tiles, n_clear = sum(r["tiles"] for r in results), sum(r["clear"] for r in results)
    n_slots = sum(r["slots"] for r in results)
    seconds = _time.perf_counter() - start
    where = f"{len(gpus)} GPU worker(s)" if gpus else ("CPU workers" if client is not None else "this process")
    return (f"embedded {n_tiles} tiles of {n_slots} images ({tiling.size} px, {tiling.shape[0]}x{tiling.shape[1]} "
            f"per image) in {seconds:.1f} s on {where}; {n_clear} tiles below echo threshold "
            f"{cfg.tiles.echo_threshold:g} (clear sky) stay NaN; {n_missing} slots without image; "
            f"{int((ok & done).sum())} images done already; model {meta['hash']}; {cfg.store.url}:{EMBEDDING}")
