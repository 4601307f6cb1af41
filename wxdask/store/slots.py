"""``(time, lead_time)`` slots: which are ok (:func:`ok_mask`), slots as rows, stored chunk sizes."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import xarray as xr
import zarr

from wxdask.config import StoreConfig
from wxdask.errors import StoreLayoutError
from wxdask.store.location import _fs_and_path, _group


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
