"""Exact k-nearest-neighbour blocks on an accelerator, through ``keras.ops``.

The same search as :func:`wxdask.search.knn_block`, with its distance blocks
(GEMM) and top-k in the framework the worker has (jax, torch or tensorflow,
whichever Keras runs on), on the GPU when there is one and on the CPU
otherwise, so the GPU code path is tested on CI's CPUs.

Exactness. Accelerators may multiply float32 at lower precision (TF32 keeps
10 bits of mantissa). Each query therefore keeps ``k + margin`` candidates by
the device's scores, the host recomputes their distances in float64 and keeps
the k best, and a row is *certified* only when its k-th exact distance lies
below the best score it did not keep by more than a bound on the device's
rounding error. Rows that are not certified (near-ties at the edge of the
candidate list) are searched again on the host with the numpy path. The
result equals :func:`wxdask.search.knn_block`'s, ties to the lower index.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from wxdask.search import PreparedBase, _exact, _knn_prepared

__all__ = ["knn_prepared_device", "DEFAULT_MARGIN"]

logger = logging.getLogger(__name__)

#: Candidates kept per query beyond k, for the float64 check.
DEFAULT_MARGIN = 16
#: Unit roundoff of the device's float32 GEMM inputs: TF32 keeps 10 bits of mantissa on GPUs
#: (2^-11), full float32 on CPUs (2^-24, times the ~2^6 terms of one dot product).
_ROUNDOFF = {"gpu": 2.0**-11, "cpu": 2.0**-18}


def _device_kind() -> str:
    """``"gpu"`` when Keras's backend computes on an accelerator, else ``"cpu"``."""
    import keras

    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            return "cpu" if jax.default_backend() == "cpu" else "gpu"
        if backend == "torch":
            import torch

            return "gpu" if torch.cuda.is_available() else "cpu"
        if backend == "tensorflow":
            import tensorflow as tf

            return "gpu" if tf.config.list_logical_devices("GPU") else "cpu"
    except Exception:  # noqa: BLE001 - unknown: assume the coarser arithmetic
        pass
    return "gpu"


def _ops() -> Any:
    import keras

    return keras.ops


