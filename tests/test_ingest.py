"""Ingest end to end: a synthetic archive on a real local S3 endpoint, into Zarr on a LocalCluster."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from wxdask import ingest, store
from wxdask.cli import main
from wxdask.config import Config, StoreConfig
from wxdask.errors import SourceNotFoundError, StoreLayoutError
from wxdask.ingest import STATUS, decode_refc, hrrr_key
from wxdask.s3local import ARCHIVE_BUCKET
from wxdask.testing import FlakyProxy, assert_same_store, load_store, write_s3_archive

START, END, LEADS = "2019-09-20T00", "2019-09-20T12", (0, 1)
T = np.datetime64
MISSING = [T("2019-09-20T05", "h")]
MISSING_IDX = [(T("2019-09-20T07", "h"), 1)]
CORRUPT = [(T("2019-09-20T09", "h"), 0, "garbage"), (T("2019-09-20T10", "h"), 1, "truncated")]
EXPECTED = {
    ("2019-09-20T05", 0): "absent",
    ("2019-09-20T05", 1): "absent",
    ("2019-09-20T07", 1): "missing_idx",
    ("2019-09-20T09", 0): "corrupt",
    ("2019-09-20T10", 1): "corrupt",
}


@pytest.fixture(scope="module")
def archive(tmp_path_factory, local_s3):
    """The synthetic archive (bucket directory), also uploaded to the module's S3 endpoint."""
    return write_s3_archive(local_s3, tmp_path_factory.mktemp("archive"), START, END, LEADS, seed=3,
                            missing=MISSING, missing_idx=MISSING_IDX, corrupt=CORRUPT)


@pytest.fixture(scope="module")
def endpoint(local_s3, archive):
    return local_s3.endpoint_url


@pytest.fixture(scope="module")
def client(process_client):
    return process_client


def _cfg(store_url, endpoint_url, start=START, end=END, leads=LEADS, **ingest_kw):
    return Config.from_dict({
        "store": {"url": str(store_url)},
        "ingest": {"start": start, "end": end, "leads": list(leads), "source": f"s3://{ARCHIVE_BUCKET}",
                   "endpoint_url": endpoint_url, "backoff": 0.05, **ingest_kw},
        "dask": {"progress": False},
    })


def _grib_values(archive, t, lead):
    """The REFC values of a file in the archive, decoded whole from disk with ecCodes."""
    import eccodes

    with open(archive / hrrr_key(T(t, "h"), lead), "rb") as f:
        handle = eccodes.codes_grib_new_from_file(f)
        try:
            nx, ny = eccodes.codes_get(handle, "Nx"), eccodes.codes_get(handle, "Ny")
            return eccodes.codes_get_values(handle).reshape(ny, nx)
        finally:
            eccodes.codes_release(handle)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, endpoint, client):
    """An undisturbed ingest of the whole archive."""
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    summary = ingest.run(_cfg(path, endpoint), client)
    return path, summary


def test_store_values_equal_the_grib_messages(reference, archive):
    path, _ = reference
    ds = load_store(path)
    assert ds.refc.dims == ("time", "lead_time", "y", "x")
    for t in ["2019-09-20T00", "2019-09-20T11"]:
        for lead in LEADS:
            want = _grib_values(archive, t, lead)
            got = ds.refc.sel(time=t, lead_time=lead).values
            np.testing.assert_array_equal(got, want)
    # float32 dBZ in xarray, stored losslessly as int16 sixteenths (what the stages read)
    assert ds.refc.dtype == np.float32
    raw = store.read_region(StoreConfig(url=str(path)), "refc", (slice(None),))
    assert raw.dtype == np.int16
    np.testing.assert_array_equal(raw, np.where(np.isnan(ds.refc.values), -32768, ds.refc.values * 16))
    assert float(ds.refc.min()) == -10.0


def test_orientation_matches_cfgrib(reference, archive):
    path, _ = reference
    ds = load_store(path)
    with xr.open_dataset(archive / hrrr_key(T("2019-09-20T03", "h"), 0), engine="cfgrib",
                         backend_kwargs={"indexpath": "", "filter_by_keys": {"shortName": "refc"}}) as g:
        np.testing.assert_allclose(ds.latitude.values, g.latitude.values, atol=1e-3)
        np.testing.assert_allclose(ds.longitude.values % 360, g.longitude.values % 360, atol=1e-3)
        np.testing.assert_array_equal(ds.refc.sel(time="2019-09-20T03", lead_time=0).values, g.refc.values)
    # row 0 is the southern edge
    assert ds.latitude[0].mean() < ds.latitude[-1].mean()
    assert "southern" in ds.refc.attrs["orientation"]
    assert ds.lambert_conformal.attrs["grid_mapping_name"] == "lambert_conformal_conic"
    assert ds.refc.attrs["grid_mapping"] == "lambert_conformal"


