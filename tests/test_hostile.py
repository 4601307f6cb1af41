"""Hostile and careless input through the real CLI: one red line, exit 1, no traceback, the store unchanged.

Also: secrets never recorded or logged, the local cluster bound to loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from wxdask.cli import main
from wxdask.s3local import ARCHIVE_BUCKET
from wxdask.testing import assert_one_error_line, file_digests

START, END = "2019-09-20T00", "2019-09-20T04"


def wxdask(*args: str, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """The real command in a fresh interpreter (this tree first on the path)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "wxdask.cli", *args], capture_output=True, text=True, check=False,
                          env=env, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """A small synthetic archive in a local directory (the ``--source``)."""
    from wxdask import synth

    out = tmp_path_factory.mktemp("archive")
    synth.write_archive(str(out), START, END, (0,), grid="coarse", seed=5)
    return out


@pytest.fixture(scope="module")
def made_store(tmp_path_factory, archive) -> Path:
    """A store ingested from ``archive``, never written again (tests copy it or hash it)."""
    from wxdask.testing import make_refc_store

    path = tmp_path_factory.mktemp("made") / "s.zarr"
    make_refc_store(path, START, END, (0,), archive_dir=archive)
    return path


def _ingest_args(store: Path | str, archive: Path) -> list[str]:
    return ["ingest", "--store", str(store), "--source", str(archive), "--start", START, "--end", END,
            "--workers", "1"]


# ----------------------------------------------------------------------------- 1. config types

BAD_SETTINGS = [
    (["--set", "dask.memory_limit=lots"], ["dask.memory_limit", "'lots'"]),
    (["--set", "ingest.leads={a: 1}"], ["leads must be a list"]),
    (["--set", "ingest.leads=1.5"], ["leads must be"]),
    (["--set", "store.storage_options=5"], ["store.storage_options must be a mapping", "got a value of type int"]),
    (["--set", "train.model_dir=5"], ["train.model_dir must be a non-empty path", "5"]),
    (["--set", "kmeans.plot=[a, b]"], ["kmeans.plot"]),
    (["--set", "ingest.anon=maybe"], ["ingest.anon must be true or false", "'maybe'"]),
    (["--set", "dask.progress=1"], ["dask.progress must be true or false"]),
    (["--set", "ingest.source=[unclosed"], ["not valid YAML", "ingest.source"]),
    (["--set", "nodot=1"], ["section.key"]),
    (["--set", "train.epochs=3", "--set", "train.epochs.deeper=1"], ["train.epochs is 3, not a mapping"]),
    (["--set", "store.storage_options.key=x"], ["plain local path"]),
    (["--set", "search.exclude_window=[24h]"], ["search.exclude_window must look like 24h"]),
    (["--set", "search.lead=true"], ["search.lead"]),
    (["--endpoint-url", "localhost:9000"], ["endpoint_url must be an http:// or https:// URL", "'localhost:9000'"]),
    (["--endpoint-url", "ftp://127.0.0.1:21"], ["ingest.endpoint_url must be an http:// or https:// URL"]),
    (["--endpoint-url", "http://127.0.0.1:nine"], ["numeric port", "'http://127.0.0.1:nine'"]),
    (["--endpoint-url", "http://AKIAEXAMPLE:s3cr3t@127.0.0.1:9"], ["holds credentials", "not echoed"]),
    (["--scheduler", "foo://x:1"], ["'foo://x:1'", "unknown scheme 'foo'"]),
    (["--scheduler", "tcp://host"], ["'tcp://host'", "no port"]),
    (["--scheduler", "tcp://host:http"], ["no valid port"]),
]


@pytest.mark.parametrize(("args", "needles"), BAD_SETTINGS, ids=[" ".join(a) for a, _ in BAD_SETTINGS])
def test_bad_setting_is_one_line_and_store_unchanged(made_store, archive, args, needles):
    before = file_digests(made_store)
    result = CliRunner().invoke(main, [*_ingest_args(made_store, archive), *args])
    assert result.exit_code == 1, result.output
    assert_one_error_line(result.stderr, *needles)
    assert result.stdout == ""
    assert file_digests(made_store) == before


