"""The Helm chart, the images' lock and Dockerfile, and the client's version check.

The chart is rendered and linted with real Helm (the library in ``helm-python-sdk``)
and every manifest is validated with ``kubernetes-validate``; the images cannot be
built here (no container engine), so their inputs are checked instead.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from pathlib import Path

import pytest
import yaml

helm = pytest.importorskip("helm_python")
kv = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "deploy" / "helm" / "wxdask"
GPU_VALUES = CHART / "values-gpu.yaml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
LOCK = ROOT / "deploy" / "requirements.lock"
RELEASE = "wxdask"
#: The oldest Kubernetes the chart supports that kubernetes-validate ships, and its newest.
KUBE_VERSIONS = ["1.33.0", kv.latest_version()]
#: Kinds defined by CRDs (the Prometheus Operator's), which kubernetes-validate has no schema for.
CRD_KINDS = {"ServiceMonitor"}


def gpu_values() -> dict:
    return helm.values_from_yaml(GPU_VALUES.read_text())


def render(values: dict | None = None, name: str = RELEASE, **kwargs) -> list[dict]:
    """Every object the chart renders for ``values``, parsed."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values, name=name, namespace="weather", **kwargs)
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith(".yaml"):
            docs += [doc for doc in yaml.safe_load_all(text) if doc]
    return docs


def render_text(values: dict | None = None) -> str:
    with helm.Chart.load(CHART) as chart:
        return "\n".join(chart.render(values, name=RELEASE, namespace="weather").values())


def find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name} not rendered once: {[(d['kind'], d['metadata']['name']) for d in docs]}"
    return matches[0]


def pod_specs(docs: list[dict]) -> dict[str, dict]:
    return {f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
            for d in docs if d["kind"] in ("Deployment", "Job")}


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.fixture(scope="module")
def default_docs() -> list[dict]:
    return render()


@pytest.fixture(scope="module")
def gpu_docs() -> list[dict]:
    return render(gpu_values())


# --- lint and schema validation -------------------------------------------------------------

@pytest.mark.parametrize("values_file", [None, GPU_VALUES], ids=["default", "gpu"])
@pytest.mark.parametrize("kube_version", ["v1.33.0", f"v{kv.latest_version()}"])
def test_chart_lints_clean(values_file, kube_version):
    values = helm.values_from_yaml(values_file.read_text()) if values_file else None
    report = helm.lint(CHART, values, strict=True, kube_version=kube_version)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["errors"] == [] and problems == [], report


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("which", ["default", "gpu"])
def test_every_manifest_validates(which, kube_version, default_docs, gpu_docs):
    docs = default_docs if which == "default" else gpu_docs
    kinds = set()
    for doc in docs:
        kinds.add(doc["kind"])
        if doc["kind"] in CRD_KINDS:
            continue
        kv.validate(doc, kube_version, strict=True)
    assert {"Deployment", "Service", "Job", "ConfigMap", "ServiceAccount"} <= kinds


def test_values_schema_rejects_bad_values():
    with pytest.raises(helm.HelmValuesError, match="replicas"):
        render({"workers": {"cpu": {"replicas": -1}}})
    with pytest.raises(helm.HelmValuesError, match="kerasBackend"):
        render({"workers": {"gpu": {"kerasBackend": "theano"}}})
    with pytest.raises(helm.HelmValuesError, match="nthread"):
        render({"workers": {"cpu": {"nthread": 4}}})  # a typo is an error, not ignored


# --- what is rendered ------------------------------------------------------------------------

def test_default_objects(default_docs):
    names = sorted((d["kind"], d["metadata"]["name"]) for d in default_docs)
    assert names == [
        ("ConfigMap", "wxdask-config"),
        ("Deployment", "wxdask-scheduler"),
        ("Deployment", "wxdask-worker-cpu"),
        ("Deployment", "wxdask-worker-gpu"),
        ("Job", "wxdask-run-1"),
        ("NetworkPolicy", "wxdask-scheduler"),
        ("NetworkPolicy", "wxdask-workers"),
        ("Service", "wxdask-scheduler"),
        ("ServiceAccount", "wxdask"),
    ]


