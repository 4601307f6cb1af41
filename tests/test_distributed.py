"""Where encoder tasks run, and how often workers load the model, on a real LocalCluster.

One cluster of two worker processes, one of which advertises ``GPU=1`` (as
``wxdask.client.make_client`` starts it). Placement is read from the task
stream (which worker ran each key), not from the annotation.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from wxdask import embed, models, store
from wxdask.client import gpu_workers, make_client
from wxdask.config import DaskConfig
from wxdask.testing import TINY_GRID as GRID
from wxdask.testing import embed_config as make_cfg
from wxdask.testing import make_tiny_store, save_fake_model
from wxdask.testing import reference_embeddings as reference

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def client():
    c = make_client(DaskConfig(n_workers=2, gpu_workers=1, memory_limit="1GiB", progress=False))
    try:
        yield c
    finally:
        cluster = c.cluster
        c.close()
        cluster.close()


def _load_counts():
    return {path: n for (kind, path), n in models.LOAD_COUNTS.items() if kind == "model"}


def _embed_tasks(stream):
    return [t for t in stream if str(t["key"]).startswith("embed-chunk-")]


def test_encoder_tasks_run_only_on_gpu_worker_and_load_once(client, tmp_path):
    from distributed import get_task_stream

    gpus = gpu_workers(client)
    everyone = set(client.scheduler_info(n_workers=-1)["workers"])
    assert len(gpus) == 1 and len(everyone) == 2
    (gpu,) = gpus
    (cpu,) = everyone - {gpu}

    store_cfg = make_tiny_store(tmp_path / "s.zarr", nt=12)
    source = save_fake_model(tmp_path / "fake", GRID, n_latent=8, seed=1)
    cfg = make_cfg(store_cfg, source.path)  # 2 times x 2 leads per task: 6 tasks
    with get_task_stream(client) as ts:
        out = embed.run(cfg, client, source=source)
    tasks = _embed_tasks(ts.data)
    assert len(tasks) == 6
    assert {t["worker"] for t in tasks} == {gpu}
    assert "1 GPU worker(s)" in out

    # six tasks, one load, only in the GPU worker's process
    counts = client.run(_load_counts)
    path = os.path.abspath(source.path)
    assert counts[gpu] == {path: 1}
    assert path not in counts[cpu]
    pids = client.run(os.getpid)
    assert pids[gpu] != pids[cpu] != os.getpid()

    got = store.open_input(store_cfg, ["embedding"])["embedding"].values
    np.testing.assert_allclose(got, reference(store_cfg, source), rtol=1e-5, atol=1e-6)

    # another store, same model: still one load per process
    other_cfg = make_tiny_store(tmp_path / "t.zarr", nt=4, missing=((1, 1),), seed=5)
    embed.run(make_cfg(other_cfg, source.path), client, source=source)
    assert client.run(_load_counts)[gpu] == {path: 1}


def test_without_gpu_workers_tasks_use_cpu_workers(tmp_path):
    from distributed import Client, LocalCluster, get_task_stream

    store_cfg = make_tiny_store(tmp_path / "s.zarr", nt=8)
    source = save_fake_model(tmp_path / "fake", GRID, n_latent=8, seed=1)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as c:
        assert gpu_workers(c) == []
        with get_task_stream(c) as ts:
            out = embed.run(make_cfg(store_cfg, source.path), c, source=source)
    assert "CPU workers" in out
    assert len(_embed_tasks(ts.data)) == 4
    got = store.open_input(store_cfg, ["embedding"])["embedding"].values
    np.testing.assert_allclose(got, reference(store_cfg, source), rtol=1e-5, atol=1e-6)


def test_local_workers_keep_large_buffers_on_the_heap(client):
    # both the CPU and the GPU worker: distributed's own MALLOC_TRIM_THRESHOLD_ alone made each decode mmap afresh
    from wxdask.client import WORKER_MALLOC

    seen = client.run(lambda: {k: os.environ.get(k) for k in WORKER_MALLOC})
    assert len(seen) == 2
    assert all(env == {k: str(v) for k, v in WORKER_MALLOC.items()} for env in seen.values()), seen


def test_workers_keep_the_malloc_settings_after_another_cluster_set_its_own(monkeypatch):
    # distributed writes its pre-spawn values into this process's environment and prefers the environment
    # to its config: as any LocalCluster with distributed's defaults leaves it
    from wxdask.client import WORKER_MALLOC

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    c = make_client(DaskConfig(n_workers=1, memory_limit="1GiB", progress=False, dashboard_address=":0"))
    try:
        seen = c.run(lambda: {k: os.environ.get(k) for k in WORKER_MALLOC})
    finally:
        cluster = c.cluster
        c.close()
        cluster.close()
    assert list(seen.values()) == [{k: str(v) for k, v in WORKER_MALLOC.items()}]
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"  # this process's environment as it was


def test_here_or_on_gpu_runs_on_the_gpu_worker_or_refuses(client):
    from distributed import Client, LocalCluster, get_worker

    from wxdask.client import here_or_on_gpu
    from wxdask.errors import ClusterError, ConfigError

    def where(x):
        try:
            return get_worker().address, x
        except ValueError:  # not on a worker
            return "here", x

    assert here_or_on_gpu(None, False, where, 1) == ("here", 1)
    assert here_or_on_gpu(client, True, where, 2) == (gpu_workers(client)[0], 2)
    with pytest.raises(ConfigError, match="needs a Dask cluster"):
        here_or_on_gpu(None, True, where, 3)
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0") as cpu, Client(cpu) as plain:
        with pytest.raises(ClusterError, match="no worker advertises the GPU"):
            here_or_on_gpu(plain, True, where, 4)
