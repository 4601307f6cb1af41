"""The search, lazy wrappers (never compute): :func:`knn` on Dask arrays and :func:`nearest_neighbours`.

Part of :mod:`wxdask.search`, which re-exports every name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from wxdask.config import SearchConfig
from wxdask.errors import ConfigError, StoreLayoutError
from wxdask.search.core import _knn_task
from wxdask.search.prepared import _NAT, NEIGHBOR_DTYPE, _hours, prepare_base, window_hours

if TYPE_CHECKING:  # pragma: no cover
    import dask.array as da


# ----------------------------------------------------------------------------- lazy (dask)


def knn(
    queries: da.Array,
    base: da.Array,
    k: int,
    *,
    base_time: np.ndarray | None = None,
    base_lead: np.ndarray | None = None,
    query_index: da.Array | None = None,
    query_time: np.ndarray | None = None,
    exclude_window: Any = 0,
    block_size: int = 4096,
    chunk_size: int = 4096,
    device: bool = False,
) -> da.Array:
    """Lazy exact k-NN of ``queries`` in ``base``: one task per block of queries.

    The database is rechunked to a single chunk and prepared by one task
    (:func:`prepare_base`), whose single key every search task depends on: it
    travels to each worker once and is never embedded in a task.

    Parameters
    ----------
    queries : dask.array.Array
        ``(m, d)`` query embeddings.
    base : dask.array.Array
        ``(n, d)`` database embeddings.
    k : int
        Neighbours per query.
    base_time, base_lead : numpy.ndarray, optional
        ``(n,)`` time and lead of every database row.
    query_index : dask.array.Array, optional
        ``(m,)`` int database row of each query (``-1`` if not in the database);
        chunked like ``queries`` along its first axis.
    query_time : numpy.ndarray, optional
        ``(m,)`` query times, for queries not in the database (small ``m`` only:
        it is embedded in the graph).
    exclude_window : int, str or numpy.timedelta64
        See :func:`knn_block`.
    block_size : int
        Queries per task (``queries`` is rechunked to it).
    chunk_size : int
        Database rows per GEMM within a task.
    device : bool
        Search tasks use the accelerator path
        (:func:`wxdask.knn_device.knn_prepared_device`, same results); compute
        them on GPU workers with ``resources={"GPU": 1}`` and ``optimize_graph=False``.

    Returns
    -------
    dask.array.Array
        ``(m, k)`` records of :data:`NEIGHBOR_DTYPE` (fields ``index``,
        ``sqdist``, ``time``, ``lead``), chunked ``block_size`` along queries.
    """
    import dask
    import dask.array as da

    m, d = queries.shape
    queries = queries.rechunk({0: block_size, 1: -1})
    if query_index is None:
        query_index = da.full((m,), -1, dtype=np.int64, chunks=(queries.chunks[0],))
    else:
        query_index = query_index.rechunk((queries.chunks[0],))
    one = base.rechunk({0: -1, 1: -1})
    (base_key,) = one.to_delayed().ravel()
    prep = dask.delayed(prepare_base, pure=True)(base_key, base_time, base_lead,
                                                 dask_key_name=f"prepare-base-{one.name}")
    kwargs: dict[str, Any] = {"k": int(k), "window": window_hours(exclude_window), "chunk_size": int(chunk_size)}
    if query_time is not None:
        kwargs["q_time"] = _hours(query_time)
    if device:
        kwargs["device"] = True
    from dask.base import tokenize

    return da.blockwise(
        _knn_task, "ir",
        queries, "ij",
        query_index, "i",
        prep, None,
        new_axes={"r": int(k)},
        concatenate=True,
        dtype=NEIGHBOR_DTYPE,
        meta=np.empty((0, 0), dtype=NEIGHBOR_DTYPE),
        name="knn-" + tokenize(queries, query_index, prep, kwargs),
        **kwargs,
    )


def nearest_neighbours(emb: xr.DataArray, cfg: SearchConfig, *, device: bool = False) -> xr.Dataset:
    """Lazy k nearest other slots of every slot of the embedding.

    Parameters
    ----------
    emb : xarray.DataArray
        ``embedding(time, lead_time, latent)``, Dask-backed (NaN where missing).
    cfg : SearchConfig
        ``k``, ``exclude_window``, ``lead`` (``None``: all slots searched
        together), ``block_size``, ``chunk_size``.

    Returns
    -------
    xarray.Dataset
        ``neighbor_time`` (datetime64, NaT where fewer than k),
        ``neighbor_sqdist`` (float32, NaN likewise) and ``neighbor_lead``
        (int32, -1 likewise), each ``(time, lead_time, rank)`` with ``rank``
        1..k and the same ``time``/``lead_time`` as ``emb``; with ``cfg.lead``
        set, only that lead is searched and the other leads are empty.
    device : bool
        Search tasks use the accelerator path (see :func:`knn`).
    """
    import dask.array as da

    from wxdask.store import flatten_slots, unflatten_slots

    check_embedding(emb)
    full_leads = emb["lead_time"].values
    sub = emb
    if cfg.lead is not None:
        if cfg.lead not in set(full_leads.tolist()):
            raise ConfigError(f"search.lead {cfg.lead} is not in the store's leads {full_leads.tolist()}")
        sub = emb.sel(lead_time=[cfg.lead])
    nt, nl, _ = sub.shape
    tb = max(1, cfg.block_size // nl)
    flat, times, leads = flatten_slots(sub, cfg.block_size)
    qidx = da.arange(nt * nl, chunks=(flat.chunks[0],), dtype=np.int64)
    rec = knn(flat, flat, cfg.k, base_time=times, base_lead=leads, query_index=qidx,
              exclude_window=cfg.exclude_window, block_size=tb * nl, chunk_size=cfg.chunk_size, device=device)
    rec = unflatten_slots(rec, (nt, nl))
    coords = {"time": sub["time"], "lead_time": sub["lead_time"], "rank": np.arange(1, cfg.k + 1)}
    dims = ("time", "lead_time", "rank")
    out = xr.Dataset(
        {
            "neighbor_time": (dims, rec["time"]),
            "neighbor_sqdist": (dims, rec["sqdist"]),
            "neighbor_lead": (dims, rec["lead"].astype(np.int32)),
        },
        coords=coords,
    )
    if cfg.lead is not None:
        out = out.reindex(lead_time=full_leads, fill_value={
            "neighbor_time": _NAT, "neighbor_sqdist": np.nan, "neighbor_lead": -1})
        out = out.chunk({"lead_time": -1})
    out["neighbor_time"].attrs = {"long_name": "initialisation time of the k-th nearest other slot",
                                  "description": "NaT where fewer than k slots qualify"}
    out["neighbor_sqdist"].attrs = {"long_name": "squared Euclidean distance in embedding space",
                                    "units": "1"}
    out["neighbor_lead"].attrs = {"long_name": "lead time of the k-th nearest other slot", "units": "hours",
                                  "description": "-1 where fewer than k slots qualify"}
    out.attrs = _search_attrs(cfg)
    return out


def _search_attrs(cfg: SearchConfig) -> dict:
    return {"search_k": cfg.k, "search_exclude_window": str(cfg.exclude_window),
            "search_lead": -1 if cfg.lead is None else cfg.lead, "search_metric": "squared euclidean"}


def check_embedding(emb: xr.DataArray) -> None:
    """Check the embedding has the store contract's dims.

    Raises
    ------
    StoreLayoutError
        If its dims are not ``(time, lead_time, latent)``.
    """
    if emb.dims != ("time", "lead_time", "latent"):
        raise StoreLayoutError(f"embedding must have dims (time, lead_time, latent), got {emb.dims}")
