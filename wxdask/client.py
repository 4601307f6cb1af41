"""Getting a Dask client: an existing scheduler, or a LocalCluster.

Every stage's ``run(cfg, client)`` receives the client made here. Workers that
own a GPU advertise the ``GPU`` resource and run one thread.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import sys
import time
from typing import Any, Iterator, cast

from distributed import Client, LocalCluster, Nanny, performance_report, progress, wait
from distributed.comm.core import CommClosedError

from wxdask.config import DaskConfig
from wxdask.errors import ClusterError, ConfigError, WxdaskError

__all__ = ["make_client", "check_versions", "gpu_workers", "monitored", "scheduler_guard", "close_client", "compute",
           "worker_address", "check_report_path"]

logger = logging.getLogger(__name__)

#: glibc ``malloc`` settings for local worker processes, set before they start. distributed's default
#: (``MALLOC_TRIM_THRESHOLD_=65536``) also pins the mmap threshold at 128 kB, so every large buffer (a
#: decoded HRRR field is 15 MB of float64) is a fresh mmap, page-faulted again on each use: a bare
#: ecCodes decode measured 2.6x slower under it. Here buffers under 32 MiB come from the heap, and up to
#: 128 MiB of freed heap is kept before it is returned to the system.
WORKER_MALLOC = {"MALLOC_MMAP_THRESHOLD_": 32 * 2**20, "MALLOC_TRIM_THRESHOLD_": 128 * 2**20}
#: Those of :data:`WORKER_MALLOC` the user set in this process's environment before wxdask ran: theirs win.
_USER_MALLOC = {k: os.environ[k] for k in WORKER_MALLOC if k in os.environ}


@contextlib.contextmanager
def _worker_malloc() -> Iterator[None]:
    """:data:`WORKER_MALLOC` (or the user's own values) in force for the worker processes started within.

    distributed sets ``pre-spawn-environ`` in this process's environment before each spawn, and prefers
    what the environment holds to its config: so after any other local cluster (its defaults) the config
    alone would no longer reach the workers. Here the environment holds these values while they start.
    """
    import dask

    want = {k: _USER_MALLOC.get(k, str(v)) for k, v in WORKER_MALLOC.items()}
    before = {k: os.environ.get(k) for k in want}
    os.environ.update(want)
    try:
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{k}": v for k, v in want.items()}):
            yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def make_client(cfg: DaskConfig, *, timeout: str | float | None = None) -> Client:
    """Connect to ``cfg.scheduler``, or start a LocalCluster of ``cfg.n_workers`` workers.

    ``cfg.gpu_workers`` of the local workers advertise ``GPU=1`` (one thread each).
    A local cluster listens on ``cfg.host`` and serves its (unauthenticated)
    dashboard on ``cfg.dashboard_address``, both loopback by default. The
    dashboard link is logged. No wait is unbounded: reaching the scheduler gives
    up after ``cfg.connect_timeout`` seconds, starting the local cluster and its
    workers after ``cfg.start_timeout``.

    Parameters
    ----------
    cfg : DaskConfig
        Where the cluster is, or what to start.
    timeout : str or float, optional
        Overrides ``cfg.connect_timeout`` (``"10s"`` or seconds).

    Raises
    ------
    ClusterError
        If the scheduler cannot be reached, naming its address, or the local
        workers do not start in time.
    """
    limit = cfg.connect_timeout if timeout is None else timeout
    if cfg.scheduler:
        try:
            client = Client(cfg.scheduler, timeout=limit)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {cfg.scheduler!r} within {limit} s "
                f"({type(exc).__name__}: {' '.join(str(exc).split())}); is it running, and is the address right?"
            ) from None
        try:
            check_versions(client)
        except (OSError, TimeoutError) as exc:
            logger.warning("could not compare package versions with the cluster: %s", exc)
    else:
        limit = cfg.start_timeout
        try:
            with _worker_malloc():
                cluster = LocalCluster(
                    n_workers=cfg.n_workers - cfg.gpu_workers,
                    threads_per_worker=cfg.threads_per_worker,
                    memory_limit=cfg.memory_limit,
                    processes=True,
                    host=cfg.host,
                    dashboard_address=cfg.dashboard_address,
                    timeout=limit,
                )
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"could not start a local Dask cluster on {cfg.host} (dashboard {cfg.dashboard_address}) "
                f"within {limit} s: {type(exc).__name__}: {' '.join(str(exc).split())}"
            ) from None
        for i in range(cfg.gpu_workers):
            cluster.worker_spec[f"gpu-{i}"] = {
                "cls": Nanny,
                "options": {"nthreads": 1, "resources": {"GPU": 1}, "memory_limit": cfg.memory_limit,
                            "host": cfg.host},
            }
        if cfg.gpu_workers:
            with _worker_malloc():
                cluster.sync(cluster._correct_state)
        client = Client(cluster)
        try:
            client.wait_for_workers(cfg.n_workers, timeout=limit)
        except (OSError, TimeoutError):
            n = len(client.scheduler_info(n_workers=-1)["workers"])
            close_client(client)
            raise ClusterError(
                f"only {n} of {cfg.n_workers} local Dask workers started within {limit} s "
                "(dask.start_timeout); see the log for why, or lower dask.n_workers / dask.memory_limit"
            ) from None
    logger.info("Dask dashboard: %s", client.dashboard_link)
    return client


#: Packages whose versions must agree on the client, the scheduler and every worker.
VERSION_PACKAGES = ("python", "dask", "distributed", "numpy", "xarray", "zarr", "keras")


def check_versions(client: Client, packages: tuple[str, ...] = VERSION_PACKAGES) -> list[str]:
    """Compare package versions of the client, the scheduler and every worker.

    A mismatch between them is the most common failure of a Dask deployment
    (pickled functions and arrays that load on one side and not the other).
    Each mismatch is logged as a WARNING naming the package and the version on
    each side; nothing is raised.

    Parameters
    ----------
    client : distributed.Client
        A connected client.
    packages : tuple of str
        Package names to compare (``"python"`` is the interpreter).

    Returns
    -------
    list of str
        One message per package whose versions differ; empty when all agree.
    """
    # a synchronous client: the result, not a coroutine
    versions = cast(dict, client.get_versions(packages=[p for p in packages if p != "python"]))
    sides: dict[str, dict] = {"client": versions["client"], "scheduler": versions["scheduler"]}
    workers = {
        addr: info for addr, info in (versions.get("workers") or {}).items()
        if isinstance(info, dict) and "packages" in info
    }
    messages = []
    for pkg in packages:
        seen = {side: _version_of(info, pkg) for side, info in sides.items()}
        by_version: dict[str | None, list[str]] = {}
        for addr, info in sorted(workers.items()):
            by_version.setdefault(_version_of(info, pkg), []).append(addr)
        if len(set(seen.values()) | set(by_version)) <= 1:
            continue
        parts = [f"{side} {ver or 'not installed'}" for side, ver in seen.items()]
        if len(by_version) == 1:
            (ver, _), = by_version.items()
            parts.append(f"workers {ver or 'not installed'}")
        else:
            parts += [f"workers {', '.join(addrs)} {ver or 'not installed'}" for ver, addrs in by_version.items()]
        message = (
            f"version mismatch for {pkg}: {'; '.join(parts)}. Build the images and the client "
            "environment from the same lock (deploy/requirements.lock)."
        )
        logger.warning(message)
        messages.append(message)
    return messages


def _version_of(info: dict, pkg: str) -> str | None:
    if pkg == "python":
        full = info.get("host", {}).get("python") or info.get("packages", {}).get("python")
        return ".".join(str(full).split(".")[:3]) if full else None
    return info.get("packages", {}).get(pkg)


def gpu_workers(client: Client) -> list[str]:
    """Addresses of the workers that advertise the ``GPU`` resource."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    return sorted(addr for addr, w in info.items() if w.get("resources", {}).get("GPU", 0) >= 1)


def here_or_on_gpu(client: Client | None, on_gpu: bool, func: Any, *args: Any, key: str | None = None) -> Any:
    """``func(*args)`` in this process, or, with ``on_gpu`` (``train.on_gpu_worker``), as one task on a
    worker that advertises the ``GPU`` resource; its result either way.

    Raises
    ------
    ConfigError
        With ``on_gpu`` and no client.
    ClusterError
        With ``on_gpu`` and no worker advertising the ``GPU`` resource.
    """
    if not on_gpu:
        return func(*args)
    if client is None:
        raise ConfigError("train.on_gpu_worker needs a Dask cluster; got no client")
    if not gpu_workers(client):
        raise ClusterError(
            "train.on_gpu_worker is set but no worker advertises the GPU resource; start one with "
            "`dask worker ... --resources GPU=1` (or set dask.gpu_workers), or unset train.on_gpu_worker"
        )
    logger.info("running %s on a GPU worker", getattr(func, "__name__", func))
    return client.submit(func, *args, resources={"GPU": 1}, pure=False, **({"key": key} if key else {})).result()


@contextlib.contextmanager
def monitored(cfg: DaskConfig, client: Client | None = None) -> Iterator[None]:
    """Write a performance report around a block when ``cfg.performance_report`` is set.

    The report is written when the block fails too, except when ``client``
    has lost its scheduler (which holds what the report is made of): then it
    is skipped at once instead of waiting for a reconnection.
    """
    if not cfg.performance_report:
        yield
        return
    check_report_path(cfg.performance_report)
    report = performance_report(filename=cfg.performance_report)
    report.__enter__()
    try:
        yield
    except BaseException:
        if client is not None and _scheduler_lost(client):
            logger.warning("no performance report: the scheduler was lost")
            raise
        report.__exit__(*sys.exc_info())
        raise
    report.__exit__(None, None, None)
    if os.path.isfile(cfg.performance_report):
        logger.info("performance report written to %s", cfg.performance_report)
    else:
        logger.warning("no performance report at %s: distributed did not write it", cfg.performance_report)


def check_report_path(path: str) -> None:
    """Refuse, before any work, a report path whose directory is missing or that is a directory.

    Raises
    ------
    ConfigError
        Naming the path and what is wrong with it.
    """
    parent = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ConfigError(f"dask.performance_report {path!r} is a directory; name an .html file in it")
    if not os.path.isdir(parent):
        what = "is not a directory" if os.path.exists(parent) else "does not exist"
        raise ConfigError(f"dask.performance_report {path!r}: its directory {parent!r} {what}")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"dask.performance_report {path!r}: its directory {parent!r} is not writable")


