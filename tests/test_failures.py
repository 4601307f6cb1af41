"""Failures of a real run: workers killed mid-stage, the scheduler unreachable or lost, ``wxdask run`` killed.

Everything here is real: worker *processes* of a ``LocalCluster`` killed with
SIGKILL (their nanny starts new ones), ``dask scheduler``/``dask worker``
subprocesses, the ``wxdask`` command in subprocesses, a synthetic archive on the
local S3 endpoint behind a :class:`~wxdask.testing.FlakyProxy` whose ``delay``
slows every request so that a kill lands in the middle of a run. Each result is
compared with an undisturbed run of the same input.
"""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import xarray as xr
import yaml

from wxdask import embed, ingest
from wxdask.config import Config, StoreConfig
from wxdask.ingest import STATUS
from wxdask.testing import (
    FlakyProxy,
    assert_same_store,
    free_port,
    load_store,
    make_refc_store,
    save_fake_model,
    write_s3_archive,
)

START, END, LEADS = "2019-09-20T00", "2019-09-22T00", (0,)
T = np.datetime64
MISSING = [T("2019-09-20T05", "h")]
CORRUPT = [(T("2019-09-21T03", "h"), 0, "garbage")]
N_SLOTS = 48
N_OK = N_SLOTS - len(MISSING) - len(CORRUPT)
#: A bucket of this module's own, so other modules' archives on the shared endpoint never mix in.
BUCKET = "wxdask-failures"
OUT_BUCKET = "wxdask-failures-out"
#: Give-up limit for things that should happen (not a performance threshold).
WAIT = 180.0
BIN = Path(sys.executable).parent


# ----------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def archive(tmp_path_factory, local_s3):
    """The synthetic archive (bucket directory), also uploaded to this module's bucket on the S3 endpoint."""
    return write_s3_archive(local_s3, tmp_path_factory.mktemp("archive"), START, END, LEADS, bucket=BUCKET,
                            seed=11, missing=MISSING, corrupt=CORRUPT)


@pytest.fixture(scope="module")
def endpoint(local_s3, archive):
    return local_s3.endpoint_url


def _cfg(store_url, endpoint_url) -> Config:
    return Config.from_dict({
        "store": {"url": str(store_url)},
        "ingest": {"start": START, "end": END, "leads": list(LEADS), "source": f"s3://{BUCKET}",
                   "endpoint_url": endpoint_url, "backoff": 0.05},
        "dask": {"progress": False},
    })


def _ingest_args(store_path, endpoint_url) -> list[str]:
    return ["ingest", "--start", START, "--end", END, "--leads", ",".join(map(str, LEADS)),
            "--store", str(store_path), "--source", f"s3://{BUCKET}", "--endpoint-url", endpoint_url]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, endpoint):
    """An undisturbed ingest of the archive, in this process."""
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    ingest.run(_cfg(path, endpoint), None)
    return path


@pytest.fixture(scope="module")
def client(process_client):
    return process_client


def _n_ok(path) -> int:
    """Slots ok in the store (reads ``status`` only)."""
    return int((xr.open_zarr(str(path), consolidated=False)["status"].values == STATUS["ok"]).sum())


def _n_chunks(path, variable: str) -> int:
    root = Path(path) / variable / "c"
    return sum(len(files) for _, _, files in os.walk(root)) if root.exists() else 0


def _wait_until(condition: Callable[[], bool], what: str, alive: Callable[[], bool] = lambda: True,
                limit: float = WAIT) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert alive(), f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} within {limit:.0f} s"
        time.sleep(0.02)


def _kill_busy_worker(client, prefix: str) -> int:
    """SIGKILL the process of a worker that is running a task whose key starts with ``prefix``; its pid."""
    pids = client.run(os.getpid)
    busy: list[str] = []

    def find() -> bool:
        busy[:] = [addr for addr, keys in client.processing().items()
                   if addr in pids and any(str(k).startswith(prefix) for k in keys)]
        return bool(busy)

    _wait_until(find, f"worker running a {prefix}* task")
    os.kill(pids[busy[0]], signal.SIGKILL)
    return pids[busy[0]]


def _assert_replaced(client, pid: int) -> None:
    """The nanny started a new worker process in place of ``pid``."""
    _wait_until(lambda: len(client.scheduler_info(n_workers=-1)["workers"]) == 2 and pid not in
                client.run(os.getpid).values(), "replacement worker")


def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


