"""One tile's analogs: :func:`query_tile` (a tile by time and point, or an image's tile encoded with the
tile model), :func:`format_tile_table`, and the pictures (:func:`tile_outline`, :func:`tile_bounds`,
:func:`plot_tile_query`). The search engine and the all-tiles stage are :mod:`wxdask.tile_search`'s.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from wxdask.config import Config, parse_time
from wxdask.errors import ConfigError
from wxdask.search import knn, window_hours
from wxdask.tile_search import (
    TILE_NEIGHBOR_DTYPE,
    check_tile_embedding,
    search_mode,
    store_tiling,
    tile_index,
    tile_rows,
)

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

    from wxdask.grid import Grid
    from wxdask.model import Predictor
    from wxdask.tiles import Tiling

__all__ = ["TileResult", "format_tile_table", "plot_tile_query", "query_tile", "tile_bounds", "tile_outline"]

logger = logging.getLogger(__name__)


@dataclass
class TileResult:
    """Neighbours of one tile.

    Attributes
    ----------
    label : str
        What was searched.
    time, lead : optional
        The query slot (``None`` for an image).
    tile : tuple of int
        ``(tile_y, tile_x)`` of the query.
    neighbors : numpy.ndarray
        ``(k,)`` records of :data:`TILE_NEIGHBOR_DTYPE`, nearest first.
    embedding : numpy.ndarray
        The query tile's embedding.
    image : numpy.ndarray or None
        The query's whole image in dBZ, when the query was an image.
    mode : str
        ``same-place`` or ``anywhere``.
    """

    label: str
    time: np.datetime64 | None
    lead: int | None
    tile: tuple[int, int]
    neighbors: np.ndarray
    embedding: np.ndarray
    image: np.ndarray | None = None
    mode: str = "same-place"


def query_tile(
    cfg: Config,
    client: Client | None,
    *,
    lat: float,
    lon: float,
    time: str | np.datetime64 | None = None,
    lead: int | None = None,
    image: np.ndarray | str | None = None,
    encoder: Predictor | None = None,
) -> TileResult:
    """The k nearest tiles of the tile holding ``(lat, lon)``, at a store slot or in an image.

    Parameters
    ----------
    cfg : Config
        ``cfg.tiles`` (``k``, ``exclude_window``, ``anywhere``), ``cfg.search``
        (``chunk_size``, ``model_dir``: the tile model for an image, default
        the one recorded with ``tile_embedding``).
    lat, lon : float
        A point of the query tile (:func:`wxdask.tiles.tile_of_point`).
    time : str or numpy.datetime64, optional
        The query slot's initialisation time; its lead is ``lead`` (default the first).
    image : numpy.ndarray or str, optional
        Instead of ``time``: an image in dBZ, a ``.npy`` or a GRIB2 file with
        REFC; its tile is encoded with the tile model (no exclusion window).
    encoder : Predictor, optional
        Raw-int16 tile encoder to use instead of the model's (tests).

    Raises
    ------
    ConfigError
        Off-grid or margin point, a slot not in the store, a tile without an
        embedding, or neither/both of ``time`` and ``image``.
    ModelError
        For an image, if the tile model is missing or not the one that made the tile embedding.
    """
    import dask.array as da

    from wxdask import store
    from wxdask.client import compute
    from wxdask.query import _encode, _read_image
    from wxdask.tiles import tile_coords, tile_of_point, tiles_block

    if (time is None) == (image is None):
        raise ConfigError("give either a query time (--time 2019-09-20T05) or a query image (--image FILE), not both")
    tcfg = cfg.tiles
    ds = store.open_input(cfg.store, ["tile_embedding"])
    emb = ds["tile_embedding"]
    check_tile_embedding(emb)
    grid, tiling = store_tiling(emb)
    ty, tx = tile_of_point(grid, tiling, lat, lon)
    nt, nl, ny, nx, d = emb.shape
    if tcfg.anywhere:
        base, times, leads = tile_rows(emb, cfg.search.block_size)
    else:
        base = emb.data[:, :, ty, tx, :].rechunk({1: -1, 2: -1}).reshape(nt * nl, d)
        times = np.repeat(emb["time"].values, nl)
        leads = np.tile(emb["lead_time"].values.astype(np.int64), nt)
    img = None
    if image is not None:
        img, name = _read_image(image)
        if img.shape != grid.shape:
            raise ConfigError(f"query image {name!r} is {img.shape[0]}x{img.shape[1]}, not the "
                              f"{grid.name} grid's {grid.shape[0]}x{grid.shape[1]}")
        if encoder is None:
            from wxdask.models import encoder_for

            encoder, _ = encoder_for(cfg.search.model_dir, emb.attrs, cfg.store.url, batch_size=1)
        qvec = _encode(np.ascontiguousarray(tiles_block(img, tiling)[ty, tx]), encoder)
        q_index, q_time, window, q_t, q_l = np.array([-1]), None, 0, None, None
        label = f"{name} tile ({ty}, {tx})"
    else:
        q_t = parse_time(time, "--time")
        q_l = int(lead) if lead is not None else int(emb["lead_time"].values[0])
        tpos = np.flatnonzero(emb["time"].values.astype("datetime64[h]") == q_t)
        lpos = np.flatnonzero(emb["lead_time"].values == q_l)
        if tpos.size == 0 or lpos.size == 0:
            t_all = emb["time"].values.astype("datetime64[h]")
            raise ConfigError(f"query slot {q_t} lead {q_l} is not in store {cfg.store.url!r} "
                              f"(times {t_all[0]} .. {t_all[-1]}, leads {emb['lead_time'].values.tolist()})")
        it, il = int(tpos[0]), int(lpos[0])
        qvec = np.asarray(emb[it, il, ty, tx].values, dtype=np.float32)
        if not np.isfinite(qvec).all():
            raise ConfigError(f"tile ({ty}, {tx}) at {q_t} lead {q_l} has no embedding "
                              f"(clear sky below the echo threshold, or no image)")
        row = it * nl + il
        q_index = np.array([(row * ny + ty) * nx + tx if tcfg.anywhere else row])
        q_time, window = np.array([q_t]), window_hours(tcfg.exclude_window)
        label = f"{np.datetime_as_string(q_t, unit='h')} lead {q_l} tile ({ty}, {tx})"
    rec = knn(da.from_array(qvec[None, :]), base, tcfg.k, base_time=times, base_lead=leads,
              query_index=da.from_array(q_index), query_time=q_time, exclude_window=window, block_size=1,
              chunk_size=cfg.search.chunk_size)
    (found,) = compute(client, [rec], scheduler=None)
    found = found[0]
    out = np.zeros(found.shape, dtype=TILE_NEIGHBOR_DTYPE)
    for name in ("index", "sqdist", "time", "lead"):
        out[name] = found[name]
    have = found["index"] >= 0
    if tcfg.anywhere:
        out["tile_y"] = tile_index(found["index"], ny, nx, "y")
        out["tile_x"] = tile_index(found["index"], ny, nx, "x")
    else:
        out["tile_y"] = np.where(have, ty, -1)
        out["tile_x"] = np.where(have, tx, -1)
    coords = tile_coords(grid, tiling)
    lat_c, lon_c = coords["tile_latitude"][1], coords["tile_longitude"][1]
    sy, sx = np.clip(out["tile_y"], 0, None), np.clip(out["tile_x"], 0, None)
    out["latitude"] = np.where(have, lat_c[sy, sx], np.nan)
    out["longitude"] = np.where(have, lon_c[sy, sx], np.nan)
    return TileResult(label=label, time=q_t, lead=q_l, tile=(ty, tx), neighbors=out, embedding=qvec, image=img,
                      mode=search_mode(tcfg.anywhere))


def format_tile_table(result: TileResult) -> str:
    """The tile neighbours as a table: rank, time, lead, tile (y, x), tile centre lat/lon, squared distance.

    Examples
    --------
    >>> rec = np.zeros(2, dtype=TILE_NEIGHBOR_DTYPE)
    >>> rec["time"] = np.array(["2019-09-21T07", "NaT"], dtype="M8[ns]"); rec["index"] = [3, -1]
    >>> rec["sqdist"] = [0.25, np.nan]; rec["tile_y"] = [2, -1]; rec["tile_x"] = [5, -1]
    >>> rec["latitude"] = [35.21, np.nan]; rec["longitude"] = [-97.4, np.nan]
    >>> print(format_tile_table(TileResult("2019-09-20T05 lead 0 tile (2, 5)", None, 0, (2, 5), rec, np.zeros(1))))
    tile analogs of 2019-09-20T05 lead 0 tile (2, 5) (same-place)
    rank  time              lead  tile (y, x)   lat      lon        sqdist
       1  2019-09-21T07:00     0  ( 2,  5)    35.21   -97.40  0.250000
    """
    lines = [f"tile analogs of {result.label} ({result.mode})",
             "rank  time              lead  tile (y, x)   lat      lon        sqdist"]
    for rank, row in enumerate(result.neighbors, start=1):
        if row["index"] < 0:
            continue
        t = np.datetime_as_string(row["time"].astype("M8[m]"), unit="m")
        lines.append(f"{rank:4d}  {t}  {int(row['lead']):4d}  ({int(row['tile_y']):2d}, {int(row['tile_x']):2d})  "
                     f"{float(row['latitude']):7.2f}  {float(row['longitude']):7.2f}  {float(row['sqdist']):.6f}")
    if len(lines) == 2:
        lines.append("   (no other tile qualifies)")
    return "\n".join(lines)


def tile_outline(grid: Grid, tiling: Tiling, ty: int, tx: int, *, on_latlon: bool, n: int = 24,
                 bounds: tuple[float, float, float, float] | None = None,
                 inset: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The edge of tile ``(ty, tx)``: longitudes and latitudes, or grid columns and rows.

    Pure numpy. ``bounds`` are the tile's ``(x_min, x_max, y_min, y_max)``
    projection metres (the store's ``tile_x_min/max``, ``tile_y_min/max``
    coordinates); without them they come from ``tiling`` (the same values).
    ``inset`` draws the edge that share of the side inside the tile (so the
    outlines of neighbouring tiles stay apart).

    Examples
    --------
    >>> from wxdask.tiles import Tiling
    >>> from wxdask.grid import COARSE
    >>> xs, ys = tile_outline(COARSE, Tiling(COARSE.shape, 8, 8), 0, 0, on_latlon=False)
    >>> float(xs.min()), float(xs.max()), float(ys.min()), float(ys.max())
    (-0.5, 7.5, 0.5, 8.5)
    """
    from wxdask.grid import projection_xy, xy_to_lonlat

    x, y = projection_xy(grid)
    if bounds is not None:  # metres of the pixel edges -> fractional columns and rows
        c0, c1 = ((np.asarray(bounds[:2], dtype=np.float64) - x[0]) / grid.dx).tolist()
        r0, r1 = ((np.asarray(bounds[2:], dtype=np.float64) - y[0]) / grid.dx).tolist()
    else:
        r, c = tiling.rows(ty), tiling.cols(tx)
        c0, c1, r0, r1 = c.start - 0.5, c.stop - 0.5, r.start - 0.5, r.stop - 0.5
    if inset:
        dc, dr = inset * (c1 - c0), inset * (r1 - r0)
        c0, c1, r0, r1 = c0 + dc, c1 - dc, r0 + dr, r1 - dr
    t = np.linspace(0.0, 1.0, n)
    cols = np.concatenate([c0 + (c1 - c0) * t, np.full(n, c1), c1 - (c1 - c0) * t, np.full(n, c0)])
    rows = np.concatenate([np.full(n, r0), r0 + (r1 - r0) * t, np.full(n, r1), r1 - (r1 - r0) * t])
    if not on_latlon:
        return cols, rows
    lon, lat = xy_to_lonlat(grid, x[0] + cols * grid.dx, y[0] + rows * grid.dx)
    return np.where(lon > 180, lon - 360, lon), lat


