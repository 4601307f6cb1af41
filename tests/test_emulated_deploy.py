"""An emulated deployment: the chart's own containers, run here as local processes.

No Kubernetes and no container engine here, so this plays the kubelet: it renders
the chart with real Helm, takes the scheduler, CPU worker, GPU worker and Job
containers' ``command``, ``args`` and ``env`` from the rendered manifests (not a
copy of them), resolves ``$(VAR)`` references, ``fieldRef`` and ``secretKeyRef``
as Kubernetes would, turns every volume mount into a local directory (the
ConfigMap's files written into it, a PersistentVolumeClaim shared by all pods),
points the scheduler Service's name at 127.0.0.1 and its ports at free ones, and
starts each container as a process. The pods' network being loopback here, the
values add ``--host 127.0.0.1`` (the chart's ``extraArgs``) and dashboards bind
127.0.0.1.

Then: both workers register (the GPU group's one with the ``GPU`` resource and
its GPU-memory environment), the dashboard answers ``/health`` and ``/metrics``,
versions agree, and the Job (its wait-for-scheduler init container, then
``wxdask run ... --scheduler tcp://<release>-scheduler:8786``) completes against
the scheduler, reading a synthetic archive from a local S3 endpoint and writing
the store to a private bucket with credentials from the (emulated) Secret:
the whole pipeline (ingest, train, evaluate, embed, decode, search, interpolate,
cluster), ingest on any worker, training and every encoder and decoder task on
the GPU-resource worker only (read from the scheduler's task stream), the model
on the shared volume.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from wxdask.testing import free_port

helm = pytest.importorskip("helm_python")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "wxdask"
RELEASE = "wxdask"
#: The emulated Kubernetes Secret holding the private bucket's credentials (moto accepts any).
SECRETS = {"wxdask-s3": {"AWS_ACCESS_KEY_ID": "emulated-access-key", "AWS_SECRET_ACCESS_KEY": "emulated-secret-key"}}
OUTPUT_BUCKET = "wxdask-private"
START, END, LEADS = "2019-09-20T00", "2019-09-22T00", (0,)
#: The GPU group's Keras backend: the chart's default (jax, as in the GPU image) where installed.
GPU_KERAS_BACKEND = "jax" if importlib.util.find_spec("jax") else "tensorflow"
#: The images' working directory (the Dockerfile's last WORKDIR): where relative paths land in a container.
WORKDIR = [line.split()[1] for line in (ROOT / "deploy" / "docker" / "Dockerfile").read_text().splitlines()
           if line.startswith("WORKDIR")][-1]
#: Give-up limits for things that should happen (not performance thresholds).
START_LIMIT, JOB_LIMIT = 120.0, 420.0


def _values(endpoint_url: str) -> dict:
    """Chart values of this emulated install: one replica per worker group, a Secret, a Job config."""
    return {
        "s3": {"existingSecret": "wxdask-s3", "region": "us-east-1"},
        "sharedVolume": {"existingClaim": "wxdask-shared"},
        # The pods' network here is loopback: the servers listen on 127.0.0.1 only.
        "scheduler": {"extraArgs": ["--host", "127.0.0.1"]},
        "workers": {"cpu": {"replicas": 1, "nthreads": 1, "extraArgs": ["--host", "127.0.0.1"]},
                    "gpu": {"replicas": 1, "kerasBackend": GPU_KERAS_BACKEND, "extraArgs": ["--host", "127.0.0.1"]}},
        "job": {
            "command": ["run"],  # the whole pipeline
            "waitForSchedulerSeconds": 60,
            "config": {
                "store": {"url": f"s3://{OUTPUT_BUCKET}/wxdask.zarr",
                          "storage_options": {"client_kwargs": {"endpoint_url": endpoint_url}}},
                "ingest": {"start": START, "end": END, "leads": list(LEADS), "source": "s3://noaa-hrrr-bdp-pds",
                           "endpoint_url": endpoint_url, "backoff": 0.05},
                "model": {"arch": "seed", "n_layers": 2, "pool": 4, "filters": [4, 8], "n_latent": 8},
                "train": {"model_dir": "/shared/wxdask-model", "epochs": 1, "batch_size": 8, "holdout_every": 2,
                          "on_gpu_worker": True},
                "evaluate": {"model_dir": "/shared/wxdask-model", "batch_size": 8},
                "embed": {"model_dir": "/shared/wxdask-model", "batch_size": 8, "images_per_task": 8},
                "decode": {"model_dir": "/shared/wxdask-model", "batch_size": 8},
                "kmeans": {"k": 3},
                "dask": {"progress": False},
            },
        },
    }


@dataclass
class Rendered:
    """The rendered objects, by kind and name."""

    docs: list[dict]

    def get(self, kind: str, name: str) -> dict:
        (doc,) = [d for d in self.docs if d["kind"] == kind and d["metadata"]["name"] == name]
        return doc

    def of_kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]


def render(values: dict) -> Rendered:
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=RELEASE, namespace="weather")
    return Rendered([d for path, text in sorted(manifests.items()) if path.endswith(".yaml")
                     for d in yaml.safe_load_all(text) if d])


@dataclass
class Network:
    """The Service name -> 127.0.0.1 and port -> free port rewrite, from the rendered Service."""

    service: str
    ports: dict[int, int] = field(default_factory=dict)

    def rewrite(self, text: str, extra_ports: dict[int, int] | None = None) -> str:
        text = re.sub(rf"(?<![\w.-]){re.escape(self.service)}(?![\w.-])", "127.0.0.1", text)
        for old, new in {**self.ports, **(extra_ports or {})}.items():
            text = re.sub(rf"(?<!\d){old}(?!\d)", str(new), text)
        return text


@dataclass
class Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path | None = None
    popen: subprocess.Popen | None = None

    def start(self) -> Process:
        with open(self.log, "wb") as out:
            self.popen = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.cwd)
        return self

    def run(self, timeout: float) -> int:
        self.start()
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"{self.name} did not finish within {timeout:.0f} s:\n{self.tail()}") from None

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:] if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM this process's own session (the nanny and its worker), then SIGKILL."""
        if self.popen is None or self.popen.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.popen.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.popen.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # the worker process a nanny started shares the session
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def kubelet(rendered: Rendered, pod: dict, container: dict, *, pod_name: str, workdir: Path, net: Network,
            extra_ports: dict[int, int] | None = None) -> Process:
    """A local process for one rendered container, made as the kubelet would make the container."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    configmaps = {d["metadata"]["name"]: d.get("data", {}) for d in rendered.of_kind("ConfigMap")}
    mounts: dict[str, str] = {}
    for m in container.get("volumeMounts", []):
        volume = volumes[m["name"]]
        if "persistentVolumeClaim" in volume:  # one directory, seen alike by every pod
            local = workdir / "pvc" / volume["persistentVolumeClaim"]["claimName"]
        else:
            assert "emptyDir" in volume or "configMap" in volume, f"volume {m['name']} cannot be emulated"
            local = workdir / pod_name / m["name"]
        local.mkdir(parents=True, exist_ok=True)
        mounts[m["mountPath"]] = str(local)

    pattern = "|".join(re.escape(m) for m in sorted(mounts, key=len, reverse=True))

    def localize(text: str) -> str:  # one pass, so a local path is never rewritten again
        text = net.rewrite(text, extra_ports)
        if mounts:
            text = re.sub(rf"(?<![\w/.-])({pattern})(?=/|$|\s)", lambda m: mounts[m[1]], text)
        return text

    # ConfigMap files, with the paths in them as this container sees them
    for m in container.get("volumeMounts", []):
        volume = volumes[m["name"]]
        if "configMap" in volume:
            for key, text in configmaps[volume["configMap"]["name"]].items():
                (Path(mounts[m["mountPath"]]) / key).write_text(localize(text))

    def expand(text: str, env: dict[str, str]) -> str:  # Kubernetes' $(VAR) references
        return re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), text)

    bindir = str(Path(sys.executable).parent)
    env = {"PATH": f"{bindir}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONUNBUFFERED": "1"}
    for item in container.get("env", []):
        if "value" in item:
            value = expand(str(item["value"]), env)
        elif "fieldRef" in item.get("valueFrom", {}):
            assert item["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            value = pod_name
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            value = SECRETS[ref["name"]][ref["key"]]  # a missing Secret key fails the pod, and the test
        env[item["name"]] = localize(value)
    argv = [localize(expand(a, env)) for a in [*container["command"], *container.get("args", [])]]
    argv = [re.sub(r"^:(\d+)$", r"127.0.0.1:\1", a) for a in argv]  # dashboards: loopback, not all interfaces
    # the container's working directory: its mount when one is there, else a directory of the pod's own
    cwd = Path(mounts[WORKDIR]) if WORKDIR in mounts else workdir / pod_name / "workdir"
    cwd.mkdir(parents=True, exist_ok=True)
    return Process(f"{pod_name}/{container['name']}", argv, env, workdir / f"{pod_name}-{container['name']}.log", cwd)


def _http(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read().decode()


def _wait_http_ok(url: str, proc: Process) -> str:
    deadline = time.monotonic() + START_LIMIT
    while True:
        assert proc.popen.poll() is None, f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}"
        try:
            status, body = _http(url)
            if status == 200:
                return body
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer within {START_LIMIT:.0f} s:\n{proc.tail()}"
        time.sleep(0.5)


@dataclass
class Deployment:
    rendered: Rendered
    net: Network
    workdir: Path
    scheduler: Process
    workers: dict[str, Process]           # pod name -> process
    worker_dashboards: dict[str, int]     # pod name -> local dashboard port
    address: str
    dashboard: str


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, local_s3):
    workdir = tmp_path_factory.mktemp("kube")
    rendered = render(_values(local_s3.endpoint_url))
    svc = rendered.get("Service", f"{RELEASE}-scheduler")
    net = Network(svc["metadata"]["name"], {p["port"]: free_port() for p in svc["spec"]["ports"]})
    service_ports = {p["name"]: net.ports[p["port"]] for p in svc["spec"]["ports"]}

    procs: list[Process] = []
    try:
        sched_pod = rendered.get("Deployment", f"{RELEASE}-scheduler")["spec"]["template"]["spec"]
        (sched_c,) = sched_pod["containers"]
        scheduler = kubelet(rendered, sched_pod, sched_c, pod_name=f"{RELEASE}-scheduler-0", workdir=workdir, net=net)
        procs.append(scheduler.start())
        dashboard = f"http://127.0.0.1:{service_ports['dashboard']}"
        _wait_http_ok(f"{dashboard}/health", scheduler)

        workers, dashboards = {}, {}
        for dep in rendered.of_kind("Deployment"):
            if dep["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") != "worker":
                continue
            pod = dep["spec"]["template"]["spec"]
            (c,) = pod["containers"]
            for i in range(dep["spec"]["replicas"]):
                pod_name = f"{dep['metadata']['name']}-{i}"
                ports = {p["containerPort"]: free_port() for p in c["ports"]}
                proc = kubelet(rendered, pod, c, pod_name=pod_name, workdir=workdir, net=net, extra_ports=ports)
                procs.append(proc.start())
                workers[pod_name] = proc
                (dashboards[pod_name],) = ports.values()
        yield Deployment(rendered, net, workdir, scheduler, workers, dashboards,
                         f"tcp://127.0.0.1:{service_ports['comm']}", dashboard)
    finally:
        for proc in reversed(procs):
            proc.stop()


@pytest.fixture(scope="module")
def client(deployment):
    from distributed import Client

    with Client(deployment.address, timeout="30s") as c:
        try:
            c.wait_for_workers(len(deployment.workers), timeout=START_LIMIT)
        except TimeoutError:
            logs = "\n".join(f"--- {p.name}\n{p.tail(1500)}" for p in deployment.workers.values())
            raise AssertionError(f"workers did not register:\n{logs}") from None
        yield c


def test_workers_register_one_with_the_gpu_resource(deployment, client):
    info = client.scheduler_info(n_workers=-1)["workers"]
    by_name = {w["name"]: w for w in info.values()}
    assert set(by_name) == {f"{RELEASE}-worker-cpu-0", f"{RELEASE}-worker-gpu-0"}  # --name $(POD_NAME)
    gpu, cpu = by_name[f"{RELEASE}-worker-gpu-0"], by_name[f"{RELEASE}-worker-cpu-0"]
    assert gpu["resources"] == {"GPU": 1} and gpu["nthreads"] == 1
    assert cpu["resources"] == {} and cpu["nthreads"] == 1

    from wxdask.client import gpu_workers

    assert gpu_workers(client) == [_addr(info, gpu["name"])]


def _addr(info: dict, name: str) -> str:
    (addr,) = [a for a, w in info.items() if w["name"] == name]
    return addr


def test_gpu_tasks_run_on_the_gpu_worker_with_its_environment(client):
    info = client.scheduler_info(n_workers=-1)["workers"]
    gpu, cpu = _addr(info, f"{RELEASE}-worker-gpu-0"), _addr(info, f"{RELEASE}-worker-cpu-0")
    futures = [client.submit(os.getenv, "KERAS_BACKEND", resources={"GPU": 1}, pure=False) for _ in range(4)]
    assert client.gather(futures) == [GPU_KERAS_BACKEND] * 4
    assert {a for f in futures for a in client.who_has(f)[f.key]} == {gpu}
    names = ["XLA_PYTHON_CLIENT_PREALLOCATE", "TF_FORCE_GPU_ALLOW_GROWTH", "KERAS_BACKEND", "AWS_SECRET_ACCESS_KEY"]
    env = client.run(lambda: {n: os.getenv(n) for n in names})
    assert env[gpu]["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false" and env[gpu]["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert env[cpu]["KERAS_BACKEND"] == "tensorflow" and env[cpu]["XLA_PYTHON_CLIENT_PREALLOCATE"] is None
    # the workers write the private store, so they got the Secret's credentials
    assert env[gpu]["AWS_SECRET_ACCESS_KEY"] == env[cpu]["AWS_SECRET_ACCESS_KEY"] == "emulated-secret-key"
    sched_env = client.run_on_scheduler(lambda: os.getenv("AWS_SECRET_ACCESS_KEY"))
    assert sched_env is None


def test_dashboard_health_and_metrics(deployment, client):
    assert _http(f"{deployment.dashboard}/health") == (200, "ok")
    status, metrics = _http(f"{deployment.dashboard}/metrics")
    assert status == 200 and "dask_scheduler_workers" in metrics  # prometheus_client is installed
    for pod_name, port in deployment.worker_dashboards.items():
        assert _http(f"http://127.0.0.1:{port}/health") == (200, "ok"), pod_name
        status, metrics = _http(f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "dask_worker_" in metrics, pod_name


def test_versions_agree_and_make_client_connects(deployment, client, caplog):
    from wxdask.client import check_versions, make_client
    from wxdask.config import DaskConfig

    assert check_versions(client) == []
    with caplog.at_level("WARNING", logger="wxdask.client"):
        c = make_client(DaskConfig(scheduler=deployment.address))
    try:
        assert c.scheduler.address == deployment.address
    finally:
        c.close()
    assert not [r for r in caplog.records if "version mismatch" in r.getMessage()]


def _job_processes(deployment: Deployment) -> tuple[Process, Process]:
    (job,) = deployment.rendered.of_kind("Job")
    pod = job["spec"]["template"]["spec"]
    (init,), (main,) = pod["initContainers"], pod["containers"]
    pod_name = f"{job['metadata']['name']}-pod"
    make = lambda c: kubelet(deployment.rendered, pod, c, pod_name=pod_name, workdir=deployment.workdir,  # noqa: E731
                             net=deployment.net)
    return make(init), make(main)


def test_job_init_container_waits_for_the_scheduler(deployment, client):
    init, _ = _job_processes(deployment)
    assert init.run(timeout=JOB_LIMIT) == 0, init.tail()
    # and gives up, with a clear message, when nothing listens
    closed = free_port()
    argv = [a if a != str(deployment.net.ports[8786]) else str(closed) for a in init.argv]
    argv[-1] = "1"
    down = Process("wait-closed", argv, init.env, deployment.workdir / "wait-closed.log")
    assert down.run(timeout=JOB_LIMIT) != 0
    assert f"Dask scheduler 127.0.0.1:{closed} not reachable" in down.tail()


def test_job_completes_against_the_scheduler(deployment, client, local_s3, tmp_path):
    synth = pytest.importorskip("wxdask.synth", reason="wxdask.synth (the synthetic archive) is not there yet")
    import xarray as xr
    from dask.utils import key_split

    from wxdask.ingest import STATUS
    from wxdask.s3local import ARCHIVE_BUCKET

    synth.write_archive(str(tmp_path), START, END, LEADS, grid="coarse", seed=5)
    local_s3.upload_archive(tmp_path)
    local_s3.create_bucket(OUTPUT_BUCKET, public=False)

    init, main = _job_processes(deployment)
    client.get_task_stream()  # start recording which worker runs each task
    t0 = time.time()
    assert main.argv[:2] == ["wxdask", "run"] and "--stages" not in main.argv
    assert main.argv[main.argv.index("--scheduler") + 1] == deployment.address
    config = Path(main.argv[main.argv.index("--config") + 1])
    assert yaml.safe_load(config.read_text())["ingest"]["source"] == f"s3://{ARCHIVE_BUCKET}"
    assert "AWS_SECRET_ACCESS_KEY" in main.env
    assert init.run(timeout=JOB_LIMIT) == 0, init.tail()
    rc = main.run(timeout=JOB_LIMIT)
    log = main.tail()
    assert rc == 0, log
    for stage in ("ingest", "train", "evaluate", "embed", "decode", "search", "interpolate", "cluster"):
        assert f"== {stage}\n" in log, log
    assert "emulated-secret-key" not in main.log.read_text()  # credentials never reach the logs

    opts = {"key": "emulated-access-key", "secret": "emulated-secret-key",
            "client_kwargs": {"endpoint_url": local_s3.endpoint_url}}
    ds = xr.open_zarr(f"s3://{OUTPUT_BUCKET}/wxdask.zarr", storage_options=opts, consolidated=False)
    assert ds.sizes["time"] == 48 and list(ds.lead_time.values) == list(LEADS)
    assert (ds.status.values == STATUS["ok"]).all()

    # every stage wrote its part of the store
    for name in ("embedding", "reconstruction_rmse", "neighbor_time", "interp_residual", "cluster", "centroid"):
        assert name in ds.variables, sorted(ds.variables)
    assert bool(ds["embedding"].notnull().all()) and ds["embedding"].sizes["latent"] == 8

    # the work ran on the cluster's workers; training and the model's tasks only on the GPU-resource worker
    info = client.scheduler_info(n_workers=-1)["workers"]
    gpu = _addr(info, f"{RELEASE}-worker-gpu-0")
    ran: dict[str, set[str]] = {}  # task name -> workers that ran it
    for task in client.get_task_stream(start=t0):
        ran.setdefault(key_split(task["key"]), set()).add(task["worker"])
    assert any(name.startswith("ingest") for name in ran), f"no ingest tasks ran on the cluster: {sorted(ran)}"
    assert ran.get("embed-chunk") == {gpu}, ran
    assert ran.get("decode-chunk") == {gpu}, ran
    assert ran.get("wxdask-train") == {gpu}, ran
