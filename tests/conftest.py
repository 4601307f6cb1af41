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