def test_decode_agrees_with_cfgrib_on_the_same_message(archive):
    path = archive / hrrr_key(T("2019-09-20T02", "h"), 1)
    data = path.read_bytes()
    length = int.from_bytes(data[8:16], "big")
    values, grid = decode_refc(data[:length])
    with xr.open_dataset(
        path, engine="cfgrib", backend_kwargs={"indexpath": "", "filter_by_keys": {"shortName": "refc"}}
    ) as g:
        np.testing.assert_array_equal(values / 16.0, g.refc.values)
    assert grid.name == "coarse"


def test_gaps_and_corruption_are_recorded(reference):
    path, summary = reference
    ds = load_store(path)
    names = {v: k for k, v in STATUS.items()}
    for t in ds.time.values:
        for lead in LEADS:
            key = (np.datetime_as_string(t, unit="h"), lead)
            got = names[int(ds.status.sel(time=t, lead_time=lead))]
            assert got == EXPECTED.get(key, "ok"), key
            filled = bool(np.isfinite(ds.refc.sel(time=t, lead_time=lead)).all())
            assert filled == (got == "ok"), key
    assert ds.status.attrs["flag_meanings"].split()[STATUS["corrupt"]] == "corrupt"
    for (t, lead), reason in EXPECTED.items():
        assert f"{t} f{lead:02d}: {reason}" in summary
    assert f"{24 - len(EXPECTED)} ok" in summary


def test_transient_errors_do_not_change_the_result(tmp_path, reference, endpoint, client):
    for mode in ("503", "drop"):
        with FlakyProxy(endpoint, mode=mode, fail_every=4) as proxy:
            path = tmp_path / f"flaky-{mode}.zarr"
            ingest.run(_cfg(path, proxy.url), client)
        assert proxy.failed > 0
        assert_same_store(path, reference[0])


def _fetched(requests):
    """Keys of the ranged GETs (message fetches) in a proxy's request log."""
    return sorted(
        path.split("?")[0] for method, path, rng in requests if method == "GET" and rng and ".idx" not in path
    )


def test_rerun_fetches_only_what_is_missing(tmp_path, reference, endpoint, client):
    path = tmp_path / "grow.zarr"
    with FlakyProxy(endpoint, fail_every=10**9) as proxy:
        ingest.run(_cfg(path, proxy.url, end="2019-09-20T06"), client)
        first = _fetched(proxy.requests)
        n = len(proxy.requests)
        ingest.run(_cfg(path, proxy.url, end="2019-09-20T06"), client)
        again = proxy.requests[n:]
        n = len(proxy.requests)
        ingest.run(_cfg(path, proxy.url), client)
        grown = _fetched(proxy.requests[n:])
    # 6 hours x 2 leads, one hour absent: one ranged GET per present file
    assert len(set(first)) == 10 and len(first) == 10
    # the rerun fetches no message; it only looks again for the absent hour
    assert _fetched(again) == []
    assert {p.split("?")[0].split("/")[-1] for _, p, _ in again if "t05z" not in p} <= {"", ARCHIVE_BUCKET}
    # growing to 12 hours fetches each new message once (the missing-.idx slot has none),
    # and nothing already held
    assert not set(grown) & set(first)
    assert len(set(grown)) == len(grown) == 2 * 6 - 1
    assert_same_store(path, reference[0])


