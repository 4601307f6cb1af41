"""Decoding: embeddings back to reflectivity images, and compression you can measure.

Core (pure numpy): :func:`decode_block`, :func:`rmse_block`, :func:`ratio_block`.
Lazy wrapper: :func:`decode`, one Dask task per chunk of ``embedding`` along
``time`` (on GPU workers when the cluster has them, as in :mod:`wxdask.embed`).
I/O: :func:`run` (bulk: ``reconstruction_rmse`` and compression ratios for the
whole store) and :func:`decode_png` (one slot: original and decoded image side
by side on the map).

The decoder is the model rebuilt from its ``refc_embedding`` layer onward
(:func:`wxdask.model.decoder_of`), loaded once per process through the cache of
:mod:`wxdask.models`. A decoded image is in dBZ, clipped to ``0..clip_max`` as
the model's input was (:func:`wxdask.model.decode_dbz`); the RMSE compares it with the stored image clipped the
same way (the model cannot see echo above ``clip_max`` or below 0 dBZ).
"""

from __future__ import annotations

import logging
import time as _time
import uuid
from typing import TYPE_CHECKING, Any

import numpy as np

from wxdask.embed import chunk_spans
from wxdask.errors import ConfigError, StoreLayoutError
from wxdask.model import (
    RAW_SCALE,
    ModelInfo,
    Predictor,
    check_model,
    decode_dbz,
    resolve_model,
)
from wxdask.models import ModelSource, get_decoder

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr
    from dask.delayed import Delayed
    from distributed import Client

    from wxdask.config import Config, DecodeConfig, StoreConfig

__all__ = ["decode_block", "rmse_block", "ratio_block", "decode", "run", "decode_png", "OUTPUTS"]

logger = logging.getLogger(__name__)

#: Variables written by the bulk mode.
OUTPUTS = ("reconstruction_rmse", "compression_ratio_stored", "compression_ratio_grib")


# ----------------------------------------------------------------------------- core (pure)


def decode_block(z: np.ndarray, decoder: Predictor, *, clip_max: float, batch_size: int) -> np.ndarray:
    """Decode embeddings to images in dBZ, ``batch_size`` per decoder call.

    Parameters
    ----------
    z : numpy.ndarray
        ``(n, n_latent)`` embeddings.
    decoder : Predictor
        ``(b, n_latent)`` -> ``(b, ny, nx[, 1])`` in scaled units (1 = ``clip_max`` dBZ).
    clip_max : float
        dBZ of a scaled 1.
    batch_size : int
        Embeddings per call.

    Returns
    -------
    numpy.ndarray
        ``(n, ny, nx)`` float32 dBZ in ``0..clip_max``.

    Examples
    --------
    >>> class Fake:
    ...     def predict(self, z):
    ...         return np.repeat(z[:, :1, None, None], 3, axis=2)
    >>> decode_block(np.array([[0.5], [1.2]]), Fake(), clip_max=60.0, batch_size=1)[:, 0, 0]
    array([30., 60.], dtype=float32)
    """
    return decode_dbz(z, decoder, clip_max=clip_max, batch_size=batch_size)


def rmse_block(raw: np.ndarray, decoded: np.ndarray, *, clip_max: float) -> np.ndarray:
    """Root-mean-square error per image, dBZ, of decoded images against stored ones.

    Parameters
    ----------
    raw : numpy.ndarray
        ``(n, ny, nx)`` stored images (int16, 1/16 dBZ), clipped here to
        ``0..clip_max`` as the model sees them.
    decoded : numpy.ndarray
        ``(n, ny, nx)`` decoded dBZ.
    clip_max : float
        The model's clip.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float32.

    Examples
    --------
    >>> raw = np.array([[[-160, 480]], [[1200, 0]]], dtype=np.int16)
    >>> rmse_block(raw, np.array([[[0.0, 33.0]], [[60.0, 4.0]]]), clip_max=60.0)
    array([2.1213202, 2.828427 ], dtype=float32)
    """
    orig = np.clip(np.asarray(raw).astype(np.float32) * np.float32(RAW_SCALE), 0.0, clip_max)
    diff = orig - np.asarray(decoded, dtype=np.float32)
    n = diff.shape[0]
    return np.sqrt(np.mean(np.square(diff.reshape(n, -1), dtype=np.float64), axis=1)).astype(np.float32)


