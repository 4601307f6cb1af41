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
from typing import Any, Iterable, Literal, cast

import fsspec
import numpy as np
import xarray as xr
import zarr

from wxdask.config import StoreConfig
from wxdask.errors import StoreLayoutError

__all__ = [
    "exists",
    "check_location",
    "sixteenths_codec",
    "open_store",
    "open_input",
    "init_output",
    "write_region",
    "write_points",
    "open_writer",
    "Writer",
    "write_variables",
    "staging",
    "discard",
    "commit",
    "recover",
    "control_url",
    "read_region",
    "read_slots",
    "stored_array",
    "ok_code",
    "ok_mask",
    "flatten_slots",
    "unflatten_slots",
    "chunk_nbytes",
    "drop_variables",
    "set_attrs",
    "consolidate",
]

logger = logging.getLogger(__name__)

#: Time coordinate encoding shared by every variable (stable under appends).
TIME_ENCODING = {"units": "hours since 1970-01-01 00:00:00", "calendar": "proleptic_gregorian", "dtype": "int64"}

# refc's codec is numcodecs' FixedScaleOffset, which zarr-python (numcodecs is one of its dependencies) reads
# anywhere; zarr warns at each metadata parse that other Zarr implementations may lack it. The README says so once.
warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3 specification",
                        module=r"zarr\.codecs\.numcodecs")


def sixteenths_codec() -> Any:
    """The Zarr codec that stores a float32 array (``refc``, dBZ) as int16 sixteenths of a dB.

    numcodecs' ``FixedScaleOffset`` (scale 16, offset 0, ``astype`` int16), an
    array-to-array codec ahead of the bytes and zstd codecs: the chunks on disk
    are the int16 sixteenths, while :func:`xarray.open_zarr` (or plain
    zarr-python, without wxdask) reads float32 dBZ. Exact for values on the
    1/16 dB lattice within +-2047.9 dB. It cannot store NaN: wxdask writes
    ``refc`` only through :func:`write_region`, as int16 (a slot never written
    or cleared has no chunk, and reads as the fill value NaN).

    Examples
    --------
    >>> sixteenths_codec().codec_config["scale"]
    16
    """
    from zarr.codecs.numcodecs import FixedScaleOffset

    return FixedScaleOffset(offset=0, scale=16, dtype="<f4", astype="<i2")


def _fs_and_path(cfg: StoreConfig) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(cfg.url, **cfg.storage_options)
    return fs, path


def exists(cfg: StoreConfig) -> bool:
    """Whether a Zarr group already exists at ``cfg.url`` (after :func:`check_location`)."""
    fs, path = check_location(cfg)
    return fs.exists(f"{path.rstrip('/')}/zarr.json")


def check_location(cfg: StoreConfig, *, write: bool = False) -> tuple[fsspec.AbstractFileSystem, str]:
    """Refuse a store location that cannot be a store, before anything reads or writes it.

    Checks that a local path is not a plain file and does not lie under one,
    that (with ``write``) the directory that would hold it is writable, and
    that an existing ``zarr.json`` is a readable Zarr group document. A user
    who may not write a directory is caught by ``os.access``; root passes it.

    Returns
    -------
    (fsspec.AbstractFileSystem, str)
        The store's filesystem and path.

    Raises
    ------
    StoreLayoutError
        Naming the path and what is wrong with it.
    """
    import json
    import os

    fs, path = _fs_and_path(cfg)
    root = path.rstrip("/")
    if "file" in fs.protocol or "local" in fs.protocol:
        if os.path.isfile(root):
            raise StoreLayoutError(f"store {cfg.url!r} is a plain file, not a Zarr store directory")
        if not os.path.exists(root):
            above = os.path.dirname(os.path.abspath(root))
            while not os.path.exists(above):
                above = os.path.dirname(above)
            if not os.path.isdir(above):
                raise StoreLayoutError(f"cannot create store {cfg.url!r}: {above!r} is a file, not a directory")
            if write and not os.access(above, os.W_OK | os.X_OK):
                raise StoreLayoutError(f"cannot create store {cfg.url!r}: directory {above!r} is not writable")
        elif write and not os.access(root, os.W_OK | os.X_OK):
            raise StoreLayoutError(f"cannot write store {cfg.url!r}: the directory is not writable")
    meta = f"{root}/zarr.json"
    try:
        raw = fs.cat_file(meta)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return fs, path
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StoreLayoutError(
            f"store {cfg.url!r}: {meta!r} is corrupt (not JSON: {exc}); restore it from a copy, or move the store away"
        ) from None
    if not isinstance(doc, dict) or doc.get("zarr_format") != 3 or doc.get("node_type") != "group":
        raise StoreLayoutError(f"store {cfg.url!r}: {meta!r} is not a Zarr v3 group document")
    return fs, path