def test_scheduler_service_and_probes(default_docs):
    svc = find(default_docs, "Service", "wxdask-scheduler")
    assert svc["spec"]["type"] == "ClusterIP"
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"comm": 8786, "dashboard": 8787}
    pod = find(default_docs, "Deployment", "wxdask-scheduler")["spec"]["template"]["spec"]
    assert svc["spec"]["selector"].items() <= find(default_docs, "Deployment", "wxdask-scheduler")[
        "spec"]["template"]["metadata"]["labels"].items()
    (c,) = pod["containers"]
    assert c["command"] == ["dask", "scheduler"]
    assert c["args"][:4] == ["--port", "8786", "--dashboard-address", ":8787"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"comm": 8786, "dashboard": 8787}
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"] == {"path": "/health", "port": "dashboard"}


def test_ingress_only_when_asked(default_docs):
    assert not [d for d in default_docs if d["kind"] == "Ingress"]
    docs = render({"ingress": {"enabled": True, "host": "dask.example.org", "className": "nginx"}})
    ing = find(docs, "Ingress", "wxdask-dashboard")
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "wxdask-scheduler", "port": {"name": "dashboard"}}
    for version in KUBE_VERSIONS:
        kv.validate(ing, version, strict=True)


def test_workers_connect_to_the_scheduler_service(default_docs):
    for group in ("cpu", "gpu"):
        (c,) = find(default_docs, "Deployment", f"wxdask-worker-{group}")["spec"]["template"]["spec"]["containers"]
        assert c["command"] == ["dask", "worker"]
        assert c["args"][0] == "tcp://wxdask-scheduler:8786"
        assert c["args"][c["args"].index("--name") + 1] == "$(POD_NAME)"
        assert env_of(c)["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        # the nanny gives each worker the malloc settings that LocalCluster workers get (dask parses the value)
        import copy

        import dask.config

        from wxdask.client import WORKER_MALLOC

        name = "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON"
        parsed = dask.config.collect_env({name: env_of(c)[name]["value"]})
        merged = dask.config.update(copy.deepcopy(dask.config.config), parsed)  # as dask merges it at start-up
        spawn_env = merged["distributed"]["nanny"]["pre-spawn-environ"]
        assert {k: spawn_env[k] for k in WORKER_MALLOC} == WORKER_MALLOC
        assert spawn_env["OMP_NUM_THREADS"] == 1  # distributed's other defaults are kept


def test_scheduler_address_follows_release_name():
    docs = render(name="radar")
    (c,) = find(docs, "Deployment", "radar-wxdask-worker-cpu")["spec"]["template"]["spec"]["containers"]
    assert c["args"][0] == "tcp://radar-wxdask-scheduler:8786"
    find(docs, "Service", "radar-wxdask-scheduler")


def test_gpu_worker_group(default_docs):
    (gpu,) = find(default_docs, "Deployment", "wxdask-worker-gpu")["spec"]["template"]["spec"]["containers"]
    args = gpu["args"]
    assert args[args.index("--nthreads") + 1] == "1"
    assert args[args.index("--resources") + 1] == "GPU=1"
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["image"] == "wxdask:0.1.0-gpu"
    env = {k: v.get("value") for k, v in env_of(gpu).items()}
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.90"
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert env["PYTORCH_CUDA_ALLOC_CONF"] == "expandable_segments:True"
    assert env["KERAS_BACKEND"] == "jax"

    (cpu,) = find(default_docs, "Deployment", "wxdask-worker-cpu")["spec"]["template"]["spec"]["containers"]
    assert "--resources" not in cpu["args"]
    assert "nvidia.com/gpu" not in str(cpu["resources"])
    assert cpu["args"][cpu["args"].index("--nthreads") + 1] == "2"


def test_values_drive_workers(gpu_docs):
    values = gpu_values()
    for group in ("cpu", "gpu"):
        w = values["workers"][group]
        dep = find(gpu_docs, "Deployment", f"wxdask-worker-{group}")
        pod = dep["spec"]["template"]["spec"]
        assert dep["spec"]["replicas"] == w["replicas"]
        assert pod["nodeSelector"] == w["nodeSelector"]
        for key, value in w["resources"]["requests"].items():
            assert pod["containers"][0]["resources"]["requests"][key] == value
        assert pod["containers"][0]["image"].startswith("ghcr.io/your-org/wxdask:")
    gpu_pod = find(gpu_docs, "Deployment", "wxdask-worker-gpu")["spec"]["template"]["spec"]
    assert gpu_pod["tolerations"] == values["workers"]["gpu"]["tolerations"]
    assert gpu_pod["affinity"] == values["workers"]["gpu"]["affinity"]
    env = {k: v.get("value") for k, v in env_of(gpu_pod["containers"][0]).items()}
    assert env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.85"
    limits = gpu_pod["containers"][0]["resources"]["limits"]
    assert limits == {"memory": "64Gi", "nvidia.com/gpu": 1}


def test_groups_can_be_disabled_and_scaled():
    docs = render({"workers": {"gpu": {"enabled": False}, "cpu": {"replicas": 7}}, "job": {"enabled": False}})
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    assert ("Deployment", "wxdask-worker-gpu") not in kinds
    assert not {k for k, _ in kinds} & {"Job", "ConfigMap"}
    assert find(docs, "Deployment", "wxdask-worker-cpu")["spec"]["replicas"] == 7


def test_job_runs_wxdask_against_the_scheduler(default_docs):
    job = find(default_docs, "Job", "wxdask-run-1")
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    (c,) = pod["containers"]
    assert [c["command"][0], *c["args"]] == [
        "wxdask", "run", "--config", "/etc/wxdask/config.yaml", "--scheduler", "tcp://wxdask-scheduler:8786",
    ]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == "config"]
    assert mount["mountPath"] == "/etc/wxdask" and mount["readOnly"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == "config"]
    cm = find(default_docs, "ConfigMap", vol["configMap"]["name"])
    assert set(cm["data"]) == {"config.yaml"}
    (init,) = pod["initContainers"]
    assert init["args"][1:] == ["wxdask-scheduler", "8786", "300"]