def test_credentials_in_the_endpoint_url_are_not_echoed(made_store, archive):
    result = CliRunner().invoke(main, [*_ingest_args(made_store, archive), "--endpoint-url",
                                       "https://AKIAEXAMPLE:s3cr3t@s3.example.com"])
    assert result.exit_code == 1
    assert "s3cr3t" not in result.output and "AKIAEXAMPLE" not in result.output


@pytest.mark.parametrize(("url", "needle"), [("127.0.0.1:9000", "'127.0.0.1:9000'"),
                                             ("http://AKIAEXAMPLE:s3cr3t@127.0.0.1:9", "not echoed")])
def test_synth_refuses_a_bad_endpoint_url_before_writing(tmp_path, url, needle):
    result = CliRunner().invoke(main, ["synth", "--start", "2019-09-20T00", "--end", "2019-09-20T01",
                                       "--out", "s3://bucket", "--endpoint-url", url])
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, "--endpoint-url", needle)
    assert "s3cr3t" not in result.output


BAD_FILES = [
    ("store: [unclosed\n", ["not valid YAML"]),
    ("- just\n- a list\n", ["must hold a mapping"]),
    ("store: [a, b]\n", ["section 'store' must be a mapping"]),
    ("ingest:\n  leads: 5.5\n", ["leads must be"]),
    ("ingest:\n  backoff: 2013-01-01 00:00:00\n", ["ingest.backoff must be a number"]),
    ("dask:\n  threads_per_worker: two\n", ["dask.threads_per_worker must be a positive int"]),
    ("dask:\n  memory_limit: [4GiB]\n", ["dask.memory_limit"]),
    ("store:\n  storage_options: just-a-string\n", ["store.storage_options must be a mapping"]),
    ("ingest:\n  endpoint_url: 8080\n", ["ingest.endpoint_url"]),
    ("ingest:\n  anon: maybe\n", ["ingest.anon"]),
    ("\x00\x01binary", ["not"]),
]


@pytest.mark.parametrize(("text", "needles"), BAD_FILES, ids=[t.split("\n")[0][:24] for t, _ in BAD_FILES])
def test_bad_config_file_is_one_line_and_store_unchanged(tmp_path, made_store, archive, text, needles):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    before = file_digests(made_store)
    result = CliRunner().invoke(main, [*_ingest_args(made_store, archive), "--config", str(path)])
    assert result.exit_code == 1, result.output
    assert_one_error_line(result.stderr, *needles)
    assert file_digests(made_store) == before


def test_config_show_takes_yaml_dates_and_offsets(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("ingest:\n  start: 2019-09-20 05:00:00\n  end: 2019-09-21T02:00:00+02:00\n")
    result = CliRunner().invoke(main, ["config", "show", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert "start: 2019-09-20T05" in result.stdout and "end: 2019-09-21T00" in result.stdout


# ----------------------------------------------------------------------------- 3. secrets

SECRETS = {
    "key": "AKIAPLANTEDKEY0001",
    "secret": "plantedsecret0002",
    "token": "plantedtoken0003",
}
NESTED = {
    "client_kwargs": {"aws_access_key_id": "AKIAPLANTEDNESTED04", "aws_secret_access_key": "plantednested0005",
                      "aws_session_token": "plantednested0006"},
    "config_kwargs": {"Password": "plantedpassword0007", "x": [{"PASSWD": "plantedpasswd0008"}]},
    "Credentials": "plantedcredential0009",
}
ALL_SECRETS = [*SECRETS.values(), "AKIAPLANTEDNESTED04", "plantednested0005", "plantednested0006",
               "plantedpassword0007", "plantedpasswd0008", "plantedcredential0009"]


def _grep_tree(path: Path, needles: list[str]) -> list[str]:
    found = []
    for root, _, files in os.walk(path):
        for name in files:
            data = (Path(root) / name).read_bytes()
            found += [f"{name}: {n}" for n in needles if n.encode() in data]
    return found


def test_config_show_redacts_every_secret(tmp_path):
    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"store": {"url": "s3://b/s.zarr", "storage_options": NESTED}}))
    sets = [f"--set=store.storage_options.{k}={v}" for k, v in SECRETS.items()]
    result = CliRunner().invoke(main, ["config", "show", "--config", str(path), *sets])
    assert result.exit_code == 0, result.output
    assert not [s for s in ALL_SECRETS if s in result.output], result.output
    shown = yaml.safe_load(result.stdout)["store"]["storage_options"]
    assert shown["key"] == shown["client_kwargs"]["aws_secret_access_key"] == "***"
    assert shown["config_kwargs"]["x"] == [{"PASSWD": "***"}]