def ratio_block(nbytes: np.ndarray, embedding_nbytes: int) -> np.ndarray:
    """Compression ratio: bytes of each image (stored or GRIB) over the bytes of its embedding.

    Slots with no bytes (no image) get NaN.

    Examples
    --------
    >>> ratio_block(np.array([400, 0, 219]), 200)
    array([2.   ,   nan, 1.095], dtype=float32)
    """
    nbytes = np.asarray(nbytes, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(nbytes > 0, nbytes / float(embedding_nbytes), np.nan)
    return out.astype(np.float32)


# ----------------------------------------------------------------------------- tasks and lazy wrapper


def _decode_chunk(store_cfg: StoreConfig, t0: int, valid: np.ndarray, source: ModelSource, model_hash: str,
                  clip_max: float, batch_size: int) -> dict:
    """Decode the valid slots of the chunk at ``t0``, score them, write ``reconstruction_rmse`` there."""
    from wxdask import store
    from wxdask.client import worker_address

    start = _time.perf_counter()
    t1 = t0 + valid.shape[0]
    rmse = np.full(valid.shape, np.nan, dtype=np.float32)
    slots = np.argwhere(valid)
    step = 4 * batch_size
    if len(slots):
        decoder = get_decoder(source, model_hash, batch_size=batch_size)
        z_all = store.read_region(store_cfg, "embedding", (slice(t0, t1),))
        for i in range(0, len(slots), step):
            group = slots[i : i + step]
            raw = store.read_slots(store_cfg, t0 + group[:, 0], group[:, 1])
            decoded = decode_block(z_all[group[:, 0], group[:, 1]], decoder, clip_max=clip_max, batch_size=batch_size)
            rmse[group[:, 0], group[:, 1]] = rmse_block(raw, decoded, clip_max=clip_max)
    store.write_region(store_cfg, {"reconstruction_rmse": rmse}, (slice(t0, t1),))
    return {"t0": t0, "decoded": int(len(slots)), "seconds": _time.perf_counter() - start,
            "worker": worker_address()}


def decode(store_cfg: StoreConfig, valid: np.ndarray, chunk: int, source: ModelSource, model_hash: str,
           clip_max: float, cfg: DecodeConfig, *, resources: dict | None = None) -> list[Delayed]:
    """One lazy task per chunk of ``embedding`` along ``time``: decode, score, write its RMSE.

    Never computes; compute with ``optimize_graph=False`` and the same ``resources``.

    Parameters
    ----------
    store_cfg : StoreConfig
        The store.
    valid : numpy.ndarray of bool
        ``(time, lead_time)``: slots with an image and an embedding.
    chunk : int
        Chunk length of ``embedding`` (and ``reconstruction_rmse``) along ``time``.
    source : ModelSource
        The model whose embeddings these are.
    model_hash : str
        Its hash.
    clip_max : float
        dBZ of a scaled 1.
    cfg : DecodeConfig
        Batch size.
    resources : dict, optional
        ``{"GPU": 1}`` to run on GPU workers.

    Returns
    -------
    list of dask.delayed.Delayed
    """
    import contextlib

    import dask

    run_id = uuid.uuid4().hex[:8]
    every = np.ones(valid.shape[0], dtype=bool)  # every chunk: slots without an image get NaN
    tasks = []
    with dask.annotate(resources=resources) if resources else contextlib.nullcontext():
        for t0, t1 in chunk_spans(every, chunk):
            tasks.append(dask.delayed(_decode_chunk, pure=False)(
                store_cfg, t0, valid[t0:t1], source, model_hash, clip_max, cfg.batch_size,
                dask_key_name=f"decode-chunk-{t0}-{run_id}",
            ))
    return tasks


# ----------------------------------------------------------------------------- I/O


def _open(cfg: Config, source: ModelSource | None) -> tuple[xr.Dataset, ModelSource, ModelInfo]:
    from wxdask import store

    ds = store.open_input(cfg.store, ["refc", "status", "embedding"])
    attrs = ds["embedding"].attrs
    source = source if source is not None else resolve_model(cfg.decode.model_dir or cfg.train.model_dir, attrs)
    return ds, source, check_model(source, attrs, cfg.store.url)


def _create_outputs(cfg: Config, ds: xr.Dataset, chunk: int, attrs: dict) -> None:
    import dask.array as da
    import xarray as xr

    from wxdask import store

    nt, nl = ds.sizes["time"], ds.sizes["lead_time"]
    data = {
        name: (("time", "lead_time"), da.full((nt, nl), np.nan, dtype=np.float32, chunks=(chunk, nl)), attrs[name])
        for name in OUTPUTS
    }
    template = xr.Dataset(data, coords={"time": ds["time"], "lead_time": ds["lead_time"]})
    encoding = {name: {"chunks": (chunk, nl), "dtype": "float32", "_FillValue": np.float32(np.nan)} for name in OUTPUTS}
    store.init_output(cfg.store, template, encoding)


def _stored_image_bytes(cfg: Config, ds: xr.Dataset) -> np.ndarray:
    """Stored (compressed) bytes of each ``(time, lead_time)`` image."""
    from wxdask import store

    sizes = store.chunk_nbytes(cfg.store, "refc")
    if sizes.shape[2:] != (1, 1) or sizes.shape[:2] != (ds.sizes["time"], ds.sizes["lead_time"]):
        raise StoreLayoutError(
            f"refc in {cfg.store.url!r} is chunked {sizes.shape} chunks over (time, lead_time, y, x); "
            "the store contract is one whole image per chunk"
        )
    return sizes[:, :, 0, 0]


def run(cfg: Config, client: Client | None, *, source: ModelSource | None = None) -> str:
    """Decode every embedding, score it, and write compression ratios into the store.

    Writes ``reconstruction_rmse(time, lead_time)`` (dBZ),
    ``compression_ratio_stored`` (stored image bytes / embedding bytes) and,
    when the store records ``grib_bytes``, ``compression_ratio_grib`` (GRIB
    message bytes / embedding bytes). NaN where a slot has no image or no
    embedding.

    Parameters
    ----------
    cfg : Config
        Uses ``cfg.store``, ``cfg.decode`` and ``cfg.dask``.
    client : distributed.Client or None
        The cluster; ``None`` runs in this process.
    source : ModelSource, optional
        The model (default: the :class:`~wxdask.model.ModelDir` ``cfg.decode.model_dir``, else ``cfg.train.model_dir``).

    Returns
    -------
    str
        One line with the median scores and where they went.

    Raises
    ------
    StoreLayoutError
        If the store has no embeddings.
    ModelError
        If the model is not the one that made the embeddings.
    """
    from wxdask import store
    from wxdask.client import compute, gpu_workers

    start = _time.perf_counter()
    ds, source, meta = _open(cfg, source)
    emb = ds["embedding"]
    chunk = int(emb.encoding.get("chunks", emb.data.chunksize)[0])
    ok = store.ok_mask(ds)
    valid = ok & np.isfinite(emb.values).all(axis=-1)
    emb_bytes = int(emb.sizes["latent"]) * np.dtype(np.float32).itemsize
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    raw_ratio = ny * nx * np.dtype(np.int16).itemsize / emb_bytes

    stored = ratio_block(np.where(valid, _stored_image_bytes(cfg, ds), 0), emb_bytes)
    has_grib = "grib_bytes" in ds.data_vars
    grib = ratio_block(np.where(valid, ds["grib_bytes"].values, 0), emb_bytes) if has_grib else None
    if not has_grib:
        logger.warning("store %s has no grib_bytes: only the stored-image compression ratio is written",
                       cfg.store.url)

    attrs = {
        "reconstruction_rmse": {
            "long_name": "RMSE of the image decoded from its embedding against the stored image",
            "units": "dBZ", "model_hash": meta["hash"], "clip_max_dBZ": meta["clip_max"],
            "comment": f"both clipped to 0..{meta['clip_max']:g} dBZ, as the model sees them; "
            "NaN without image or embedding",
        },
        "compression_ratio_stored": {
            "long_name": "bytes of the stored (compressed) image over bytes of its float32 embedding",
            "units": "1", "embedding_bytes": emb_bytes, "uncompressed_image_ratio": raw_ratio,
        },
        "compression_ratio_grib": {
            "long_name": "bytes of the GRIB2 message over bytes of its float32 embedding",
            "units": "1", "embedding_bytes": emb_bytes,
            "comment": "from grib_bytes recorded by ingest" if has_grib else "store has no grib_bytes: not measured",
        },
    }
    if not all(name in ds.data_vars for name in OUTPUTS):
        _create_outputs(cfg, ds, chunk, attrs)

    gpus = gpu_workers(client) if client is not None else []
    resources = {"GPU": 1} if gpus else None
    tasks = decode(cfg.store, valid, chunk, source, meta["hash"], meta["clip_max"], cfg.decode, resources=resources)
    results = compute(client, tasks, resources=resources, optimize_graph=False, count="decoded",
                      total=int(valid.sum()), stage="decode")
    n = sum(r["decoded"] for r in results)

    whole = (slice(None), slice(None))
    store.write_region(cfg.store, {"compression_ratio_stored": stored}, whole)
    if grib is not None:
        store.write_region(cfg.store, {"compression_ratio_grib": grib}, whole)
    rmse = store.read_region(cfg.store, "reconstruction_rmse", whole)
    summary: dict[str, dict[str, Any]] = {
        "reconstruction_rmse": {"median_dBZ": _median(rmse), "p90_dBZ": _quantile(rmse, 0.9)},
        "compression_ratio_stored": {"median": _median(stored)},
        "compression_ratio_grib": {"median": _median(grib) if grib is not None else None},
    }
    for name in OUTPUTS:
        store.set_attrs(cfg.store, {**attrs[name], **summary[name]}, variable=name)
    store.consolidate(cfg.store)
    seconds = _time.perf_counter() - start
    grib_text = f", GRIB message/embedding {_median(grib):.0f}x" if grib is not None else ", no grib_bytes in store"
    return (
        f"decoded {n} embeddings in {seconds:.1f} s: RMSE median {_median(rmse):.2f} dBZ "
        f"(90th percentile {_quantile(rmse, 0.9):.2f}); compression median: stored image/embedding "
        f"{_median(stored):.0f}x{grib_text}, raw int16 image/embedding {raw_ratio:.0f}x; "
        f"{cfg.store.url}:{','.join(OUTPUTS if grib is not None else OUTPUTS[:2])}"
    )


def _median(x: np.ndarray | None) -> float:
    return _quantile(x, 0.5)


def _quantile(x: np.ndarray | None, q: float) -> float:
    if x is None:
        return float("nan")
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.quantile(x, q)) if x.size else float("nan")


