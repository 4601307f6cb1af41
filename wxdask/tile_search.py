"""Exact nearest-neighbour search between tiles (mesoscale analogs), and one-off tile queries.

The engine is :mod:`wxdask.search`'s (one prepared database key, one task per
block of queries, exact, squared Euclidean, ties to the earlier row), applied
to the store's ``tile_embedding(time, lead_time, tile_y, tile_x, latent)``:

- ``same-place`` (default): each tile index ``(tile_y, tile_x)`` is its own
  database, its ``time x lead_time`` rows; one :func:`wxdask.search.knn` per
  tile index.
- ``anywhere``: every tile against every tile, all tiles flattened time-major
  (row ``((t * n_lead + l) * n_tile_y + ty) * n_tile_x + tx``).

In both, ``exclude_window`` drops every candidate whose initialisation time is
less than the window from the query's (``0``: only the query tile itself); a
tile is never its own neighbour; a tile without an embedding (NaN: clear sky
below the echo threshold, or no image) is neither a query nor a neighbour.

Lazy wrapper: :func:`tile_neighbours`. I/O: :func:`run` (writes
``tile_neighbor_*``), :func:`query_tile` (one tile by time and point, or an
image's tile encoded with the tile model), :func:`format_tile_table`,
:func:`plot_tile_query`.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from wxdask.config import Config, parse_time
from wxdask.errors import ConfigError, StoreLayoutError
from wxdask.search import knn, window_hours

if TYPE_CHECKING:  # pragma: no cover
    import dask.array as da
    from distributed import Client

    from wxdask.grid import Grid
    from wxdask.model import Predictor
    from wxdask.tiles import Tiling

__all__ = [
    "TILE_DIMS",
    "TILE_NEIGHBOR_DTYPE",
    "TileResult",
    "check_tile_embedding",
    "format_tile_table",
    "plot_tile_query",
    "query_tile",
    "run",
    "store_tiling",
    "summary_counts",
    "tile_bounds",
    "tile_neighbours",
    "tile_outline",
    "tile_rows",
]

logger = logging.getLogger(__name__)

TILE_DIMS = ("time", "lead_time", "tile_y", "tile_x")
_NAT = np.datetime64("NaT", "ns")
#: One tile neighbour: its time, lead, tile index, centre and squared distance.
TILE_NEIGHBOR_DTYPE = np.dtype([("index", "i8"), ("sqdist", "f4"), ("time", "M8[ns]"), ("lead", "i8"),
                                ("tile_y", "i4"), ("tile_x", "i4"), ("latitude", "f8"), ("longitude", "f8")])
_NAMES = ("tile_neighbor_time", "tile_neighbor_lead", "tile_neighbor_tile_y", "tile_neighbor_tile_x",
          "tile_neighbor_sqdist")


def check_tile_embedding(emb: xr.DataArray) -> None:
    """Check ``tile_embedding`` has the store contract's dims.

    Raises
    ------
    StoreLayoutError
        If its dims are not ``(time, lead_time, tile_y, tile_x, latent)``.
    """
    if emb.dims != TILE_DIMS + ("latent",):
        raise StoreLayoutError(f"tile_embedding must have dims {TILE_DIMS + ('latent',)}, got {emb.dims}")


def _mode(anywhere: bool) -> str:
    return "anywhere" if anywhere else "same-place"


def tile_rows(emb: xr.DataArray, block_size: int | None = None) -> tuple[da.Array, np.ndarray, np.ndarray]:
    """All tiles as rows, time-major, with each row's time and lead (the ``anywhere`` database).

    Row ``i`` is ``np.unravel_index(i, (n_time, n_lead, n_tile_y, n_tile_x))``.

    Parameters
    ----------
    emb : xarray.DataArray
        ``tile_embedding``.
    block_size : int, optional
        About this many rows per chunk (whole time steps).

    Returns
    -------
    rows : dask.array.Array
        ``(n, n_latent)``.
    time, lead : numpy.ndarray
        ``(n,)`` each row's initialisation time and lead.

    Examples
    --------
    >>> a = xr.DataArray(np.arange(16.0).reshape(2, 1, 2, 2, 2), dims=TILE_DIMS + ("latent",),
    ...                  coords={"time": [10, 20], "lead_time": [0]})
    >>> rows, t, lead = tile_rows(a)
    >>> rows[5].compute().tolist(), t.tolist(), lead.tolist()
    ([10.0, 11.0], [10, 10, 10, 10, 20, 20, 20, 20], [0, 0, 0, 0, 0, 0, 0, 0])
    """
    import dask.array as da

    check_tile_embedding(emb)
    nt, nl, ny, nx, d = emb.shape
    per_time = nl * ny * nx
    data = emb.data if isinstance(emb.data, da.Array) else da.from_array(np.asarray(emb.data))
    tb = max(1, block_size // per_time) if block_size else max(1, data.chunks[0][0])
    data = data.rechunk({0: tb, 1: -1, 2: -1, 3: -1, 4: -1})
    rows = data.reshape(nt * per_time, d)
    times = np.repeat(emb["time"].values, per_time)
    leads = np.tile(np.repeat(emb["lead_time"].values.astype(np.int64), ny * nx), nt)
    return rows, times, leads


def store_tiling(emb: xr.DataArray) -> tuple[Grid, Tiling]:
    """The grid and tiling that made ``tile_embedding`` (from its attributes).

    Raises
    ------
    StoreLayoutError
        If the attributes do not give them, or they do not match the tile coordinates.
    """
    from wxdask.grid import get_grid
    from wxdask.tiles import Tiling

    attrs = emb.attrs
    try:
        grid = get_grid(attrs["grid_name"])
        tiling = Tiling(grid_shape=grid.shape, size=int(attrs["tile_size"]),
                        stride=int(attrs.get("tile_stride", attrs["tile_size"])))
    except (KeyError, ConfigError) as exc:
        raise StoreLayoutError("tile_embedding lacks its tiling (grid_name, tile_size, tile_stride "
                               f"attributes): {exc}") from None
    if tiling.shape != (emb.sizes["tile_y"], emb.sizes["tile_x"]):
        raise StoreLayoutError(f"tile_embedding has {emb.sizes['tile_y']}x{emb.sizes['tile_x']} tiles, but its "
                               f"tiling of the {grid.name} grid gives {tiling.shape[0]}x{tiling.shape[1]}")
    return grid, tiling


# ----------------------------------------------------------------------------- lazy (dask)


def _tile_index(index: np.ndarray, ny: int, nx: int, axis: str) -> np.ndarray:
    """``tile_y`` or ``tile_x`` of flattened rows (``-1`` where the index is ``-1``)."""
    out = (index // nx) % ny if axis == "y" else index % nx
    return np.where(index >= 0, out, -1).astype(np.int32)


def tile_neighbours(emb: xr.DataArray, k: int, *, exclude_window: Any = "24h", anywhere: bool = False,
                    block_size: int = 4096, chunk_size: int = 4096, device: bool = False) -> xr.Dataset:
    """Lazy k nearest tiles of every tile of ``tile_embedding``.

    Parameters
    ----------
    emb : xarray.DataArray
        ``tile_embedding(time, lead_time, tile_y, tile_x, latent)``, NaN where not searched.
    k : int
        Neighbours per tile.
    exclude_window : int, str or numpy.timedelta64
        Candidates less than this from the query's initialisation time are dropped.
    anywhere : bool
        Every tile against every tile; else each tile index against itself only.
    block_size, chunk_size : int
        Queries per task, database rows per GEMM (as in :func:`wxdask.search.knn`).
    device : bool
        Search tasks use the accelerator path.

    Returns
    -------
    xarray.Dataset
        ``tile_neighbor_time`` (datetime64, NaT missing), ``tile_neighbor_lead``,
        ``tile_neighbor_tile_y``, ``tile_neighbor_tile_x`` (int32, -1 missing),
        ``tile_neighbor_sqdist`` (float32, NaN missing), each
        ``(time, lead_time, tile_y, tile_x, tile_rank)``, ``tile_rank`` 1..k.
    """
    import dask.array as da

    check_tile_embedding(emb)
    nt, nl, ny, nx, d = emb.shape
    window = window_hours(exclude_window)
    fields: dict[str, Any] = {}
    if anywhere:
        rows, times, leads = tile_rows(emb, block_size)
        n = rows.shape[0]
        rec = knn(rows, rows, k, base_time=times, base_lead=leads,
                  query_index=da.arange(n, chunks=(rows.chunks[0],), dtype=np.int64), exclude_window=window,
                  block_size=rows.chunks[0][0], chunk_size=chunk_size, device=device)
        idx = rec["index"]
        fields = {
            "time": rec["time"], "lead": rec["lead"].astype(np.int32), "sqdist": rec["sqdist"],
            "tile_y": da.map_blocks(_tile_index, idx, ny, nx, "y", dtype=np.int32),
            "tile_x": da.map_blocks(_tile_index, idx, ny, nx, "x", dtype=np.int32),
        }
        fields = {name: a.reshape(nt, nl, ny, nx, k) for name, a in fields.items()}
    else:
        data = emb.data if isinstance(emb.data, da.Array) else da.from_array(np.asarray(emb.data))
        tb = max(1, block_size // nl)
        times = np.repeat(emb["time"].values, nl)
        leads = np.tile(emb["lead_time"].values.astype(np.int64), nt)
        per_tile: dict[str, list] = {name: [] for name in ("time", "lead", "sqdist", "tile_y", "tile_x")}
        for ty in range(ny):
            cols: dict[str, list] = {name: [] for name in per_tile}
            for tx in range(nx):
                base = data[:, :, ty, tx, :].rechunk({0: tb, 1: -1, 2: -1}).reshape(nt * nl, d)
                rec = knn(base, base, k, base_time=times, base_lead=leads,
                          query_index=da.arange(nt * nl, chunks=(base.chunks[0],), dtype=np.int64),
                          exclude_window=window, block_size=tb * nl, chunk_size=chunk_size, device=device)
                have = rec["index"] >= 0
                parts = {"time": rec["time"], "lead": rec["lead"].astype(np.int32), "sqdist": rec["sqdist"],
                         "tile_y": da.where(have, np.int32(ty), np.int32(-1)).astype(np.int32),
                         "tile_x": da.where(have, np.int32(tx), np.int32(-1)).astype(np.int32)}
                for name, a in parts.items():
                    cols[name].append(a.reshape(nt, nl, k))
            for name, stacked in per_tile.items():
                stacked.append(da.stack(cols[name], axis=2))
        fields = {name: da.stack(rows_, axis=2).rechunk({2: -1, 3: -1}) for name, rows_ in per_tile.items()}
    dims = TILE_DIMS + ("tile_rank",)
    coords = {"time": emb["time"], "lead_time": emb["lead_time"], "tile_y": emb["tile_y"] if "tile_y" in emb.coords
              else np.arange(ny, dtype=np.int32), "tile_x": emb["tile_x"] if "tile_x" in emb.coords
              else np.arange(nx, dtype=np.int32), "tile_rank": np.arange(1, k + 1, dtype=np.int32)}
    out = xr.Dataset({
        "tile_neighbor_time": (dims, fields["time"], {
            "long_name": "initialisation time of the k-th nearest tile", "description": "NaT where fewer than k"}),
        "tile_neighbor_lead": (dims, fields["lead"], {
            "long_name": "lead time of the k-th nearest tile", "units": "hours", "description": "-1 where missing"}),
        "tile_neighbor_tile_y": (dims, fields["tile_y"], {
            "long_name": "tile row of the k-th nearest tile", "description": "-1 where missing"}),
        "tile_neighbor_tile_x": (dims, fields["tile_x"], {
            "long_name": "tile column of the k-th nearest tile", "description": "-1 where missing"}),
        "tile_neighbor_sqdist": (dims, fields["sqdist"], {
            "long_name": "squared Euclidean distance in tile embedding space", "units": "1"}),
    }, coords={c: v for c, v in coords.items()})
    out = out.drop_vars([c for c in out.coords if c not in out.dims])
    attrs = {"k": int(k), "mode": _mode(anywhere), "exclude_window": str(exclude_window),
             "metric": "squared euclidean"}
    for var_name in out.data_vars:
        out[var_name].attrs.update(attrs)
    return out


# ----------------------------------------------------------------------------- I/O


def run(cfg: Config, client: Client | None) -> str:
    """Search every tile of the store's ``tile_embedding``; write the ``tile_neighbor_*`` variables.

    Uses ``cfg.tiles`` (``k``, ``exclude_window``, ``anywhere``) and
    ``cfg.search`` (``block_size``, ``chunk_size``). On a cluster with GPU
    workers the search tasks run there, on the device
    (:func:`wxdask.search.gpu_resources`). A rerun with another k or mode
    replaces the outputs atomically (:func:`wxdask.store.write_variables`).

    Returns
    -------
    str
        What was written, with the counts: tiles searched, skipped, and
        queries left with fewer than k neighbours.
    """
    from wxdask import store
    from wxdask.search import gpu_resources, on_gpu

    tcfg = cfg.tiles
    ds = store.open_input(cfg.store, ["tile_embedding"])
    emb = ds["tile_embedding"]
    resources = gpu_resources(client)
    out = tile_neighbours(emb, tcfg.k, exclude_window=tcfg.exclude_window, anywhere=tcfg.anywhere,
                          block_size=cfg.search.block_size, chunk_size=cfg.search.chunk_size,
                          device=resources is not None)
    out = on_gpu(client, out, resources)
    model = emb.attrs.get("model_hash", "")
    for name in out.data_vars:
        out[name].attrs["model_hash"] = model
    logger.info("searching %d tiles (%s) for %d neighbours each", int(np.prod(emb.shape[:4])),
                _mode(tcfg.anywhere), tcfg.k)
    encoding = {"tile_neighbor_time": {"units": "hours since 1970-01-01 00:00:00", "dtype": "int64",
                                       "calendar": "proleptic_gregorian"}}
    attrs = {"tile_search_k": tcfg.k, "tile_search_mode": _mode(tcfg.anywhere),
             "tile_search_exclude_window": str(tcfg.exclude_window)}
    # the write computes on the client that holds the persisted results (not just any default client)
    with client.as_current() if client is not None else contextlib.nullcontext():
        store.write_variables(cfg.store, out, encoding=encoding, attrs=attrs)
    store.consolidate(cfg.store)
    counts = summary_counts(cfg, client)
    return (f"{tcfg.k} nearest tiles ({_mode(tcfg.anywhere)}, not within {tcfg.exclude_window}) of "
            f"{counts['searched']} tiles searched, {counts['skipped']} skipped (clear sky or no image), "
            f"{counts['fewer_than_k']} with fewer than {tcfg.k} neighbours -> {cfg.store.url}: " + ", ".join(_NAMES))


def summary_counts(cfg: Config, client: Client | None) -> dict[str, int]:
    """Tiles searched (finite embedding), skipped, and searched with fewer than k neighbours, from the store."""
    from wxdask import store
    from wxdask.client import compute

    ds = store.open_input(cfg.store, ["tile_embedding", "tile_neighbor_tile_y"])
    searched = ds["tile_embedding"].notnull().all("latent").sum().data
    fewer = ((ds["tile_neighbor_tile_y"].isel(tile_rank=-1) < 0) & ds["tile_embedding"].notnull().all("latent"))
    s, f = compute(client, [searched, fewer.sum().data], scheduler=None)
    total = int(np.prod(ds["tile_embedding"].shape[:4]))
    return {"searched": int(s), "skipped": total - int(s), "fewer_than_k": int(f)}


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
        out["tile_y"] = _tile_index(found["index"], ny, nx, "y")
        out["tile_x"] = _tile_index(found["index"], ny, nx, "x")
    else:
        out["tile_y"] = np.where(have, ty, -1)
        out["tile_x"] = np.where(have, tx, -1)
    coords = tile_coords(grid, tiling)
    lat_c, lon_c = coords["tile_latitude"][1], coords["tile_longitude"][1]
    sy, sx = np.clip(out["tile_y"], 0, None), np.clip(out["tile_x"], 0, None)
    out["latitude"] = np.where(have, lat_c[sy, sx], np.nan)
    out["longitude"] = np.where(have, lon_c[sy, sx], np.nan)
    return TileResult(label=label, time=q_t, lead=q_l, tile=(ty, tx), neighbors=out, embedding=qvec, image=img,
                      mode=_mode(tcfg.anywhere))


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
