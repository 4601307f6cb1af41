"""The store module: creating, growing and writing without losing what is there."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from wxdask import store
from wxdask.config import StoreConfig
from wxdask.errors import StoreLayoutError


def _template(times, fill=np.nan):
    t = np.asarray(times, dtype="datetime64[ns]")
    return xr.Dataset(
        {"v": (("time", "x"), da.full((len(t), 3), fill, dtype="f4", chunks=(1, 3))),
         "status": (("time",), da.zeros(len(t), dtype="i1", chunks=1))},
        coords={"time": t, "x": np.arange(3.0)},
        attrs={"made_by": "test"},
    )


ENC = {"v": {"fill_value": np.nan}, "status": {"fill_value": 0}}
HOURS = np.arange(np.datetime64("2020-01-01T00", "h"), np.datetime64("2020-01-01T06", "h"))


def test_init_write_region_and_grow_forward(tmp_path):
    cfg = StoreConfig(url=str(tmp_path / "s.zarr"))
    store.init_output(cfg, _template(HOURS[:3]), ENC, check_equal=["x"])
    store.write_region(cfg, {"v": np.ones(3, "f4"), "status": np.int8(1)}, (1,))
    store.set_attrs(cfg, {"note": "kept"})
    ds = store.init_output(cfg, _template(HOURS), ENC, check_equal=["x"])
    assert ds.sizes["time"] == 6
    assert ds.attrs["note"] == "kept"
    np.testing.assert_array_equal(ds.status.values, [0, 1, 0, 0, 0, 0])
    assert np.isnan(ds.v.values[[0, 2, 3, 4, 5]]).all() and (ds.v.values[1] == 1).all()


def test_grow_backwards_rewrites_in_order(tmp_path):
    cfg = StoreConfig(url=str(tmp_path / "s.zarr"))
    store.init_output(cfg, _template(HOURS[3:]), ENC)
    store.write_region(cfg, {"v": np.full(3, 7, "f4"), "status": np.int8(1)}, (0,))
    ds = store.init_output(cfg, _template(HOURS), ENC)
    assert list(ds.time.values.astype("datetime64[h]")) == list(HOURS)
    np.testing.assert_array_equal(ds.status.values, [0, 0, 0, 1, 0, 0])
    assert (ds.v.values[3] == 7).all() and np.isnan(ds.v.values[:3]).all()
    assert not (tmp_path / "s.zarr.rewrite-tmp").exists()


def test_write_variables_keeps_the_store_attributes(tmp_path):
    cfg = StoreConfig(url=str(tmp_path / "s.zarr"))
    store.init_output(cfg, _template(HOURS), ENC)
    store.set_attrs(cfg, {"note": "kept"})
    new = xr.Dataset({"w": ("time", np.arange(6.0))}, coords={"time": HOURS.astype("datetime64[ns]")})
    store.write_variables(cfg, new)
    store.write_variables(cfg, new.assign(w=new.w * 2))
    ds = store.open_store(cfg)
    assert ds.attrs["note"] == "kept" and ds.attrs["made_by"] == "test"
    np.testing.assert_array_equal(ds.w.values, np.arange(6.0) * 2)


def test_mismatches_are_refused(tmp_path):
    cfg = StoreConfig(url=str(tmp_path / "s.zarr"))
    store.init_output(cfg, _template(HOURS), ENC, check_equal=["x"])
    other = _template(HOURS).assign_coords(x=np.arange(3.0) + 1)
    with pytest.raises(StoreLayoutError, match="different grid"):
        store.init_output(cfg, other, ENC, check_equal=["x"])
    bad = xr.Dataset({"w": ("time", np.arange(2.0))}, coords={"time": HOURS[:2].astype("datetime64[ns]")})
    with pytest.raises(StoreLayoutError, match="does not match"):
        store.write_variables(cfg, bad)
    with pytest.raises(StoreLayoutError, match="no variable 'nope'"):
        store.open_input(cfg, ["nope"])
    with pytest.raises(StoreLayoutError, match="no wxdask store"):
        store.open_store(StoreConfig(url=str(tmp_path / "missing.zarr")))
