"""Getting a Dask client: an existing scheduler, or a LocalCluster.

Every stage's ``run(cfg, client)`` receives the client made here. Workers that
own a GPU advertise the ``GPU`` resource and run one thread.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, Iterator

from distributed import Client, LocalCluster, Nanny, performance_report, progress, wait

from wxdask.config import DaskConfig
from wxdask.errors import ClusterError

__all__ = ["make_client", "gpu_workers", "monitored", "compute"]

logger = logging.getLogger(__name__)


def make_client(cfg: DaskConfig, *, timeout: str = "10s") -> Client:
    """Connect to ``cfg.scheduler``, or start a LocalCluster of ``cfg.n_workers`` workers.

    ``cfg.gpu_workers`` of the local workers advertise ``GPU=1`` (one thread each).
    The dashboard link is logged.

    Raises
    ------
    ClusterError
        If the scheduler cannot be reached, naming its address.
    """
    if cfg.scheduler:
        try:
            client = Client(cfg.scheduler, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            raise ClusterError(
                f"cannot reach the Dask scheduler at {cfg.scheduler!r} ({type(exc).__name__}: {exc}); "
                "is it running, and is the address right?"
            ) from None
    else:
        cluster = LocalCluster(
            n_workers=cfg.n_workers - cfg.gpu_workers,
            threads_per_worker=cfg.threads_per_worker,
            memory_limit=cfg.memory_limit,
            processes=True,
        )
        for i in range(cfg.gpu_workers):
            cluster.worker_spec[f"gpu-{i}"] = {
                "cls": Nanny,
                "options": {"nthreads": 1, "resources": {"GPU": 1}, "memory_limit": cfg.memory_limit},
            }
        if cfg.gpu_workers:
            cluster.sync(cluster._correct_state)
        client = Client(cluster)
        client.wait_for_workers(cfg.n_workers)
    logger.info("Dask dashboard: %s", client.dashboard_link)
    return client


def gpu_workers(client: Client) -> list[str]:
    """Addresses of the workers that advertise the ``GPU`` resource."""
    info = client.scheduler_info(n_workers=-1)["workers"]
    return sorted(addr for addr, w in info.items() if w.get("resources", {}).get("GPU", 0) >= 1)


@contextlib.contextmanager
def monitored(cfg: DaskConfig) -> Iterator[None]:
    """Write a performance report around a block when ``cfg.performance_report`` is set."""
    if cfg.performance_report:
        with performance_report(filename=cfg.performance_report):
            yield
        logger.info("performance report written to %s", cfg.performance_report)
    else:
        yield


def compute(client: Client, futures: Any, cfg: DaskConfig) -> Any:
    """Wait for futures, with a progress bar on a terminal, and return their results.

    Errors raised by tasks are re-raised here with their original type.
    """
    if cfg.progress and sys.stderr.isatty():
        progress(futures)
    else:
        wait(futures)
    return client.gather(futures)