@pytest.mark.parametrize("args", [
    ["--set", "store.storage_options=AKIAPLANTEDKEY0001"],
    ["--set", "store.url=s3://b/s.zarr", "--set", "store.storage_options.key=AKIAPLANTEDKEY0001",
     "--set", "store.storage_options.key.x=1"],
])
def test_errors_do_not_echo_a_misplaced_secret(args):
    result = CliRunner().invoke(main, ["config", "show", *args])
    assert result.exit_code == 1
    assert_one_error_line(result.stderr)
    assert "AKIAPLANTEDKEY0001" not in result.output


def test_unwritable_directory_is_named(tmp_path, monkeypatch, archive):
    """Root passes every permission check, so the check itself is made to answer no."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if str(p) == str(tmp_path) else real(p, mode))
    result = CliRunner().invoke(main, _ingest_args(tmp_path / "s.zarr", archive))
    assert result.exit_code == 1
    assert_one_error_line(result.stderr, str(tmp_path), "not writable")
    assert not (tmp_path / "s.zarr").exists()


def test_planted_secrets_reach_neither_the_store_nor_the_log(tmp_path, archive):
    import yaml

    store = tmp_path / "s.zarr"
    cfg = tmp_path / "cfg.yaml"
    # file:// makes the local store an fsspec one, so storage_options are passed (and ignored by the
    # local filesystem, which is what lets a test plant them)
    cfg.write_text(yaml.safe_dump({"store": {"storage_options": {**NESTED, "auto_mkdir": True}}}))
    sets = [f"--set=store.storage_options.{k}={v}" for k, v in SECRETS.items()]
    result = wxdask(*_ingest_args(f"file://{store}", archive), "--config", str(cfg), *sets, "-vv")
    assert result.returncode == 0, result.stderr[-3000:]
    assert (store / "zarr.json").exists()
    assert _grep_tree(store, ALL_SECRETS) == []
    assert [s for s in ALL_SECRETS if s in result.stderr + result.stdout] == []
    recorded = json.loads((store / "zarr.json").read_text())["attributes"]["wxdask_config"]
    assert recorded["store"]["storage_options"]["key"] == "***"
    assert recorded["store"]["storage_options"]["auto_mkdir"] is True
    assert not list(tmp_path.glob("*.wxdask-lease.json")), "the lease is released"


# ----------------------------------------------------------------------------- 5. bad places


def _corrupt_copy(made_store: Path, tmp_path: Path, text: str) -> Path:
    import shutil

    copy = tmp_path / "copy.zarr"
    shutil.copytree(made_store, copy)
    (copy / "zarr.json").write_text(text)
    return copy


@pytest.mark.parametrize("case", ["plain-file", "under-a-file", "etc-hostname", "corrupt-json",
                                  "not-a-group", "report-dir-missing", "report-is-dir"])
@pytest.mark.parametrize("command", ["ingest", "embed"])
def test_bad_place_is_one_line_naming_it(tmp_path, made_store, archive, case, command):
    report = []
    if case == "plain-file":
        store = tmp_path / "s.zarr"
        store.write_text("not a store")
        needles = [str(store), "plain file"]
    elif case == "under-a-file":
        (tmp_path / "afile").write_text("x")
        store = tmp_path / "afile" / "deeper" / "s.zarr"
        needles = [str(store), "is a file, not a directory"]
    elif case == "etc-hostname":
        if not os.path.isfile("/etc/hostname"):
            pytest.skip("no /etc/hostname here")
        store = Path("/etc/hostname/x.zarr")
        needles = ["/etc/hostname", "is a file"]
    elif case == "corrupt-json":
        store = _corrupt_copy(made_store, tmp_path, '{"zarr_format": 3, "node_ty')
        needles = [str(store), "zarr.json", "corrupt"]
    elif case == "not-a-group":
        store = _corrupt_copy(made_store, tmp_path, '{"zarr_format": 2}')
        needles = [str(store), "not a Zarr v3 group"]
    elif case == "report-dir-missing":
        store = tmp_path / "copy.zarr"
        report = ["--performance-report", str(tmp_path / "no-such-dir" / "r.html")]
        needles = ["no-such-dir", "does not exist"]
    else:
        store = tmp_path / "copy.zarr"
        (tmp_path / "adir.html").mkdir()
        report = ["--set", f"dask.performance_report={tmp_path / 'adir.html'}"]  # click checks its own option
        needles = ["adir.html", "is a directory"]
    if command == "ingest":
        args = [*_ingest_args(store, archive), *report]
    else:
        args = ["embed", "--store", str(store), "--model", str(tmp_path / "no-model"), *report]
    before = file_digests(store) if store.is_dir() else None
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert_one_error_line(result.stderr, *needles)
    if before is not None:
        assert file_digests(store) == before
    assert not Path(str(store) + ".wxdask-lease.json").exists()


def test_unreachable_scheduler_is_bounded_and_named(tmp_path, archive):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    result = wxdask(*_ingest_args(tmp_path / "s.zarr", archive), "--scheduler", address,
                    "--set", "dask.connect_timeout=2")
    assert result.returncode == 1
    assert_one_error_line(result.stderr, address, "within 2")
    assert not (tmp_path / "s.zarr").exists()
    assert not (tmp_path / "s.zarr.wxdask-lease.json").exists()


# ----------------------------------------------------------------------------- 4. dashboard bind


def test_local_cluster_listens_on_loopback_only():
    from wxdask.client import close_client, make_client
    from wxdask.config import DaskConfig

    client = make_client(DaskConfig(n_workers=1, memory_limit="1GiB", progress=False))
    try:
        scheduler = client.cluster.scheduler
        sockets = [sock for sock in scheduler.http_server._sockets.values()]
        assert sockets, "the dashboard is served"
        assert {sock.getsockname()[0] for sock in sockets} == {"127.0.0.1"}
        assert scheduler.address.startswith("tcp://127.0.0.1:")
        workers = client.scheduler_info(n_workers=-1)["workers"]
        assert workers and all(addr.startswith("tcp://127.0.0.1:") for addr in workers)
        assert "127.0.0.1" in client.dashboard_link
    finally:
        close_client(client)


def test_dashboard_address_is_configurable():
    from wxdask.client import close_client, make_client
    from wxdask.config import DaskConfig

    client = make_client(DaskConfig(n_workers=1, memory_limit="1GiB", progress=False, dashboard_address=":0"))
    try:
        sockets = client.cluster.scheduler.http_server._sockets.values()
        assert {sock.getsockname()[0] for sock in sockets} & {"0.0.0.0", "::"}
    finally:
        close_client(client)


def test_archive_fixture_layout(archive):
    assert (archive / ARCHIVE_BUCKET).is_dir()
