"""The search, core (pure numpy): exact k nearest rows of a block of queries, merging, one task.

Part of :mod:`wxdask.search`, which re-exports every name: :func:`knn_block`,
:func:`merge_knn` and the task that :func:`wxdask.search.knn` runs per block of
queries (``_knn_task``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wxdask.search.prepared import (
    _NAT,
    _QSUB,
    DEVICE_CHUNK,
    NEIGHBOR_DTYPE,
    PreparedBase,
    _hours,
    prepare_base,
    window_hours,
)
from wxdask.search.topk import _knn_rows


def knn_block(
    q: np.ndarray,
    base: np.ndarray | PreparedBase,
    k: int,
    *,
    q_index: np.ndarray | None = None,
    q_time: np.ndarray | None = None,
    base_time: np.ndarray | None = None,
    exclude_window: Any = 0,
    chunk_size: int = 4096,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest database rows of each query, by squared Euclidean distance.

    Pure numpy. Memory is bounded by ``len(q) x chunk_size`` whatever the
    database size: the database is walked in chunks and merged as it goes.

    Parameters
    ----------
    q : numpy.ndarray
        ``(m, d)`` queries; a row with NaN gets no neighbours.
    base : numpy.ndarray or PreparedBase
        ``(n, d)`` database (NaN rows are missing and never returned).
    k : int
        Neighbours per query.
    q_index : numpy.ndarray, optional
        ``(m,)`` database row of each query (``-1``: not in the database); that
        row is never its own neighbour.
    q_time, base_time : numpy.ndarray, optional
        Initialisation times (datetime64 or int64 hours) of queries and rows.
        ``base_time`` may instead come with a :class:`PreparedBase`.
    exclude_window : int, str or numpy.timedelta64
        Rows whose time differs from the query's by less than this many hours
        are excluded (``0``: none).
    chunk_size : int
        Database rows per GEMM.

    Returns
    -------
    index : numpy.ndarray
        ``(m, k)`` int64 database rows, nearest first; ``-1`` where there are fewer than k.
    sqdist : numpy.ndarray
        ``(m, k)`` float32 squared distances; NaN likewise.

    Examples
    --------
    >>> base = np.array([[0.0], [1.0], [3.0], [np.nan], [1.0]])
    >>> idx, d = knn_block(base[:2], base, 2, q_index=np.array([0, 1]))
    >>> idx
    array([[1, 4],
           [4, 0]])
    >>> d
    array([[1., 1.],
           [0., 1.]], dtype=float32)
    >>> knn_block(base[:1], base, 2, q_index=np.array([0]), q_time=np.array([0]),
    ...           base_time=np.arange(5), exclude_window=2)[0]
    array([[4, 2]])
    """
    prep = base if isinstance(base, PreparedBase) else prepare_base(base, base_time)
    if base_time is not None and isinstance(base, PreparedBase):
        prep = prep._replace(time=_hours(base_time))
    return _knn_prepared(np.asarray(q), prep, k, q_index=q_index, q_time=_hours(q_time),
                         window=window_hours(exclude_window), chunk_size=chunk_size)


