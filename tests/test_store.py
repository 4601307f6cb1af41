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


# ----------------------------------------------------------------------------- refc: float32 dBZ, int16 on disk

REFC_TIMES = np.datetime64("2022-06-01T00", "h") + np.arange(4).astype("timedelta64[h]")


def _refc_store(path, **kw):
    from wxdask.testing import make_store

    refc = np.full((4, 1, 4, 5), -10.0)
    refc[0, 0, 1, 2], refc[1, 0, 3, 4] = 33.5625, 71.9375
    refc[2] = np.nan  # not filled
    return make_store(path, REFC_TIMES, (0,), grid=(4, 5), refc=refc, **kw), refc


def test_refc_opens_as_float32_dbz_and_is_int16_sixteenths_as_stored(tmp_path):
    import zarr

    cfg, refc = _refc_store(tmp_path / "s.zarr")
    ds = xr.open_zarr(cfg.url, consolidated=False)  # plain xarray: no wxdask code on the read path
    assert ds.refc.dtype == np.float32
    np.testing.assert_array_equal(ds.refc.values, refc.astype(np.float32))  # NaN where not filled, exact elsewhere
    arr = zarr.open_array(f"{cfg.url}/refc", mode="r")
    assert arr.dtype == np.float32 and np.isnan(arr.fill_value)
    codecs = arr.metadata.to_dict()["codecs"]
    assert [c["name"] for c in codecs] == ["numcodecs.fixedscaleoffset", "bytes", "zstd"]
    assert codecs[0]["configuration"] == {"offset": 0, "scale": 16, "dtype": "<f4", "astype": "<i2"}
    assert "scale_factor" not in ds.refc.attrs and "scale_factor" not in ds.refc.encoding
    # the stages' raw read: int16 sixteenths, -32768 where not filled, eagerly and lazily alike
    raw = store.read_region(cfg, "refc", (slice(None),))
    assert raw.dtype == np.int16
    np.testing.assert_array_equal(raw, np.where(np.isnan(refc), -32768, refc * 16).astype(np.int16))
    np.testing.assert_array_equal(store.read_slots(cfg, [1, 0], [0, 0]), raw[[1, 0], 0])
    lazy = store.stored_array(cfg)
    assert lazy.dtype == np.int16 and lazy.chunks[2:] == ((4,), (5,))
    np.testing.assert_array_equal(lazy.compute(), raw)
    assert store.chunk_nbytes(cfg, "refc")[2].sum() == 0  # nothing stored for a slot never filled


def test_refc_writes_refuse_what_would_not_read_back(tmp_path):
    """A NaN can never become a number: floats are refused, and so is -32768 in part of an image."""
    from numcodecs import FixedScaleOffset

    # what the guard is for: the codec's own encode turns NaN into an integer, and -32768 into -2048 dBZ
    codec = FixedScaleOffset(offset=0, scale=16, dtype="<f4", astype="<i2")
    with np.errstate(invalid="ignore"):
        assert np.isfinite(codec.decode(codec.encode(np.array([np.nan, 1.0], np.float32)))).all()
    cfg, _ = _refc_store(tmp_path / "s.zarr")
    image = np.full((4, 5), np.nan, np.float32)
    with pytest.raises(StoreLayoutError, match="int16 sixteenths of a dB for refc.*got float32"):
        store.write_region(cfg, {"refc": image}, (3, 0))
    partial = np.full((4, 5), -160, np.int16)
    partial[0, 0] = -32768
    with pytest.raises(StoreLayoutError, match="fill value -32768 in some pixels only"):
        store.write_region(cfg, {"refc": partial}, (3, 0))
    np.testing.assert_array_equal(store.open_store(cfg).refc.values[3, 0], -10.0)  # left as it was
    # clearing a slot (every pixel -32768, as ingest clears one) removes its image: NaN again
    store.write_region(cfg, {"refc": np.full((4, 5), -32768, np.int16)}, (3, 0))
    assert store.chunk_nbytes(cfg, "refc")[3].sum() == 0
    assert np.isnan(store.open_store(cfg).refc.values[3, 0]).all()


def test_a_whole_refc_image_is_written_past_zarr_indexing_as_zarr_writes_it(tmp_path, monkeypatch):
    """The fast path (the array's own codecs, then the store) leaves the very bytes zarr's indexing would."""
    from wxdask.store import region

    image = np.arange(20, dtype=np.int16).reshape(4, 5) - 160
    digests = []
    for name, fast in (("fast", True), ("zarr", False)):
        if not fast:
            monkeypatch.setattr(region, "_put_chunk", lambda *a: False)
        cfg, _ = _refc_store(tmp_path / f"{name}.zarr")
        if fast:
            arr = region._stored(region._group(cfg), "refc")[0]
            assert region._put_chunk(arr, image, (3, 0))  # taken: one whole chunk
            assert not region._put_chunk(arr, image[:2], (3, 0))  # not a whole chunk
            assert not region._put_chunk(arr, np.full((4, 5), -32768, np.int16), (3, 0))  # the fill value
            assert not region._put_chunk(arr, image, (4, 0))  # out of range: zarr's indexing raises
        for k in (2, 3):
            store.write_region(cfg, {"refc": image}, (k, 0))
        np.testing.assert_array_equal(store.read_region(cfg, "refc", (2, 0)), image)
        np.testing.assert_array_equal(store.open_store(cfg).refc.values[3, 0], image / 16.0)
        digests.append({k: v for k, v in file_digests(cfg.url).items() if "refc/c/" in k})
    assert digests[0] == digests[1] and len(digests[0]) == 4