@pytest.mark.parametrize("values_file", [None, GPU_VALUES], ids=["default", "gpu"])
def test_job_config_is_a_valid_wxdask_config(values_file):
    from wxdask.config import Config

    values = helm.values_from_yaml(values_file.read_text()) if values_file else None
    (cm,) = [d for d in render(values) if d["kind"] == "ConfigMap"]
    cfg = Config.from_dict(yaml.safe_load(cm["data"]["config.yaml"]))
    assert cfg.store.url.startswith("s3://")


def test_each_upgrade_submits_a_new_job():
    assert [d["metadata"]["name"] for d in render(revision=3) if d["kind"] == "Job"] == ["wxdask-run-3"]
    docs = render({"job": {"runId": "2022-10", "command": ["ingest"], "extraArgs": ["--leads", "0,1"]}})
    (job,) = [d for d in docs if d["kind"] == "Job"]
    assert job["metadata"]["name"] == "wxdask-run-2022-10"
    args = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[0] == "ingest" and args[-2:] == ["--leads", "0,1"]


# --- security ---------------------------------------------------------------------------------

@pytest.mark.parametrize("which", ["default", "gpu"])
def test_security_context(which, default_docs, gpu_docs):
    docs = default_docs if which == "default" else gpu_docs
    specs = pod_specs(docs)
    assert len(specs) == 4
    for where, pod in specs.items():
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] == 1000, where
        assert pod["automountServiceAccountToken"] is False, where
        volumes = {v["name"]: v for v in pod["volumes"]}
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert "add" not in sc["capabilities"] and not sc.get("privileged"), (where, c["name"])
        for c in pod["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert "emptyDir" in volumes[mounts["/tmp"]] and "emptyDir" in volumes[mounts["/scratch"]], where
            env = {k: v.get("value") for k, v in env_of(c).items()}
            assert env["HOME"] == "/tmp" and env["DASK_TEMPORARY_DIRECTORY"] == "/scratch", where
            if c["command"][:2] == ["dask", "worker"]:
                args = c["args"]
                assert args[args.index("--local-directory") + 1] == "/scratch"


SECRET_VALUE = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"


def test_credentials_come_from_a_secret_by_reference():
    docs = render({"s3": {"existingSecret": "wxdask-s3", "sessionTokenKey": "AWS_SESSION_TOKEN"}})
    assert not [d for d in docs if d["kind"] == "Secret"]
    specs = pod_specs(docs)
    with_creds = set()
    for where, pod in specs.items():
        for c in pod["containers"]:
            env = env_of(c)
            if "AWS_SECRET_ACCESS_KEY" not in env:
                continue
            with_creds.add(where)
            for var, key in [
                ("AWS_ACCESS_KEY_ID", "AWS_ACCESS_KEY_ID"),
                ("AWS_SECRET_ACCESS_KEY", "AWS_SECRET_ACCESS_KEY"),
                ("AWS_SESSION_TOKEN", "AWS_SESSION_TOKEN"),
            ]:
                assert "value" not in env[var]
                assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "wxdask-s3", "key": key}
    # the scheduler touches no data, so it gets no credentials
    assert with_creds == {"Deployment/wxdask-worker-cpu", "Deployment/wxdask-worker-gpu", "Job/wxdask-run-1"}
    assert not any("AWS_" in json.dumps(env_of(c)) for c in specs["Deployment/wxdask-scheduler"]["containers"])