class DaskProcesses:
    """``dask scheduler`` and one ``dask worker`` (2 threads) as subprocesses on loopback."""

    def __init__(self, logdir: Path) -> None:
        logdir.mkdir(parents=True, exist_ok=True)
        self.logdir = logdir
        self.port, self.dashboard_port = free_port(), free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.procs: dict[str, subprocess.Popen] = {}

    def _start(self, name: str, *args: str) -> None:
        with open(self.logdir / f"{name}.log", "wb") as log:
            self.procs[name] = subprocess.Popen([str(BIN / "dask"), *args], stdout=log, stderr=subprocess.STDOUT,
                                                stdin=subprocess.DEVNULL, start_new_session=True)

    def __enter__(self) -> DaskProcesses:
        from distributed import Client

        try:
            self._start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(self.port),
                        "--dashboard-address", f"127.0.0.1:{self.dashboard_port}")
            self._start("worker", "worker", self.address, "--host", "127.0.0.1", "--nworkers", "1",
                        "--nthreads", "2", "--no-dashboard", "--memory-limit", "2GiB")
            with Client(self.address, timeout=f"{WAIT}s") as c:
                c.wait_for_workers(1, timeout=WAIT)
        except BaseException:
            self.__exit__()
            raise
        return self

    def kill(self, name: str) -> None:
        _kill_group(self.procs[name])
        self.procs[name].wait(timeout=30)

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            _kill_group(proc)
            proc.wait(timeout=30)


