"""K-means weather regimes over every embedding in the store.

Core (pure numpy): :func:`assign_block`, :func:`inertia_block`,
:func:`lloyd_block`, :func:`min_sqdist_block`, :func:`sample_block`,
:func:`reduce_candidates`, :func:`count_by_month`, :func:`size_order`.
Lazy wrappers: :func:`slot_matrix` (the valid embeddings as one Dask array)
and :func:`regimes` (labels and distances of every slot for given centroids).
Fitting and I/O: :func:`fit` (computes; called by :func:`run`) and
:func:`run`, with :func:`cluster_sizes`, :func:`format_sizes` and
:func:`adjusted_rand` for people.

Two engines fit the centroids, both with ``k-means||`` initialisation:

``"dask-ml"``
    :class:`dask_ml.cluster.KMeans`, with DESIGN.md's traps avoided:
    ``init="k-means||"`` (its ``k-means++`` crashes with current
    scikit-learn), ``oversampling_factor`` 10 by default (2 undersamples), and
    the inertia recomputed here (dask-ml's ``inertia_`` sums unsquared
    distances when ``max_iter`` stops the loop). ``tol`` is absolute.
``"lloyd"``
    The same algorithm written on Dask arrays: k-means|| (Bahmani et al. 2012)
    with per-block sampling, weighted reduction of the candidates, then Lloyd
    iterations, each one graph of :func:`lloyd_block` tasks summed in float64.
    It stops when the centroids move less than ``tol`` (absolute, as dask-ml)
    or the assignments no longer change. dask-ml 2025.1's Lloyd step alone
    (scikit-learn's ``pairwise_distances_argmin_min`` per block) takes longer
    than scikit-learn's whole in-memory fit, so this engine is the default;
    ``scripts/bench_cluster.py`` measures both.

Either way the labels, sizes and inertia written to the store come from one
final pass (:func:`assign_block`, :func:`inertia_block`) with the fitted
centroids, clusters numbered by decreasing size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from wxdask.config import Config, KMeansConfig
from wxdask.errors import ConfigError, StoreLayoutError
from wxdask.model import Predictor, decode_dbz

if TYPE_CHECKING:  # pragma: no cover
    import dask.array as da
    from distributed import Client

__all__ = [
    "ENGINES",
    "assign_block",
    "inertia_block",
    "lloyd_block",
    "min_sqdist_block",
    "sample_block",
    "reduce_candidates",
    "count_by_month",
    "size_order",
    "slot_matrix",
    "regimes",
    "KMeansFit",
    "init_scalable",
    "fit",
    "run",
    "cluster_sizes",
    "format_sizes",
    "adjusted_rand",
]

logger = logging.getLogger(__name__)

ENGINES = ("lloyd", "dask-ml")
#: Rows per GEMM within a block (keeps temporaries in cache).
_SUB = 16384
#: Rounds of k-means|| when ``init_max_iter`` is not set (the paper finds a few rounds enough, and
#: each round adds ``oversampling_factor * k`` candidates; dask-ml's own default, about log of the
#: first cost, takes minutes on 1M rows).
INIT_ROUNDS = 3
#: dask-ml reduces its candidates without weights (its k_means.py says so), so it needs more rounds.
DASK_ML_INIT_ROUNDS = 5
#: k-means|| runs on a uniform subsample of at most this many rows.
INIT_SAMPLE = 200_000


# ----------------------------------------------------------------------------- core (numpy)


def _scores(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """``|c|^2 - 2 x.c`` (the squared distance less ``|x|^2``), float64."""
    c = np.asarray(centers, dtype=np.float64)
    return (c * c).sum(axis=1)[None, :] - 2.0 * (np.asarray(x, dtype=np.float64) @ c.T)


def assign_block(x: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of each row and the exact squared distance to it.

    Pure numpy. A row with NaN gets label ``-1`` and distance NaN. Ties go to
    the lower centroid number.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, d)`` embeddings.
    centers : numpy.ndarray
        ``(k, d)`` centroids.

    Returns
    -------
    labels : numpy.ndarray
        ``(n,)`` int32 in ``0..k-1``, or ``-1``.
    sqdist : numpy.ndarray
        ``(n,)`` float64 squared Euclidean distance to the assigned centroid.

    Examples
    --------
    >>> x = np.array([[0.0, 0.0], [4.0, 1.0], [np.nan, 0.0], [1.0, 0.0]])
    >>> assign_block(x, np.array([[0.0, 0.0], [4.0, 0.0]]))
    (array([ 0,  1, -1,  0], dtype=int32), array([ 0.,  1., nan,  1.]))
    """
    x = np.asarray(x)
    labels = np.full(x.shape[0], -1, dtype=np.int32)
    sqdist = np.full(x.shape[0], np.nan, dtype=np.float64)
    if not len(centers):
        return labels, sqdist
    c = np.asarray(centers, dtype=np.float64)
    for r0 in range(0, x.shape[0], _SUB):
        xb = x[r0:r0 + _SUB].astype(np.float64)
        valid = np.isfinite(xb).all(axis=1)
        if not valid.any():
            continue
        xv = xb[valid]
        lab = np.argmin(_scores(xv, c), axis=1).astype(np.int32)
        diff = xv - c[lab]
        labels[r0:r0 + _SUB][valid] = lab
        sqdist[r0:r0 + _SUB][valid] = np.einsum("ij,ij->i", diff, diff)
    return labels, sqdist


