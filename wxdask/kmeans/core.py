"""K-means, the numpy core: nearest centroids, inertia, one Lloyd step, k-means|| sampling and reduction.

Pure numpy in, numpy out (scikit-learn's weighted k-means for
:func:`reduce_candidates`); no dask. Part of :mod:`wxdask.kmeans`, which
re-exports every name.
"""

from __future__ import annotations

import numpy as np

#: Rows per GEMM within a block (keeps temporaries in cache).
_SUB = 16384


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
