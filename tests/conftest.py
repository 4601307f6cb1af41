"""Shared fixtures: a real local S3 endpoint and synthetic archives on it."""

from __future__ import annotations

import pytest


def pytest_addoption(parser):
    parser.addoption("--run-network", action="store_true", default=False,
                     help="run tests that read the real NOAA archive on AWS")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-network"):
        return
    skip = pytest.mark.skip(reason="reads the real AWS archive; opt in with --run-network")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def local_s3():
    """A moto S3 server on loopback, fresh for each test module (buckets are not shared)."""
    from wxdask.s3local import LocalS3

    with LocalS3() as s3:
        yield s3


def _local_client(processes: bool):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=processes,
                      dashboard_address="127.0.0.1:0") as cluster, Client(cluster) as c:
        yield c


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of two single-thread workers in this process (modules may override it)."""
    yield from _local_client(processes=False)


@pytest.fixture(scope="module")
def process_client():
    """A LocalCluster of two single-thread worker processes (for kills, and real process boundaries)."""
    yield from _local_client(processes=True)


# ----------------------------------------------------------------------------- stores and models


@pytest.fixture
def tiny(tmp_path):
    """A tiny store (``wxdask.testing.make_tiny_store``: 7 times x 2 leads of 12x20, two absent slots)
    and a fake model for it (8 latents): ``(StoreConfig, FakeModelSource)``."""
    from wxdask.testing import TINY_GRID, make_tiny_store, save_fake_model

    store_cfg = make_tiny_store(tmp_path / "s.zarr")
    source = save_fake_model(tmp_path / "fake", TINY_GRID, n_latent=8, seed=1)
    return store_cfg, source


@pytest.fixture(scope="module")
def keras_model_dir(tmp_path_factory):
    """A tiny untrained Keras autoencoder for the tiny store's grid (skips without Keras)."""
    pytest.importorskip("keras")
    from wxdask.testing import save_keras_model

    return save_keras_model(tmp_path_factory.mktemp("keras") / "model")


@pytest.fixture(scope="session")
def coarse_6d_store(tmp_path_factory):
    """A 6-day coarse store (2020-06-01 to 2020-06-07, lead 0) ingested from the synthetic archive,
    built once per session (train and evaluate tests share it)."""
    from wxdask.config import StoreConfig
    from wxdask.testing import make_refc_store

    path = tmp_path_factory.getbasetemp() / "refc-coarse-6d.zarr"
    if not (path / "zarr.json").exists():
        make_refc_store(path, "2020-06-01T00", "2020-06-07T00", leads=(0,), grid="coarse", seed=0)
    return StoreConfig(url=str(path))