def tile_bounds(ds: xr.Dataset, ty: int, tx: int) -> tuple[float, float, float, float] | None:
    """``(x_min, x_max, y_min, y_max)`` of tile ``(ty, tx)`` from the store's coordinates, if it has them."""
    names = ("tile_x_min", "tile_x_max", "tile_y_min", "tile_y_max")
    if not all(name in ds.variables for name in names):
        return None
    return (float(ds["tile_x_min"].values[tx]), float(ds["tile_x_max"].values[tx]),
            float(ds["tile_y_min"].values[ty]), float(ds["tile_y_max"].values[ty]))


def _slot_image(ds: xr.Dataset, t: Any, lead: int | None) -> np.ndarray | None:
    if "refc" not in ds or t is None:
        return None
    img = np.asarray(ds["refc"].sel(time=t, lead_time=lead).values, dtype=np.float32)
    return img if np.isfinite(img).any() else None


def plot_tile_query(cfg: Config, result: TileResult, path: Any) -> Any:
    """Write a PNG of the query's whole image and each analog's, the tile outlined, with times and distances.

    Maps are the slots' ``refc`` on latitude/longitude (:func:`wxdask.plots.image_panel`).

    Returns
    -------
    str
        ``path``.
    """
    from wxdask import plots, store

    ds = store.open_store(cfg.store)
    grid, tiling = store_tiling(ds["tile_embedding"])
    have = result.neighbors[result.neighbors["index"] >= 0]
    query_img = result.image if result.image is not None else _slot_image(ds, result.time, result.lead)
    images = [query_img] + [_slot_image(ds, row["time"], int(row["lead"])) for row in have]
    lat = ds["latitude"].values if "latitude" in ds.variables else None
    lon = ds["longitude"].values if "longitude" in ds.variables else None
    on_latlon = lat is not None and lat.shape == grid.shape
    tiles = [result.tile] + [(int(r["tile_y"]), int(r["tile_x"])) for r in have]
    outlines = [[(*tile_outline(grid, tiling, ty, tx, on_latlon=on_latlon, bounds=tile_bounds(ds, ty, tx)), "black")]
                for ty, tx in tiles]
    titles = [f"query {result.label}"]
    for rank, row in enumerate(have, start=1):
        t = np.datetime_as_string(row["time"].astype("M8[h]"), unit="h")
        titles.append(f"#{rank} {t} +{int(row['lead'])}h tile ({int(row['tile_y'])}, {int(row['tile_x'])})\n"
                      f"sqdist {float(row['sqdist']):.4g}")
    return plots.image_panel(images, titles, path, latitude=lat if on_latlon else None,
                             longitude=lon if on_latlon else None, outlines=outlines,
                             suptitle=f"tile analogs of {result.label} ({result.mode}; squared distance)")