def open_store(cfg: StoreConfig, *, dask: bool = True) -> xr.Dataset:
    """Open the whole store lazily, decoded (``refc`` in dBZ, NaN where a slot is not filled).

    ``refc`` comes back as float32 dBZ (a store ingested before the float32
    layout: float64, from its CF ``scale_factor``; re-ingest it to a new store
    for float32). Stages that move compact images read them as stored, int16
    sixteenths of a dB, with :func:`read_slots` or :func:`read_region`.

    Parameters
    ----------
    cfg : StoreConfig
        Where the store is.
    dask : bool
        ``False`` for lazily indexed variables instead of dask arrays: no
        chunk grid is built (``refc`` has one chunk per slot), for a caller
        that reads coordinates, attributes or a few values only.

    Returns
    -------
    xarray.Dataset
        Dask-backed, chunked as stored (``dask=False``: lazily indexed).

    Raises
    ------
    StoreLayoutError
        If there is no Zarr store at ``cfg.url``.
    """
    return _open(cfg, decode=True, dask=dask)


def _open(cfg: StoreConfig, *, decode: bool, dask: bool = True) -> xr.Dataset:
    """:func:`open_store`; ``decode=False`` keeps CF packing as stored (for :func:`_rewrite_sorted` only).

    ``dask=False`` opens lazily indexed variables, no dask arrays: no chunk
    grid (one chunk per ``refc`` slot) is built, for :func:`init_output`.
    """
    if not exists(cfg):
        raise StoreLayoutError(f"no wxdask store at {cfg.url!r}; create it with `wxdask ingest --store {cfg.url}`")
    no_dask: dict[str, Any] = {} if dask else {"chunks": None}  # else open_zarr's default: chunked as stored
    return xr.open_zarr(
        cfg.url,
        consolidated=False,
        storage_options=cfg.storage_options or None,
        mask_and_scale=decode,
        decode_times=True,
        **no_dask,
    )