def _wxdask(args: list[str], log: Path, **kw) -> subprocess.Popen:
    """``wxdask ARGS`` in a subprocess (its own process group), stdout and stderr to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "wxdask.cli", *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, **kw)


def _finish(proc: subprocess.Popen, log: Path) -> tuple[int, str]:
    try:
        rc = proc.wait(timeout=WAIT)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.wait()
        raise AssertionError(f"still running after {WAIT:.0f} s:\n{log.read_text()[-4000:]}") from None
    return rc, log.read_text()


# ----------------------------------------------------------------------------- workers killed mid-run


def test_worker_killed_mid_ingest_leaves_the_same_store(tmp_path, endpoint, reference, client):
    path = tmp_path / "killed.zarr"
    with FlakyProxy(endpoint, fail_every=10**9, delay=0.1) as proxy, ThreadPoolExecutor(1) as pool:
        run = pool.submit(ingest.run, _cfg(path, proxy.url), client)
        _wait_until(lambda: _n_chunks(path, "refc") >= 6, "6 slots written", lambda: not run.done())
        pid = _kill_busy_worker(client, "ingest-")
        at_kill = _n_ok(path)
        summary = run.result(timeout=WAIT)
    assert 0 < at_kill < N_OK, at_kill
    assert f"{N_SLOTS} slot(s) attempted: 1 absent, 1 corrupt, {N_OK} ok" in summary
    assert_same_store(load_store(path), load_store(reference))
    _assert_replaced(client, pid)


@pytest.fixture(scope="module")
def embed_input(tmp_path_factory):
    """A store made by the real ingest (with a missing and a corrupt slot), and a fake model for its grid."""
    root = tmp_path_factory.mktemp("embed")
    store_cfg = make_refc_store(root / "refc.zarr", START, END, LEADS, grid="coarse", seed=4,
                                missing=MISSING, corrupt=CORRUPT)
    grid = tuple(load_store(store_cfg.url).refc.shape[2:])
    return Path(store_cfg.url), save_fake_model(root / "model", grid, n_latent=8, seed=1)


def _embed_cfg(store_cfg: StoreConfig, model_dir: str) -> Config:
    return Config.from_dict({"store": {"url": store_cfg.url, "storage_options": store_cfg.storage_options},
                             "embed": {"model_dir": model_dir, "batch_size": 2, "images_per_task": 2},
                             "dask": {"progress": False}})


def test_worker_killed_mid_embed_leaves_the_same_store(tmp_path, local_s3, embed_input, client):
    import s3fs

    refc_store, source = embed_input
    # undisturbed, in this process
    ref = tmp_path / "ref.zarr"
    shutil.copytree(refc_store, ref)
    embed.run(_embed_cfg(StoreConfig(url=str(ref)), source.path), None, source=source)

    # the same store on S3, read through a slow proxy, so that chunk tasks take a while
    local_s3.create_bucket(OUT_BUCKET, public=False)
    writer = local_s3.writer_options(public=False)
    fs = s3fs.S3FileSystem(**writer, skip_instance_cache=True)
    files = [p for p in refc_store.rglob("*") if p.is_file()]
    fs.put([str(p) for p in files], [f"{OUT_BUCKET}/embed.zarr/{p.relative_to(refc_store).as_posix()}" for p in files])
    url = f"s3://{OUT_BUCKET}/embed.zarr"
    with FlakyProxy(local_s3.endpoint_url, fail_every=10**9, delay=0.1, match="/refc/c/") as proxy, \
            ThreadPoolExecutor(1) as pool:
        opts = {**writer, "client_kwargs": {"endpoint_url": proxy.url}}
        cfg = _embed_cfg(StoreConfig(url=url, storage_options=opts), source.path)
        run = pool.submit(embed.run, cfg, client, source=source)
        n_written = lambda: sum(m == "PUT" and "/embedding/c/" in p for m, p, _ in list(proxy.requests))  # noqa: E731
        _wait_until(lambda: n_written() >= 3, "3 embedding chunks written", lambda: not run.done())
        pid = _kill_busy_worker(client, "embed-chunk-")
        at_kill = n_written()
        summary = run.result(timeout=WAIT)
    n_chunks = N_SLOTS // 2
    assert 3 <= at_kill < n_chunks, at_kill
    assert f"embedded {N_OK} images" in summary
    opts = {**writer, "client_kwargs": {"endpoint_url": local_s3.endpoint_url}}
    got = load_store(url, storage_options=opts)
    want = load_store(ref)
    assert bool(got.embedding.notnull().all("latent").equals(want.status == STATUS["ok"]))
    assert_same_store(got, want)
    _assert_replaced(client, pid)


# ----------------------------------------------------------------------------- the scheduler, and monitoring


def test_unreachable_scheduler_is_one_red_line_naming_it(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    log = tmp_path / "out.log"
    rc, out = _finish(_wxdask([*_ingest_args(tmp_path / "s.zarr", "http://127.0.0.1:9"), "--scheduler", address],
                              log), log)
    assert rc == 1
    assert out.strip().splitlines() == [out.strip()], out
    assert out.startswith(f"error: cannot reach the Dask scheduler at '{address}'"), out
    assert not (tmp_path / "s.zarr").exists()


def _on_a_terminal(args: list[str]) -> tuple[int, str, str]:
    """``wxdask ARGS`` with stderr on a pseudo-terminal: exit status, stdout, what the terminal showed."""
    master, terminal = pty.openpty()
    seen = bytearray()

    def read() -> None:
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # the other side closed
                return
            if not data:
                return
            seen.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    proc = subprocess.Popen([sys.executable, "-m", "wxdask.cli", *args], stdout=subprocess.PIPE, stderr=terminal,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    os.close(terminal)
    try:
        out, _ = proc.communicate(timeout=WAIT)
    finally:
        _kill_group(proc)
        reader.join(timeout=10)
        os.close(master)
    return proc.returncode, out.decode(errors="replace"), seen.decode(errors="replace")


def test_scheduler_lost_mid_ingest_then_a_rerun_resumes(tmp_path, endpoint, reference):
    path, report = tmp_path / "lost.zarr", tmp_path / "report.html"
    with FlakyProxy(endpoint, fail_every=10**9, delay=0.1) as proxy:
        args = [*_ingest_args(path, proxy.url), "--performance-report", str(report)]
        with DaskProcesses(tmp_path / "first") as first:
            log = tmp_path / "first.log"
            proc = _wxdask([*args, "--scheduler", first.address], log)
            try:
                _wait_until(lambda: _n_chunks(path, "refc") >= 6, "6 slots written", lambda: proc.poll() is None)
                first.kill("scheduler")
                rc, out = _finish(proc, log)
            finally:
                _kill_group(proc)
        # a clear error naming the address, exit 1, no traceback; no report (the scheduler held it)
        assert rc == 1, out
        assert "Traceback" not in out, out
        assert out.strip().splitlines()[-1].startswith(f"error: lost the Dask scheduler at '{first.address}'"), out
        assert "rerun to resume" in out
        assert f"Dask dashboard: http://127.0.0.1:{first.dashboard_port}/status" in out
        assert "no performance report: the scheduler was lost" in out and not report.exists()
        partial = _n_ok(path)
        assert 0 < partial < N_OK

        # the rerun, against a new scheduler, on a terminal: resumes, shows progress, writes the report
        with DaskProcesses(tmp_path / "second") as second:
            rc, out, shown = _on_a_terminal([*args, "--scheduler", second.address])
        assert rc == 0, shown
        assert f"{partial} slot(s) were already ok" in out
        # every slot not ok is attempted again, or kept as recorded (absent, corrupt: objects unchanged)
        attempted = re.search(r"(\d+) slot\(s\) attempted", out)
        kept = re.search(r", (\d+) kept as recorded", out)
        assert (int(attempted.group(1)) if attempted else 0) + (int(kept.group(1)) if kept else 0) \
            == N_SLOTS - partial, out
    assert_same_store(load_store(path), load_store(reference))
    # the dashboard's address and the progress bar on the terminal (stderr); stdout holds only the result
    assert f"Dask dashboard: http://127.0.0.1:{second.dashboard_port}/status" in shown
    assert "100% Completed" in shown, shown
    assert "Completed" not in out and "\r" not in out
    html = report.read_text()
    assert "Dask Performance Report" in html and "ingest" in html


def _one_by_one(marker: Path) -> Callable:
    """A stage that collects its results one by one, as embed and decode do (``as_completed``).

    Its fifth task creates ``marker``: then some tasks are done and most (200 x 0.2 s on 2
    threads) still to run.
    """
    def stage(cfg: Config, client) -> list:
        from distributed import as_completed

        futures = [client.submit(time.sleep, 0.2, pure=False) for _ in range(4)]
        futures.append(client.submit(marker.touch, pure=False))
        futures += [client.submit(time.sleep, 0.2, pure=False) for _ in range(195)]
        return [future.result() for future in as_completed(futures)]

    return stage


def test_scheduler_lost_while_results_come_one_by_one(tmp_path):
    from wxdask.cli import run_stage
    from wxdask.errors import ClusterError

    marker = tmp_path / "started"
    with DaskProcesses(tmp_path) as cluster, ThreadPoolExecutor(1) as pool:
        cfg = Config.from_dict({"dask": {"scheduler": cluster.address, "progress": False}})
        run = pool.submit(run_stage, _one_by_one(marker), cfg)
        _wait_until(marker.exists, "the stage's tasks running", lambda: not run.done())
        cluster.kill("scheduler")
        with pytest.raises(ClusterError, match=f"lost the Dask scheduler at '{cluster.address}'"):
            run.result(timeout=WAIT)


# ----------------------------------------------------------------------------- wxdask run, killed and rerun

EPOCHS = 6


def _pipeline_config(tmp_path: Path, endpoint_url: str) -> Path:
    model = str(tmp_path / "model")
    cfg = {
        "store": {"url": str(tmp_path / "run.zarr")},
        "ingest": {"start": START, "end": END, "leads": list(LEADS), "source": f"s3://{BUCKET}",
                   "endpoint_url": endpoint_url, "backoff": 0.05},
        "model": {"arch": "seed", "n_layers": 2, "pool": 4, "filters": [4, 8], "n_latent": 8},
        "train": {"model_dir": model, "epochs": EPOCHS, "batch_size": 8, "holdout_every": 2},
        "evaluate": {"model_dir": model},
        "embed": {"model_dir": model, "batch_size": 8, "images_per_task": 8},
        "decode": {"model_dir": model},
        "kmeans": {"k": 3},
        "dask": {"progress": False, "n_workers": 2},
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _epochs_done(model_dir: Path) -> int:
    try:
        return int(json.loads((model_dir / "checkpoint.json").read_text())["epochs_done"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_wxdask_run_killed_mid_training_resumes_and_completes(tmp_path, endpoint, reference):
    model_dir, store_path = tmp_path / "model", tmp_path / "run.zarr"
    args = ["run", "--config", str(_pipeline_config(tmp_path, endpoint))]
    procs: list[subprocess.Popen] = []
    with ExitStack() as stack:
        stack.callback(lambda: [_kill_group(p) for p in procs])
        # killed during training, after its first checkpoint and before its last epoch: the process
        # group (the command, its LocalCluster) is stopped first, so the checkpoint read here is the
        # one the rerun finds
        procs.append(_wxdask(args, tmp_path / "run1.log"))
        _wait_until(lambda: _epochs_done(model_dir) >= 1, "first checkpoint", lambda: procs[-1].poll() is None)
        _kill_group(procs[-1], signal.SIGSTOP)
        at_kill = _epochs_done(model_dir)
        _kill_group(procs[-1])
        procs[-1].wait(timeout=30)
        assert 1 <= at_kill < EPOCHS, at_kill
        assert not (model_dir / "metadata.json").exists()
        assert "embedding" not in xr.open_zarr(str(store_path), consolidated=False)

        # started again, it runs to the end
        log = tmp_path / "run2.log"
        procs.append(_wxdask(args, log))
        rc, out = _finish(procs[-1], log)
    assert rc == 0, out
    # nothing fetched again but the slots that are not in the archive as readable files
    assert "nothing to fetch" in out and f"\n{N_OK} slot(s) were already ok, 2 kept as recorded" in out
    assert f"resuming {model_dir} from epoch {at_kill}" in out
    for stage in ("ingest", "train", "evaluate", "embed", "decode", "search", "interpolate", "cluster"):
        assert f"== {stage}\n" in out

    meta = json.loads((model_dir / "metadata.json").read_text())
    assert meta["epochs_done"] == EPOCHS and len(meta["losses"]["loss"]) == EPOCHS
    ds = load_store(store_path)
    want = load_store(reference)
    for name in ("refc", "status", "grib_bytes"):
        xr.testing.assert_identical(ds[name], want[name])
    ok = ds.status == STATUS["ok"]
    assert bool(ds.embedding.notnull().all("latent").equals(ok))  # every ok image embedded, NaN elsewhere
    assert ds.embedding.attrs["model_hash"] == meta["hash"]
    for name in ("neighbor_time", "interp_residual", "cluster"):
        assert name in ds, sorted(ds.data_vars)
