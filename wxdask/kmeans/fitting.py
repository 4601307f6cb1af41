"""K-means, fitting the centroids on the cluster (computes): k-means|| then Lloyd, or dask-ml.

Part of :mod:`wxdask.kmeans`, which re-exports every name; the engines are
described in its docstring. A test that changes :data:`INIT_SAMPLE` patches
this module, where :func:`init_scalable` looks it up.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from wxdask.config import KMeansConfig
from wxdask.errors import ConfigError
from wxdask.kmeans.core import _lloyd_task, _nearest32, min_sqdist_block, reduce_candidates, sample_block

if TYPE_CHECKING:  # pragma: no cover
    import dask.array as da
    from distributed import Client

logger = logging.getLogger("wxdask.kmeans")

ENGINES = ("lloyd", "dask-ml")
#: Rounds of k-means|| when ``init_max_iter`` is not set (the paper finds a few rounds enough, and
#: each round adds ``oversampling_factor * k`` candidates; dask-ml's own default, about log of the
#: first cost, takes minutes on 1M rows).
INIT_ROUNDS = 3
#: dask-ml reduces its candidates without weights (its k_means.py says so), so it needs more rounds.
DASK_ML_INIT_ROUNDS = 5
#: k-means|| runs on a uniform subsample of at most this many rows.
INIT_SAMPLE = 200_000


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
