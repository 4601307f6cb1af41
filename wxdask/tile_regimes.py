"""K-means regimes of tiles: the whole-image k-means (:func:`wxdask.kmeans.fit`) on tile embeddings.

Every searched tile (finite ``tile_embedding``) is one row of the matrix; the
fit is :mod:`wxdask.kmeans`'s (k-means|| then Lloyd on Dask arrays), the
labels :func:`wxdask.kmeans.assign_block`'s (nearest centroid, ties to the
lower number), clusters numbered by decreasing size.

I/O: :func:`run` writes ``tile_cluster(time, lead_time, tile_y, tile_x)``
(int32, -1 not clustered), ``tile_centroid(tile_cluster_id, latent)``,
``tile_cluster_size(tile_cluster_id)``, and a PNG of the decoded centroids when
the tile model loads; :func:`plot_regime_map` draws one slot's image with each
tile outlined in its regime's colour.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from wxdask.config import Config, parse_time
from wxdask.errors import ConfigError, StoreLayoutError
from wxdask.kmeans import assign_block, fit, size_order
from wxdask.tile_query import tile_bounds, tile_outline
from wxdask.tile_search import TILE_DIMS, check_tile_embedding, store_tiling, tile_rows

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

    from wxdask.model import Predictor

__all__ = ["REGIME_COLORS", "map_path", "plot_regime_map", "plot_tile_centroids", "run"]

logger = logging.getLogger(__name__)

#: Outline colours of regimes 0, 1, ... (matplotlib's tab10, then repeating).
REGIME_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf")


def _labels_block(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return assign_block(x, centers)[0]


def _sqdist_block(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    return assign_block(x, centers)[1]


def run(cfg: Config, client: Client | None, *, decoder: Predictor | None = None, plot: str | None = None) -> str:
    """Cluster every searched tile into ``cfg.tiles.n_clusters`` regimes; write labels, centroids, sizes.

    Uses ``cfg.tiles.n_clusters`` and the rest of ``cfg.kmeans`` (``max_iter``,
    ``tol``, ``seed``, ``oversampling_factor``, ``block_size``, ``model_dir``).
    The decoded centroids go to ``plot`` (default ``<store>-tile-centroids.png``).

    Returns
    -------
    str
        What was written, and where.
    """
    import dask.array as da

    from wxdask import store
    from wxdask.client import compute

    k = cfg.tiles.n_clusters
    kcfg = dataclasses.replace(cfg.kmeans, k=k, lead=None)
    ds = store.open_input(cfg.store, ["tile_embedding"])
    emb = ds["tile_embedding"]
    check_tile_embedding(emb)
    x_all, _, _ = tile_rows(emb, kcfg.block_size)
    x_all = x_all.astype(np.float32)
    x_all = client.persist(x_all) if client is not None else x_all.persist()
    (valid,) = compute(client, [da.isfinite(x_all).all(axis=1)], scheduler=None)
    rows = np.flatnonzero(valid)
    if rows.size < k:
        raise StoreLayoutError(f"store {cfg.store.url!r} has {rows.size} searched tiles; tiles.n_clusters={k} "
                               "needs at least as many")
    x = x_all[rows].rechunk({0: kcfg.block_size})
    x = client.persist(x) if client is not None else x.persist()
    result = fit(x, kcfg, client, engine="lloyd")
    del x
    centers = np.asarray(result.centers, dtype=np.float64)
    labels_l = da.map_blocks(_labels_block, x_all, centers, drop_axis=1, dtype=np.int32)
    sq_l = da.map_blocks(_sqdist_block, x_all, centers, drop_axis=1, dtype=np.float64)
    labels, sqdist = compute(client, [labels_l, sq_l], scheduler=None)
    order = size_order(labels, k)
    rank = np.empty(k, dtype=np.int32)
    rank[order] = np.arange(k, dtype=np.int32)
    labels = np.where(labels >= 0, rank[np.clip(labels, 0, None)], -1).astype(np.int32)
    centers = centers[order]
    sizes = np.bincount(labels[labels >= 0], minlength=k).astype(np.int64)
    inertia = float(np.nansum(sqdist))
    shape = emb.shape[:4]
    attrs = {"tile_kmeans_k": k, "tile_kmeans_inertia": inertia, "tile_kmeans_n_iter": int(result.n_iter),
             "tile_kmeans_converged": bool(result.converged), "tile_kmeans_engine": result.engine,
             "model_hash": emb.attrs.get("model_hash", "")}
    out = xr.Dataset(
        {"tile_cluster": (TILE_DIMS, labels.reshape(shape), {
            "long_name": "k-means regime of the tile", "description": "-1 where not clustered"}),
         "tile_centroid": (("tile_cluster_id", "latent"), centers.astype(np.float32), {
             "long_name": "k-means centroid in tile embedding space (numbered by decreasing size)"}),
         "tile_cluster_size": (("tile_cluster_id",), sizes, {"long_name": "tiles in each regime"})},
        coords={"time": emb["time"].values, "lead_time": emb["lead_time"].values,
                "tile_y": np.arange(shape[2], dtype=np.int32), "tile_x": np.arange(shape[3], dtype=np.int32),
                "tile_cluster_id": np.arange(k, dtype=np.int32)},
    )
    for name in out.data_vars:
        out[name].attrs.update(attrs)
    root = {key: value for key, value in attrs.items() if key != "model_hash"}
    store.write_variables(cfg.store, out, attrs=root)
    png = plot or _plot_path(cfg)
    try:
        plot_tile_centroids(cfg, emb, centers, sizes, png, decoder=decoder)
        store.set_attrs(cfg.store, {"tile_kmeans_centroid_plot": png})
        drawn = f"; centroids drawn in {png}"
    except Exception as exc:  # noqa: BLE001 - no tile model: the regimes stand without the picture
        logger.warning("tile centroid maps not drawn (%s: %s)", type(exc).__name__, exc)
        drawn = ""
    store.consolidate(cfg.store)
    return (f"{k} tile regimes of sizes {sizes.tolist()} over {rows.size} searched tiles, inertia {inertia:.6g} "
            f"({result.n_iter} iterations) -> {cfg.store.url}: tile_cluster, tile_centroid, tile_cluster_size"
            + drawn)


def _plot_path(cfg: Config) -> str:
    url = cfg.store.url.rstrip("/")
    if "://" in url:
        return Path(url.rsplit("/", 1)[-1]).stem + "-tile-centroids.png"
    p = Path(url)
    return str(p.with_name(p.stem + "-tile-centroids.png"))


def map_path(cfg: Config, time: str) -> str:
    """Default PNG of :func:`plot_regime_map`: ``<store>-tile-regimes-<time>.png`` beside a local store."""
    tag = str(time).replace(":", "")
    url = cfg.store.url.rstrip("/")
    if "://" in url:
        return Path(url.rsplit("/", 1)[-1]).stem + f"-tile-regimes-{tag}.png"
    p = Path(url)
    return str(p.with_name(p.stem + f"-tile-regimes-{tag}.png"))


def plot_tile_centroids(cfg: Config, emb: xr.DataArray, centers: np.ndarray, sizes: np.ndarray, path: str, *,
                        decoder: Predictor | None = None) -> str:
    """Decode each tile centroid with the tile model and write one PNG panel, titled with the sizes.

    Raises
    ------
    ModelError
        If the tile model is missing or not the one that made ``tile_embedding``.
    """
    from wxdask import plots
    from wxdask.model import decode_dbz
    from wxdask.models import decoder_for

    clip_max = cfg.model.clip_max
    if decoder is None:
        decoder, info = decoder_for(cfg.kmeans.model_dir, emb.attrs, cfg.store.url)
        clip_max = info["clip_max"]
    images = decode_dbz(np.asarray(centers, dtype=np.float32), decoder, clip_max=clip_max)
    total = max(int(np.sum(sizes)), 1)
    titles = [f"tile regime {i}: {int(n)} tiles ({100 * n / total:.0f}%)" for i, n in enumerate(sizes)]
    return plots.image_panel(list(images), titles, path, suptitle=f"tile k-means centroids (k={len(centers)}), decoded")


def plot_regime_map(cfg: Config, time: str | np.datetime64, path: Any, *, lead: int | None = None) -> Any:
    """A PNG map of one slot's image with each tile outlined in its regime's colour.

    Raises
    ------
    ConfigError
        If the slot is not in the store.
    StoreLayoutError
        If the store holds no ``tile_cluster`` (run ``wxdask cluster --tiles`` first).
    """
    from wxdask import plots, store

    ds = store.open_store(cfg.store)
    if "tile_cluster" not in ds:
        raise StoreLayoutError(f"store {cfg.store.url!r} holds no tile_cluster; run `wxdask cluster --tiles` first")
    grid, tiling = store_tiling(ds["tile_embedding"])
    t = parse_time(time, "--plot-map")
    q_l = int(lead) if lead is not None else int(ds["lead_time"].values[0])
    tpos = np.flatnonzero(ds["time"].values.astype("datetime64[h]") == t)
    if tpos.size == 0 or q_l not in ds["lead_time"].values.tolist():
        raise ConfigError(f"slot {t} lead {q_l} is not in store {cfg.store.url!r}")
    labels = ds["tile_cluster"].isel(time=int(tpos[0])).sel(lead_time=q_l).values
    img = None
    if "refc" in ds:
        img = np.asarray(ds["refc"].isel(time=int(tpos[0])).sel(lead_time=q_l).values, dtype=np.float32)
    lat = ds["latitude"].values if "latitude" in ds.variables else None
    lon = ds["longitude"].values if "longitude" in ds.variables else None
    on_latlon = lat is not None and lat.shape == grid.shape
    lines: list[tuple[Any, Any, str]] = []
    for (ty, tx), lab in np.ndenumerate(labels):
        if lab >= 0:
            lines.append((*tile_outline(grid, tiling, ty, tx, on_latlon=on_latlon, bounds=tile_bounds(ds, ty, tx),
                                       inset=0.05),
                          REGIME_COLORS[int(lab) % len(REGIME_COLORS)]))
    counts = {int(c): int((labels == c).sum()) for c in np.unique(labels[labels >= 0])}
    legend = ", ".join(f"{c}: {n}" for c, n in counts.items()) or "no tile clustered"
    title = f"{np.datetime_as_string(t, unit='h')} lead {q_l}: tile regimes ({legend})"
    return plots.image_panel([img], [title], path, latitude=lat if on_latlon else None,
                             longitude=lon if on_latlon else None, outlines=[lines],
                             suptitle="tiles outlined in the colour of their k-means regime")
