"""The one module that opens, creates and writes wxdask's Zarr store.

The store is a Zarr v3 group readable with :func:`xarray.open_zarr`. Its
contract (variables, dims, chunks) is described in ``DESIGN.md``. Stages never
call ``to_zarr`` or ``zarr.open`` themselves: they go through this module.

Writes follow one rule: metadata first (:func:`init_output`, nothing computed),
then disjoint chunk-aligned regions (:func:`write_region` from workers, or
:func:`write_variables` for dask-backed variables whose chunks match the
store's), then :func:`consolidate` once at the end.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any, Iterable

import fsspec
import numpy as np
import xarray as xr
import zarr

from wxdask.config import StoreConfig
from wxdask.errors import StoreLayoutError

__all__ = [
    "exists",
    "open_store",
    "open_input",
    "init_output",
    "write_region",
    "write_points",
    "write_variables",
    "read_region",
    "chunk_nbytes",
    "drop_variables",
    "set_attrs",
    "consolidate",
]

logger = logging.getLogger(__name__)

#: Time coordinate encoding shared by every variable (stable under appends).
TIME_ENCODING = {"units": "hours since 1970-01-01 00:00:00", "calendar": "proleptic_gregorian", "dtype": "int64"}


def _fs_and_path(cfg: StoreConfig) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(cfg.url, **cfg.storage_options)
    return fs, path


def exists(cfg: StoreConfig) -> bool:
    """Whether a Zarr group already exists at ``cfg.url``."""
    fs, path = _fs_and_path(cfg)
    return fs.exists(f"{path.rstrip('/')}/zarr.json")


def open_store(cfg: StoreConfig, *, decode: bool = True) -> xr.Dataset:
    """Open the whole store lazily.

    Parameters
    ----------
    cfg : StoreConfig
        Where the store is.
    decode : bool
        ``False`` keeps packed integers as stored (``refc`` as int16 in 1/16 dBZ),
        for stages that move compact images and scale them on the device.

    Returns
    -------
    xarray.Dataset
        Dask-backed, chunked as stored.

    Raises
    ------
    StoreLayoutError
        If there is no Zarr store at ``cfg.url``.
    """
    if not exists(cfg):
        raise StoreLayoutError(f"no wxdask store at {cfg.url!r}; create it with `wxdask ingest --store {cfg.url}`")
    return xr.open_zarr(
        cfg.url,
        consolidated=False,
        storage_options=cfg.storage_options or None,
        mask_and_scale=decode,
        decode_times=True,
    )


def open_input(cfg: StoreConfig, variables: Iterable[str], *, decode: bool = True) -> xr.Dataset:
    """Open the store and check that it holds ``variables``.

    Raises
    ------
    StoreLayoutError
        Naming the missing variable and the stage that makes it.
    """
    ds = open_store(cfg, decode=decode)
    makers = {"refc": "ingest", "status": "ingest", "embedding": "embed"}
    for name in variables:
        if name not in ds.variables:
            maker = makers.get(name)
            hint = f"; run `wxdask {maker}` first" if maker else ""
            raise StoreLayoutError(
                f"store {cfg.url!r} has no variable {name!r} (it holds {sorted(ds.data_vars)}){hint}"
            )
    return ds


def init_output(
    cfg: StoreConfig,
    template: xr.Dataset,
    encoding: dict[str, dict],
    *,
    fill_values: dict[str, Any] | None = None,
    check_equal: Iterable[str] = (),
) -> xr.Dataset:
    """Create the store's metadata for ``template``, or grow an existing store to cover it.

    Nothing is computed and no data chunk is written: ``template`` is only read
    for names, dims, coordinates, dtypes and attributes.

    Parameters
    ----------
    cfg : StoreConfig
        Where the store is.
    template : xarray.Dataset
        Dask-backed dataset with the wanted variables and coordinates.
    encoding : dict
        Per-variable Zarr encoding (chunks, dtype, fill_value, scale).
    fill_values : dict, optional
        Value of each variable where the store is grown (default NaN).
    check_equal : iterable of str
        Coordinates or variables that must be identical in an existing store
        (the grid), and attributes ``"<var>.attrs"`` likewise.

    Returns
    -------
    xarray.Dataset
        The store as it now is, opened lazily.

    Raises
    ------
    StoreLayoutError
        If an existing store holds a different grid or an incompatible variable.
    """
    if not exists(cfg):
        logger.info("creating store %s", cfg.url)
        template.to_zarr(
            cfg.url,
            mode="w-",
            compute=False,
            encoding=_with_time_encoding(template, encoding),
            zarr_format=3,
            consolidated=False,
            storage_options=cfg.storage_options or None,
        )
        return open_store(cfg)

    existing = open_store(cfg)
    _check_compatible(cfg, existing, template, check_equal)
    missing_vars = [v for v in template.data_vars if v not in existing.data_vars]
    for dim in ("time", "lead_time"):
        if dim not in template.dims or dim not in existing.dims:
            continue
        old = existing[dim].values
        new = np.setdiff1d(template[dim].values, old)
        if new.size == 0:
            continue
        if new.min() > old.max():
            logger.info("extending store %s along %s by %d", cfg.url, dim, new.size)
            grow = _reindexed_like(existing, template, dim, new, fill_values)
            grow.to_zarr(
                cfg.url,
                append_dim=dim,
                compute=False,
                # metadata only (nothing is computed), so a variable whose last chunk along
                # dim is partly filled (embedding's time chunks) may grow into it
                safe_chunks=False,
                consolidated=False,
                storage_options=cfg.storage_options or None,
            )
        else:
            logger.info("rewriting store %s to insert %d earlier %s values", cfg.url, new.size, dim)
            _rewrite_sorted(cfg, existing, dim, np.union1d(old, new), fill_values)
        existing = open_store(cfg)
    if missing_vars:
        add = template[missing_vars].reindex({d: existing[d] for d in template.dims if d in existing.dims})
        add.attrs = {**existing.attrs, **template.attrs}
        add.to_zarr(
            cfg.url,
            mode="a",
            compute=False,
            encoding={k: v for k, v in encoding.items() if k in missing_vars},
            consolidated=False,
            storage_options=cfg.storage_options or None,
        )
    return open_store(cfg)


def _with_time_encoding(ds: xr.Dataset, encoding: dict) -> dict:
    enc = dict(encoding)
    if "time" in ds.coords and "time" not in enc:
        enc["time"] = dict(TIME_ENCODING)
    return enc


def _check_compatible(cfg: StoreConfig, existing: xr.Dataset, template: xr.Dataset, check_equal: Iterable[str]) -> None:
    for name in check_equal:
        var, _, attrs = name.partition(".")
        if var not in existing.variables:
            raise StoreLayoutError(f"store {cfg.url!r} has no {var!r}; it was not made by this stage")
        if attrs:
            old, new = existing[var].attrs, template[var].attrs
            diff = [k for k in new if _norm(old.get(k)) != _norm(new.get(k))]
            if diff:
                k = diff[0]
                raise StoreLayoutError(
                    f"store {cfg.url!r} holds {var} with {k}={old.get(k)!r}, not {new.get(k)!r}: "
                    "a different grid or variable; use another --store"
                )
        else:
            old, new = existing[var], template[var]
            if old.shape != new.shape or not np.allclose(old.values, new.values, equal_nan=True):
                raise StoreLayoutError(
                    f"store {cfg.url!r} holds a different grid: {var} has shape {old.shape}, "
                    f"wanted {new.shape} with other values; use another --store"
                )
    for name, var in template.data_vars.items():
        if name in existing and existing[name].dims != var.dims:
            raise StoreLayoutError(
                f"store {cfg.url!r} holds {name} with dims {existing[name].dims}, not {var.dims}"
            )


def _norm(value: Any) -> Any:
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_norm(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return round(float(value), 9)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _reindexed_like(existing: xr.Dataset, template: xr.Dataset, dim: str, new: np.ndarray, fill_values: dict | None) -> xr.Dataset:
    """Variables of the existing store over the new coordinate values only, lazily filled."""
    base = existing.drop_vars([v for v in existing.variables if dim not in existing[v].dims and v not in existing.dims])
    base = base.isel({dim: slice(0, 0)})
    grown = base.reindex({dim: new}, fill_value=_fills(base, fill_values))
    return grown.chunk({dim: 1})


def _fills(ds: xr.Dataset, fill_values: dict | None) -> dict:
    fills = {}
    for name, var in ds.data_vars.items():
        if fill_values and name in fill_values:
            fills[name] = fill_values[name]
        elif np.issubdtype(var.dtype, np.integer):
            fills[name] = 0
        else:
            fills[name] = np.nan
    return fills


def _rewrite_sorted(cfg: StoreConfig, existing: xr.Dataset, dim: str, values: np.ndarray, fill_values: dict | None) -> None:
    """Rewrite the whole store with ``dim`` reindexed to ``values`` (inserting earlier values)."""
    fs, path = _fs_and_path(cfg)
    tmp_url = cfg.url.rstrip("/") + ".rewrite-tmp"
    tmp_cfg = StoreConfig(url=tmp_url, storage_options=cfg.storage_options)
    raw = open_store(cfg, decode=False)
    grown = raw.reindex({dim: values}, fill_value=_raw_fills(raw, fill_values))
    encoding = {}
    for name, var in raw.variables.items():
        enc = {k: v for k, v in var.encoding.items() if k in ("chunks", "compressors", "fill_value", "dtype")}
        if name in raw.data_vars and var.chunks:
            grown[name] = grown[name].chunk(dict(zip(var.dims, enc.get("chunks", ()))))
        encoding[name] = enc
    grown.to_zarr(tmp_url, mode="w", zarr_format=3, consolidated=False, encoding=encoding,
                  storage_options=cfg.storage_options or None)
    old_path = path.rstrip("/") + ".rewrite-old"
    fs.mv(path, old_path, recursive=True)
    fs.mv(_fs_and_path(tmp_cfg)[1], path, recursive=True)
    fs.rm(old_path, recursive=True)


def _raw_fills(raw: xr.Dataset, fill_values: dict | None) -> dict:
    fills = {}
    for name, var in raw.data_vars.items():
        fv = var.attrs.get("_FillValue", var.encoding.get("_FillValue"))
        if fill_values and name in fill_values and not np.issubdtype(var.dtype, np.integer):
            fv = fill_values[name]
        if fv is None:
            fv = 0 if np.issubdtype(var.dtype, np.integer) else np.nan
        fills[name] = fv
    return fills


def _group(cfg: StoreConfig, mode: str = "r+") -> zarr.Group:
    # never the consolidated metadata: it is stale while a stage adds variables
    return zarr.open_group(cfg.url, mode=mode, storage_options=cfg.storage_options or None, zarr_format=3,
                           use_consolidated=False)


def write_region(cfg: StoreConfig, values: dict[str, np.ndarray], index: tuple) -> None:
    """Write raw (already encoded) values of several variables at one index.

    Called from workers. ``index`` must select whole chunks of every variable
    (e.g. one ``(time, lead_time)`` slot whose image is one chunk), so concurrent
    writers never touch the same chunk.

    Parameters
    ----------
    cfg : StoreConfig
        Where the store is.
    values : dict of str to numpy.ndarray
        Encoded values per variable, written in the order given.
    index : tuple
        Positional index into each variable's leading dims.
    """
    group = _group(cfg)
    for name, value in values.items():
        group[name][index] = value


def write_points(cfg: StoreConfig, values: dict[str, np.ndarray], index: tuple[np.ndarray, ...]) -> None:
    """Write raw values of several variables at scattered points (one write per variable), in order.

    Called from workers, like :func:`write_region`; the points must lie in
    shards (or chunks) that no other writer touches at the same time.

    Parameters
    ----------
    cfg : StoreConfig
        Where the store is.
    values : dict of str to numpy.ndarray
        Encoded values per variable, one per point, written in the order given.
    index : tuple of numpy.ndarray
        Integer coordinates of the points, one array per dimension.
    """
    group = _group(cfg)
    for name, value in values.items():
        group[name].vindex[index] = value


def read_region(cfg: StoreConfig, name: str, index: tuple) -> np.ndarray:
    """Read raw (still encoded) values of one variable, from a worker.

    The counterpart of :func:`write_region`: no xarray decoding, so ``refc``
    comes back as stored (int16 in 1/16 dBZ). Chunks never written read as the
    variable's fill value (NaN for float variables).

    Parameters
    ----------
    cfg : StoreConfig
        Where the store is.
    name : str
        Variable name.
    index : tuple
        Orthogonal index: ints, slices, or integer arrays per dimension.

    Returns
    -------
    numpy.ndarray
    """
    return np.asarray(_group(cfg, mode="r")[name].oindex[index])


def chunk_nbytes(cfg: StoreConfig, name: str) -> np.ndarray:
    """Stored (compressed) size in bytes of every chunk of one variable.

    Returns
    -------
    numpy.ndarray
        int64 over the variable's chunk grid; 0 where a chunk was never
        written. For ``refc`` (one image per chunk) this is the stored size of
        each ``(time, lead_time)`` image.
    """
    arr = _group(cfg, mode="r")[name]
    grid = tuple(-(-s // c) for s, c in zip(arr.shape, arr.chunks))
    sizes = np.zeros(grid, dtype=np.int64)
    fs, path = _fs_and_path(cfg)
    prefix = f"{path.rstrip('/')}/{name}/c/"
    for key, info in fs.find(prefix, detail=True).items():
        parts = key[len(prefix):].split("/") if key.startswith(prefix) else key.split("/c/")[-1].split("/")
        try:
            idx = tuple(int(p) for p in parts)
        except ValueError:
            continue
        if len(idx) == len(grid) and all(0 <= i < g for i, g in zip(idx, grid)):
            sizes[idx] = info["size"]
    return sizes


def drop_variables(cfg: StoreConfig, names: Iterable[str]) -> None:
    """Delete variables (metadata and chunks) from the store, if present."""
    group = _group(cfg)
    for name in names:
        if name in group:
            logger.info("deleting %s from %s", name, cfg.url)
            del group[name]


def write_variables(cfg: StoreConfig, ds: xr.Dataset, *, encoding: dict | None = None) -> None:
    """Add or replace whole variables (aligned with the store's dims), computing them.

    Dask-backed variables are computed on the current Dask client, each chunk
    written by the worker that computes it (chunks must align with the store's).
    """
    existing = open_store(cfg)
    for dim in ds.dims:
        if dim in existing.dims and dim in ds.coords:
            if not np.array_equal(existing[dim].values, ds[dim].values):
                raise StoreLayoutError(f"cannot write to {cfg.url!r}: {dim} does not match the store's")
    drop = [c for c in ds.coords if c in existing.variables]
    out = ds.drop_vars(drop)
    # xarray replaces the group's attributes on every write: carry the store's along
    out.attrs = {**existing.attrs, **ds.attrs}
    replace = [v for v in out.data_vars if v in existing.data_vars]
    if replace:
        group = _group(cfg)
        for name in replace:
            logger.info("replacing %s in %s", name, cfg.url)
            del group[name]
    out.to_zarr(
        cfg.url,
        mode="a",
        encoding=encoding or {},
        consolidated=False,
        storage_options=cfg.storage_options or None,
    )


def set_attrs(cfg: StoreConfig, attrs: dict, variable: str | None = None) -> None:
    """Update attributes of the store (``variable=None``) or of one variable."""
    group = _group(cfg)
    node = group if variable is None else group[variable]
    node.attrs.update(attrs)


def consolidate(cfg: StoreConfig) -> None:
    """Consolidate the store's metadata (once, at the end of a stage)."""
    with warnings.catch_warnings():  # "not part of the Zarr format 3 specification": known, and readers cope
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(_group(cfg).store)