def knn_prepared_device(
    q: np.ndarray,
    prep: PreparedBase,
    k: int,
    *,
    q_index: np.ndarray | None = None,
    q_time: np.ndarray | None = None,
    window: int = 0,
    chunk_size: int = 65536,
    margin: int = DEFAULT_MARGIN,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest database rows of each query, distance blocks on the device.

    Parameters
    ----------
    q : numpy.ndarray
        ``(m, d)`` queries; a row with NaN gets no neighbours.
    prep : PreparedBase
        The database (:func:`wxdask.search.prepare_base`).
    k : int
        Neighbours per query.
    q_index : numpy.ndarray, optional
        ``(m,)`` database row of each query (never its own neighbour), ``-1`` if none.
    q_time : numpy.ndarray, optional
        ``(m,)`` int64 hours of the queries' times, for the exclusion window.
    window : int
        Exclusion window in hours (rows closer in time than this are excluded).
    chunk_size : int
        Database rows per device GEMM.
    margin : int
        Extra candidates per query checked in float64.

    Returns
    -------
    index : numpy.ndarray
        ``(m, k)`` int64, ``-1`` where there are fewer than k.
    sqdist : numpy.ndarray
        ``(m, k)`` float32, NaN likewise.
    """
    ops = _ops()
    q = np.asarray(q, dtype=np.float32)
    m, d = q.shape[0], prep.d
    if q.ndim != 2 or q.shape[1] != d:
        raise ValueError(f"queries must have shape (m, {d}), got {q.shape}")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    n = prep.n
    q_index = np.full(m, -1, dtype=np.int64) if q_index is None else np.asarray(q_index, dtype=np.int64)
    use_window = window > 0 and q_time is not None and prep.time is not None
    q_valid = np.isfinite(q).all(axis=1)
    if m == 0 or n == 0:
        return _knn_prepared(q, prep, k, q_index=q_index, q_time=q_time, window=window, chunk_size=chunk_size)
    kk = int(min(k + max(int(margin), 1), n))  # one more than k at least, to certify the k-th

    qa = np.zeros((m, d + 1), dtype=np.float32)
    qa[q_valid, :d] = q[q_valid]
    qa[:, d] = 1.0
    qa_t = ops.convert_to_tensor(qa)
    qi_t = ops.convert_to_tensor(q_index.astype(np.int32))[:, None]
    if use_window:
        assert prep.time is not None and q_time is not None  # use_window implies both
        t0 = int(min(prep.time.min(), np.min(q_time)))
        qt_t = ops.convert_to_tensor((np.asarray(q_time) - t0).astype(np.int32))[:, None]
    inf = np.float32(np.inf)
    best_s = best_i = None
    for c0 in range(0, n, max(int(chunk_size), kk)):
        c1 = min(c0 + max(int(chunk_size), kk), n)
        aug = ops.convert_to_tensor(prep.aug[c0:c1])
        s = ops.matmul(qa_t, ops.transpose(aug))  # (m, nc): |b|^2 - 2 q.b
        cols = ops.convert_to_tensor(np.arange(c0, c1, dtype=np.int32))[None, :]
        bad = ops.equal(cols, qi_t)
        if use_window:
            assert prep.time is not None
            bt = ops.convert_to_tensor((prep.time[c0:c1] - t0).astype(np.int32))[None, :]
            bad = ops.logical_or(bad, ops.less(ops.abs(bt - qt_t), window))
        s = ops.where(bad, inf, s)
        top = min(kk, c1 - c0)
        neg, idx = ops.top_k(-s, top, sorted=False)
        idx = ops.cast(idx, "int32") + c0
        if best_s is None:
            best_s, best_i = -neg, idx
        else:
            cat_s = ops.concatenate([best_s, -neg], axis=1)
            cat_i = ops.concatenate([best_i, idx], axis=1)
            neg2, pos = ops.top_k(-cat_s, kk, sorted=False)
            best_s, best_i = -neg2, ops.take_along_axis(cat_i, pos, axis=1)
    cand_s = np.asarray(ops.convert_to_numpy(best_s), dtype=np.float64)
    cand_i = np.asarray(ops.convert_to_numpy(best_i), dtype=np.int64)
    cand_i = np.where(np.isfinite(cand_s) & q_valid[:, None], cand_i, -1)
    idx, sqdist = _exact(q, prep, cand_i, kk)
    idx, sqdist = idx[:, :k], sqdist[:, :k]
    if idx.shape[1] < k:
        idx = np.pad(idx, ((0, 0), (0, k - idx.shape[1])), constant_values=-1)
        sqdist = np.pad(sqdist, ((0, 0), (0, k - sqdist.shape[1])), constant_values=np.nan)

    # certify: every row not kept has a device score >= the largest kept one (s_kk), so a true
    # score >= s_kk - err: the k-th exact distance below that cannot be beaten or tied
    fin = np.where(np.isfinite(cand_s), cand_s, -np.inf)
    s_kk = np.where(np.isfinite(cand_s).all(axis=1), fin.max(axis=1), np.inf)
    q64 = np.where(q_valid[:, None], q, 0).astype(np.float64)
    q2 = np.einsum("ij,ij->i", q64, q64)
    b2max = float(np.max(prep.aug[:, -1][np.isfinite(prep.aug[:, -1])], initial=0.0))
    # |device score - true score| <= u * (2 |q||b| (two rounded factors) + |b|^2), u the unit roundoff
    u = _ROUNDOFF[_device_kind()]
    err = u * (4.0 * np.sqrt(q2 * b2max) + 2.0 * b2max) + 1e-30
    exact_kth = _kth_exact(q, prep, idx)
    ok = ~q_valid | (s_kk == np.inf) | (exact_kth - q2 < s_kk - err)
    ok &= ~((idx[:, -1] < 0) & (s_kk != np.inf))  # fewer than k found, yet rows were left out
    redo = np.flatnonzero(~ok)
    if redo.size:
        logger.debug("device search: %d of %d rows re-searched on the host (near-ties)", redo.size, m)
        r_idx, r_d = _knn_prepared(q[redo], prep, k, q_index=q_index[redo],
                                   q_time=None if q_time is None else np.asarray(q_time)[redo],
                                   window=window, chunk_size=4096)
        idx[redo], sqdist[redo] = r_idx, r_d
    return idx, sqdist


def _kth_exact(q: np.ndarray, prep: PreparedBase, idx: np.ndarray) -> np.ndarray:
    """float64 squared distance to each row's k-th neighbour (inf where missing)."""
    out = np.full(idx.shape[0], np.inf)
    have = idx[:, -1] >= 0
    if have.any():
        diff = q[have].astype(np.float64) - prep.rows(idx[have, -1]).astype(np.float64)
        out[have] = np.einsum("ij,ij->i", diff, diff)
    return out
