"""Where the store is, and opening it: location checks, :func:`open_store`, :func:`open_input`, the refc codec."""

from __future__ import annotations

import warnings
from typing import Any, Iterable, Literal

import fsspec
import xarray as xr
import zarr

from wxdask.config import StoreConfig
from wxdask.errors import StoreLayoutError

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


def _group(cfg: StoreConfig, mode: Literal["r", "r+", "a", "w", "w-"] = "r+") -> zarr.Group:
    # never the consolidated metadata: it is stale while a stage adds variables
    return zarr.open_group(cfg.url, mode=mode, storage_options=cfg.storage_options or None, zarr_format=3,
                           use_consolidated=False)
