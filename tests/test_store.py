"""The store module: creating, growing and writing without losing what is there."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr

from wxdask import store
from wxdask.config import StoreConfig
from wxdask.errors import StoreLayoutError
from wxdask.testing import file_digests


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


@pytest.mark.parametrize("chunked", [False, True])
def test_flatten_slots_round_trip(chunked):
    nt, nl, d = 7, 3, 2
    values = np.arange(nt * nl * d, dtype=np.float32).reshape(nt, nl, d)
    times = np.datetime64("2022-06-01T00", "ns") + np.arange(nt).astype("timedelta64[h]")
    emb = xr.DataArray(values, dims=("time", "lead_time", "latent"), coords={"time": times, "lead_time": [0, 3, 6]})
    if chunked:
        emb = emb.chunk({"time": 2, "lead_time": 1})
    rows, t, lead = store.flatten_slots(emb, block_size=6 if chunked else None)
    assert rows.shape == (nt * nl, d)
    if chunked:
        assert rows.chunks[0] == (6, 6, 6, 3)  # whole time steps per chunk
    got = rows.compute()
    for i in range(nt * nl):  # row i is slot (i // n_lead, i % n_lead)
        ti, li = divmod(i, nl)
        np.testing.assert_array_equal(got[i], values[ti, li])
        assert t[i] == times[ti] and lead[i] == [0, 3, 6][li]
    np.testing.assert_array_equal(store.unflatten_slots(rows, (nt, nl)).compute(), values)
    np.testing.assert_array_equal(store.unflatten_slots(got[:, 0], (nt, nl)), values[..., 0])
    with pytest.raises(StoreLayoutError, match="time, lead_time"):
        store.flatten_slots(emb.transpose("lead_time", "time", "latent"))


def test_read_slots_and_ok_mask(tmp_path):
    from wxdask import ingest

    cfg = StoreConfig(url=str(tmp_path / "s.zarr"))
    refc = np.arange(5 * 2 * 3 * 4, dtype=np.int16).reshape(5, 2, 3, 4)
    status = np.full((5, 2), ingest.STATUS["ok"], dtype=np.int8)
    status[1, 1] = ingest.STATUS["absent"]
    ds = xr.Dataset(
        {
            "refc": (("time", "lead_time", "y", "x"), refc),
            "status": (
                ("time", "lead_time"),
                status,
                {"flag_values": list(ingest.STATUS.values()), "flag_meanings": " ".join(ingest.STATUS)},
            ),
        }
    )
    ds.to_zarr(cfg.url, zarr_format=3, consolidated=False)
    ti, li = np.array([4, 0, 1, 2, 3]), np.array([1, 0, 0, 1, 1])
    np.testing.assert_array_equal(store.read_slots(cfg, ti, li), refc[ti, li])
    np.testing.assert_array_equal(store.read_slots(cfg, [3, 1], [1, 1]), refc[[3, 1], 1])
    opened = store.open_input(cfg, ["refc", "status"])
    assert store.ok_mask(opened).tolist() == (status == 1).tolist()
    assert store.ok_code({"flag_values": [0, 7], "flag_meanings": "absent ok"}) == 7

def _ranked(k, value=1.0):
    t = HOURS.astype("datetime64[ns]")
    return xr.Dataset({"n": (("time", "rank"), np.full((6, k), value, "f4")),
                       "m": (("time", "rank"), np.full((6, k), -value, "f4"))},
                      coords={"time": t, "rank": np.arange(1, k + 1)})


def test_write_variables_replaces_a_dim_of_its_own(tmp_path):
    cfg = StoreConfig(url=str(tmp_path / "s.zarr"))
    store.init_output(cfg, _template(HOURS), ENC)
    store.write_variables(cfg, _ranked(3), attrs={"k": 3})
    store.write_variables(cfg, _ranked(5, 2.0), attrs={"k": 5})
    ds = xr.open_zarr(cfg.url)  # consolidated metadata is current
    assert ds.sizes["rank"] == 5 and ds.attrs["k"] == 5 and ds.attrs["made_by"] == "test"
    np.testing.assert_array_equal(ds.n.values, 2.0)
    assert ds.v.shape == (6, 3)
    assert not (tmp_path / "s.zarr.wxdask" / "staging").exists() or not any(
        (tmp_path / "s.zarr.wxdask" / "staging").iterdir())


def test_write_variables_that_fail_leave_the_store_as_it_was(tmp_path):
    cfg = StoreConfig(url=str(tmp_path / "s.zarr"))
    store.init_output(cfg, _template(HOURS), ENC)
    store.write_variables(cfg, _ranked(3))
    before = file_digests(cfg.url)

    def boom(block):
        raise RuntimeError("worker died")

    bad = _ranked(5).chunk({"time": 2})
    bad["n"] = bad.n.copy(data=bad.n.data.map_blocks(boom, dtype="f4"))
    with pytest.raises(RuntimeError, match="worker died"):
        store.write_variables(cfg, bad)
    assert file_digests(cfg.url) == before
    assert store.open_store(cfg).sizes["rank"] == 3


def test_a_commit_killed_midway_is_finished_by_the_next_writer(tmp_path, monkeypatch):
    cfg = StoreConfig(url=str(tmp_path / "s.zarr"))
    store.init_output(cfg, _template(HOURS), ENC)
    store.write_variables(cfg, _ranked(3))
    from fsspec.implementations.local import LocalFileSystem

    real_mv = LocalFileSystem.mv
    calls = []

    def dying_mv(self, src, dst, *args, **kwargs):  # the journal moves first, then one array: then "kill"
        calls.append(src)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_mv(self, src, dst, *args, **kwargs)

    monkeypatch.setattr(LocalFileSystem, "mv", dying_mv)
    with pytest.raises(KeyboardInterrupt):
        store.write_variables(cfg, _ranked(5, 2.0), attrs={"k": 5})
    monkeypatch.setattr(LocalFileSystem, "mv", real_mv)
    store.recover(cfg)
    ds = store.open_store(cfg)
    assert ds.sizes["rank"] == 5 and ds.attrs["k"] == 5
    np.testing.assert_array_equal(ds.n.values, 2.0)
    np.testing.assert_array_equal(ds.m.values, -2.0)
    store.recover(cfg)  # nothing pending: a no-op


def test_write_variables_on_an_object_store(local_s3):
    """The staged commit on S3 (a real server on loopback): copies, then deletes, every object."""
    import s3fs

    opts = local_s3.writer_options()
    local_s3.create_bucket("stores")
    fs = s3fs.S3FileSystem(**opts, skip_instance_cache=True)
    cfg = StoreConfig(url="s3://stores/s.zarr", storage_options=opts)
    store.init_output(cfg, _template(HOURS), ENC)
    store.write_variables(cfg, _ranked(3).chunk({"time": 2}), attrs={"k": 3})
    store.write_variables(cfg, _ranked(5, 2.0).chunk({"time": 2}), attrs={"k": 5})
    ds = store.open_store(cfg)
    assert ds.sizes["rank"] == 5 and ds.attrs["k"] == 5
    np.testing.assert_array_equal(ds.n.values, 2.0)
    fs.invalidate_cache()
    assert not fs.exists("stores/s.zarr.wxdask/staging") or not fs.find("stores/s.zarr.wxdask/staging")