def test_no_credentials_without_a_secret(default_docs):
    text = json.dumps(default_docs)
    assert "AWS_ACCESS_KEY_ID" not in text and "secretKeyRef" not in text


@pytest.mark.parametrize("values", [
    {"s3": {"secretAccessKey": SECRET_VALUE}},
    {"s3": {"accessKeyId": "AKIAIOSFODNN7EXAMPLE"}},
    {"job": {"config": {"store": {"url": "s3://b/x.zarr", "storage_options": {"secret": SECRET_VALUE}}}}},
    {"job": {"config": {"store": {"url": "s3://b/x.zarr", "storage_options": {"key": "AKIAIOSFODNN7EXAMPLE"}}}}},
], ids=["s3.secretAccessKey", "s3.accessKeyId", "storage_options.secret", "storage_options.key"])
def test_literal_credentials_are_refused(values):
    with pytest.raises(helm.HelmValuesError) as err:
        render_text(values)
    assert SECRET_VALUE not in str(err.value)


def test_no_secret_value_in_rendered_manifests(tmp_path):
    """Whatever the values, only names of a Secret's keys reach the manifests."""
    values = gpu_values()
    values["s3"] = {"existingSecret": "wxdask-s3", "accessKeyIdKey": "id", "secretAccessKeyKey": "secret"}
    text = render_text(values)
    assert SECRET_VALUE not in text
    assert not re.search(r"AKIA[0-9A-Z]{16}", text)
    assert not re.search(r"(?i)(aws_secret_access_key|password|token)\s*[:=]\s*[\"']?\w{8,}", text)


def test_irsa_service_account():
    role = "arn:aws:iam::123456789012:role/wxdask-writer"
    docs = render({"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": role}}})
    sa = find(docs, "ServiceAccount", "wxdask")
    assert sa["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": role}
    assert {pod["serviceAccountName"] for pod in pod_specs(docs).values()} == {"wxdask"}


# --- monitoring -------------------------------------------------------------------------------

def test_no_scraping_by_default(default_docs):
    for pod in pod_specs(default_docs).values():
        assert "prometheus.io/scrape" not in json.dumps(pod)
    assert not [d for d in default_docs if d["kind"] == "ServiceMonitor"]


