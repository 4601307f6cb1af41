"""K-means, the stage: :func:`run` (reads the store, fits, writes regimes and a centroid PNG) and readers for people.

Part of :mod:`wxdask.kmeans`, which re-exports every name. The only module of
the stage that does I/O.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from wxdask.config import Config
from wxdask.errors import ConfigError, StoreLayoutError
from wxdask.kmeans.core import count_by_month, size_order
from wxdask.kmeans.fitting import fit
from wxdask.kmeans.lazy import regimes, slot_matrix
from wxdask.model import Predictor, decode_dbz

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

logger = logging.getLogger("wxdask.kmeans")


def run(cfg: Config, client: Client | None, *, decoder: Predictor | None = None) -> str:
    """Cluster every embedded slot; write labels, centroids, sizes, monthly counts and a centroid PNG.

    Writes ``cluster(time, lead_time)``, ``cluster_sqdist(time, lead_time)``,
    ``centroid(cluster_id, latent)``, ``cluster_size(cluster_id)``,
    ``cluster_count(month, cluster_id)`` and attributes ``kmeans_inertia``
    (sum of squared distances), ``kmeans_n_iter``, ``kmeans_converged``,
    ``kmeans_engine``; decodes each centroid with the model's decoder (or
    ``decoder``) into one PNG panel of k maps.

    Returns
    -------
    str
        What was written, and where.
    """
    import dask.array as da

    from wxdask import store
    from wxdask.client import compute

    kcfg = cfg.kmeans
    ds = store.open_input(cfg.store, ["embedding"])
    emb = ds["embedding"]
    # built and persisted once: every later graph (fit, labels) starts from these keys, so none of the
    # matrix's own keys is submitted again in a differently optimized graph (distributed's run_spec warning)
    x_all = slot_matrix(emb, kcfg)
    x_all = client.persist(x_all) if client is not None else x_all.persist()
    (valid,) = compute(client, [da.isfinite(x_all).all(axis=1)], scheduler=None)
    rows = np.flatnonzero(valid)
    if rows.size < kcfg.k:
        raise StoreLayoutError(f"store {cfg.store.url!r} has {rows.size} embedded slots; kmeans.k={kcfg.k} needs more")
    x = x_all[rows].rechunk({0: kcfg.block_size})
    x = client.persist(x) if client is not None else x.persist()
    result = fit(x, kcfg, client, engine=kcfg.engine)
    del x
    out = regimes(emb, result.centers, kcfg, x=x_all)
    (labels, sqdist) = compute(client, [out["cluster"].data, out["cluster_sqdist"].data], scheduler=None)
    # number the clusters by decreasing size
    order = size_order(labels, kcfg.k)
    rank = np.empty(kcfg.k, dtype=np.int32)
    rank[order] = np.arange(kcfg.k, dtype=np.int32)
    labels = np.where(labels >= 0, rank[np.clip(labels, 0, None)], -1).astype(np.int32)
    centers = result.centers[order]
    inertia = float(np.nansum(sqdist))
    months = emb["time"].values.astype("datetime64[M]").astype(np.int64) % 12 + 1
    counts = count_by_month(np.broadcast_to(months[:, None], labels.shape), labels, kcfg.k)
    sizes = counts.sum(axis=0)
    out = out.copy()
    out["cluster"] = (("time", "lead_time"), labels, out["cluster"].attrs)
    out["cluster_sqdist"] = (("time", "lead_time"), sqdist.astype(np.float32), out["cluster_sqdist"].attrs)
    out["centroid"] = (("cluster_id", "latent"), centers.astype(np.float32), out["centroid"].attrs)
    out["cluster_size"] = ("cluster_id", sizes.astype(np.int64), {"long_name": "slots in each cluster"})
    out["cluster_count"] = (("month", "cluster_id"), counts,
                            {"long_name": "slots of each cluster by calendar month of initialisation"})
    out = out.assign_coords(month=np.arange(1, 13))
    model = emb.attrs.get("model_hash", ds.attrs.get("model_hash", ""))
    attrs = {
        "kmeans_k": kcfg.k,
        "kmeans_lead": -1 if kcfg.lead is None else kcfg.lead,
        "kmeans_engine": result.engine,
        "kmeans_init": "k-means||",
        "kmeans_inertia": inertia,
        "kmeans_n_iter": result.n_iter,
        "kmeans_converged": bool(result.converged),
        "kmeans_n_candidates": int(result.n_candidates),
        "model_hash": model,
    }
    for name in ("cluster", "centroid", "cluster_size", "cluster_count", "cluster_sqdist"):
        out[name].attrs.update(attrs)
    attrs.pop("model_hash")  # on the variables; the store's root holds several stages' attributes
    png = _plot_path(cfg)
    try:
        plot_centroids(cfg, ds, centers, sizes, png, decoder=decoder)
        attrs["kmeans_centroid_plot"] = png
    except Exception as exc:  # noqa: BLE001 - no model: the clusters stand without the picture
        logger.warning("centroid maps not drawn (%s: %s)", type(exc).__name__, exc)
    store.write_variables(cfg.store, out, attrs=attrs)
    logger.info("k-means: %d clusters, sizes %s, inertia %.6g, %d iterations (%s)", kcfg.k, sizes.tolist(),
                inertia, result.n_iter, result.engine)
    return (f"{kcfg.k} clusters of sizes {sizes.tolist()}, inertia {inertia:.6g} ({result.engine}, "
            f"{result.n_iter} iterations) -> {cfg.store.url}: cluster, centroid, cluster_size, cluster_count")


def _plot_path(cfg: Config) -> str:
    if cfg.kmeans.plot:
        return cfg.kmeans.plot
    url = cfg.store.url.rstrip("/")
    if "://" in url:
        return Path(url.rsplit("/", 1)[-1]).stem + "-centroids.png"
    p = Path(url)
    return str(p.with_name(p.stem + "-centroids.png"))


def plot_centroids(cfg: Config, ds: xr.Dataset, centers: np.ndarray, sizes: np.ndarray, path: str, *,
                   decoder: Predictor | None = None) -> str:
    """Decode each centroid and write one PNG panel of the k maps, titled with their sizes."""
    from wxdask import plots
    from wxdask.models import decoder_for

    clip_max = cfg.model.clip_max
    if decoder is None:
        decoder, info = decoder_for(cfg.kmeans.model_dir, ds["embedding"].attrs, cfg.store.url)
        clip_max = info["clip_max"]
    images = decode_dbz(np.asarray(centers, dtype=np.float32), decoder, clip_max=clip_max)
    total = max(int(np.sum(sizes)), 1)
    titles = [f"regime {i}: {int(n)} slots ({100 * n / total:.0f}%)" for i, n in enumerate(sizes)]
    lat = ds["latitude"].values if "latitude" in ds.variables else None
    lon = ds["longitude"].values if "longitude" in ds.variables else None
    return plots.image_panel(list(images), titles, path, latitude=lat, longitude=lon,
                             suptitle=f"k-means centroids (k={len(centers)}), decoded")


def cluster_sizes(cfg: Config) -> dict[int, int]:
    """Slots in each cluster, from the store (after :func:`run`)."""
    from wxdask import store

    ds = store.open_input(cfg.store, ["cluster_size"])
    return {int(i): int(n) for i, n in zip(ds["cluster_id"].values, ds["cluster_size"].values)}


def format_sizes(cfg: Config) -> str:
    """Cluster sizes as one line per cluster (for ``wxdask demo`` and the CLI)."""
    sizes = cluster_sizes(cfg)
    total = max(sum(sizes.values()), 1)
    lines = ["cluster  slots  share"]
    lines += [f"{i:7d}  {n:5d}  {100 * n / total:4.1f}%" for i, n in sizes.items()]
    return "\n".join(lines)


def adjusted_rand(cfg: Config, true_regime: np.ndarray | xr.DataArray) -> float:
    """Adjusted Rand index of the store's clusters against known regimes.

    Parameters
    ----------
    true_regime : numpy.ndarray or xarray.DataArray
        ``(time, lead_time)`` regime of each slot (a DataArray is aligned on
        ``time``/``lead_time``; negative or NaN: unknown). Slots without a
        cluster or a regime are left out.
    """
    from sklearn.metrics import adjusted_rand_score

    from wxdask import store

    ds = store.open_input(cfg.store, ["cluster"])
    labels = ds["cluster"]
    if isinstance(true_regime, xr.DataArray):
        true_regime, labels = xr.align(true_regime, labels, join="inner")
        truth = np.asarray(true_regime.transpose(*labels.dims).values, dtype=np.float64)
    else:
        truth = np.asarray(true_regime, dtype=np.float64)
    lab = np.asarray(labels.values)
    if truth.shape != lab.shape:
        raise ConfigError(f"true regimes have shape {truth.shape}, the store's clusters {lab.shape}")
    keep = (lab >= 0) & np.isfinite(truth) & (truth >= 0)
    return float(adjusted_rand_score(truth[keep].astype(np.int64), lab[keep]))
