"""The search, on the cluster and the store: GPU placement and :func:`run` (the only I/O).

Part of :mod:`wxdask.search`, which re-exports every name: :func:`gpu_resources`,
:func:`on_gpu`, :func:`run` and :func:`count_found`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import xarray as xr

from wxdask.config import Config
from wxdask.errors import StoreLayoutError
from wxdask.search.lazy import _search_attrs, nearest_neighbours

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

logger = logging.getLogger("wxdask.search")


def gpu_resources(client: Client | None) -> dict | None:
    """``{"GPU": 1}`` when the cluster has GPU workers (search tasks then run there, on the device), else None."""
    if client is None:
        return None
    from wxdask.client import gpu_workers

    return {"GPU": 1} if gpu_workers(client) else None


def on_gpu(client: Client | None, ds: xr.Dataset, resources: dict | None) -> xr.Dataset:
    """``ds`` with its Dask variables persisted on the workers holding ``resources`` (unchanged if None).

    The search graph is persisted unoptimized with the resources (low-level
    fusion would drop the placement); the store write that follows reads the
    persisted results.
    """
    if client is None or resources is None:
        return ds
    names = [n for n in ds.data_vars if hasattr(ds[n].data, "dask")]
    persisted = client.persist([ds[n].data for n in names], resources=resources, optimize_graph=False)
    out = ds.copy()
    for n, arr in zip(names, persisted):
        out[n] = (ds[n].dims, arr, ds[n].attrs)
    logger.info("search tasks placed on workers with resources %s (device path)", resources)
    return out


# ----------------------------------------------------------------------------- I/O


def run(cfg: Config, client: Client | None) -> str:
    """All-pairs search over the store's embedding; writes the neighbour variables.

    Writes ``neighbor_time``, ``neighbor_sqdist`` and ``neighbor_lead``
    ``(time, lead_time, rank)``, with the search settings and the model hash
    in their attributes, then consolidates the store.

    Returns
    -------
    str
        What was written, and where.
    """
    from wxdask import store

    ds = store.open_input(cfg.store, ["embedding"])
    resources = gpu_resources(client)
    out = nearest_neighbours(ds["embedding"], cfg.search, device=resources is not None)
    out = on_gpu(client, out, resources)
    model = ds["embedding"].attrs.get("model_hash", ds.attrs.get("model_hash", ""))
    attrs = {**out.attrs, "model_hash": model}
    for name in out.data_vars:
        out[name].attrs.update(attrs)
    nslots = int(np.prod(ds["embedding"].shape[:2]))
    logger.info("searching %d slots for %d neighbours each (block %d, chunk %d)", nslots, cfg.search.k,
                cfg.search.block_size, cfg.search.chunk_size)
    from wxdask.client import compute

    if resources is None:  # (on_gpu persisted them already)
        out = client.persist(out) if client is not None else out.persist()
    # numpy's stubs type a ufunc of a DataArray as an ndarray; it is a DataArray
    queried = cast("xr.DataArray", np.isfinite(ds["embedding"])).all(axis=-1)
    if cfg.search.lead is not None:
        queried = queried & (ds["lead_time"] == cfg.search.lead)
    (counts,) = compute(client, [count_found(out["neighbor_sqdist"].data, queried.data)], scheduler=None)
    n_queries, n_full, n_none = int(counts.sum()), int(counts[cfg.search.k]), int(counts[0])
    n_short = n_queries - n_full - n_none
    if n_queries and n_full + n_short == 0:
        raise StoreLayoutError(
            f"no slot of {cfg.store.url!r} has any neighbour: {n_queries} embedded slots, none outside each "
            f"other's exclusion window of {cfg.search.exclude_window}; use a shorter --exclude-window"
        )
    if not n_queries:
        raise StoreLayoutError(f"store {cfg.store.url!r} holds no embedded slot to search; run `wxdask embed` first")
    encoding = {"neighbor_time": {"units": "hours since 1970-01-01 00:00:00", "dtype": "int64",
                                  "calendar": "proleptic_gregorian"}}
    # computed by the client that holds the persisted results, not just any default client
    with client.as_current() if client is not None else contextlib.nullcontext():
        store.write_variables(cfg.store, out, encoding=encoding, attrs=_search_attrs(cfg.search))
    short = (f"; {n_short} slots have fewer than {cfg.search.k} neighbours outside the window"
             if n_short else "")
    none = f"; {n_none} embedded slots have none" if n_none else ""
    if n_short or n_none:
        logger.warning("search: %d of %d embedded slots have fewer than %d neighbours (%d have none)",
                       n_short + n_none, n_queries, cfg.search.k, n_none)
    return (f"{cfg.search.k} nearest neighbours of {n_full} of {n_queries} embedded slots "
            f"(not within {cfg.search.exclude_window}){short}{none} "
            f"-> {cfg.store.url}: neighbor_time, neighbor_sqdist, neighbor_lead")


def count_found(sqdist: Any, queried: Any) -> Any:
    """Lazy histogram of the neighbours found: ``counts[j]`` queried slots have exactly j of k.

    Parameters
    ----------
    sqdist : dask.array.Array
        ``(time, lead_time, k)`` neighbour distances (NaN where missing).
    queried : dask.array.Array
        ``(time, lead_time)`` bool, the slot was a query (embedded, and of the searched lead).
    """
    import dask.array as da

    found = da.isfinite(sqdist).sum(axis=-1)
    return da.stack([((found == j) & queried).sum() for j in range(sqdist.shape[-1] + 1)])
