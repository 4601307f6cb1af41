"""The search, the blocked top-k walk over the database for a few queries (pure numpy).

Part of :mod:`wxdask.search`, which re-exports every name: :func:`_knn_rows` walks
the database in chunks, keeping each row's k best as int64 keys that sort like
``(score, index)`` (:func:`_score_key`, :func:`_merge_keys`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from wxdask.search.prepared import _FMAX, _MISSING, _SAMPLE, PreparedBase


def _knn_rows(q: np.ndarray, prep: PreparedBase, k: int, q_index: np.ndarray, q_time: np.ndarray | None,
              window: int, chunk_size: int) -> np.ndarray:
    """Database rows of the k best (approximate float32 scores) for a few queries."""
    m, d = q.shape[0], prep.d
    use_window = window > 0 and q_time is not None and prep.time is not None
    q_valid = np.isfinite(q).all(axis=1)
    qa = np.zeros((m, d + 1), dtype=np.float32)
    qa[q_valid, :d] = q[q_valid]
    qa[:, d] = 1.0

    def excluded(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        out = cols == q_index[rows]
        if use_window:
            assert prep.time is not None and q_time is not None  # use_window implies both
            out |= np.abs(prep.time[cols] - q_time[rows]) < window
        return out

    best = np.full((m, k), _MISSING, dtype=np.int64)
    n = prep.n
    width = min(chunk_size, n)
    buf = np.empty((m, width), dtype=np.float32)
    mask = np.empty((m, width), dtype=bool)
    for c0 in range(0, n, chunk_size):
        c1 = min(c0 + chunk_size, n)
        nc = c1 - c0
        s = buf if nc == width else np.empty((m, nc), dtype=np.float32)
        msk = mask if nc == width else np.empty((m, nc), dtype=bool)
        np.matmul(qa, prep.aug[c0:c1].T, out=s)
        thr = _key_score(best[:, k - 1])
        need = np.flatnonzero(q_valid & (best[:, k - 1] == _MISSING))
        if need.size:
            thr[need] = _sample_threshold(s, need, c0, k, excluded)
        thr[~q_valid] = -np.inf
        np.less_equal(s, thr[:, None], out=msk)
        flat = np.flatnonzero(msk)
        if flat.size == 0:
            continue
        rows, cols = np.divmod(flat, nc)
        vals = s.reshape(-1)[flat]
        cols += c0
        keep = ~excluded(rows, cols)
        best = _merge_keys(best, rows[keep], _score_key(vals[keep], cols[keep]), k)
    return np.where(best == _MISSING, -1, best & 0xFFFFFFFF)


def _score_key(score: np.ndarray, index: np.ndarray) -> np.ndarray:
    """One int64 per (float32 score, index) that sorts like the pair (score first, then index).

    Examples
    --------
    >>> keys = _score_key(np.array([-1.5, 2.0, 2.0, 0.0], dtype=np.float32), np.array([9, 4, 3, 7]))
    >>> np.argsort(keys).tolist(), _key_score(keys).tolist()
    ([0, 3, 2, 1], [-1.5, 2.0, 2.0, 0.0])
    """
    bits = np.asarray(score, dtype=np.float32).view(np.int32)
    order = bits ^ ((bits >> 31) & np.int32(0x7FFFFFFF))
    return (order.astype(np.int64) << 32) | np.asarray(index, dtype=np.int64)


def _key_score(key: np.ndarray) -> np.ndarray:
    """The float32 scores of :func:`_score_key` keys (``+inf`` for a missing key)."""
    order = (np.asarray(key) >> 32).astype(np.int32)
    out = (order ^ ((order >> 31) & np.int32(0x7FFFFFFF))).view(np.float32)
    return np.where(np.asarray(key) == _MISSING, np.float32(np.inf), out)


def _merge_keys(best: np.ndarray, rows: np.ndarray, keys: np.ndarray, k: int) -> np.ndarray:
    """Keep the k smallest keys per row of ``best`` and candidates ``(rows, keys)`` (rows sorted)."""
    if rows.size == 0:
        return best
    m = best.shape[0]
    counts = np.bincount(rows, minlength=m)
    starts = np.cumsum(counts) - counts
    pos = np.arange(rows.size) - starts[rows]
    dense = np.full((m, k + int(counts.max())), _MISSING, dtype=np.int64)
    dense[:, :k] = best
    dense[rows, k + pos] = keys
    part = np.partition(dense, k - 1, axis=1)[:, :k]
    part.sort(axis=1)
    return part


def _sample_threshold(s: np.ndarray, rows: np.ndarray, c0: int, k: int, excluded: Any) -> np.ndarray:
    """An upper bound of each row's k-th smallest score in ``s``, from a strided sample of columns."""
    nc = s.shape[1]
    stride = max(1, nc // _SAMPLE)
    cols = np.arange(0, nc, stride)
    if cols.size < k:
        return np.full(rows.size, _FMAX, dtype=np.float32)
    sample = s[np.ix_(rows, cols)]
    r, c = np.meshgrid(rows, cols + c0, indexing="ij")
    sample[excluded(r.ravel(), c.ravel()).reshape(sample.shape)] = np.inf
    kth = np.partition(sample, k - 1, axis=1)[:, k - 1]
    kth[~np.isfinite(kth)] = _FMAX
    return kth
