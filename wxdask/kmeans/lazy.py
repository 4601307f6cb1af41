"""K-means, the lazy wrappers: the valid embeddings as one Dask array, and the regime of every slot.

Part of :mod:`wxdask.kmeans`, which re-exports every name. Nothing here computes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from wxdask.config import KMeansConfig
from wxdask.errors import ConfigError, StoreLayoutError
from wxdask.kmeans.core import assign_block

if TYPE_CHECKING:  # pragma: no cover
    import dask.array as da


def _select(emb: xr.DataArray, lead: int | None) -> xr.DataArray:
    if emb.dims != ("time", "lead_time", "latent"):
        raise StoreLayoutError(f"embedding must have dims (time, lead_time, latent), got {emb.dims}")
    if lead is None:
        return emb
    leads = emb["lead_time"].values.tolist()
    if lead not in leads:
        raise ConfigError(f"kmeans.lead {lead} is not in the store's leads {leads}")
    return emb.sel(lead_time=[lead])


def slot_matrix(emb: xr.DataArray, cfg: KMeansConfig) -> da.Array:
    """Lazy ``(n_slots, n_latent)`` float32 matrix of every slot (NaN rows where missing).

    Chunked by about ``cfg.block_size`` rows, whole time steps per chunk.
    """
    from wxdask.store import flatten_slots

    rows, _, _ = flatten_slots(_select(emb, cfg.lead), cfg.block_size)
    return rows.astype(np.float32)


def regimes(emb: xr.DataArray, centers: np.ndarray, cfg: KMeansConfig, *, x: da.Array | None = None) -> xr.Dataset:
    """Lazy cluster of every slot for given centroids.

    Parameters
    ----------
    emb : xarray.DataArray
        ``embedding(time, lead_time, latent)``.
    centers : numpy.ndarray
        ``(k, n_latent)`` centroids.
    cfg : KMeansConfig
        ``lead`` and ``block_size``.
    x : dask.array.Array, optional
        :func:`slot_matrix` of ``emb`` already built (and persisted) by the
        caller; building it again would submit its keys a second time in
        another graph.

    Returns
    -------
    xarray.Dataset
        ``cluster(time, lead_time)`` int32 (``-1`` where the slot is missing or
        another lead was clustered), ``cluster_sqdist(time, lead_time)``
        float32 (squared distance to its centroid), ``centroid(cluster_id,
        latent)`` float32.
    """
    import dask.array as da

    from wxdask.store import unflatten_slots

    centers = np.asarray(centers, dtype=np.float64)
    sub = _select(emb, cfg.lead)
    x = slot_matrix(emb, cfg) if x is None else x
    labels = da.map_blocks(lambda b: assign_block(b, centers)[0], x, drop_axis=1, dtype=np.int32)
    sqdist = da.map_blocks(lambda b: assign_block(b, centers)[1], x, drop_axis=1, dtype=np.float64)
    nt, nl = sub.shape[:2]
    dims = ("time", "lead_time")
    out = xr.Dataset(
        {"cluster": (dims, unflatten_slots(labels, (nt, nl))),
         "cluster_sqdist": (dims, unflatten_slots(sqdist, (nt, nl)))},
        coords={"time": sub["time"], "lead_time": sub["lead_time"]},
    )
    if cfg.lead is not None:
        out = out.reindex(lead_time=emb["lead_time"].values,
                          fill_value={"cluster": -1, "cluster_sqdist": np.nan}).chunk({"lead_time": -1})
    out["centroid"] = (("cluster_id", "latent"), centers.astype(np.float32))
    out = out.assign_coords(cluster_id=np.arange(len(centers)))
    out["cluster"].attrs = {"long_name": "k-means regime of the slot", "description": "-1 where not clustered"}
    out["cluster_sqdist"].attrs = {"long_name": "squared distance to the slot's centroid in embedding space"}
    out["centroid"].attrs = {"long_name": "k-means centroid in embedding space (numbered by decreasing size)"}
    return out