def inertia_block(x: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> float:
    """Sum of squared distances of rows to their assigned centroids (rows labelled ``-1`` skipped).

    This is scikit-learn's ``inertia_``: squared distances, float64.

    Examples
    --------
    >>> inertia_block(np.array([[0.0, 0.0], [3.0, 4.0], [9.0, 9.0]]), np.array([[0.0, 0.0]]), np.array([0, 0, -1]))
    25.0
    """
    labels = np.asarray(labels)
    keep = labels >= 0
    if not keep.any():
        return 0.0
    diff = np.asarray(x, dtype=np.float64)[keep] - np.asarray(centers, dtype=np.float64)[labels[keep]]
    return float(np.einsum("ij,ij->", diff, diff))


def _nearest32(x: np.ndarray, centers: np.ndarray, sub: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid and ``|c|^2 - 2 x.c`` for it, by float32 GEMMs over sub-blocks of rows."""
    x = np.asarray(x, dtype=np.float32)
    c = np.asarray(centers, dtype=np.float32)
    cn = (c.astype(np.float64) ** 2).sum(axis=1).astype(np.float32)
    labels = np.empty(x.shape[0], dtype=np.int32)
    best = np.empty(x.shape[0], dtype=np.float32)
    for r0 in range(0, x.shape[0], sub):
        s = x[r0:r0 + sub] @ (c.T * np.float32(-2.0))
        s += cn
        lab = np.argmin(s, axis=1)
        labels[r0:r0 + sub] = lab
        best[r0:r0 + sub] = s[np.arange(s.shape[0]), lab]
    return labels, best


def lloyd_block(x: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """One Lloyd step on a block: per-centroid sums and counts, and the inertia before the update.

    Pure numpy; float32 GEMMs (as scikit-learn on float32 data), sums returned
    in float64. Rows with NaN are skipped.

    Returns
    -------
    sums : numpy.ndarray
        ``(k, d)`` float64 sum of the rows assigned to each centroid.
    counts : numpy.ndarray
        ``(k,)`` int64 rows assigned to each centroid.
    inertia : float
        Sum of squared distances to the assigned centroids (float32 accuracy;
        :func:`inertia_block` is exact).

    Examples
    --------
    >>> s, n, i = lloyd_block(np.array([[0.0], [2.0], [10.0]]), np.array([[1.0], [9.0]]))
    >>> s.ravel().tolist(), n.tolist(), i
    ([2.0, 10.0], [2, 1], 3.0)
    """
    return _lloyd_task(x, centers)[:3]


def _lloyd_task(x: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, np.ndarray]:
    """:func:`lloyd_block` plus the label of every row (``-1`` for NaN rows)."""
    k, d = np.shape(centers)
    x = np.asarray(x, dtype=np.float32)
    labels, best = _nearest32(x, centers)
    bad = np.isnan(best)  # a row with NaN scores NaN against every centroid
    all_labels = labels
    if bad.any():
        all_labels = np.where(bad, -1, labels).astype(np.int32)
        x, labels, best = x[~bad], labels[~bad], best[~bad]
    onehot = np.zeros((x.shape[0], k), dtype=np.float32)
    onehot[np.arange(x.shape[0]), labels] = 1.0
    sums = (onehot.T @ x).astype(np.float64)
    counts = np.bincount(labels, minlength=k).astype(np.int64)
    inertia = float(np.maximum(best.astype(np.float64) + np.einsum("ij,ij->i", x, x, dtype=np.float64), 0).sum())
    return sums, counts, inertia, all_labels


def min_sqdist_block(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Squared distance of each row to its nearest centroid (float32 GEMM; NaN rows: 0, so never sampled).

    Examples
    --------
    >>> min_sqdist_block(np.array([[0.0], [3.0], [np.nan]]), np.array([[1.0], [5.0]]))
    array([1., 4., 0.])
    """
    x = np.asarray(x, dtype=np.float32)
    out = np.zeros(x.shape[0], dtype=np.float64)
    valid = np.isfinite(x).all(axis=1)
    if valid.any():
        xv = x[valid] if not valid.all() else x
        _, best = _nearest32(xv, centers)
        out[valid] = np.maximum(best.astype(np.float64) + np.einsum("ij,ij->i", xv, xv, dtype=np.float64), 0.0)
    return out


def sample_block(x: np.ndarray, d2: np.ndarray, scale: float, seed: tuple[int, ...]) -> np.ndarray:
    """k-means|| sampling: keep each row with probability ``min(1, scale * d2)``.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, d)`` rows.
    d2 : numpy.ndarray
        ``(n,)`` squared distance of each row to the current candidates.
    scale : float
        ``oversampling * k / cost``.
    seed : tuple of int
        Seed of this block and round (results do not depend on scheduling).

    Returns
    -------
    numpy.ndarray
        ``(m, d)`` sampled rows.

    Examples
    --------
    >>> sample_block(np.array([[0.0], [1.0], [2.0]]), np.array([0.0, 10.0, 0.0]), 1.0, (0,))
    array([[1.]])
    """
    u = np.random.default_rng(list(seed)).random(len(d2))
    return np.asarray(x)[u < np.asarray(d2) * scale]


def reduce_candidates(candidates: np.ndarray, weights: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Reduce k-means|| candidates to k centroids: weighted k-means (scikit-learn) on the candidates.

    Each candidate is weighted by how many rows are closest to it, as in the
    paper. Fewer than k distinct candidates are returned as they are, padded by
    repetition.

    Examples
    --------
    >>> c = reduce_candidates(np.array([[0.0], [0.1], [10.0]]), np.array([5, 5, 1]), 2, 0)
    >>> np.sort(c.ravel()).round(2).tolist()
    [0.05, 10.0]
    """
    from sklearn.cluster import KMeans as SKMeans

    cand = np.asarray(candidates, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    keep = w > 0
    if keep.sum() >= k:
        cand, w = cand[keep], w[keep]
    if len(np.unique(cand, axis=0)) <= k:
        reps = np.resize(np.arange(len(cand)), k)
        return cand[reps]
    km = SKMeans(k, n_init=3, random_state=seed).fit(cand, sample_weight=w + 1e-12)
    return km.cluster_centers_


def count_by_month(months: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Slots of each cluster in each calendar month.

    Parameters
    ----------
    months : numpy.ndarray
        Month 1..12 of each slot (same shape as ``labels``).
    labels : numpy.ndarray
        Cluster of each slot, ``-1`` for none.
    k : int
        Number of clusters.

    Returns
    -------
    numpy.ndarray
        ``(12, k)`` int64 counts; row 0 is January.

    Examples
    --------
    >>> count_by_month(np.array([1, 1, 2, 12]), np.array([0, 1, 1, -1]), 2)[:2].tolist()
    [[1, 1], [0, 1]]
    """
    months = np.asarray(months).ravel()
    labels = np.asarray(labels).ravel()
    keep = labels >= 0
    flat = (months[keep] - 1) * k + labels[keep]
    return np.bincount(flat, minlength=12 * k).reshape(12, k).astype(np.int64)


def size_order(labels: np.ndarray, k: int) -> np.ndarray:
    """Centroid order by decreasing cluster size (ties: lower number first).

    Examples
    --------
    >>> size_order(np.array([1, 1, 2, 0, 1, 2, -1]), 3).tolist()
    [1, 2, 0]
    """
    sizes = np.bincount(np.asarray(labels)[np.asarray(labels) >= 0], minlength=k)
    return np.lexsort((np.arange(k), -sizes))


# ----------------------------------------------------------------------------- lazy (dask)


def _select(emb: xr.DataArray, lead: int | None) -> xr.DataArray:
    if emb.dims != ("time", "lead_time", "latent"):
        raise StoreLayoutError(f"embedding must have dims (time, lead_time, latent), got {emb.dims}")
    if lead is None:
        return emb
    leads = emb["lead_time"].values.tolist()
    if lead not in leads:
        raise ConfigError(f"kmeans.lead {lead} is not in the store's leads {leads}")
    return emb.sel(lead_time=[lead])


def slot_matrix(emb: xr.DataArray, cfg: KMeansConfig) -> da.Array:
    """Lazy ``(n_slots, n_latent)`` float32 matrix of every slot (NaN rows where missing).

    Chunked by about ``cfg.block_size`` rows, whole time steps per chunk.
    """
    from wxdask.store import flatten_slots

    rows, _, _ = flatten_slots(_select(emb, cfg.lead), cfg.block_size)
    return rows.astype(np.float32)


def regimes(emb: xr.DataArray, centers: np.ndarray, cfg: KMeansConfig, *, x: da.Array | None = None) -> xr.Dataset:
    """Lazy cluster of every slot for given centroids.

    Parameters
    ----------
    emb : xarray.DataArray
        ``embedding(time, lead_time, latent)``.
    centers : numpy.ndarray
        ``(k, n_latent)`` centroids.
    cfg : KMeansConfig
        ``lead`` and ``block_size``.
    x : dask.array.Array, optional
        :func:`slot_matrix` of ``emb`` already built (and persisted) by the
        caller; building it again would submit its keys a second time in
        another graph.

    Returns
    -------
    xarray.Dataset
        ``cluster(time, lead_time)`` int32 (``-1`` where the slot is missing or
        another lead was clustered), ``cluster_sqdist(time, lead_time)``
        float32 (squared distance to its centroid), ``centroid(cluster_id,
        latent)`` float32.
    """
    import dask.array as da

    from wxdask.store import unflatten_slots

    centers = np.asarray(centers, dtype=np.float64)
    sub = _select(emb, cfg.lead)
    x = slot_matrix(emb, cfg) if x is None else x
    labels = da.map_blocks(lambda b: assign_block(b, centers)[0], x, drop_axis=1, dtype=np.int32)
    sqdist = da.map_blocks(lambda b: assign_block(b, centers)[1], x, drop_axis=1, dtype=np.float64)
    nt, nl = sub.shape[:2]
    dims = ("time", "lead_time")
    out = xr.Dataset(
        {"cluster": (dims, unflatten_slots(labels, (nt, nl))),
         "cluster_sqdist": (dims, unflatten_slots(sqdist, (nt, nl)))},
        coords={"time": sub["time"], "lead_time": sub["lead_time"]},
    )
    if cfg.lead is not None:
        out = out.reindex(lead_time=emb["lead_time"].values,
                          fill_value={"cluster": -1, "cluster_sqdist": np.nan}).chunk({"lead_time": -1})
    out["centroid"] = (("cluster_id", "latent"), centers.astype(np.float32))
    out = out.assign_coords(cluster_id=np.arange(len(centers)))
    out["cluster"].attrs = {"long_name": "k-means regime of the slot", "description": "-1 where not clustered"}
    out["cluster_sqdist"].attrs = {"long_name": "squared distance to the slot's centroid in embedding space"}
    out["centroid"].attrs = {"long_name": "k-means centroid in embedding space (numbered by decreasing size)"}
    return out


# ----------------------------------------------------------------------------- fitting (computes)


@dataclass
class KMeansFit:
    """Fitted centroids and how the fit went.

    Attributes
    ----------
    centers : numpy.ndarray
        ``(k, d)`` float64 centroids.
    n_iter : int
        Lloyd iterations run.
    converged : bool
        Whether the fit stopped before ``max_iter``.
    n_candidates : int
        Centroid candidates found by k-means|| (``-1`` when not known).
    engine : str
        Which engine fitted them.
    labels : dask.array.Array or None
        ``(n,)`` int32 label of each row, from the last Lloyd step, when that
        step left the centroids exactly where they were (so the labels are
        those of ``centers``, like scikit-learn's ``labels_``); else ``None``.
        Backed by results kept on the workers.
    inertia : float or None
        Inertia of those labels (float32 accuracy), or ``None``.
    """

    centers: np.ndarray
    n_iter: int
    converged: bool
    n_candidates: int
    engine: str
    labels: Any = None
    inertia: float | None = None


def fit(x: da.Array, cfg: KMeansConfig, client: Client | None = None, *, engine: str = "lloyd") -> KMeansFit:
    """Fit k centroids to the rows of ``x`` (no NaN rows), on the cluster. Computes.

    Parameters
    ----------
    x : dask.array.Array
        ``(n, d)`` float32 rows, ideally persisted in the cluster's memory.
    cfg : KMeansConfig
        ``k``, ``max_iter``, ``tol``, ``oversampling_factor``, ``seed``, ``init_max_iter``.
    client : distributed.Client, optional
        Where to compute (the current scheduler when ``None``).
    engine : {"lloyd", "dask-ml"}
        See the module docstring.

    Raises
    ------
    ConfigError
        If there are fewer rows than clusters, or the engine is unknown.
    """
    if engine not in ENGINES:
        raise ConfigError(f"kmeans engine must be one of {ENGINES}, got {engine!r}")
    if x.shape[0] < cfg.k:
        raise ConfigError(f"kmeans.k={cfg.k} clusters need at least {cfg.k} embedded slots; the store has {x.shape[0]}")
    if engine == "dask-ml":
        return _fit_dask_ml(x, cfg)
    return _fit_lloyd(x, cfg, client)


def _fit_dask_ml(x: da.Array, cfg: KMeansConfig) -> KMeansFit:
    from dask_ml.cluster import KMeans

    km = KMeans(
        n_clusters=cfg.k,
        init="k-means||",
        oversampling_factor=cfg.oversampling_factor,
        max_iter=cfg.max_iter,
        tol=cfg.tol,
        random_state=cfg.seed,
        init_max_iter=cfg.init_max_iter if cfg.init_max_iter is not None else DASK_ML_INIT_ROUNDS,
    ).fit(x)
    n_iter = int(km.n_iter_)
    return KMeansFit(np.asarray(km.cluster_centers_, dtype=np.float64), n_iter, n_iter < cfg.max_iter, -1, "dask-ml")


def init_scalable(x: da.Array, cfg: KMeansConfig, client: Client | None = None) -> tuple[np.ndarray, int]:
    """k-means|| initial centroids (Bahmani et al. 2012) on the cluster. Computes.

    Runs on a seeded uniform subsample of about :data:`INIT_SAMPLE` rows,
    drawn by each block where it lives (a cluster of 0.1% of the slots still
    has ~200 rows there). Each of the
    ``rounds`` passes is one graph: every block keeps each row with probability
    ``l * d2 / cost`` (``l = oversampling_factor * k``, :func:`sample_block`),
    the new candidates are gathered, and every block's distance to its
    nearest candidate is updated where it lives; the last pass instead counts
    the rows nearest to each candidate, and the weighted candidates are
    reduced to k with :func:`reduce_candidates`.

    Returns
    -------
    centers : numpy.ndarray
        ``(k, d)`` float64.
    n_candidates : int
        Candidates found.
    """
    from dask import delayed

    n = x.shape[0]
    rng = np.random.default_rng(cfg.seed)
    blocks = x.to_delayed().ravel().tolist()
    sizes = np.asarray(x.chunks[0])
    if n > INIT_SAMPLE:  # each block keeps a seeded share of its rows, where it lives
        frac = INIT_SAMPLE / n
        blocks = [delayed(_subsample)(bx, frac, (cfg.seed, 0, i)) for i, bx in enumerate(blocks)]
        sizes = np.round(sizes * frac)
    b0 = int(rng.choice(len(sizes), p=sizes / sizes.sum()))
    seed_row = delayed(_random_row)(blocks[b0], (cfg.seed, 0, b0))
    d2 = [delayed(min_sqdist_block)(bx, seed_row) for bx in blocks]
    cand_np, cost, kept = _round_trip(client, seed_row, delayed(_total)(d2), blocks + d2)
    blocks, d2 = kept[:len(blocks)], kept[len(blocks):]  # the subsample and its distances stay on the workers
    cand = np.asarray(cand_np, dtype=np.float64)
    rounds = cfg.init_max_iter if cfg.init_max_iter is not None else INIT_ROUNDS
    ell = cfg.oversampling_factor * cfg.k
    weights = None
    for r in range(rounds):
        last = r == rounds - 1
        if cost > 0:
            picks = [delayed(sample_block)(bx, bd, ell / cost, (cfg.seed, r + 1, i))
                     for i, (bx, bd) in enumerate(zip(blocks, d2))]
            new = delayed(np.concatenate)(picks, axis=0)
        else:
            new = delayed(np.zeros)((0, x.shape[1]), dtype=np.float32)
        if last:
            allc = delayed(_stack)(cand, new)
            counts = [delayed(_label_counts)(bx, allc) for bx in blocks]
            new_np, weights, _ = _round_trip(client, new, delayed(np.sum)(counts, axis=0), [])
        else:
            d2 = [delayed(_update_d2)(bx, bd, new) for bx, bd in zip(blocks, d2)]
            new_np, cost, d2 = _round_trip(client, new, delayed(_total)(d2), d2)
        cand = _stack(cand, new_np)
        logger.info("k-means|| round %d: %d candidates, cost %.6g", r + 1, len(cand), cost)
    if weights is None:  # no rounds asked for
        counts = [delayed(_label_counts)(bx, cand) for bx in blocks]
        _, weights, _ = _round_trip(client, None, delayed(np.sum)(counts, axis=0), [])
    return reduce_candidates(cand, weights, cfg.k, cfg.seed), len(cand)


def _subsample(x: np.ndarray, frac: float, seed: tuple[int, ...]) -> np.ndarray:
    return x[np.random.default_rng(list(seed)).random(len(x)) < frac]


def _random_row(x: np.ndarray, seed: tuple[int, ...]) -> np.ndarray:
    row = int(np.random.default_rng(list(seed)).integers(len(x))) if len(x) else 0
    return np.asarray(x[row:row + 1], dtype=np.float64)


def _stack(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)], axis=0)


def _total(parts: list[np.ndarray]) -> float:
    return float(sum(np.sum(p) for p in parts))


def _update_d2(x: np.ndarray, d2: np.ndarray, new: np.ndarray) -> np.ndarray:
    if len(new) == 0:
        return d2
    return np.minimum(d2, min_sqdist_block(x, new))


def _round_trip(client: Client | None, value: Any, scalar: Any, blocks: list) -> tuple[Any, Any, list]:
    """Compute ``value`` and ``scalar`` here and keep ``blocks`` where they are (futures), in one graph."""
    import dask

    todo = [v for v in (value, scalar) if v is not None]
    if client is not None:
        futures = client.compute(todo + list(blocks))
        got = client.gather(futures[:len(todo)])
        kept = futures[len(todo):]
    else:
        results = dask.compute(*todo, *blocks)
        got, kept = list(results[:len(todo)]), list(results[len(todo):])
    it = iter(got)
    return (next(it) if value is not None else None), (next(it) if scalar is not None else None), kept


def _fit_lloyd(x: da.Array, cfg: KMeansConfig, client: Client | None) -> KMeansFit:
    import operator

    import dask.array as da
    from dask import delayed

    centers, n_cand = init_scalable(x, cfg, client)
    blocks_x = x.to_delayed().ravel()
    converged = False
    it = 0
    shift = np.inf
    for it in range(1, cfg.max_iter + 1):
        parts = [delayed(_lloyd_task)(bx, centers) for bx in blocks_x]
        _, (sums, counts, inertia), label_parts = _round_trip(
            client, None, delayed(_sum_parts)(parts), [delayed(operator.getitem)(p, 3) for p in parts])
        new_centers = centers.copy()
        filled = counts > 0
        new_centers[filled] = sums[filled] / counts[filled, None]
        shift = float(((new_centers - centers) ** 2).sum())
        logger.info("Lloyd %d: inertia %.6g, shift %.3g, empty %d", it, inertia, shift, int((~filled).sum()))
        centers = new_centers
        # unchanged assignments give exactly the same sums (a fixed summation order): shift 0
        if shift < cfg.tol:
            converged = True
            break
    if shift == 0.0:  # the last step's labels are those of the final centroids
        labels = da.concatenate([da.from_delayed(delayed(p), shape=(size,), dtype=np.int32)
                                 for p, size in zip(label_parts, x.chunks[0])])
        return KMeansFit(centers, it, converged, n_cand, "lloyd", labels, inertia)
    return KMeansFit(centers, it, converged, n_cand, "lloyd")


def _label_counts(x: np.ndarray, centers: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    labels = _nearest32(x[np.isfinite(x).all(axis=1)], centers)[0]
    return np.bincount(labels, minlength=len(centers))


def _sum_parts(parts: list[tuple[np.ndarray, np.ndarray, float]]) -> tuple[np.ndarray, np.ndarray, float]:
    sums = np.sum([p[0] for p in parts], axis=0)
    counts = np.sum([p[1] for p in parts], axis=0)
    return sums, counts, float(np.sum([p[2] for p in parts]))


# ----------------------------------------------------------------------------- I/O


def run(cfg: Config, client: Client | None, *, decoder: Predictor | None = None) -> str:
    """Cluster every embedded slot; write labels, centroids, sizes, monthly counts and a centroid PNG.

    Writes ``cluster(time, lead_time)``, ``cluster_sqdist(time, lead_time)``,
    ``centroid(cluster_id, latent)``, ``cluster_size(cluster_id)``,
    ``cluster_count(month, cluster_id)`` and attributes ``kmeans_inertia``
    (sum of squared distances), ``kmeans_n_iter``, ``kmeans_converged``,
    ``kmeans_engine``; decodes each centroid with the model's decoder (or
    ``decoder``) into one PNG panel of k maps.

    Returns
    -------
    str
        What was written, and where.
    """
    import dask.array as da

    from wxdask import store
    from wxdask.client import compute

    kcfg = cfg.kmeans
    ds = store.open_input(cfg.store, ["embedding"])
    emb = ds["embedding"]
    # built and persisted once: every later graph (fit, labels) starts from these keys, so none of the
    # matrix's own keys is submitted again in a differently optimized graph (distributed's run_spec warning)
    x_all = slot_matrix(emb, kcfg)
    x_all = client.persist(x_all) if client is not None else x_all.persist()
    (valid,) = compute(client, [da.isfinite(x_all).all(axis=1)], scheduler=None)
    rows = np.flatnonzero(valid)
    if rows.size < kcfg.k:
        raise StoreLayoutError(f"store {cfg.store.url!r} has {rows.size} embedded slots; kmeans.k={kcfg.k} needs more")
    x = x_all[rows].rechunk({0: kcfg.block_size})
    x = client.persist(x) if client is not None else x.persist()
    result = fit(x, kcfg, client, engine=kcfg.engine)
    del x
    out = regimes(emb, result.centers, kcfg, x=x_all)
    (labels, sqdist) = compute(client, [out["cluster"].data, out["cluster_sqdist"].data], scheduler=None)
    # number the clusters by decreasing size
    order = size_order(labels, kcfg.k)
    rank = np.empty(kcfg.k, dtype=np.int32)
    rank[order] = np.arange(kcfg.k, dtype=np.int32)
    labels = np.where(labels >= 0, rank[np.clip(labels, 0, None)], -1).astype(np.int32)
    centers = result.centers[order]
    inertia = float(np.nansum(sqdist))
    months = emb["time"].values.astype("datetime64[M]").astype(np.int64) % 12 + 1
    counts = count_by_month(np.broadcast_to(months[:, None], labels.shape), labels, kcfg.k)
    sizes = counts.sum(axis=0)
    out = out.copy()
    out["cluster"] = (("time", "lead_time"), labels, out["cluster"].attrs)
    out["cluster_sqdist"] = (("time", "lead_time"), sqdist.astype(np.float32), out["cluster_sqdist"].attrs)
    out["centroid"] = (("cluster_id", "latent"), centers.astype(np.float32), out["centroid"].attrs)
    out["cluster_size"] = ("cluster_id", sizes.astype(np.int64), {"long_name": "slots in each cluster"})
    out["cluster_count"] = (("month", "cluster_id"), counts,
                            {"long_name": "slots of each cluster by calendar month of initialisation"})
    out = out.assign_coords(month=np.arange(1, 13))
    model = emb.attrs.get("model_hash", ds.attrs.get("model_hash", ""))
    attrs = {
        "kmeans_k": kcfg.k,
        "kmeans_lead": -1 if kcfg.lead is None else kcfg.lead,
        "kmeans_engine": result.engine,
        "kmeans_init": "k-means||",
        "kmeans_inertia": inertia,
        "kmeans_n_iter": result.n_iter,
        "kmeans_converged": bool(result.converged),
        "kmeans_n_candidates": int(result.n_candidates),
        "model_hash": model,
    }
    for name in ("cluster", "centroid", "cluster_size", "cluster_count", "cluster_sqdist"):
        out[name].attrs.update(attrs)
    attrs.pop("model_hash")  # on the variables; the store's root holds several stages' attributes
    png = _plot_path(cfg)
    try:
        plot_centroids(cfg, ds, centers, sizes, png, decoder=decoder)
        attrs["kmeans_centroid_plot"] = png
    except Exception as exc:  # noqa: BLE001 - no model: the clusters stand without the picture
        logger.warning("centroid maps not drawn (%s: %s)", type(exc).__name__, exc)
    store.write_variables(cfg.store, out, attrs=attrs)
    logger.info("k-means: %d clusters, sizes %s, inertia %.6g, %d iterations (%s)", kcfg.k, sizes.tolist(),
                inertia, result.n_iter, result.engine)
    return (f"{kcfg.k} clusters of sizes {sizes.tolist()}, inertia {inertia:.6g} ({result.engine}, "
            f"{result.n_iter} iterations) -> {cfg.store.url}: cluster, centroid, cluster_size, cluster_count")


def _plot_path(cfg: Config) -> str:
    if cfg.kmeans.plot:
        return cfg.kmeans.plot
    url = cfg.store.url.rstrip("/")
    if "://" in url:
        return Path(url.rsplit("/", 1)[-1]).stem + "-centroids.png"
    p = Path(url)
    return str(p.with_name(p.stem + "-centroids.png"))


def plot_centroids(cfg: Config, ds: xr.Dataset, centers: np.ndarray, sizes: np.ndarray, path: str, *,
                   decoder: Predictor | None = None) -> str:
    """Decode each centroid and write one PNG panel of the k maps, titled with their sizes."""
    from wxdask import plots
    from wxdask.models import decoder_for

    clip_max = cfg.model.clip_max
    if decoder is None:
        decoder, info = decoder_for(cfg.kmeans.model_dir, ds["embedding"].attrs, cfg.store.url)
        clip_max = info["clip_max"]
    images = decode_dbz(np.asarray(centers, dtype=np.float32), decoder, clip_max=clip_max)
    total = max(int(np.sum(sizes)), 1)
    titles = [f"regime {i}: {int(n)} slots ({100 * n / total:.0f}%)" for i, n in enumerate(sizes)]
    lat = ds["latitude"].values if "latitude" in ds.variables else None
    lon = ds["longitude"].values if "longitude" in ds.variables else None
    return plots.image_panel(list(images), titles, path, latitude=lat, longitude=lon,
                             suptitle=f"k-means centroids (k={len(centers)}), decoded")


def cluster_sizes(cfg: Config) -> dict[int, int]:
    """Slots in each cluster, from the store (after :func:`run`)."""
    from wxdask import store

    ds = store.open_input(cfg.store, ["cluster_size"])
    return {int(i): int(n) for i, n in zip(ds["cluster_id"].values, ds["cluster_size"].values)}


def format_sizes(cfg: Config) -> str:
    """Cluster sizes as one line per cluster (for ``wxdask demo`` and the CLI)."""
    sizes = cluster_sizes(cfg)
    total = max(sum(sizes.values()), 1)
    lines = ["cluster  slots  share"]
    lines += [f"{i:7d}  {n:5d}  {100 * n / total:4.1f}%" for i, n in sizes.items()]
    return "\n".join(lines)


def adjusted_rand(cfg: Config, true_regime: np.ndarray | xr.DataArray) -> float:
    """Adjusted Rand index of the store's clusters against known regimes.

    Parameters
    ----------
    true_regime : numpy.ndarray or xarray.DataArray
        ``(time, lead_time)`` regime of each slot (a DataArray is aligned on
        ``time``/``lead_time``; negative or NaN: unknown). Slots without a
        cluster or a regime are left out.
    """
    from sklearn.metrics import adjusted_rand_score

    from wxdask import store

    ds = store.open_input(cfg.store, ["cluster"])
    labels = ds["cluster"]
    if isinstance(true_regime, xr.DataArray):
        true_regime, labels = xr.align(true_regime, labels, join="inner")
        truth = np.asarray(true_regime.transpose(*labels.dims).values, dtype=np.float64)
    else:
        truth = np.asarray(true_regime, dtype=np.float64)
    lab = np.asarray(labels.values)
    if truth.shape != lab.shape:
        raise ConfigError(f"true regimes have shape {truth.shape}, the store's clusters {lab.shape}")
    keep = (lab >= 0) & np.isfinite(truth) & (truth >= 0)
    return float(adjusted_rand_score(truth[keep].astype(np.int64), lab[keep]))
