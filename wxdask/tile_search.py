"""Exact nearest-neighbour search between tiles (mesoscale analogs), every tile of the store.

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
``tile_neighbor_*``). One tile's analogs and the pictures are
:mod:`wxdask.tile_query`'s.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from wxdask.config import Config
from wxdask.errors import ConfigError, StoreLayoutError
from wxdask.search import knn, window_hours

if TYPE_CHECKING:  # pragma: no cover
    import dask.array as da
    from distributed import Client

    from wxdask.grid import Grid
    from wxdask.tiles import Tiling

__all__ = [
    "TILE_DIMS",
    "TILE_NEIGHBOR_DTYPE",
    "check_tile_embedding",
    "run",
    "search_mode",
    "store_tiling",
    "summary_counts",
    "tile_index",
    "tile_neighbours",
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


def search_mode(anywhere: bool) -> str:
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


def tile_index(index: np.ndarray, ny: int, nx: int, axis: str) -> np.ndarray:
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
            "tile_y": da.map_blocks(tile_index, idx, ny, nx, "y", dtype=np.int32),
            "tile_x": da.map_blocks(tile_index, idx, ny, nx, "x", dtype=np.int32),
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
    attrs = {"k": int(k), "mode": search_mode(anywhere), "exclude_window": str(exclude_window),
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
                search_mode(tcfg.anywhere), tcfg.k)
    encoding = {"tile_neighbor_time": {"units": "hours since 1970-01-01 00:00:00", "dtype": "int64",
                                       "calendar": "proleptic_gregorian"}}
    attrs = {"tile_search_k": tcfg.k, "tile_search_mode": search_mode(tcfg.anywhere),
             "tile_search_exclude_window": str(tcfg.exclude_window)}
    # the write computes on the client that holds the persisted results (not just any default client)
    with client.as_current() if client is not None else contextlib.nullcontext():
        store.write_variables(cfg.store, out, encoding=encoding, attrs=attrs)
    store.consolidate(cfg.store)
    counts = summary_counts(cfg, client)
    return (f"{tcfg.k} nearest tiles ({search_mode(tcfg.anywhere)}, not within {tcfg.exclude_window}) of "
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