def test_refc_keeps_its_codec_when_the_store_grows_backwards(tmp_path):
    from wxdask import ingest
    from wxdask.testing import _tiny_grid

    def template(times):
        return ingest.refc_template(times.astype("datetime64[ns]"), (0,), _tiny_grid((4, 5)))

    cfg = StoreConfig(url=str(tmp_path / "s.zarr"))
    store.init_output(cfg, template(REFC_TIMES), ingest.ENCODING)
    image = np.full((4, 5), -160, np.int16)
    image[1, 2] = 537
    text = np.dtypes.StringDType()
    store.write_region(cfg, {"refc": image, "status": np.int8(1)}, (1, 0))
    store.write_region(cfg, {"reason": np.array("absent: no object", dtype=text)}, (2, 0))
    earlier = np.concatenate([REFC_TIMES[:1] - np.timedelta64(2, "h"), REFC_TIMES])
    ds = store.init_output(cfg, template(earlier), ingest.ENCODING)  # text arrays too (StringDType, grown with "")
    assert ds.sizes["time"] == 5 and ds.refc.dtype == np.float32
    np.testing.assert_array_equal(ds.refc.values[2, 0], image / 16)
    assert np.isnan(ds.refc.values[[0, 1, 3, 4]]).all()
    assert ds.reason.values[:, 0].tolist() == ["", "", "", "absent: no object", ""]
    raw = store.read_region(cfg, "refc", (slice(None),))
    assert raw.dtype == np.int16 and (raw[2, 0] == image).all()  # still the int16 codec
    assert store.chunk_nbytes(cfg, "refc")[[0, 1, 3, 4]].sum() == 0
    # the same layout (shards, codecs, time units) as a store made over the grown times at once
    fresh = StoreConfig(url=str(tmp_path / "fresh.zarr"))
    store.init_output(fresh, template(earlier), ingest.ENCODING)
    assert _layout(cfg) == _layout(fresh)


def _layout(cfg):
    """Every ``zarr.json`` of a store (its whole layout: shapes, chunks, shards, codecs, fill values, attrs)."""
    import json
    from pathlib import Path

    root = Path(cfg.url)
    return {str(p.relative_to(root)): json.loads(p.read_text()) for p in root.rglob("zarr.json")}


def _ingest_template(nt, leads=(0, 1)):
    from wxdask import ingest
    from wxdask.testing import _tiny_grid

    times = np.datetime64("2020-01-01T00", "ns") + np.arange(nt).astype("timedelta64[h]")
    return ingest.refc_template(times, leads, _tiny_grid((4, 5)))


def test_init_output_layout_is_the_one_of_a_template_chunked_per_slot(tmp_path):
    """One dask chunk per variable lays out the same store as one per slot (the Zarr chunks, shards, codecs)."""
    from wxdask import ingest

    tpl = _ingest_template(50)
    assert all(v.data.npartitions == 1 for v in tpl.data_vars.values() if v.chunks)
    cfg = StoreConfig(url=str(tmp_path / "s.zarr"))
    store.init_output(cfg, tpl, ingest.ENCODING)
    # what init_output used to write: xarray's own to_zarr of a template with one image per dask chunk
    per_slot = tpl.chunk({"time": 1, "lead_time": 1})
    for name in ("grib_bytes", "status", "reason", "source_identity", "grib_start", "grib_end"):
        per_slot[name] = per_slot[name].chunk({"time": 24})
    per_slot["refc"].encoding = {}
    old = tmp_path / "old.zarr"
    per_slot.to_zarr(old, mode="w-", compute=False, zarr_format=3, consolidated=False,
                     encoding={**ingest.ENCODING, "time": dict(store.TIME_ENCODING)})
    assert _layout(cfg) == _layout(StoreConfig(url=str(old)))


def test_init_output_work_does_not_grow_with_the_slots(tmp_path, monkeypatch):
    """Creating, growing forward and adding variables build the same graph at 50 slots as at 5,000."""
    from wxdask import ingest

    tasks: list[int] = []
    to_zarr = xr.Dataset.to_zarr

    def counting(self, *args, **kwargs):
        out = to_zarr(self, *args, **kwargs)
        tasks.append(len(out.__dask_graph__()) if out is not None else 0)
        return out

    monkeypatch.setattr(xr.Dataset, "to_zarr", counting)

    def work(nt, label):
        tasks.clear()
        cfg = StoreConfig(url=str(tmp_path / f"{label}.zarr"))
        store.init_output(cfg, _ingest_template(10), ingest.ENCODING)  # create
        store.init_output(cfg, _ingest_template(nt), ingest.ENCODING)  # grow forward
        extra = _ingest_template(nt)[["status"]].rename(status="flag")
        store.init_output(cfg, extra, {"flag": {"fill_value": 0, "chunks": (6, 1), "shards": (24, 1)}})  # add
        assert store.open_store(cfg).sizes["time"] == nt
        return list(tasks)

    small, large = work(50, "small"), work(5000, "large")
    assert len(small) == 3 and small == large
    assert max(large) < 50  # a few tasks per variable, not one per slot


def test_a_store_of_the_int16_scale_factor_layout_still_reads(tmp_path):
    """Stores ingested before the float32 layout: xarray decodes float64 (CF), raw reads are the same int16."""
    old = {"dtype": "int16", "scale_factor": 1 / 16, "_FillValue": np.int16(-32768), "fill_value": -32768}
    cfg, refc = _refc_store(tmp_path / "old.zarr", refc_encoding=old)
    ds = store.open_store(cfg)
    assert ds.refc.dtype == np.float64
    np.testing.assert_array_equal(ds.refc.values, refc)
    raw = store.read_slots(cfg, [0, 1, 2], [0, 0, 0])
    assert raw.dtype == np.int16 and (raw[2] == -32768).all()
    np.testing.assert_array_equal(raw[:2], (refc[:2, 0] * 16).astype(np.int16))