def _pick_slot(ds: xr.Dataset, valid: np.ndarray, time: Any, lead: int | None) -> tuple[int, int]:
    """Index of the slot to draw: the given one, or the valid slot with the largest GRIB message."""
    from wxdask.config import parse_time

    times = ds["time"].values.astype("datetime64[h]")
    leads = [int(v) for v in ds["lead_time"].values]
    if lead is not None and lead not in leads:
        raise ConfigError(f"lead {lead} is not in the store; it holds leads {leads}")
    li = None if lead is None else leads.index(lead)
    if time is None:
        mask = valid.copy()
        if li is not None:
            mask[:, [i for i in range(len(leads)) if i != li]] = False
        if not mask.any():
            raise StoreLayoutError("the store holds no embedded image to decode; run `wxdask embed` first")
        score = ds["grib_bytes"].values if "grib_bytes" in ds.data_vars else np.zeros(valid.shape)
        flat = np.argmax(np.where(mask, score, -1))
        return np.unravel_index(flat, valid.shape)  # type: ignore[return-value]
    t = parse_time(time)
    hits = np.flatnonzero(times == t)
    if hits.size == 0:
        raise ConfigError(f"time {time!r} is not in the store; it holds {times[0]} to {times[-1]}")
    ti = int(hits[0])
    if li is None:
        li = int(np.argmax(valid[ti])) if valid[ti].any() else 0
    return ti, li


