"""Small real stores: a synthetic archive ingested (:func:`make_refc_store`), or given values (:func:`make_store`).

:func:`make_store` writes them with ingest's own template through
:mod:`wxdask.store`. Also reading one back (:func:`read_raw`, :func:`load_store`)
and comparing two (:func:`assert_same_store`, :func:`file_digests`). Part of
:mod:`wxdask.testing`, which re-exports every name.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from wxdask.config import Config, StoreConfig


def make_refc_store(
    path: str | Path,
    start: str,
    end: str,
    leads: Iterable[int] = (0,),
    grid: str = "coarse",
    seed: int = 0,
    *,
    archive_dir: str | Path | None = None,
    **synth_options: Any,
) -> StoreConfig:
    """Write a synthetic archive and ingest it into a store at ``path``.

    Runs in this process (no cluster) on a local archive directory, through the
    same :func:`wxdask.ingest.run` as the real stage.

    Parameters
    ----------
    path : str or Path
        Where the Zarr store goes.
    start, end : str
        Hourly initialisation times, ``end`` exclusive.
    leads : iterable of int
        Forecast leads.
    grid : {"coarse", "hrrr"}
        Grid of the synthetic archive.
    seed : int
        Seed of the synthetic weather.
    archive_dir : str or Path, optional
        Where the archive is written (a temporary directory by default).
    **synth_options
        Passed to :func:`wxdask.synth.write_archive` (``missing``, ``corrupt``, ...).

    Returns
    -------
    StoreConfig
        Pointing at the new store.
    """
    from wxdask import ingest, synth

    leads = tuple(leads)
    tmp = None
    if archive_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="wxdask-archive-")
        archive_dir = tmp.name
    try:
        synth.write_archive(str(archive_dir), start, end, leads, grid=grid, seed=seed, **synth_options)
        cfg = Config.from_dict({
            "store": {"url": str(path)},
            "ingest": {"start": start, "end": end, "leads": leads, "source": str(archive_dir)},
            "dask": {"progress": False},
        })
        ingest.run(cfg, None)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return cfg.store


def _tiny_grid(grid: Any) -> Any:
    from wxdask.grid import Grid, get_grid

    if isinstance(grid, (str, Grid)):
        return get_grid(grid)
    ny, nx = grid
    return Grid(name="custom", nx=int(nx), ny=int(ny), dx=3000.0, lat1=21.138123, lon1=237.280472)


def make_store(
    path: str | Path,
    times: Any,
    leads: Iterable[int] = (0,),
    *,
    grid: Any = (12, 20),
    refc: Any = None,
    status: Any = None,
    grib_bytes: Any = None,
    embedding: Any = None,
    embedding_attrs: dict | None = None,
    embedding_chunk: int | None = None,
    keep_refc: bool | None = None,
    refc_encoding: dict | None = None,
) -> StoreConfig:
    """A small store with the real layout, built in this process through :mod:`wxdask.store`.

    The ingest stage's own template and encoding (:func:`wxdask.ingest.refc_template`,
    :data:`wxdask.ingest.ENCODING`: int16 ``lead_time``, ``refc`` float32 dBZ stored
    as int16 sixteenths of a dB (:func:`wxdask.store.sixteenths_codec`), one image
    per chunk, per-slot ``status`` chunks) are
    created with :func:`wxdask.store.init_output`; slots are then written as
    :func:`wxdask.ingest.write_slot` writes them (image and ``grib_bytes``
    first, ``status`` last, codes from :data:`wxdask.ingest.STATUS`).

    Parameters
    ----------
    path : str or Path
        Where the Zarr store goes (must not exist).
    times : array-like of datetime64
        Initialisation times (need not be regular).
    leads : iterable of int
        Forecast leads.
    grid : (ny, nx), str or Grid
        A tiny custom Lambert grid of that shape (3 km), or a named grid.
    refc : numpy.ndarray, optional
        ``(time, lead_time, y, x)`` dBZ; a slot whose image is all NaN is not
        written. Without it (and without ``status``) the store has no ``refc``
        variable: the layout of a store that holds only embeddings.
    status : numpy.ndarray, optional
        ``(time, lead_time)`` codes (int) or names (``"ok"``, ``"absent"``, ...).
        Default: ``ok`` where ``refc`` has an image, ``absent`` elsewhere.
    grib_bytes : numpy.ndarray, optional
        ``(time, lead_time)`` message sizes of the ok slots (default 0).
    embedding : numpy.ndarray, optional
        ``(time, lead_time, latent)`` float32, written as the embed stage's
        variable (float32, NaN fill, chunks ``(embedding_chunk, n_leads, n_latent)``).
    embedding_attrs : dict, optional
        Attributes of ``embedding`` (default ``{"model_hash": "fake"}``).
    embedding_chunk : int, optional
        Time chunk of ``embedding`` (default: all times).
    keep_refc : bool, optional
        Whether ``refc`` is kept (default: when ``refc`` or ``status`` is given).
    refc_encoding : dict, optional
        Replaces ingest's int16 packing of ``refc`` (only for oracles that need
        unquantized images, e.g. ``{"dtype": "float32"}``: plain float32, no codec).

    Returns
    -------
    StoreConfig
        Pointing at the new store.
    """
    import numpy as np
    import xarray as xr

    from wxdask import ingest, store

    cfg = StoreConfig(url=str(path))
    times = np.asarray(times).astype("datetime64[ns]")
    leads = tuple(int(v) for v in leads)
    g = _tiny_grid(grid)
    nt, nl = len(times), len(leads)
    template = ingest.refc_template(times, leads, g, source="wxdask.testing.make_store")
    encoding = {k: dict(v) for k, v in ingest.ENCODING.items()}
    if refc_encoding is not None:
        encoding["refc"] = dict(refc_encoding)
    store.init_output(cfg, template, encoding)

    if refc is not None:
        refc = np.asarray(refc, dtype=np.float64)
        if refc.shape != (nt, nl, *g.shape):
            raise ValueError(f"refc must have shape {(nt, nl, *g.shape)}, got {refc.shape}")
        has_image = ~np.isnan(refc).all(axis=(2, 3))
    else:
        has_image = np.zeros((nt, nl), dtype=bool)
    if status is None:
        codes = np.where(has_image, ingest.STATUS["ok"], ingest.STATUS["absent"]) if refc is not None else None
    else:
        status = np.asarray(status)
        codes = (np.vectorize(ingest.STATUS.__getitem__)(status) if status.dtype.kind in "UO" else status)
        codes = np.broadcast_to(codes, (nt, nl)).astype(np.int8)
    sizes = np.zeros((nt, nl), np.int32) if grib_bytes is None else np.broadcast_to(grib_bytes, (nt, nl))
    if codes is not None:
        float_refc = refc_encoding is not None and np.dtype(refc_encoding.get("dtype", "int16")).kind == "f"
        for ti in range(nt):
            for li in range(nl):
                code = int(codes[ti, li])
                values: dict[str, Any] = {}
                if code == ingest.STATUS["ok"] and has_image[ti, li]:
                    img = refc[ti, li]
                    values["refc"] = (img.astype(np.float32) if float_refc
                                      else np.where(np.isnan(img), -32768, np.round(img * 16)).astype(np.int16))
                    values["grib_bytes"] = np.int32(sizes[ti, li])
                values["status"] = np.int8(code)  # last, as the commit mark
                store.write_region(cfg, values, (ti, li))
    if keep_refc is None:
        keep_refc = refc is not None or status is not None
    if not keep_refc:
        store.drop_variables(cfg, ["refc"])

    if embedding is not None:
        import dask.array as da

        e = np.asarray(embedding, dtype=np.float32)
        nz = e.shape[2]
        chunk = min(embedding_chunk or nt, nt)
        data = da.full((nt, nl, nz), np.nan, dtype=np.float32, chunks=(chunk, nl, nz))
        attrs = {"model_hash": "fake"} if embedding_attrs is None else dict(embedding_attrs)
        ds = store.open_store(cfg)
        emb_template = xr.Dataset(
            {"embedding": (("time", "lead_time", "latent"), data, attrs)},
            coords={"time": ds["time"], "lead_time": ds["lead_time"], "latent": np.arange(nz, dtype=np.int32)},
        )
        store.init_output(cfg, emb_template, {"embedding": {"chunks": (chunk, nl, nz), "dtype": "float32",
                                                            "_FillValue": np.float32(np.nan)}})
        store.write_region(cfg, {"embedding": e}, (slice(None),))
    return cfg


def read_raw(cfg: StoreConfig) -> tuple[Any, Any]:
    """``refc`` as stored (int16 sixteenths of a dB) and ``status``, as numpy arrays."""
    from wxdask import store

    store.open_input(cfg, ["refc", "status"])  # names a missing variable
    whole = (slice(None),)
    return store.read_region(cfg, "refc", whole), store.read_region(cfg, "status", whole)


#: Grid of the tiny embed/decode stores.
TINY_GRID = (12, 20)


def make_tiny_store(path: str | Path, nt: int = 7, leads: tuple[int, ...] = (0, 1), grid: tuple[int, int] = TINY_GRID,
                    missing: tuple[tuple[int, int], ...] = ((2, 1), (5, 0)), seed: int = 0) -> StoreConfig:
    """A tiny ingested-like store of random echoes from 2022-06-01T00, hourly; ``missing`` slots are absent.

    Random GRIB message sizes in ``grib_bytes``. Built with :func:`make_store`.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    ny, nx = grid
    nl = len(leads)
    dbz = rng.uniform(-10, 70, size=(nt, nl, ny, nx))
    dbz[dbz < 15] = -10.0
    dbz = np.round(dbz * 16) / 16
    grib = rng.integers(200, 5000, size=(nt, nl)).astype(np.int32)
    for t, lead in missing:
        dbz[t, lead] = np.nan
        grib[t, lead] = 0
    times = pd.date_range("2022-06-01", periods=nt, freq="h").values
    return make_store(path, times, leads, grid=grid, refc=dbz, grib_bytes=grib)


def load_store(path: str | Path, **open_kw: Any) -> Any:
    """The whole store at ``path`` read into memory (``xarray.open_zarr``, unconsolidated)."""
    import xarray as xr

    return xr.open_zarr(str(path), consolidated=False, **open_kw).load()


def assert_same_store(a: Any, b: Any) -> None:
    """Identical variables, coordinates and attributes, apart from the run's own config (paths, endpoints).

    ``a`` and ``b`` are datasets or store paths.
    """
    import xarray as xr

    a = a.copy() if isinstance(a, xr.Dataset) else load_store(a)
    b = b.copy() if isinstance(b, xr.Dataset) else load_store(b)
    for ds in (a, b):
        ds.attrs.pop("wxdask_config", None)
    xr.testing.assert_identical(a, b)


def file_digests(root: str | Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path: compare two to see that nothing was written."""
    import hashlib

    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