def open_input(cfg: StoreConfig, variables: Iterable[str]) -> xr.Dataset:
    """Open the store (as :func:`open_store`) and check that it holds ``variables``.

    Raises
    ------
    StoreLayoutError
        Naming the missing variable and the stage that makes it.
    """
    ds = open_store(cfg)
    makers = {"refc": "ingest", "status": "ingest", "embedding": "embed"}
    for name in variables:
        if name not in ds.variables:
            maker = makers.get(name)
            hint = f"; run `wxdask {maker}` first" if maker else ""
            raise StoreLayoutError(
                f"store {cfg.url!r} has no variable {name!r} (it holds {sorted(map(str, ds.data_vars))}){hint}"
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


def _group(cfg: StoreConfig, mode: Literal["r", "r+", "a", "w", "w-"] = "r+") -> zarr.Group:
    # never the consolidated metadata: it is stale while a stage adds variables
    return zarr.open_group(cfg.url, mode=mode, storage_options=cfg.storage_options or None, zarr_format=3,
                           use_consolidated=False)


def _stored(group: zarr.Group, name: str) -> tuple[zarr.Array, bool]:
    """Array ``name`` as stored, and whether that is an integer view below a scale codec (``refc``)."""
    arr = cast("zarr.Array", group[name])
    view = _integer_view(arr)
    return (arr, False) if view is None else (view, True)


def _integer_view(arr: zarr.Array) -> zarr.Array | None:
    """The integers below ``arr``'s leading scale codec (``refc``), or None if it has none.

    ``refc`` is a float32 array in dBZ whose first codec, numcodecs'
    ``FixedScaleOffset`` (scale 16, ``astype`` int16), stores it as int16
    sixteenths of a dB. This view reads and writes those int16 values with the
    rest of the codec chain (bytes, zstd), so stages move compact images with
    no float pass. Its fill value is the integer's minimum (-32768), and an
    image written all at that value is not stored (the chunk is removed), so it
    reads back as NaN in the float32 array. Any other array (an ``refc`` of
    the int16 + ``scale_factor`` layout, a float32 one) has no such view.
    """
    from dataclasses import replace

    from zarr.codecs.numcodecs import FixedScaleOffset
    from zarr.core.array import AsyncArray

    codecs = arr.metadata.codecs if arr.metadata.zarr_format == 3 else ()
    if not codecs or not isinstance(codecs[0], FixedScaleOffset):
        return None
    conf = codecs[0].codec_config
    stored = np.dtype(cast(str, conf.get("astype") or conf["dtype"]))
    if stored.kind != "i" or conf.get("offset", 0) != 0:
        return None
    doc: dict[str, Any] = dict(arr.metadata.to_dict())
    doc.update(data_type=stored.name, fill_value=int(np.iinfo(stored).min), codecs=list(doc["codecs"])[1:])
    raw = AsyncArray(metadata=cast(Any, doc), store_path=arr._async_array.store_path,
                     config=replace(arr._async_array.config, write_empty_chunks=False))
    return zarr.Array(raw)


def _check_stored(name: str, arr: zarr.Array, value: Any) -> None:
    """Refuse a write to a scaled array's integer view ``arr`` that would store a value it does not mean.

    A float (NaN would be cast to an arbitrary integer) is refused; so is an
    image (the last two axes) holding the fill value in some pixels only,
    which would read back as a number (-2048 dBZ), not NaN.
    """
    value = np.asarray(value)
    if value.dtype != arr.dtype:
        raise StoreLayoutError(
            f"{name} is written as stored, {arr.dtype} (int16 sixteenths of a dB for refc), got {value.dtype}; "
            "no float can be written to it (a NaN would become a number)"
        )
    if value.ndim >= 2:
        fill = value == arr.fill_value
        some, every = fill.any(axis=(-2, -1)), fill.all(axis=(-2, -1))
        if np.any(some & ~every):
            raise StoreLayoutError(
                f"{name}: an image holds the fill value {arr.fill_value} in some pixels only; a slot is "
                "either whole (no fill value) or cleared (every pixel the fill value)"
            )


class Writer:
    """Writes to one store's arrays, each opened once (one task's many writes, not one open per write).

    Made by :func:`open_writer`; :func:`write_region` and :func:`write_points` are one-write shorthands.
    Keep one only for the length of a task: it does not see arrays added to the store after it opened them.
    """

    def __init__(self, cfg: StoreConfig) -> None:
        self._group = _group(cfg)
        self._arrays: dict[str, tuple[zarr.Array, bool]] = {}

    def _array(self, name: str, value: Any) -> zarr.Array:
        if name not in self._arrays:
            self._arrays[name] = _stored(self._group, name)
        arr, scaled = self._arrays[name]
        if scaled:
            _check_stored(name, arr, value)
        return arr

    def region(self, values: dict[str, Any], index: tuple) -> None:
        """As :func:`write_region`."""
        for name, value in values.items():
            self._array(name, value)[index] = value

    def points(self, values: dict[str, np.ndarray], index: tuple[np.ndarray, ...]) -> None:
        """As :func:`write_points`."""
        for name, value in values.items():
            self._array(name, value).vindex[index] = value


def open_writer(cfg: StoreConfig) -> Writer:
    """A :class:`Writer` for ``cfg``'s store, to write many regions from one worker task."""
    return Writer(cfg)


def write_region(cfg: StoreConfig, values: dict[str, Any], index: tuple) -> None:
    """Write values as stored (``refc``: int16 sixteenths of a dB) of several variables at one index.

    Called from workers. ``index`` must select whole chunks of every variable
    (e.g. one ``(time, lead_time)`` slot whose image is one chunk), so concurrent
    writers never touch the same chunk.

    Parameters
    ----------
    cfg : StoreConfig
        Where the store is.
    values : dict of str to numpy.ndarray
        Values as stored per variable, written in the order given; an
        ``refc`` image all -32768 clears its slot (it reads back as NaN).
    index : tuple
        Positional index into each variable's leading dims.

    Raises
    ------
    StoreLayoutError
        If an ``refc`` value is not int16, or an image holds -32768 in some
        pixels only (it would read back as a number, not NaN).
    """
    open_writer(cfg).region(values, index)


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
    open_writer(cfg).points(values, index)


def read_region(cfg: StoreConfig, name: str, index: tuple) -> np.ndarray:
    """Read values as stored of one variable, from a worker: the one way stages read raw images.

    The counterpart of :func:`write_region`: no xarray decoding, so ``refc``
    comes back as stored, int16 sixteenths of a dB (from the float32 layout's
    int16 codec, or from an older int16 + ``scale_factor`` store alike).
    Chunks never written read as the variable's fill value (-32768 for
    ``refc``, NaN for float variables).

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
    return np.asarray(_stored(_group(cfg, mode="r"), name)[0].oindex[index])


class _Stored:
    """Array-like over :func:`read_region` (picklable: a config and a name), for :func:`stored_array`."""

    def __init__(self, cfg: StoreConfig, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.cfg, self.name, self.shape, self.dtype, self.ndim = cfg, name, shape, dtype, len(shape)

    def __getitem__(self, index: tuple) -> np.ndarray:
        return read_region(self.cfg, self.name, index)


def stored_array(cfg: StoreConfig, name: str = "refc") -> Any:
    """A variable as stored (``refc``: int16 sixteenths of a dB), lazily: :func:`read_region` per chunk.

    For lazy wrappers that read raw images (the PCA baseline); chunked as
    stored, so one task reads one ``refc`` image.

    Returns
    -------
    dask.array.Array
        Shape of the variable, its stored dtype (int16 for ``refc``, -32768
        where a slot is not filled).
    """
    import dask.array as da

    arr = _stored(_group(cfg, mode="r"), name)[0]
    like = _Stored(cfg, name, tuple(arr.shape), arr.dtype)
    return da.from_array(like, chunks=tuple(arr.chunks), name=False, asarray=True, lock=False,
                         meta=np.empty((0,) * len(arr.shape), dtype=arr.dtype))


def read_slots(cfg: StoreConfig, time_index: np.ndarray, lead_index: np.ndarray, name: str = "refc") -> np.ndarray:
    """Read the stored values (``refc``: int16 images in 1/16 dBZ) of some ``(time, lead)`` slots.

    One orthogonal read per lead (a slice where the times are consecutive),
    straight from Zarr, in this thread; from a worker or from the client.

    Parameters
    ----------
    cfg : StoreConfig
        Where the store is.
    time_index, lead_index : numpy.ndarray
        ``(n,)`` positions of the slots along ``time`` and ``lead_time``.
    name : str
        Variable to read.

    Returns
    -------
    numpy.ndarray
        ``(n, ...)`` raw values, in the order of the slots given.
    """
    time_index = np.asarray(time_index, dtype=np.int64).reshape(-1)
    lead_index = np.asarray(lead_index, dtype=np.int64).reshape(-1)
    out = None
    for lead in np.unique(lead_index):
        rows = np.flatnonzero(lead_index == lead)
        times = time_index[rows]
        contiguous = times.size > 0 and np.all(np.diff(times) == 1)
        sel = slice(int(times[0]), int(times[-1]) + 1) if contiguous else times
        block = read_region(cfg, name, (sel, int(lead)))
        if rows.size == lead_index.size:  # one lead: the block is the answer, no copy
            return block
        if out is None:
            out = np.empty((lead_index.size, *block.shape[1:]), dtype=block.dtype)
        out[rows] = block
    if out is None:
        raise ValueError("read_slots needs at least one slot, got 0")
    return out


def ok_code(status_attrs: dict) -> int:
    """The ``status`` value meaning "ok", from CF ``flag_values``/``flag_meanings``.

    Falls back to :data:`wxdask.ingest.STATUS`, the codes ingest writes.

    Examples
    --------
    >>> ok_code({"flag_values": [0, 3, 2], "flag_meanings": "not_tried ok absent"})
    3
    >>> ok_code({})
    1
    """
    from wxdask.ingest import STATUS

    values = status_attrs.get("flag_values")
    meanings = status_attrs.get("flag_meanings")
    if values is not None and isinstance(meanings, str):
        names = meanings.split()
        values = list(np.atleast_1d(values))
        if "ok" in names and len(names) == len(values):
            return int(values[names.index("ok")])
    return STATUS["ok"]


def ok_mask(ds: xr.Dataset) -> np.ndarray:
    """``(time, lead_time)`` bool: the slot's image is in the store (``status`` is ok).

    Raises
    ------
    StoreLayoutError
        If ``ds`` has no ``status``.
    """
    if "status" not in ds.variables:
        raise StoreLayoutError("the store has no status variable; run `wxdask ingest` first")
    return np.asarray(ds["status"].values) == ok_code(ds["status"].attrs)


def flatten_slots(da_: xr.DataArray, block_size: int | None = None) -> tuple[Any, np.ndarray, np.ndarray]:
    """Rows of a ``(time, lead_time, ...)`` variable, time-major, with each row's time and lead.

    Row ``i`` is slot ``(i // n_lead, i % n_lead)``; :func:`unflatten_slots` undoes it.

    Parameters
    ----------
    da_ : xarray.DataArray
        Dims ``(time, lead_time, ...)``, dask- or numpy-backed.
    block_size : int, optional
        Rechunk to about this many rows per chunk (whole time steps) first.

    Returns
    -------
    rows : dask.array.Array
        ``(n_time * n_lead, ...)``.
    time : numpy.ndarray
        ``(n,)`` initialisation time of each row.
    lead : numpy.ndarray
        ``(n,)`` int64 lead of each row.

    Examples
    --------
    >>> a = xr.DataArray(np.arange(12.0).reshape(2, 3, 2), dims=("time", "lead_time", "latent"),
    ...                  coords={"time": [10, 20], "lead_time": [0, 1, 2]})
    >>> rows, t, lead = flatten_slots(a)
    >>> rows[4].compute().tolist(), t.tolist(), lead.tolist()
    ([8.0, 9.0], [10, 10, 10, 20, 20, 20], [0, 1, 2, 0, 1, 2])
    >>> bool((unflatten_slots(rows, a.shape[:2]).compute() == a.values).all())
    True
    """
    import dask.array as da

    if da_.dims[:2] != ("time", "lead_time"):
        raise StoreLayoutError(f"expected dims (time, lead_time, ...), got {da_.dims}")
    nt, nl = da_.shape[:2]
    data = da_.data if isinstance(da_.data, da.Array) else da.from_array(np.asarray(da_.data))
    if block_size is not None:
        data = data.rechunk({0: max(1, block_size // max(nl, 1)), **{i: -1 for i in range(1, data.ndim)}})
    rows = data.reshape(nt * nl, *data.shape[2:])
    times = np.repeat(da_["time"].values, nl)
    leads = np.tile(da_["lead_time"].values.astype(np.int64), nt)
    return rows, times, leads


def unflatten_slots(rows: Any, shape: tuple[int, int]) -> Any:
    """Rows (time-major, as :func:`flatten_slots` makes them) back to ``(time, lead_time, ...)``."""
    nt, nl = shape
    return rows.reshape(nt, nl, *rows.shape[1:])


def chunk_nbytes(cfg: StoreConfig, name: str) -> np.ndarray:
    """Stored (compressed) size in bytes of every chunk of one variable.

    Returns
    -------
    numpy.ndarray
        int64 over the variable's chunk grid; 0 where a chunk was never
        written. For ``refc`` (one image per chunk) this is the stored size of
        each ``(time, lead_time)`` image.
    """
    arr = cast("zarr.Array", _group(cfg, mode="r")[name])
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


def write_variables(cfg: StoreConfig, ds: xr.Dataset, *, encoding: dict | None = None,
                    attrs: dict | None = None) -> None:
    """Add or replace whole variables (aligned with the store's dims), computing them, atomically.

    The new variables are computed into a staging store beside the store (each
    chunk written by the worker that computes it), then committed with
    :func:`commit`: a failure or a kill before the commit leaves the store as it
    was; a kill during the commit is finished by the next writer
    (:func:`recover`). Readers never see a mix of old and new variables once
    the commit is done. A dimension used only by the replaced variables (``rank``
    after ``search -k`` changes, ``cluster_id`` after ``cluster -k``) may change
    size; dims shared with other variables must match.

    Parameters
    ----------
    cfg : StoreConfig
        Where the store is.
    ds : xarray.Dataset
        New variables (and the coordinates of their dims).
    encoding : dict, optional
        Per-variable encoding for ``to_zarr``.
    attrs : dict, optional
        Store attributes set in the same commit.

    Raises
    ------
    StoreLayoutError
        If a shared dimension does not match the store's.
    """
    recover(cfg)
    existing = open_store(cfg)
    names = [str(v) for v in ds.data_vars]
    keep = set(existing.data_vars) - set(names)
    moved_coords = []
    for dim in ds.dims:
        if dim not in existing.dims:
            if dim in ds.coords:
                moved_coords.append(dim)
            continue
        same = existing.sizes[dim] == ds.sizes[dim] and (
            dim not in ds.coords or dim not in existing.coords
            or np.array_equal(existing[dim].values, ds[dim].values))
        if same:
            continue
        users = sorted(str(v) for v in keep if dim in existing[v].dims)
        if users or dim in ("time", "lead_time"):
            raise StoreLayoutError(
                f"cannot write {', '.join(names)} to {cfg.url!r}: {dim} does not match the store's"
                + (f" (also used by {', '.join(users)})" if users else "")
            )
        moved_coords.append(dim)
    out = ds.drop_vars([c for c in ds.coords if c not in moved_coords and c not in ds.dims])
    staged = staging(cfg)
    try:
        out.attrs = {}
        out.to_zarr(staged.url, mode="w-", encoding=encoding or {}, zarr_format=3, consolidated=False,
                    storage_options=staged.storage_options or None)
    except BaseException:
        discard(staged)
        raise
    for name in names:
        if name in existing.data_vars:
            logger.info("replacing %s in %s", name, cfg.url)
    commit(cfg, staged, names + [str(c) for c in moved_coords if c in out.variables], attrs=attrs)


# ----------------------------------------------------------------------------- staged commits
# Beside the store (never inside it: zarr warns about foreign objects in a group), one control
# directory ``<store>.wxdask/`` holds staging stores and the commit journal.

_JOURNAL = "commit.json"


def control_url(cfg: StoreConfig) -> str:
    """URL of the store's control directory (staging stores, the commit journal)."""
    return cfg.url.rstrip("/") + ".wxdask"


def staging(cfg: StoreConfig) -> StoreConfig:
    """A fresh, empty staging location for new variables of ``cfg``'s store."""
    import uuid

    return StoreConfig(url=f"{control_url(cfg)}/staging/{uuid.uuid4().hex[:12]}",
                       storage_options=cfg.storage_options)


def _remove(cfg: StoreConfig) -> None:
    fs, path = _fs_and_path(cfg)
    fs.invalidate_cache(path)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def discard(staged: StoreConfig) -> None:
    """Remove a staging store (from :func:`staging`) that will not be committed.

    Never raises: a task of the failed computation may still be writing into it
    (the next writer's :func:`recover` removes what is left).
    """
    try:
        _remove(staged)
    except OSError as exc:
        logger.warning("could not remove the staging store %s yet (%s); the next run removes it", staged.url, exc)


def commit(cfg: StoreConfig, staged: StoreConfig, names: Iterable[str], *, attrs: dict | None = None,
           drop: Iterable[str] = ()) -> None:
    """Move the arrays ``names`` of the staging store ``staged`` into the store, replacing any.

    First a journal naming the move is written (one small object: the commit
    point); then the arrays ``drop`` are deleted (those the new ones make
    inconsistent), each array is moved, the store's attributes updated, the
    metadata consolidated, and the journal and staging store removed. A kill
    after the journal is written is finished by :func:`recover`.
    """
    import json

    fs, ctl = fsspec.core.url_to_fs(control_url(cfg), **cfg.storage_options)
    journal = {"staging": staged.url, "names": list(names), "attrs": attrs or {}, "drop": list(drop)}
    tmp = f"{ctl}/{_JOURNAL}.tmp"
    fs.makedirs(ctl, exist_ok=True)
    with fs.open(tmp, "w") as f:
        json.dump(journal, f)
    fs.mv(tmp, f"{ctl}/{_JOURNAL}")
    _apply(cfg, journal)


def recover(cfg: StoreConfig) -> None:
    """Finish a commit that a killed writer left half done (no-op when none is pending)."""
    import json

    fs, ctl = fsspec.core.url_to_fs(control_url(cfg), **cfg.storage_options)
    path = f"{ctl}/{_JOURNAL}"
    if not fs.exists(path):
        if fs.exists(f"{ctl}/staging"):  # a killed writer's staging stores: never committed
            for orphan in fs.ls(f"{ctl}/staging", detail=False):
                logger.info("removing %s, left by a run that did not finish", orphan)
                fs.rm(orphan, recursive=True)
        return
    with fs.open(path) as f:
        journal = json.load(f)
    logger.warning("finishing an interrupted write of %s to %s", ", ".join(journal["names"]), cfg.url)
    _apply(cfg, journal)


def _move_array(fs: fsspec.AbstractFileSystem, src: str, dst: str) -> None:
    """Move one array's objects from ``src`` to ``dst`` (replacing ``dst``); safe to repeat after a kill.

    A local directory is renamed. On an object store every object is copied
    first, then the source's ``zarr.json`` is deleted (from then on the move is
    done: a repeat skips it), then the rest of the source.
    """
    if fs.exists(dst):
        fs.rm(dst, recursive=True)
    if "file" in fs.protocol or "local" in fs.protocol:
        fs.mv(src, dst, recursive=True)
        return
    fs.invalidate_cache()
    keys = sorted(fs.find(src), key=lambda k: k.endswith("/zarr.json"))  # metadata last
    for key in keys:
        fs.copy(key, dst + key[len(src):])
    fs.rm(f"{src}/zarr.json")
    rest = [k for k in keys if not k.endswith(f"{src}/zarr.json")]
    if rest:
        fs.rm(rest)
    fs.invalidate_cache()


def _apply(cfg: StoreConfig, journal: dict) -> None:
    """Carry out a journal's move; safe to repeat after a kill at any point."""
    fs, path = _fs_and_path(cfg)
    fs.invalidate_cache()  # workers wrote the staging store: this process's listings are stale
    staged = StoreConfig(url=journal["staging"], storage_options=cfg.storage_options)
    _, src_root = _fs_and_path(staged)
    for name in journal.get("drop", ()):
        if fs.exists(f"{path.rstrip('/')}/{name}"):
            logger.info("deleting %s from %s", name, cfg.url)
            fs.rm(f"{path.rstrip('/')}/{name}", recursive=True)
    for name in journal["names"]:
        src, dst = f"{src_root}/{name}", f"{path.rstrip('/')}/{name}"
        if not fs.exists(f"{src}/zarr.json"):
            continue  # moved already
        _move_array(fs, src, dst)
    if journal["attrs"]:
        _group(cfg).attrs.update(journal["attrs"])
    consolidate(cfg)
    _, ctl = fsspec.core.url_to_fs(control_url(cfg), **cfg.storage_options)
    fs.rm(f"{ctl}/{_JOURNAL}")
    _remove(staged)


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
