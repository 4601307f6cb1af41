"""The store's metadata: :func:`init_output` creates a store, or grows one along ``time``/``lead_time``."""

from __future__ import annotations

import logging
from typing import Any, Iterable

import numpy as np
import xarray as xr

from wxdask.config import StoreConfig
from wxdask.errors import StoreLayoutError
from wxdask.store.journal import recover
from wxdask.store.location import TIME_ENCODING, _fs_and_path, _open, exists

#: One logger for all of wxdask.store, named as before the split.
logger = logging.getLogger("wxdask.store")


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
    for names, dims, coordinates, dtypes, attributes and chunks. Creating or
    growing forward costs the same time and client memory whatever the number
    of slots: each dask-backed variable is written as one placeholder chunk
    (:func:`_metadata_only`), and the store is opened without dask. Growing
    to earlier values rewrites the whole store (its data is copied).

    Parameters
    ----------
    cfg : StoreConfig
        Where the store is.
    template : xarray.Dataset
        Dask-backed dataset with the wanted variables and coordinates.
    encoding : dict
        Per-variable Zarr encoding (chunks, shards, dtype, fill_value,
        filters). A variable's Zarr chunks are ``encoding[name]["chunks"]``,
        else the template variable's own ``encoding["chunks"]``, else its
        first dask chunk along each dim.
    fill_values : dict, optional
        Value of each variable where the store is grown (default NaN).
    check_equal : iterable of str
        Coordinates or variables that must be identical in an existing store
        (the grid), and attributes ``"<var>.attrs"`` likewise.

    Returns
    -------
    xarray.Dataset
        The store as it now is, opened lazily (lazily indexed variables, not
        dask arrays; :func:`open_store` for dask).

    Raises
    ------
    StoreLayoutError
        If an existing store holds a different grid or an incompatible variable.
    """
    if not exists(cfg):
        logger.info("creating store %s", cfg.url)
        lazy, enc = _metadata_only(template, _with_time_encoding(template, encoding))
        lazy.to_zarr(
            cfg.url,
            mode="w-",
            compute=False,
            encoding=enc,
            zarr_format=3,
            consolidated=False,
            storage_options=cfg.storage_options or None,
        )
        return _open(cfg, decode=True, dask=False)

    recover(cfg)
    existing = _open(cfg, decode=True, dask=False)
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
            grow = _reindexed_like(existing, dim, new)
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
        existing = _open(cfg, decode=True, dask=False)
    if missing_vars:
        lazy, enc = _metadata_only(template[missing_vars], {k: v for k, v in encoding.items() if k in missing_vars})
        add = lazy.reindex({d: existing[d] for d in template.dims if d in existing.dims})
        add.attrs = {**existing.attrs, **template.attrs}
        _metadata_only(add, enc)[0].to_zarr(
            cfg.url,
            mode="a",
            compute=False,
            encoding=enc,
            consolidated=False,
            storage_options=cfg.storage_options or None,
        )
    return _open(cfg, decode=True, dask=False)


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
            old_var, new_var = existing[var], template[var]
            if old_var.shape != new_var.shape or not np.allclose(old_var.values, new_var.values, equal_nan=True):
                raise StoreLayoutError(
                    f"store {cfg.url!r} holds a different grid: {var} has shape {old_var.shape}, "
                    f"wanted {new_var.shape} with other values; use another --store"
                )
    for vname, tvar in template.data_vars.items():
        if vname in existing and existing[vname].dims != tvar.dims:
            raise StoreLayoutError(
                f"store {cfg.url!r} holds {vname} with dims {existing[vname].dims}, not {tvar.dims}"
            )


def _norm(value: Any) -> Any:
    if isinstance(value, (tuple, list, np.ndarray)):
        return [_norm(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return round(float(value), 9)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _reindexed_like(existing: xr.Dataset, dim: str, new: np.ndarray) -> xr.Dataset:
    """Variables of the existing store over the new coordinate values only, as metadata placeholders.

    Only appended as metadata (``compute=False``), so their values are never
    read: each variable is one placeholder dask chunk (see
    :func:`_metadata_only`), whatever the number of new values. The arrays'
    layout (chunks, shards, codecs, fill value) is the existing store's.
    """
    base = existing.drop_vars([v for v in existing.variables if dim not in existing[v].dims and v not in existing.dims])
    sizes = {**base.sizes, dim: new.size}
    grown = xr.Dataset(
        {name: (var.dims, _placeholder(tuple(sizes[d] for d in var.dims), var.dtype), var.attrs)
         for name, var in base.data_vars.items()},
        coords={dim: (dim, new, base[dim].attrs)},
        attrs=base.attrs,
    )
    for name, var in base.variables.items():
        if name in grown.variables:
            grown[name].encoding = dict(var.encoding)
    return grown


def _placeholder(shape: tuple[int, ...], dtype: np.dtype) -> Any:
    """A dask array of ``shape`` and ``dtype`` in one chunk, never computed: only its metadata is read."""
    import dask.array as da

    return da.zeros(shape, dtype=dtype, chunks=shape or -1)


def _metadata_only(ds: xr.Dataset, encoding: dict[str, dict]) -> tuple[xr.Dataset, dict[str, dict]]:
    """``ds`` with every dask-backed variable one placeholder chunk, and the encoding that keeps its layout.

    ``to_zarr(compute=False)`` builds a graph of every dask chunk it would
    store (a template of one chunk per ``(time, lead_time)`` slot: 10^5 tasks,
    ~0.4 GB and minutes at 10^5 slots), which :func:`init_output` never runs.
    Here each variable is one chunk (:func:`_placeholder`), so the metadata
    costs the same whatever the number of slots. The Zarr chunks stay what
    what they would have been: ``encoding[name]["chunks"]`` where given, else
    the variable's own ``encoding["chunks"]`` (a template with one large dask
    chunk names its Zarr chunks there), else its first dask chunk along each
    dim (what xarray takes), checked the way xarray checks it.

    Raises
    ------
    StoreLayoutError
        If a variable without ``encoding["chunks"]`` has dask chunks Zarr cannot take (not uniform).
    """
    import dask.array as da

    enc = {k: dict(v) for k, v in encoding.items()}
    out = ds.copy(deep=False)
    for name, var in ds.variables.items():
        if not isinstance(var.data, da.Array) or name in ds.indexes:
            continue
        # xarray reads a variable's encoding from ``encoding`` where given, from the variable's own otherwise
        given = enc.get(str(name))
        own = dict(var.encoding) if given is None else {}
        chunks = (own if given is None else given).get("chunks") or var.encoding.get("chunks")
        if chunks is None:
            dask_chunks = var.chunks or ()
            if any(c and (len(set(c[:-1])) > 1 or c[-1] > c[0]) for c in dask_chunks):
                raise StoreLayoutError(
                    f"{name}: dask chunks {var.chunks} are not uniform, so they cannot be Zarr's chunks; "
                    "give encoding['chunks'] or rechunk the template"
                )
            chunks = tuple(c[0] if c else 0 for c in dask_chunks)
        (own if given is None else given)["chunks"] = tuple(chunks)
        placeholder = xr.Variable(var.dims, _placeholder(var.shape, var.dtype), var.attrs)
        placeholder.encoding = own
        if name in ds.data_vars:
            out[name] = placeholder
        else:
            out = out.assign_coords({name: placeholder})
    return out, enc


def _rewrite_sorted(
    cfg: StoreConfig, existing: xr.Dataset, dim: str, values: np.ndarray, fill_values: dict | None
) -> None:
    """Rewrite the whole store with ``dim`` reindexed to ``values`` (inserting earlier values)."""
    fs, path = _fs_and_path(cfg)
    tmp_url = cfg.url.rstrip("/") + ".rewrite-tmp"
    tmp_cfg = StoreConfig(url=tmp_url, storage_options=cfg.storage_options)
    raw = _open(cfg, decode=False)
    grown = raw.reindex({dim: values}, fill_value=_raw_fills(raw, fill_values))
    encoding = {}
    for name, var in raw.variables.items():
        # the layout as stored: filters (refc's int16 codec), shards (the per-slot arrays), chunks
        keep = ("chunks", "shards", "filters", "compressors", "fill_value", "dtype")
        enc = {k: v for k, v in var.encoding.items() if k in keep}
        if name in raw.indexes:
            enc.pop("chunks", None)  # a coordinate is written whole, as when the store was made
            enc.pop("shards", None)
            if name == "time":
                enc.update(TIME_ENCODING)  # the same units as appends use, not ones from the new first value
        if name in raw.data_vars and var.chunks:
            # one dask chunk per shard (else per chunk): no two tasks write the same object
            grown[name] = grown[name].chunk(dict(zip(var.dims, enc.get("shards") or enc.get("chunks", ()))))
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
        if fv is None or (var.dtype.kind in "TUSO" and not isinstance(fv, str)):
            # text (reason, source_identity: numpy StringDType) grows with "", not NaN (no common dtype)
            fv = 0 if np.issubdtype(var.dtype, np.integer) else "" if var.dtype.kind in "TUSO" else np.nan
        fills[name] = fv
    return fills