def _knn_prepared(
    q: np.ndarray,
    prep: PreparedBase,
    k: int,
    *,
    q_index: np.ndarray | None,
    q_time: np.ndarray | None,
    window: int,
    chunk_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    m, d = q.shape[0], prep.d
    if q.ndim != 2 or q.shape[1] != d:
        raise ValueError(f"queries must have shape (m, {d}), got {q.shape}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    q_index = np.full(m, -1, dtype=np.int64) if q_index is None else np.asarray(q_index, dtype=np.int64)
    idx = np.full((m, k), -1, dtype=np.int64)
    for r0 in range(0, m, _QSUB):
        r1 = min(r0 + _QSUB, m)
        idx[r0:r1] = _knn_rows(q[r0:r1], prep, k, q_index[r0:r1], None if q_time is None else q_time[r0:r1],
                               window, max(int(chunk_size), 1))
    return _exact(q, prep, idx, k)


def _exact(q: np.ndarray, prep: PreparedBase, best_i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Recompute the kept distances in float64 and order by (distance, index)."""
    have = best_i >= 0
    d2 = np.full(best_i.shape, np.inf, dtype=np.float64)
    if have.any():
        r, c = np.nonzero(have)
        diff = q[r].astype(np.float64) - prep.rows(best_i[r, c]).astype(np.float64)
        d2[r, c] = np.einsum("ij,ij->i", diff, diff)
    idx_key = np.where(have, best_i, np.iinfo(np.int64).max)
    order = np.lexsort((idx_key, d2), axis=-1)
    best_i = np.take_along_axis(best_i, order, axis=1)
    d2 = np.take_along_axis(d2, order, axis=1)
    sqdist = np.where(best_i >= 0, d2, np.nan).astype(np.float32)
    return best_i, sqdist


def merge_knn(
    index_a: np.ndarray, sqdist_a: np.ndarray, index_b: np.ndarray, sqdist_b: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Merge two k-nearest lists of the same queries over disjoint parts of a database.

    Pure numpy. Missing entries (index ``-1``, distance NaN) sort last; ties go
    to the lower index, so the result does not depend on how the database was split.

    Parameters
    ----------
    index_a, sqdist_a, index_b, sqdist_b : numpy.ndarray
        ``(m, ka)`` and ``(m, kb)`` results of :func:`knn_block`.
    k : int
        Neighbours to keep.

    Returns
    -------
    index : numpy.ndarray
        ``(m, k)`` int64, ``-1`` where missing.
    sqdist : numpy.ndarray
        ``(m, k)`` float32, NaN where missing.

    Examples
    --------
    >>> merge_knn(np.array([[3, 7]]), np.array([[1.0, 4.0]]), np.array([[2, -1]]), np.array([[1.0, np.nan]]), 3)
    (array([[2, 3, 7]]), array([[1., 1., 4.]], dtype=float32))
    """
    idx = np.concatenate([index_a, index_b], axis=1).astype(np.int64)
    d = np.concatenate([sqdist_a, sqdist_b], axis=1).astype(np.float64)
    missing = (idx < 0) | np.isnan(d)
    d = np.where(missing, np.inf, d)
    key = np.where(missing, np.iinfo(np.int64).max, idx)
    order = np.lexsort((key, d), axis=-1)[:, :k]
    out_i = np.take_along_axis(np.where(missing, -1, idx), order, axis=1)
    out_d = np.take_along_axis(d, order, axis=1)
    out_d = np.where(out_i >= 0, out_d, np.nan).astype(np.float32)
    if out_i.shape[1] < k:
        pad = k - out_i.shape[1]
        out_i = np.pad(out_i, ((0, 0), (0, pad)), constant_values=-1)
        out_d = np.pad(out_d, ((0, 0), (0, pad)), constant_values=np.nan)
    return out_i, out_d


def _as_records(prep: PreparedBase, idx: np.ndarray, sqdist: np.ndarray) -> np.ndarray:
    out = np.empty(idx.shape, dtype=NEIGHBOR_DTYPE)
    out["index"] = idx
    out["sqdist"] = sqdist
    have = idx >= 0
    safe = np.where(have, idx, 0)
    if prep.time is not None:
        t = prep.time[safe].astype("datetime64[h]").astype("M8[ns]")
        out["time"] = np.where(have, t, _NAT)
    else:
        out["time"] = _NAT
    out["lead"] = np.where(have, prep.lead[safe], -1) if prep.lead is not None else -1
    return out


def _knn_task(q: np.ndarray, q_index: np.ndarray, prep: PreparedBase, *, k: int, window: int, chunk_size: int,
              q_time: np.ndarray | None = None, device: bool = False) -> np.ndarray:
    """One task: a block of queries against the whole prepared database.

    With ``device=True`` the distance blocks and top-k run through
    :func:`wxdask.knn_device.knn_prepared_device` (the worker's accelerator
    through ``keras.ops``; the same exact answer), else in numpy.
    """
    q_index = np.asarray(q_index, dtype=np.int64).reshape(-1)
    if q_time is None and prep.time is not None:
        q_time = np.where(q_index >= 0, prep.time[np.clip(q_index, 0, None)], 0) if prep.n else None
    if device:
        from wxdask.knn_device import knn_prepared_device

        idx, d = knn_prepared_device(q, prep, k, q_index=q_index, q_time=q_time, window=window,
                                     chunk_size=max(int(chunk_size), DEVICE_CHUNK))
    else:
        idx, d = _knn_prepared(q, prep, k, q_index=q_index, q_time=q_time, window=window, chunk_size=chunk_size)
    return _as_records(prep, idx, d)
