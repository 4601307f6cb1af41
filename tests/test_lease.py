"""The store's write lease: two real runs on one store, stale leases, remote filesystems."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from click.testing import CliRunner

from wxdask.cli import main
from wxdask.config import Config, StoreConfig
from wxdask.errors import StoreBusyError
from wxdask.lease import LEASE_SUFFIX, StoreLease, lease_url, read_lease
from wxdask.s3local import ARCHIVE_BUCKET
from wxdask.testing import FlakyProxy, assert_one_error_line, file_digests

START, END = "2019-09-20T00", "2019-09-20T12"


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    from wxdask import synth

    out = tmp_path_factory.mktemp("archive")
    synth.write_archive(str(out), START, END, (0,), grid="coarse", seed=7)
    return out


@pytest.fixture(scope="module")
def endpoint(local_s3, archive):
    local_s3.upload_archive(archive / ARCHIVE_BUCKET)
    return local_s3.endpoint_url


@pytest.fixture(scope="module")
def made_store(tmp_path_factory, archive) -> Path:
    from wxdask.testing import make_refc_store

    path = tmp_path_factory.mktemp("made") / "s.zarr"
    make_refc_store(path, START, "2019-09-20T02", (0,), archive_dir=archive)
    return path


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}


def _load(path: Path) -> xr.Dataset:
    with xr.open_zarr(str(path), consolidated=False) as ds:
        return ds.load()


def test_second_writer_is_refused_at_once_and_the_first_completes(tmp_path, endpoint):
    from wxdask import ingest

    path = tmp_path / "s.zarr"
    lease = Path(str(path) + LEASE_SUFFIX)
    common = ["ingest", "--start", START, "--end", END, "--leads", "0", "--store", str(path),
              "--source", f"s3://{ARCHIVE_BUCKET}", "--workers", "1", "-q"]
    with FlakyProxy(endpoint, fail_every=10**9, delay=0.35) as proxy:   # seconds of slow reads
        first = subprocess.Popen([sys.executable, "-m", "wxdask.cli", *common, "--endpoint-url", proxy.url],
                                 env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not lease.exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.poll() is None and lease.exists(), first.communicate()
        holder = json.loads(lease.read_text())
        assert holder["pid"] == first.pid and holder["command"] == "wxdask ingest"
        second = subprocess.run([sys.executable, "-m", "wxdask.cli", *common, "--endpoint-url", endpoint],
                                env=_env(), capture_output=True, text=True, timeout=300, check=False)
        assert second.returncode == 1, second.stderr
        assert_one_error_line(second.stderr, repr(str(path)), "being written by another run", "wxdask ingest",
                              f"host {socket.gethostname()}", f"pid {first.pid}", f"since {holder['since']}")
        assert second.stdout == ""
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    assert "12 ok" in out
    assert not lease.exists()
    # the same as an undisturbed run
    ref = tmp_path / "ref.zarr"
    cfg = Config.from_dict({"store": {"url": str(ref)}, "dask": {"progress": False},
                            "ingest": {"start": START, "end": END, "leads": [0], "source": f"s3://{ARCHIVE_BUCKET}",
                                       "endpoint_url": endpoint}})
    ingest.run(cfg, None)
    got, want = _load(path), _load(ref)
    xr.testing.assert_equal(got, want)
    assert set(got.data_vars) == set(want.data_vars)


def _plant(store: Path, **fields) -> Path:
    path = Path(str(store) + LEASE_SUFFIX)
    now = time.time()
    record = {"run": "planted", "host": "elsewhere.example", "pid": 4242, "command": "wxdask embed",
              "since": "2026-01-01T00:00:00Z", "heartbeat_unix": now, **fields}
    path.write_text(json.dumps(record))
    return path


@pytest.mark.parametrize("case", ["live-foreign", "live-garbage"])
def test_live_lease_refuses_and_leaves_the_store_alone(tmp_path, made_store, archive, case):
    store = tmp_path / "s.zarr"
    shutil.copytree(made_store, store)
    if case == "live-foreign":
        lease = _plant(store)
        needles = ["wxdask embed", "host elsewhere.example", "pid 4242", "since 2026-01-01T00:00:00Z"]
    else:
        lease = Path(str(store) + LEASE_SUFFIX)
        lease.write_text("{half a lea")   # a run that crashed while writing it, or is writing it now
        needles = ["unreadable lease"]
    before, planted = file_digests(store), lease.read_bytes()
    result = CliRunner().invoke(main, ["ingest", "--store", str(store), "--source", str(archive),
                                       "--start", START, "--end", END, "--workers", "1"])
    assert result.exit_code == 1, result.output
    assert_one_error_line(result.stderr, "being written by another run", *needles)
    assert file_digests(store) == before
    assert lease.read_bytes() == planted


@pytest.mark.parametrize("case", ["old-heartbeat", "dead-pid-here", "no-heartbeat"])
def test_dead_runs_lease_is_broken_with_a_warning(tmp_path, made_store, archive, case, caplog):
    store = tmp_path / "s.zarr"
    shutil.copytree(made_store, store)
    if case == "old-heartbeat":
        _plant(store, heartbeat_unix=time.time() - 1000)
        why = "last heartbeat was"
    elif case == "dead-pid-here":
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        _plant(store, host=socket.gethostname(), pid=dead.pid)
        why = f"process {dead.pid} no longer exists"
    else:
        _plant(store, heartbeat_unix=None)
        why = "last heartbeat was inf s ago"
    result = CliRunner().invoke(main, ["ingest", "--store", str(store), "--source", str(archive),
                                       "--start", START, "--end", "2019-09-20T03", "--workers", "1",
                                       "--set", "store.lease_heartbeat=1"])
    assert result.exit_code == 0, result.output
    warnings = [r.getMessage() for r in caplog.records if r.name == "wxdask.lease" and r.levelname == "WARNING"]
    assert len(warnings) == 1 and "breaking the lease" in warnings[0] and why in warnings[0], warnings
    assert "wxdask embed" in warnings[0]
    assert not Path(str(store) + LEASE_SUFFIX).exists()
    assert int(_load(store).time.size) == 3


def test_lease_is_refreshed_and_released_on_failure(tmp_path):
    cfg = StoreConfig(url=str(tmp_path / "s.zarr"), lease_heartbeat=0.1)
    with pytest.raises(RuntimeError, match="boom"):
        with StoreLease(cfg, "wxdask test") as lease:
            first = read_lease(cfg)["heartbeat_unix"]
            deadline = time.monotonic() + 60
            while read_lease(cfg)["heartbeat_unix"] == first and time.monotonic() < deadline:
                time.sleep(0.02)
            assert read_lease(cfg)["heartbeat_unix"] > first
            assert read_lease(cfg)["run"] == lease.record["run"]
            raise RuntimeError("boom")
    assert read_lease(cfg) is None
    assert not os.path.exists(lease_url(cfg))


def test_zarr_and_xarray_ignore_a_held_lease(tmp_path, made_store):
    store = tmp_path / "s.zarr"
    shutil.copytree(made_store, store)
    cfg = StoreConfig(url=str(store))
    with StoreLease(cfg, "wxdask test"):
        assert os.path.exists(lease_url(cfg))
        assert not any(p.name.endswith(LEASE_SUFFIX) for p in store.rglob("*"))
        zarr.consolidate_metadata(str(store))
        ds = xr.open_zarr(str(store))
        assert "refc" in ds
        # a new store beside a held lease can still be created with mode="w-"
        new = tmp_path / "new.zarr"
        with StoreLease(StoreConfig(url=str(new)), "wxdask test"):
            xr.Dataset({"a": ("t", np.arange(3.0))}).to_zarr(str(new), mode="w-", zarr_format=3, consolidated=False)
        assert xr.open_zarr(str(new), consolidated=False).a.size == 3


@pytest.mark.parametrize("url", ["memory://leases/s.zarr", "file://{tmp}/s.zarr"])
def test_lease_on_fsspec_filesystems(tmp_path, url):
    cfg = StoreConfig(url=url.format(tmp=tmp_path), lease_heartbeat=5)
    with StoreLease(cfg, "wxdask one") as one:
        assert read_lease(cfg)["run"] == one.record["run"]
        with pytest.raises(StoreBusyError, match="wxdask one on host .*, pid"):
            StoreLease(cfg, "wxdask two").acquire()
    assert read_lease(cfg) is None
    with StoreLease(cfg, "wxdask two"):
        assert read_lease(cfg)["command"] == "wxdask two"


def test_read_commands_take_no_lease(tmp_path, made_store):
    store = tmp_path / "s.zarr"
    shutil.copytree(made_store, store)
    _plant(store)
    result = CliRunner().invoke(main, ["config", "show", "--set", f"store.url={store}"])
    assert result.exit_code == 0


def test_lease_on_s3_uses_a_conditional_write(local_s3):
    local_s3.create_bucket("leases")
    cfg = StoreConfig(url="s3://leases/s.zarr", storage_options=local_s3.writer_options())
    with StoreLease(cfg, "wxdask one") as one:
        assert read_lease(cfg)["run"] == one.record["run"]
        with pytest.raises(StoreBusyError, match="wxdask one on host"):
            StoreLease(cfg, "wxdask two").acquire()
        assert read_lease(cfg)["run"] == one.record["run"], "the refused writer left the lease alone"
    assert read_lease(cfg) is None
