"""Dask checks: :func:`raise_if_dask_computes` (through a :class:`CountingScheduler`) and :func:`task_result_shapes`.

Part of :mod:`wxdask.testing`, which re-exports every name.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class CountingScheduler:
    """A Dask scheduler that counts the graphs it is asked to compute and refuses too many.

    Computes with the synchronous scheduler while allowed (as xarray's and
    flox's test helpers of the same name).
    """

    def __init__(self, max_computes: int = 0) -> None:
        self.total_computes = 0
        self.max_computes = max_computes

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        import dask

        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(
                f"Too many computes: {self.total_computes} > max_computes={self.max_computes} "
                "(a lazy function computed something)"
            )
        return dask.get(dsk, keys, **kwargs)


@contextmanager
def raise_if_dask_computes(max_computes: int = 0) -> Iterator[CountingScheduler]:
    """Fail if more than ``max_computes`` Dask graphs are computed inside the block.

    Sets ``dask.config`` ``scheduler`` to a :class:`CountingScheduler`, so every
    ``.compute()``, ``.values``, ``np.asarray``, ``dask.compute`` and
    ``.persist()`` of a collection goes through it, even while a distributed
    ``Client`` is the default. (Work submitted to a client directly, e.g.
    ``client.compute(...)`` or ``client.submit(...)``, does not.)

    Examples
    --------
    >>> import dask.array as da
    >>> with raise_if_dask_computes():
    ...     x = da.ones(4, chunks=2) + 1   # building a graph is fine
    >>> with raise_if_dask_computes(max_computes=1) as counter:
    ...     _ = x.sum().compute()
    >>> counter.total_computes
    1
    """
    import dask

    scheduler = CountingScheduler(max_computes)
    with dask.config.set(scheduler=scheduler):
        yield scheduler


@contextmanager
def task_result_shapes() -> Iterator[dict]:
    """Record the shape of every numpy result of the tasks computed inside (``{key: shape}``).

    Use with the synchronous scheduler and fusion off, to see that no task holds
    a large block (e.g. an N x N distance matrix).
    """
    import dask
    import numpy as np

    sizes: dict = {}

    class _Record(dask.callbacks.Callback):
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if isinstance(result, np.ndarray):
                sizes[key] = result.shape

    with _Record(), dask.config.set({"scheduler": "sync", "optimization.fuse.active": False}):
        yield sizes