def _scheduler_lost(client: Client, wait: float = 0.0) -> bool:
    """Whether ``client`` has lost its scheduler (reconnecting or given up).

    A comm error can reach the caller before the client itself notices the
    loss; ``wait`` seconds give it time to, before answering no.
    """
    deadline = time.monotonic() + wait
    while client.status == "running":
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


@contextlib.contextmanager
def scheduler_guard(client: Client) -> Iterator[None]:
    """Turn the loss of the scheduler during a block into one :class:`ClusterError` naming its address.

    When the scheduler dies or its network goes, distributed cancels the
    client's futures (``FuturesCancelledError`` from ``wait``/``gather``,
    ``FutureCancelledError`` from ``Future.result``) or fails a call with
    ``CommClosedError``/``OSError``/``TimeoutError``. If the client is then no
    longer connected, the error becomes a ClusterError that names the address
    and says that a rerun resumes; any other error (a task's own ``OSError``,
    a :class:`~wxdask.errors.WxdaskError`) passes through unchanged.

    Raises
    ------
    ClusterError
        If the scheduler was lost inside the block.
    """
    address = client.scheduler.address if client.scheduler is not None else "?"
    try:
        yield
    except WxdaskError:
        raise
    except (concurrent.futures.CancelledError, CommClosedError, OSError, TimeoutError) as exc:
        if not _scheduler_lost(client, wait=5.0):
            raise
        logger.debug("scheduler lost", exc_info=True)
        raise ClusterError(
            f"lost the Dask scheduler at {address!r} in the middle of the run ({type(exc).__name__}); "
            "what was written so far is kept: start the scheduler again and rerun to resume"
        ) from None