def test_prometheus_scraping(gpu_docs):
    for name, port in [("wxdask-scheduler", "8787"), ("wxdask-worker-cpu", "8790"), ("wxdask-worker-gpu", "8790")]:
        meta = find(gpu_docs, "Deployment", name)["spec"]["template"]["metadata"]
        assert meta["annotations"] == {"prometheus.io/scrape": "true", "prometheus.io/port": port,
                                       "prometheus.io/path": "/metrics"}
    sm = find(gpu_docs, "ServiceMonitor", "wxdask")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["endpoints"] == [{"port": "dashboard", "path": "/metrics", "interval": "30s"}]
    selected = [d for d in gpu_docs if d["kind"] == "Service"
                and sm["spec"]["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items()]
    assert sorted(d["metadata"]["name"] for d in selected) == ["wxdask-scheduler", "wxdask-workers"]
    for svc in selected:
        assert "dashboard" in {p["name"] for p in svc["spec"]["ports"]}
    workers = find(gpu_docs, "Service", "wxdask-workers")
    assert workers["spec"]["clusterIP"] == "None"
    assert workers["spec"]["selector"]["app.kubernetes.io/component"] == "worker"


# --- images: lock and Dockerfile --------------------------------------------------------------

def _lock() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[name] = version
    return pins


def _make_lock():
    sys.path.insert(0, str(ROOT / "deploy"))
    try:
        import make_lock
    finally:
        sys.path.pop(0)
    return make_lock


def test_lock_pins_exactly_what_is_installed():
    """Every package of wxdask's installed dependency closure is in the lock at its installed version."""
    make_lock = _make_lock()
    installed = make_lock.closure(("wxdask",))
    pins = _lock()
    wrong = {name: (pins.get(name), version) for name, version in installed.items() if pins.get(name) != version}
    assert not wrong, f"lock vs installed (run python deploy/make_lock.py): {wrong}"
    extra = set(pins) - set(installed)
    assert {"jax", "jaxlib"} <= extra
    try:
        assert extra == set(make_lock.closure(("jax",))) - set(installed)
    except ModuleNotFoundError:  # pragma: no cover - jax is not a wxdask dependency
        pass


def test_lock_format_and_core_packages():
    lines = [line for line in LOCK.read_text().splitlines() if not line.startswith("#")]
    names = [line.split("==")[0] for line in lines]
    assert names == sorted(names) and len(names) == len(set(names))
    assert all(re.fullmatch(r"[a-z0-9][a-z0-9.\-]*==[\w.+!\-]+", line) for line in lines), lines
    pins = _lock()
    for pkg in ("dask", "distributed", "numpy", "xarray", "zarr", "keras", "prometheus-client", "bokeh", "s3fs"):
        assert pkg in pins, pkg


def test_dockerfile_builds_from_the_lock():
    text = DOCKERFILE.read_text()
    python = ".".join(map(str, sys.version_info[:3]))
    assert re.search(rf"^ARG PYTHON_VERSION={re.escape(python)}$", text, re.M)
    assert f"# python=={python} " in LOCK.read_text()
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim", text, re.M)
    assert "COPY deploy/requirements.lock" in text
    assert "pip install --no-deps -r /tmp/lock/requirements.lock" in text
    assert "pip install -c /tmp/lock/requirements.lock -r /tmp/lock/requirements-gpu.txt" in text
    assert "pip install --no-deps /tmp/src" in text and "pip check" in text
    gpu_reqs = (ROOT / "deploy" / "docker" / "requirements-gpu.txt").read_text()
    assert f"jax[cuda12]=={_lock()['jax']}" in gpu_reqs.splitlines()


def test_dockerfile_runs_as_non_root_and_holds_no_secrets():
    text = DOCKERFILE.read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] == "1000"
    assert not re.search(r"(?im)^\s*(ENV|ARG)\b.*\b(AWS_|SECRET|TOKEN|PASSWORD|CREDENTIAL)", text)
    assert not re.search(r"(?i)\.aws|credentials|id_rsa|\.netrc", re.sub(r"(?m)^#.*$", "", text))
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignore[[i for i, line in enumerate(ignore) if not line.startswith("#")][0]] == "*"
    copied = re.findall(r"^COPY\s+(.+)\s+\S+$", text, re.M)
    for line in copied:
        for src in line.split():
            assert any(f"!{src}".rstrip("/") == rule.rstrip("/") for rule in ignore), f"{src} is not let through"


def test_chart_version_matches_package():
    from importlib.metadata import version

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version("wxdask")


# --- the client's version check ---------------------------------------------------------------

class _FakeClient:
    def __init__(self, versions: dict):
        self.versions = versions

    def get_versions(self, packages=None):
        self.asked = packages
        return self.versions


def _side(python="3.11.7.final.0", **packages):
    base = {"dask": "2026.8.0", "distributed": "2026.8.0", "numpy": "2.4.6", "xarray": "2026.9.0",
            "zarr": "3.1.6", "keras": "3.15.1"}
    return {"host": {"python": python}, "packages": {**base, **packages, "python": python}}


def test_check_versions_all_agree(caplog):
    from wxdask.client import check_versions

    client = _FakeClient({"client": _side(), "scheduler": _side(),
                          "workers": {"tcp://10.0.0.1:1": _side(), "tcp://10.0.0.2:1": _side()}})
    with caplog.at_level(logging.WARNING, logger="wxdask.client"):
        assert check_versions(client) == []
    assert not caplog.records
    assert set(client.asked) == {"dask", "distributed", "numpy", "xarray", "zarr", "keras"}


def test_check_versions_names_package_and_each_side(caplog):
    from wxdask.client import check_versions

    client = _FakeClient({
        "client": _side(numpy="2.4.6"),
        "scheduler": _side(numpy="2.4.6", python="3.11.9.final.0"),
        "workers": {"tcp://10.0.0.1:1": _side(numpy="2.3.0"), "tcp://10.0.0.2:1": _side(numpy="2.4.6"),
                    "tcp://10.0.0.3:1": {"status": "error", "exception": "gone"}},
    })
    with caplog.at_level(logging.WARNING, logger="wxdask.client"):
        messages = check_versions(client)
    assert len(messages) == 2
    py, np_ = messages
    assert "python" in py and "client 3.11.7" in py and "scheduler 3.11.9" in py and "workers 3.11.7" in py
    assert "numpy" in np_ and "client 2.4.6" in np_ and "scheduler 2.4.6" in np_
    assert "tcp://10.0.0.1:1 2.3.0" in np_ and "tcp://10.0.0.2:1 2.4.6" in np_
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.WARNING]
    assert [r.getMessage() for r in caplog.records] == messages