def decode_png(cfg: Config, time: Any = None, lead: int | None = None, out: str | None = None, *,
               source: ModelSource | None = None) -> str:
    """Decode one slot's embedding and write a PNG of the original and decoded image on the map.

    Runs in this process (no cluster). Without ``time``, draws the embedded slot
    with the largest GRIB message (the most weather).

    Parameters
    ----------
    cfg : Config
        Uses ``cfg.store`` and ``cfg.decode``.
    time : str, optional
        Initialisation time, ``2022-06-01T05``.
    lead : int, optional
        Lead hour (default: the first lead with an embedding at ``time``).
    out : str, optional
        PNG path (default ``decoded-YYYYMMDDHH-fLL.png``).
    source : ModelSource, optional
        The model (default: ``cfg.decode.model_dir``, else ``cfg.train.model_dir``).

    Returns
    -------
    str
        One line: the PNG path and the slot's RMSE.

    Raises
    ------
    ConfigError
        If the time or lead is not in the store.
    StoreLayoutError
        If that slot has no embedding.
    """
    from wxdask import plots, store

    ds, source, meta = _open(cfg, source)
    ok = store.ok_mask(ds)
    valid = ok & np.isfinite(ds["embedding"].values).all(axis=-1)
    ti, li = _pick_slot(ds, valid, time, lead)
    stamp = np.datetime_as_string(ds["time"].values[ti], unit="h")
    lead_h = int(ds["lead_time"].values[li])
    if not valid[ti, li]:
        why = ("its image is missing (see status)" if not ok[ti, li]
               else "it was not embedded yet; run `wxdask embed` first")
        raise StoreLayoutError(f"no embedding for {stamp} lead {lead_h}: {why}")
    z = store.read_region(cfg.store, "embedding", (ti, li))[None]
    raw = store.read_region(cfg.store, "refc", (ti, li))[None]
    decoder = get_decoder(source, meta["hash"], batch_size=1)
    decoded = decode_block(z, decoder, clip_max=meta["clip_max"], batch_size=1)
    rmse = float(rmse_block(raw, decoded, clip_max=meta["clip_max"])[0])
    original = raw[0].astype(np.float32) * np.float32(RAW_SCALE)
    out = out or f"decoded-{stamp.replace('-', '').replace('T', '')}-f{lead_h:02d}.png"
    n_latent = z.shape[1]
    plots.image_panel(
        [original, decoded[0]],
        ["original (stored)", f"decoded from its {n_latent} numbers"],
        out,
        latitude=ds["latitude"].values if "latitude" in ds.coords else None,
        longitude=ds["longitude"].values if "longitude" in ds.coords else None,
        suptitle=f"composite reflectivity {stamp}Z +{lead_h} h; RMSE {rmse:.2f} dBZ (model {meta['hash'][:8]})",
        ncols=2,
    )
    return f"wrote {out}: {stamp} lead {lead_h} h, RMSE {rmse:.2f} dBZ"