def close_client(client: Client) -> None:
    """Close ``client`` and the LocalCluster it started, if any.

    Closing a client whose scheduler is gone cancels its reconnection attempts,
    which distributed logs as an ERROR with a traceback; that noise is muted
    here, since :func:`scheduler_guard` already reported the loss.
    """
    cluster = client.cluster
    noisy = logging.getLogger("distributed.client")
    level = noisy.level
    if _scheduler_lost(client):
        noisy.setLevel(logging.CRITICAL)
    try:
        client.close()
        if cluster is not None:
            cluster.close()
    finally:
        noisy.setLevel(level)


def compute(
    client: Client | None,
    collections: list,
    cfg: DaskConfig | None = None,
    *,
    resources: dict | None = None,
    optimize_graph: bool = True,
    scheduler: str | None = "synchronous",
    count: str | None = None,
    total: int = 0,
    stage: str = "",
) -> list:
    """Compute dask collections on the cluster and return their results, in the order given.

    The one way stages compute. With ``client=None`` the collections run in
    this process on ``scheduler`` (dask's synchronous scheduler by default;
    ``None``: dask's default, which is the current client if there is one).
    Errors raised by tasks are re-raised here with their original type.

    Parameters
    ----------
    client : distributed.Client or None
        The cluster.
    collections : list
        Dask collections (arrays, delayed).
    cfg : DaskConfig, optional
        With ``cfg.progress`` and a terminal on stderr, a progress bar is drawn there.
    resources : dict, optional
        Worker resources for every task (``{"GPU": 1}``); give ``optimize_graph=False``
        with it so low-level fusion does not drop the placement.
    optimize_graph : bool
        Optimize (fuse) the graph first.
    scheduler : str or None
        Scheduler when ``client`` is ``None``.
    count, total, stage : optional
        Log progress as results come in: each result is a dict whose ``count``
        entry adds to a running total out of ``total`` (logged as ``stage``).

    Returns
    -------
    list
        One result per collection.
    """
    if not collections:
        return []
    if client is None:
        import dask

        kwargs = {"scheduler": scheduler} if scheduler else {}
        return list(dask.compute(*collections, optimize_graph=optimize_graph, **kwargs))
    futures = client.compute(list(collections), optimize_graph=optimize_graph, resources=resources)
    if count is not None:
        from distributed import as_completed

        done, next_log = 0, 0.1
        for future in as_completed(futures):
            done += future.result()[count]
            if total and done / total >= next_log:
                logger.info("%s: %d/%d images (%.0f%%)", stage, done, total, 100 * done / total)
                next_log = done / total + 0.1
    elif cfg is not None and cfg.progress and sys.stderr.isatty():
        # distributed draws its bar on stdout; keep stdout for results, the bar with the log
        with contextlib.redirect_stdout(sys.stderr):
            progress(futures)
    else:
        wait(futures)
    return client.gather(futures)


def worker_address() -> str:
    """The address of the Dask worker running this code, else ``local-<pid>``."""
    import os

    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"local-{os.getpid()}"