def test_check_versions_missing_package():
    from wxdask.client import check_versions

    worker = _side()
    worker["packages"]["keras"] = None
    client = _FakeClient({"client": _side(), "scheduler": _side(), "workers": {"tcp://w:1": worker}})
    (msg,) = check_versions(client)
    assert msg.startswith("version mismatch for keras") and "workers not installed" in msg


# --- the shared model volume ------------------------------------------------------------------

def test_shared_volume_for_the_model(default_docs, gpu_docs):
    for pod in pod_specs(default_docs).values():
        assert "shared" not in {v["name"] for v in pod["volumes"]}
    specs = pod_specs(gpu_docs)
    for where, pod in specs.items():
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        if where == "Deployment/wxdask-scheduler":
            assert "shared" not in volumes
            continue
        assert volumes["shared"] == {"name": "shared", "persistentVolumeClaim": {"claimName": "wxdask-shared"}}
        assert mounts["shared"] == "/shared", where
    (cm,) = [d for d in gpu_docs if d["kind"] == "ConfigMap"]
    config = yaml.safe_load(cm["data"]["config.yaml"])
    assert config["train"]["model_dir"].startswith("/shared/") and config["embed"]["model_dir"].startswith("/shared/")


# --- network policy and TLS ------------------------------------------------------------------

