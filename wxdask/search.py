"""Exact all-pairs nearest-neighbour (analog) search in embedding space.

Distances are squared Euclidean, as the seed reported them.

Core (pure numpy): :func:`prepare_base`, :func:`knn_block`, :func:`merge_knn`.
Lazy wrappers: :func:`knn` (a Dask array of neighbours for a Dask array of
queries) and :func:`nearest_neighbours` (every slot of the store's embedding).
I/O: :func:`run` (all pairs, written back to the store). One-off queries (one
time or one image) and their tables and pictures are in :mod:`wxdask.query`.

How the search is blocked: the database (``N x n_latent`` float32, 20 MB for
ten years of hourly analyses) is prepared once, as a single graph key, and
every task holds it; each task takes one block of at most ``block_size``
queries and walks the database in chunks of ``chunk_size`` rows: one GEMM
gives ``-2 q.b + |b|^2`` (the squared distance less ``|q|^2``, which does not
change the ranking), rows keep only the entries at or below their running
k-th best, and a deterministic merge keeps the k best. No task builds more than
a ``block_size x chunk_size`` matrix; the whole run holds ``N x k`` results.
The k distances kept are then recomputed exactly (float64 differences), and
ties are broken by the lower database index (earlier time, then lower lead).

A slot is never its own neighbour; ``exclude_window`` drops every slot whose
initialisation time differs from the query's by less than the window (the
seed's "not within +/- 1 day"; ``0`` drops only the query itself); missing
(NaN) slots are never neighbours and get no neighbours.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import numpy as np
import xarray as xr

from wxdask.config import Config, SearchConfig, parse_duration
from wxdask.errors import ConfigError, StoreLayoutError

if TYPE_CHECKING:  # pragma: no cover
    import dask.array as da
    from distributed import Client

__all__ = [
    "PreparedBase",
    "NEIGHBOR_DTYPE",
    "prepare_base",
    "knn_block",
    "merge_knn",
    "knn",
    "nearest_neighbours",
    "window_hours",
    "check_embedding",
    "gpu_resources",
    "on_gpu",
    "run",
]

logger = logging.getLogger(__name__)

#: One neighbour: database row, squared distance, its slot's time and lead.
NEIGHBOR_DTYPE = np.dtype([("index", "i8"), ("sqdist", "f4"), ("time", "M8[ns]"), ("lead", "i8")])
_NAT = np.datetime64("NaT", "ns")
_FMAX = np.float32(np.finfo(np.float32).max)
#: Database columns sampled to set a first threshold for a row with no k-th best yet.
_SAMPLE = 1024
#: Queries per GEMM within a task (keeps the distance matrix in cache-friendly pieces).
_QSUB = 1024
#: Database rows per device GEMM at least (the device path's chunks are larger than the host's).
DEVICE_CHUNK = 65536
#: Key of a missing neighbour (sorts last).
_MISSING = np.iinfo(np.int64).max


class PreparedBase(NamedTuple):
    """The database in the form every search task uses (one graph key).

    Attributes
    ----------
    aug : numpy.ndarray
        ``(n, d + 1)`` float32 rows ``[-2 b, |b|^2]``; a missing row is ``[0, ..., 0, inf]``.
    time : numpy.ndarray or None
        ``(n,)`` int64 hours of each row's initialisation time (for the exclusion window).
    lead : numpy.ndarray or None
        ``(n,)`` int64 lead of each row.
    """

    aug: np.ndarray
    time: np.ndarray | None
    lead: np.ndarray | None

    @property
    def n(self) -> int:
        return self.aug.shape[0]

    @property
    def d(self) -> int:
        return self.aug.shape[1] - 1

    def rows(self, index: np.ndarray) -> np.ndarray:
        """The original float32 rows at ``index`` (exact: ``-2`` is a power of two)."""
        return self.aug[index, :-1] * np.float32(-0.5)


# ----------------------------------------------------------------------------- core (numpy)


def prepare_base(base: np.ndarray, time: np.ndarray | None = None, lead: np.ndarray | None = None) -> PreparedBase:
    """Prepare a database for :func:`knn_block`: augmented rows, validity, times.

    Parameters
    ----------
    base : numpy.ndarray
        ``(n, d)`` embeddings; a row with any NaN or inf is missing.
    time : numpy.ndarray, optional
        ``(n,)`` initialisation times (datetime64 or int64 hours).
    lead : numpy.ndarray, optional
        ``(n,)`` leads in hours.

    Returns
    -------
    PreparedBase

    Examples
    --------
    >>> p = prepare_base(np.array([[1.0, 2.0], [np.nan, 0.0]]))
    >>> p.aug
    array([[-2., -4.,  5.],
           [ 0.,  0., inf]], dtype=float32)
    >>> p.rows(np.array([0]))
    array([[1., 2.]], dtype=float32)
    """
    b = np.asarray(base, dtype=np.float32)
    if b.ndim != 2:
        raise ValueError(f"base must be 2-D (n, d), got shape {b.shape}")
    if b.shape[0] >= 2**32:
        raise ValueError(f"a database of {b.shape[0]} rows is too large (at most 2**32 - 1)")
    aug = np.empty((b.shape[0], b.shape[1] + 1), dtype=np.float32)
    for r0 in range(0, b.shape[0], 65536):  # float64 norms without a float64 copy of the database
        rows = b[r0:r0 + 65536]
        valid = np.isfinite(rows).all(axis=1)
        np.multiply(rows, np.float32(-2.0), out=aug[r0:r0 + 65536, :-1])
        sq = np.einsum("ij,ij->i", rows.astype(np.float64), rows.astype(np.float64))
        aug[r0:r0 + 65536, -1] = np.where(valid, sq, np.inf).astype(np.float32)
        aug[r0:r0 + 65536, :-1][~valid] = 0.0
    return PreparedBase(aug, _hours(time), None if lead is None else np.asarray(lead, dtype=np.int64))


def _hours(time: np.ndarray | None) -> np.ndarray | None:
    if time is None:
        return None
    t = np.asarray(time)
    if np.issubdtype(t.dtype, np.datetime64):
        return t.astype("datetime64[h]").astype(np.int64)
    return t.astype(np.int64)


def window_hours(window: Any) -> int:
    """An exclusion window (hours, ``"1d"``-style text, or a timedelta64) as whole hours.

    Examples
    --------
    >>> window_hours("1d"), window_hours(np.timedelta64(3, "h")), window_hours(None)
    (24, 3, 0)
    """
    if isinstance(window, np.timedelta64):
        return int(window.astype("timedelta64[h]").astype(np.int64))
    if isinstance(window, str):
        return int(parse_duration(window, "exclude_window").astype(np.int64))
    return int(window or 0)


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


# ----------------------------------------------------------------------------- lazy (dask)


def knn(
    queries: da.Array,
    base: da.Array,
    k: int,
    *,
    base_time: np.ndarray | None = None,
    base_lead: np.ndarray | None = None,
    query_index: da.Array | None = None,
    query_time: np.ndarray | None = None,
    exclude_window: Any = 0,
    block_size: int = 4096,
    chunk_size: int = 4096,
    device: bool = False,
) -> da.Array:
    """Lazy exact k-NN of ``queries`` in ``base``: one task per block of queries.

    The database is rechunked to a single chunk and prepared by one task
    (:func:`prepare_base`), whose single key every search task depends on: it
    travels to each worker once and is never embedded in a task.

    Parameters
    ----------
    queries : dask.array.Array
        ``(m, d)`` query embeddings.
    base : dask.array.Array
        ``(n, d)`` database embeddings.
    k : int
        Neighbours per query.
    base_time, base_lead : numpy.ndarray, optional
        ``(n,)`` time and lead of every database row.
    query_index : dask.array.Array, optional
        ``(m,)`` int database row of each query (``-1`` if not in the database);
        chunked like ``queries`` along its first axis.
    query_time : numpy.ndarray, optional
        ``(m,)`` query times, for queries not in the database (small ``m`` only:
        it is embedded in the graph).
    exclude_window : int, str or numpy.timedelta64
        See :func:`knn_block`.
    block_size : int
        Queries per task (``queries`` is rechunked to it).
    chunk_size : int
        Database rows per GEMM within a task.
    device : bool
        Search tasks use the accelerator path
        (:func:`wxdask.knn_device.knn_prepared_device`, same results); compute
        them on GPU workers with ``resources={"GPU": 1}`` and ``optimize_graph=False``.

    Returns
    -------
    dask.array.Array
        ``(m, k)`` records of :data:`NEIGHBOR_DTYPE` (fields ``index``,
        ``sqdist``, ``time``, ``lead``), chunked ``block_size`` along queries.
    """
    import dask
    import dask.array as da

    m, d = queries.shape
    queries = queries.rechunk({0: block_size, 1: -1})
    if query_index is None:
        query_index = da.full((m,), -1, dtype=np.int64, chunks=(queries.chunks[0],))
    else:
        query_index = query_index.rechunk((queries.chunks[0],))
    one = base.rechunk({0: -1, 1: -1})
    (base_key,) = one.to_delayed().ravel()
    prep = dask.delayed(prepare_base, pure=True)(base_key, base_time, base_lead,
                                                 dask_key_name=f"prepare-base-{one.name}")
    kwargs: dict[str, Any] = {"k": int(k), "window": window_hours(exclude_window), "chunk_size": int(chunk_size)}
    if query_time is not None:
        kwargs["q_time"] = _hours(query_time)
    if device:
        kwargs["device"] = True
    from dask.base import tokenize

    return da.blockwise(
        _knn_task, "ir",
        queries, "ij",
        query_index, "i",
        prep, None,
        new_axes={"r": int(k)},
        concatenate=True,
        dtype=NEIGHBOR_DTYPE,
        meta=np.empty((0, 0), dtype=NEIGHBOR_DTYPE),
        name="knn-" + tokenize(queries, query_index, prep, kwargs),
        **kwargs,
    )


def nearest_neighbours(emb: xr.DataArray, cfg: SearchConfig, *, device: bool = False) -> xr.Dataset:
    """Lazy k nearest other slots of every slot of the embedding.

    Parameters
    ----------
    emb : xarray.DataArray
        ``embedding(time, lead_time, latent)``, Dask-backed (NaN where missing).
    cfg : SearchConfig
        ``k``, ``exclude_window``, ``lead`` (``None``: all slots searched
        together), ``block_size``, ``chunk_size``.

    Returns
    -------
    xarray.Dataset
        ``neighbor_time`` (datetime64, NaT where fewer than k),
        ``neighbor_sqdist`` (float32, NaN likewise) and ``neighbor_lead``
        (int32, -1 likewise), each ``(time, lead_time, rank)`` with ``rank``
        1..k and the same ``time``/``lead_time`` as ``emb``; with ``cfg.lead``
        set, only that lead is searched and the other leads are empty.
    device : bool
        Search tasks use the accelerator path (see :func:`knn`).
    """
    import dask.array as da

    from wxdask.store import flatten_slots, unflatten_slots

    check_embedding(emb)
    full_leads = emb["lead_time"].values
    sub = emb
    if cfg.lead is not None:
        if cfg.lead not in set(full_leads.tolist()):
            raise ConfigError(f"search.lead {cfg.lead} is not in the store's leads {full_leads.tolist()}")
        sub = emb.sel(lead_time=[cfg.lead])
    nt, nl, _ = sub.shape
    tb = max(1, cfg.block_size // nl)
    flat, times, leads = flatten_slots(sub, cfg.block_size)
    qidx = da.arange(nt * nl, chunks=(flat.chunks[0],), dtype=np.int64)
    rec = knn(flat, flat, cfg.k, base_time=times, base_lead=leads, query_index=qidx,
              exclude_window=cfg.exclude_window, block_size=tb * nl, chunk_size=cfg.chunk_size, device=device)
    rec = unflatten_slots(rec, (nt, nl))
    coords = {"time": sub["time"], "lead_time": sub["lead_time"], "rank": np.arange(1, cfg.k + 1)}
    dims = ("time", "lead_time", "rank")
    out = xr.Dataset(
        {
            "neighbor_time": (dims, rec["time"]),
            "neighbor_sqdist": (dims, rec["sqdist"]),
            "neighbor_lead": (dims, rec["lead"].astype(np.int32)),
        },
        coords=coords,
    )
    if cfg.lead is not None:
        out = out.reindex(lead_time=full_leads, fill_value={
            "neighbor_time": _NAT, "neighbor_sqdist": np.nan, "neighbor_lead": -1})
        out = out.chunk({"lead_time": -1})
    out["neighbor_time"].attrs = {"long_name": "initialisation time of the k-th nearest other slot",
                                  "description": "NaT where fewer than k slots qualify"}
    out["neighbor_sqdist"].attrs = {"long_name": "squared Euclidean distance in embedding space",
                                    "units": "1"}
    out["neighbor_lead"].attrs = {"long_name": "lead time of the k-th nearest other slot", "units": "hours",
                                  "description": "-1 where fewer than k slots qualify"}
    out.attrs = _search_attrs(cfg)
    return out


def _search_attrs(cfg: SearchConfig) -> dict:
    return {"search_k": cfg.k, "search_exclude_window": str(cfg.exclude_window),
            "search_lead": -1 if cfg.lead is None else cfg.lead, "search_metric": "squared euclidean"}


def gpu_resources(client: Client | None) -> dict | None:
    """``{"GPU": 1}`` when the cluster has GPU workers (search tasks then run there, on the device), else None."""
    if client is None:
        return None
    from wxdask.client import gpu_workers

    return {"GPU": 1} if gpu_workers(client) else None


def on_gpu(client: Client | None, ds: xr.Dataset, resources: dict | None) -> xr.Dataset:
    """``ds`` with its Dask variables persisted on the workers holding ``resources`` (unchanged if None).

    The search graph is persisted unoptimized with the resources (low-level
    fusion would drop the placement); the store write that follows reads the
    persisted results.
    """
    if client is None or resources is None:
        return ds
    names = [n for n in ds.data_vars if hasattr(ds[n].data, "dask")]
    persisted = client.persist([ds[n].data for n in names], resources=resources, optimize_graph=False)
    out = ds.copy()
    for n, arr in zip(names, persisted):
        out[n] = (ds[n].dims, arr, ds[n].attrs)
    logger.info("search tasks placed on workers with resources %s (device path)", resources)
    return out


def check_embedding(emb: xr.DataArray) -> None:
    """Check the embedding has the store contract's dims.

    Raises
    ------
    StoreLayoutError
        If its dims are not ``(time, lead_time, latent)``.
    """
    if emb.dims != ("time", "lead_time", "latent"):
        raise StoreLayoutError(f"embedding must have dims (time, lead_time, latent), got {emb.dims}")


# ----------------------------------------------------------------------------- I/O


def run(cfg: Config, client: Client | None) -> str:
    """All-pairs search over the store's embedding; writes the neighbour variables.

    Writes ``neighbor_time``, ``neighbor_sqdist`` and ``neighbor_lead``
    ``(time, lead_time, rank)``, with the search settings and the model hash
    in their attributes, then consolidates the store.

    Returns
    -------
    str
        What was written, and where.
    """
    from wxdask import store

    ds = store.open_input(cfg.store, ["embedding"])
    resources = gpu_resources(client)
    out = nearest_neighbours(ds["embedding"], cfg.search, device=resources is not None)
    out = on_gpu(client, out, resources)
    model = ds["embedding"].attrs.get("model_hash", ds.attrs.get("model_hash", ""))
    attrs = {**out.attrs, "model_hash": model}
    for name in out.data_vars:
        out[name].attrs.update(attrs)
    nslots = int(np.prod(ds["embedding"].shape[:2]))
    logger.info("searching %d slots for %d neighbours each (block %d, chunk %d)", nslots, cfg.search.k,
                cfg.search.block_size, cfg.search.chunk_size)
    from wxdask.client import compute

    if resources is None:  # (on_gpu persisted them already)
        out = client.persist(out) if client is not None else out.persist()
    # numpy's stubs type a ufunc of a DataArray as an ndarray; it is a DataArray
    queried = cast("xr.DataArray", np.isfinite(ds["embedding"])).all(axis=-1)
    if cfg.search.lead is not None:
        queried = queried & (ds["lead_time"] == cfg.search.lead)
    (counts,) = compute(client, [count_found(out["neighbor_sqdist"].data, queried.data)], scheduler=None)
    n_queries, n_full, n_none = int(counts.sum()), int(counts[cfg.search.k]), int(counts[0])
    n_short = n_queries - n_full - n_none
    if n_queries and n_full + n_short == 0:
        raise StoreLayoutError(
            f"no slot of {cfg.store.url!r} has any neighbour: {n_queries} embedded slots, none outside each "
            f"other's exclusion window of {cfg.search.exclude_window}; use a shorter --exclude-window"
        )
    if not n_queries:
        raise StoreLayoutError(f"store {cfg.store.url!r} holds no embedded slot to search; run `wxdask embed` first")
    encoding = {"neighbor_time": {"units": "hours since 1970-01-01 00:00:00", "dtype": "int64",
                                  "calendar": "proleptic_gregorian"}}
    # computed by the client that holds the persisted results, not just any default client
    with client.as_current() if client is not None else contextlib.nullcontext():
        store.write_variables(cfg.store, out, encoding=encoding, attrs=_search_attrs(cfg.search))
    short = (f"; {n_short} slots have fewer than {cfg.search.k} neighbours outside the window"
             if n_short else "")
    none = f"; {n_none} embedded slots have none" if n_none else ""
    if n_short or n_none:
        logger.warning("search: %d of %d embedded slots have fewer than %d neighbours (%d have none)",
                       n_short + n_none, n_queries, cfg.search.k, n_none)
    return (f"{cfg.search.k} nearest neighbours of {n_full} of {n_queries} embedded slots "
            f"(not within {cfg.search.exclude_window}){short}{none} "
            f"-> {cfg.store.url}: neighbor_time, neighbor_sqdist, neighbor_lead")


def count_found(sqdist: Any, queried: Any) -> Any:
    """Lazy histogram of the neighbours found: ``counts[j]`` queried slots have exactly j of k.

    Parameters
    ----------
    sqdist : dask.array.Array
        ``(time, lead_time, k)`` neighbour distances (NaN where missing).
    queried : dask.array.Array
        ``(time, lead_time)`` bool, the slot was a query (embedded, and of the searched lead).
    """
    import dask.array as da

    found = da.isfinite(sqdist).sum(axis=-1)
    return da.stack([((found == j) & queried).sum() for j in range(sqdist.shape[-1] + 1)])