def test_killed_and_rerun_ingest_gives_the_same_store(tmp_path, reference, endpoint):
    path = tmp_path / "killed.zarr"
    # one task per lead (a shard each), status written when its task ends: lead 1's requests are slowed, so
    # lead 0's task is done and lead 1's still running when the kill comes, however fast the fetches are
    with FlakyProxy(endpoint, fail_every=10**9, match="wrfsfcf01.grib2", delay=0.3) as proxy:
        args = [sys.executable, "-m", "wxdask.cli", "ingest", "--start", START, "--end", END, "--leads", "0,1",
                "--store", str(path), "--source", f"s3://{ARCHIVE_BUCKET}", "--endpoint-url", proxy.url,
                "--workers", "2", "-q"]
        proc = subprocess.Popen(args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:  # status is sharded (one object per run day and lead), written every few slots
                written = int((xr.open_zarr(str(path), consolidated=False).status.values == STATUS["ok"]).sum())
            except Exception:  # noqa: BLE001 - the store is being created
                written = 0
            if written >= 4:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        partial = load_store(path)
        assert 0 < int((partial.status == STATUS["ok"]).sum()) < 24 - len(EXPECTED)
        result = CliRunner().invoke(main, args[3:], catch_exceptions=False)
        assert result.exit_code == 0, result.output
    assert_same_store(path, reference[0])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--start", "2019-09-21T00", "--end", "2019-09-20T00"], "must be after"),
        (["--start", "2013-09-20T00", "--end", "2019-09-20T00"], "before the archive starts"),
        (["--start", "2019-09-20T00:30", "--end", "2019-09-21T00"], "on the hour"),
        (["--start", "2019-09-20T00", "--end", "2019-09-21T00", "--leads", "0,99"], "0..48"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(tmp_path, args, match):
    result = CliRunner().invoke(main, ["ingest", "--store", str(tmp_path / "s.zarr"), *args])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], result.output
    assert not (tmp_path / "s.zarr").exists()


def test_unreadable_source_is_reported(tmp_path, local_s3):
    cfg = _cfg(tmp_path / "s.zarr", local_s3.endpoint_url)
    cfg = cfg.replace(ingest={"source": "s3://no-such-bucket"})
    with pytest.raises(SourceNotFoundError, match="no-such-bucket"):
        ingest.run(cfg, None)
    cfg = cfg.replace(ingest={"source": f"s3://{ARCHIVE_BUCKET}", "endpoint_url": "http://127.0.0.1:9", "retries": 1})
    with pytest.raises(Exception, match="127.0.0.1:9|cannot read source"):
        ingest.run(cfg, None)
    assert not (tmp_path / "s.zarr").exists()


def test_store_with_another_grid_or_variable_is_left_intact(tmp_path, reference, endpoint):
    from wxdask import synth

    other = tmp_path / "hrrr-archive"
    synth.write_archive(str(other), "2019-09-20T02", "2019-09-20T03", (0,), grid="hrrr", seed=1)
    path = tmp_path / "coarse.zarr"
    ingest.run(_cfg(path, endpoint, end="2019-09-20T02"), None)
    before = load_store(path)
    cfg = _cfg(path, None, start="2019-09-20T02", end="2019-09-20T03").replace(ingest={"source": str(other)})
    with pytest.raises(StoreLayoutError, match="different grid|grid="):
        ingest.run(cfg, None)
    xr.testing.assert_identical(load_store(path), before)

    foreign = tmp_path / "foreign.zarr"
    xr.Dataset({"temperature": ("t", np.arange(3.0))}).to_zarr(str(foreign), zarr_format=3, consolidated=False)
    with pytest.raises(StoreLayoutError, match="not made by"):
        ingest.run(_cfg(foreign, endpoint, end="2019-09-20T01"), None)
    assert list(load_store(foreign).data_vars) == ["temperature"]


def test_old_level_label_is_read(tmp_path):
    from wxdask import synth

    out = tmp_path / "old"
    synth.write_archive(str(out), "2016-01-01T00", "2016-01-01T02", (0,), grid="coarse", seed=2, old_label=True)
    idx = (out / ARCHIVE_BUCKET / (hrrr_key(T("2016-01-01T00", "h"), 0) + ".idx")).read_text()
    assert "entire atmosphere (considered as a single layer)" in idx
    cfg = _cfg(tmp_path / "old.zarr", None, start="2016-01-01T00", end="2016-01-01T02", leads=(0,))
    ingest.run(cfg.replace(ingest={"source": str(out)}), None)
    assert (load_store(tmp_path / "old.zarr").status == STATUS["ok"]).all()


def test_store_is_read_by_plain_xarray(reference):
    ds = xr.open_zarr(str(reference[0]))
    assert set(ds.data_vars) >= {"refc", "status", "grib_bytes", "lambert_conformal"}
    assert ds.refc.chunks[2:] == ((ds.sizes["y"],), (ds.sizes["x"],))
    assert store.open_store(Config().store.__class__(url=str(reference[0]))).sizes["time"] == 12


@pytest.mark.network
def test_real_archive_one_hour(tmp_path):
    """The real bucket, anonymously: one analysis of 2022-10-14T01 (opt in with --run-network)."""
    from wxdask.grid import HRRR

    cfg = Config.from_dict({
        "store": {"url": str(tmp_path / "real.zarr")},
        "ingest": {"start": "2022-10-14T01", "end": "2022-10-14T02", "leads": [0, 1]},
        "dask": {"progress": False},
    })
    ingest.run(cfg, None)
    ds = load_store(tmp_path / "real.zarr")
    assert (ds.status == STATUS["ok"]).all()
    assert ds.refc.shape[2:] == HRRR.shape
    assert float(ds.refc.min()) == -10.0 and 40 < float(ds.refc.max()) < 90
    assert 0.5 < float((ds.refc == -10).mean()) < 0.99
    assert ds.latitude[0].mean() < ds.latitude[-1].mean()


def _put(local_s3, files):
    import s3fs

    fs = s3fs.S3FileSystem(**local_s3.writer_options(), skip_instance_cache=True)
    for src, key in files:
        fs.put_file(str(src), f"{ARCHIVE_BUCKET}/{key}")


def test_rerun_fetches_no_grib_byte_unless_an_object_changed(tmp_path, reference, endpoint, local_s3, archive, client):
    from wxdask import synth

    path = tmp_path / "rerun.zarr"
    changed = T("2019-09-20T03", "h")
    key = hrrr_key(changed, 0)
    other = tmp_path / "other"
    synth.write_archive(str(other), "2019-09-20T03", "2019-09-20T04", (0,), grid="coarse", seed=11)
    new_files = [(other / ARCHIVE_BUCKET / key, key), (other / ARCHIVE_BUCKET / (key + ".idx"), key + ".idx")]
    with FlakyProxy(endpoint, fail_every=10**9) as proxy:
        ingest.run(_cfg(path, proxy.url), client)
        n = len(proxy.requests)
        summary = ingest.run(_cfg(path, proxy.url), client)
        again = proxy.requests[n:]
        # nothing changed: no GRIB object and no sidecar is read, absent ones included (one listing per day)
        assert summary.startswith("nothing to fetch"), summary
        assert [r for r in again if ".grib2" in r[1]] == []
        assert {p.split("?")[0] for _, p, _ in again} <= {f"/{ARCHIVE_BUCKET}"}
        try:
            _put(local_s3, new_files)
            n = len(proxy.requests)
            ingest.run(_cfg(path, proxy.url), client)
            assert _fetched(proxy.requests[n:]) == [f"/{ARCHIVE_BUCKET}/{key}"]
            n = len(proxy.requests)
            summary = ingest.run(_cfg(path, proxy.url, retry="corrupt"), client)
            assert sorted(_fetched(proxy.requests[n:])) == sorted(
                f"/{ARCHIVE_BUCKET}/{hrrr_key(t, lead)}" for t, lead, _ in CORRUPT
            )
            assert "2 slot(s) attempted: 2 corrupt" in summary
        finally:
            _put(local_s3, [(archive / k, k) for k in (key, key + ".idx")])
    ds, ref = load_store(path), load_store(reference[0])
    np.testing.assert_array_equal(
        ds.refc.sel(time=changed, lead_time=0).values, _grib_values(other / ARCHIVE_BUCKET, "2019-09-20T03", 0)
    )
    assert not np.array_equal(
        ds.refc.sel(time=changed, lead_time=0).values, ref.refc.sel(time=changed, lead_time=0).values
    )
    rest = ds.drop_sel(time=[changed]).drop_vars("source_identity")
    xr.testing.assert_identical(
        rest.drop_attrs(), ref.drop_sel(time=[changed]).drop_vars("source_identity").drop_attrs()
    )


def test_endpoint_dying_mid_ingest_stops_with_one_line_and_a_rerun_resumes(tmp_path, reference, endpoint, client):
    import threading

    from wxdask.errors import SourceError

    path = tmp_path / "dead.zarr"
    proxy = FlakyProxy(endpoint, fail_every=10**9).start()

    def kill_after(n):
        while sum(1 for m, p, r in list(proxy.requests) if m == "GET" and r and ".idx" not in p) < n:
            time.sleep(0.01)
        proxy.kill()

    threading.Thread(target=kill_after, args=(6,), daemon=True).start()
    with pytest.raises(SourceError) as info:
        ingest.run(_cfg(path, proxy.url, retries=2), client)
    message = str(info.value)
    assert "\n" not in message and f"source endpoint {proxy.url} is unreachable" in message and "rerun" in message
    partial = load_store(path)  # the run waited for the tasks it had sent: nothing writes any more
    assert int((partial.status == STATUS["ok"]).sum()) >= 5
    assert int((partial.status == STATUS["failed"]).sum()) >= 3
    ingest.run(_cfg(path, endpoint), client)
    assert_same_store(path, reference[0])