def _selects(selector: dict, labels: dict) -> bool:
    """Whether a Kubernetes label selector (matchLabels and In/NotIn/Exists expressions) selects ``labels``."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": labels.get(key) in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def _pod_labels(docs: list[dict]) -> dict[str, dict]:
    return {f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["metadata"]["labels"]
            for d in docs if d["kind"] in ("Deployment", "Job")}


def _admitted(policy: dict, labels: dict, port: int) -> bool:
    """Whether ``policy`` admits a pod of this namespace with ``labels`` to ``port``."""
    for rule in policy["spec"].get("ingress", []):
        ports = [p["port"] for p in rule.get("ports", [])]
        if ports and port not in ports:
            continue
        for peer in rule.get("from", []):
            if set(peer) == {"podSelector"} and _selects(peer["podSelector"], labels):
                return True
    return False


@pytest.mark.parametrize("which", ["default", "gpu"])
def test_network_policy_admits_only_the_releases_pods(which, default_docs, gpu_docs):
    docs = default_docs if which == "default" else gpu_docs
    pods = _pod_labels(docs)
    sched = find(docs, "NetworkPolicy", "wxdask-scheduler")
    workers = find(docs, "NetworkPolicy", "wxdask-workers")
    for version in KUBE_VERSIONS:
        kv.validate(sched, version, strict=True)
        kv.validate(workers, version, strict=True)
    assert sched["spec"]["policyTypes"] == ["Ingress"] == workers["spec"]["policyTypes"]
    # each policy applies to exactly its pods
    assert [p for p, labels in pods.items() if _selects(sched["spec"]["podSelector"], labels)] == [
        "Deployment/wxdask-scheduler"]
    worker_pods = sorted(p for p in pods if "worker" in p)
    assert sorted(p for p, labels in pods.items() if _selects(workers["spec"]["podSelector"], labels)) == worker_pods
    # the release's own pods reach the scheduler's comm and dashboard ports and the workers
    for name, labels in pods.items():
        for port in (8786, 8787):
            assert _admitted(sched, labels, port), (name, port)
        assert _admitted(workers, labels, 40123), name
    # a pod of another release, or an unlabelled one, does not; nor does any other port
    stranger = {**pods["Deployment/wxdask-scheduler"], "app.kubernetes.io/instance": "other"}
    for labels in (stranger, {}, {"app.kubernetes.io/name": "wxdask", "app.kubernetes.io/instance": "wxdask"}):
        assert not _admitted(sched, labels, 8786) and not _admitted(workers, labels, 40123)
    assert not _admitted(sched, pods["Deployment/wxdask-worker-cpu"], 22)
    # no peer is a namespace or an IP block by default
    for policy in (sched, workers):
        assert all(set(peer) == {"podSelector"} for rule in policy["spec"]["ingress"] for peer in rule["from"])


def test_network_policy_extra_peers_and_off_switch():
    ingress_ns = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    docs = render({"networkPolicy": {"dashboardFrom": [ingress_ns]}})
    sched = find(docs, "NetworkPolicy", "wxdask-scheduler")
    extra = [rule for rule in sched["spec"]["ingress"] if ingress_ns in rule["from"]]
    assert extra == [{"from": [ingress_ns], "ports": [{"port": 8787, "protocol": "TCP"}]}]
    for version in KUBE_VERSIONS:
        kv.validate(sched, version, strict=True)
    off = render({"networkPolicy": {"enabled": False}})
    assert not [d for d in off if d["kind"] == "NetworkPolicy"]
    with pytest.raises(helm.HelmValuesError, match="networkPolicy"):
        render({"networkPolicy": {"enabld": False}})


def test_tls_is_an_option():
    default = render()
    assert "DASK_DISTRIBUTED__COMM__TLS__CA_FILE" not in render_text()
    docs = render({"tls": {"enabled": True, "existingSecret": "wxdask-tls"}})
    (sched,) = find(docs, "Deployment", "wxdask-scheduler")["spec"]["template"]["spec"]["containers"]
    assert sched["args"][sched["args"].index("--protocol") + 1] == "tls"
    for name, spec in pod_specs(docs).items():
        assert {"name": "dask-tls", "secret": {"secretName": "wxdask-tls", "defaultMode": 0o440}} in spec["volumes"]
        for c in spec["containers"]:
            env = env_of(c)
            assert env["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"]["value"] == "/etc/dask/tls/ca.crt", name
            assert env["DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY"]["value"] == "/etc/dask/tls/tls.key"
            assert env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"]["value"] == "true"
            assert {"name": "dask-tls", "mountPath": "/etc/dask/tls", "readOnly": True} in c["volumeMounts"]
    (job,) = find(docs, "Job", "wxdask-run-1")["spec"]["template"]["spec"]["containers"]
    assert job["args"][job["args"].index("--scheduler") + 1] == "tls://wxdask-scheduler:8786"
    (worker,) = find(docs, "Deployment", "wxdask-worker-cpu")["spec"]["template"]["spec"]["containers"]
    assert worker["args"][0] == "tls://wxdask-scheduler:8786"
    for doc in docs:
        if doc["kind"] not in CRD_KINDS:
            kv.validate(doc, KUBE_VERSIONS[-1], strict=True)
    with pytest.raises(helm.HelmValuesError, match="existingSecret"):
        render({"tls": {"enabled": True}})
    assert len(default) == len(docs)
