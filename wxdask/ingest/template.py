"""The store's layout: :func:`refc_template` (variables, coordinates, attributes) and :data:`ENCODING`."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import xarray as xr

from wxdask import store
from wxdask.grid import Grid, grid_mapping_attrs, latlon, projection_xy
from wxdask.ingest.header import STATUS

#: Slots along ``time`` in one shard of the small per-slot arrays (a run day of hourly runs), and in one task.
SHARD_TIMES = 24


# inner chunks of a quarter shard: (1, 1) inner chunks made reading the arrays back ~15x slower
_SLOT_SHARDS = {"chunks": (SHARD_TIMES // 4, 1), "shards": (SHARD_TIMES, 1)}


#: Zarr encoding of the ingest stage's variables. The small per-slot arrays are sharded
#: (``SHARD_TIMES`` x 1 slots per object); one task writes every slot of a shard.
ENCODING: dict[str, dict[str, Any]] = {
    # float32 dBZ for xarray, int16 sixteenths + zstd on disk (the codec, not CF attributes, packs it)
    "refc": {"dtype": "float32", "filters": [store.sixteenths_codec()], "fill_value": np.float32(np.nan)},
    "grib_bytes": {"fill_value": 0, **_SLOT_SHARDS},
    "status": {"fill_value": 0, **_SLOT_SHARDS},
    "grib_start": {"fill_value": 0, **_SLOT_SHARDS},
    "grib_end": {"fill_value": 0, **_SLOT_SHARDS},
    "reason": dict(_SLOT_SHARDS),
    "source_identity": dict(_SLOT_SHARDS),
}


def refc_template(times: np.ndarray, leads: tuple[int, ...], grid: Grid, source: str = "") -> xr.Dataset:
    """The ingest stage's variables, coordinates and attributes, lazily filled.

    Returns
    -------
    xarray.Dataset
        ``refc(time, lead_time, y, x)`` (NaN), ``grib_bytes``, ``status``
        (``not_tried``), ``reason``, ``source_identity``, ``grib_start``,
        ``grib_end``, with ``x``, ``y``, ``latitude``, ``longitude`` and the
        CF grid mapping ``lambert_conformal``. One dask chunk per variable,
        whatever the number of slots: a template to lay out the store with
        :func:`wxdask.store.init_output`, not to compute. The Zarr chunks are
        ``refc``'s ``encoding["chunks"]`` (one image per chunk) and
        :data:`ENCODING`'s (the per-slot arrays' shards).
    """
    import dask.array as da

    nt, nl = len(times), len(leads)
    ny, nx = grid.shape
    x, y = projection_xy(grid)
    lat, lon = latlon(grid)
    text = np.dtypes.StringDType()

    # one dask chunk per variable, never computed: init_output reads names, dims, dtypes and Zarr chunks
    # (a chunk per slot cost 437 MB and 168 s of client graph building at 10^5 slots, growing with the slots)
    def slots(dtype: Any, fill: Any = 0) -> Any:
        return da.full((nt, nl), fill, dtype=dtype, chunks=-1)

    ds = xr.Dataset(
        {
            "refc": (
                ("time", "lead_time", "y", "x"),
                da.full((nt, nl, ny, nx), np.nan, dtype=np.float32, chunks=-1),
                {
                    "long_name": "composite reflectivity (entire atmosphere)",
                    "units": "dBZ",
                    "grid_mapping": "lambert_conformal",
                    "grid": grid.name,
                    "orientation": "row 0 (y index 0) is the southern edge, as HRRR stores it (scanningMode 64)",
                    "encoding_note": "stored losslessly as int16 sixteenths of a dB "
                    "(the GRIB message's 1/16 dB steps, -10 floor kept)",
                    "grib_parameter": "discipline 0, category 16, number 196 (REFC), surface type 10",
                },
            ),
            "grib_bytes": (
                ("time", "lead_time"),
                slots(np.int32),
                {"long_name": "size of the REFC GRIB2 message", "units": "bytes"},
            ),
            "status": (
                ("time", "lead_time"),
                slots(np.int8),
                {
                    "long_name": "why each slot is or is not filled",
                    "flag_values": list(STATUS.values()),
                    "flag_meanings": " ".join(STATUS),
                },
            ),
            "reason": (
                ("time", "lead_time"),
                slots(text, ""),
                {
                    "long_name": "why a slot is not ok: "
                    "'<kind>: <what the slot expected and what was found>' ('' when ok)"
                },
            ),
            "source_identity": (
                ("time", "lead_time"),
                slots(text, ""),
                {
                    "long_name": "identity of the slot's GRIB object and .idx when read: "
                    "'grib=<etag>/<size>;idx=<etag>/<size>' "
                    "('-' when absent); a rerun refetches a slot only when this changed"
                },
            ),
            "grib_start": (
                ("time", "lead_time"),
                slots(np.int64),
                {"long_name": "first byte of the GRIB object read for the slot", "units": "bytes"},
            ),
            "grib_end": (
                ("time", "lead_time"),
                slots(np.int64),
                {"long_name": "end (exclusive) of the byte range read; 0 when nothing was read", "units": "bytes"},
            ),
            "lambert_conformal": ((), np.int32(0), grid_mapping_attrs(grid)),
        },
        coords={
            "time": (
                "time",
                np.asarray(times, dtype="datetime64[ns]"),
                {"long_name": "model initialisation time (UTC)"},
            ),
            "lead_time": (
                "lead_time",
                np.asarray(leads, dtype=np.int16),
                {"long_name": "forecast lead", "units": "hours"},
            ),
            "y": ("y", y, {"standard_name": "projection_y_coordinate", "units": "m"}),
            "x": ("x", x, {"standard_name": "projection_x_coordinate", "units": "m"}),
            "latitude": (("y", "x"), lat.astype(np.float32), {"standard_name": "latitude", "units": "degrees_north"}),
            "longitude": (("y", "x"), lon.astype(np.float32), {"standard_name": "longitude", "units": "degrees_east"}),
        },
        attrs={"title": "HRRR composite reflectivity", "source": source, "wxdask_grid": dataclasses.asdict(grid)},
    )
    ds["refc"].encoding["chunks"] = (1, 1, ny, nx)  # one image per Zarr chunk (ENCODING: codecs, not chunks)
    return ds
