"""Held-out evaluation, the numpy core: the scores (RMSE, MAE, CSI, pooled sums), dBZ, PCA reconstruction.

Pure numpy in, numpy out; no dask, no I/O. Part of :mod:`wxdask.evaluate`,
which re-exports every name (and whose docstring says how the scores pool).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["THRESHOLDS", "STAT_NAMES", "rmse", "mae", "csi", "score_stats", "scores_from_stats", "to_dbz",
           "pca_reconstruct_block", "pick_examples", "better", "json_safe"]

THRESHOLDS = (20.0, 35.0)


def rmse(truth: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root mean squared error over all points, or over ``mask`` (NaN if it selects nothing).

    Examples
    --------
    >>> rmse(np.array([0.0, 0.0, 3.0]), np.array([0.0, 4.0, 0.0]))
    2.886751345948129
    >>> rmse(np.array([0.0, 0.0, 3.0]), np.array([0.0, 4.0, 0.0]), mask=np.array([False, True, True]))
    3.5355339059327378
    """
    d = np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    if mask is not None:
        d = d[np.asarray(mask, dtype=bool)]
    return float(np.sqrt(np.mean(d * d))) if d.size else float("nan")


def mae(truth: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute error over all points, or over ``mask`` (NaN if it selects nothing).

    Examples
    --------
    >>> mae(np.array([0.0, 0.0, 3.0]), np.array([0.0, 4.0, 0.0]))
    2.3333333333333335
    """
    d = np.abs(np.asarray(pred, dtype=np.float64) - np.asarray(truth, dtype=np.float64))
    if mask is not None:
        d = d[np.asarray(mask, dtype=bool)]
    return float(np.mean(d)) if d.size else float("nan")


def csi(truth: np.ndarray, pred: np.ndarray, threshold: float) -> float:
    """Critical success index of the event ``value >= threshold``: hits / (hits + misses + false alarms).

    NaN when the event occurs in neither field.

    Examples
    --------
    >>> truth = np.array([40.0, 40.0, 10.0, 10.0, 36.0])
    >>> pred = np.array([36.0, 10.0, 40.0, 10.0, 35.0])
    >>> csi(truth, pred, 35.0)      # 2 hits, 1 miss, 1 false alarm
    0.5
    >>> csi(truth, pred, 50.0)
    nan
    """
    t = np.asarray(truth) >= threshold
    p = np.asarray(pred) >= threshold
    hits = np.count_nonzero(t & p)
    total = np.count_nonzero(t | p)
    return float(hits / total) if total else float("nan")


def _stat_names(thresholds: tuple[float, ...]) -> list[str]:
    names = ["n", "sse", "sae", "n_echo", "sse_echo", "sae_echo"]
    for t in thresholds:
        names += [f"hits_{t:g}", f"misses_{t:g}", f"false_alarms_{t:g}"]
    return names


STAT_NAMES = _stat_names(THRESHOLDS)


def score_stats(truth: np.ndarray, pred: np.ndarray, thresholds: tuple[float, ...] = THRESHOLDS) -> np.ndarray:
    """Sums from which every score is computed; add them over blocks, then :func:`scores_from_stats`.

    Parameters
    ----------
    truth, pred : numpy.ndarray
        dBZ, same shape (any number of images).
    thresholds : tuple of float
        CSI thresholds in dBZ.

    Returns
    -------
    numpy.ndarray
        float64 ``(len(STAT_NAMES),)``: count, sum of squared and of absolute
        errors (all points, then echo points), and hits, misses, false alarms
        per threshold.

    Examples
    --------
    >>> s = score_stats(np.array([0.0, 0.0, 30.0]), np.array([0.0, 4.0, 20.0]), (20.0,))
    >>> s.tolist()
    [3.0, 116.0, 14.0, 2.0, 116.0, 14.0, 1.0, 0.0, 0.0]
    """
    t = np.asarray(truth, dtype=np.float64)
    p = np.asarray(pred, dtype=np.float64)
    d = p - t
    sq = d * d
    ab = np.abs(d)
    echo = (t > 0) | (p > 0)
    out = [t.size, sq.sum(), ab.sum(), np.count_nonzero(echo), sq[echo].sum(), ab[echo].sum()]
    for thr in thresholds:
        te, pe = t >= thr, p >= thr
        out += [np.count_nonzero(te & pe), np.count_nonzero(te & ~pe), np.count_nonzero(~te & pe)]
    return np.asarray(out, dtype=np.float64)


def scores_from_stats(stats: np.ndarray, thresholds: tuple[float, ...] = THRESHOLDS) -> dict[str, float]:
    """RMSE, MAE (all and echo points) and CSI per threshold from summed :func:`score_stats`.

    ``echo_fraction`` is the share of points in the echo mask (either image
    > 0 dBZ): the echo scores of two methods are averages over different
    masks, and a method with widespread weak false echo gets a larger,
    easier mask.

    Examples
    --------
    >>> s = score_stats(np.array([0.0, 0.0, 30.0]), np.array([0.0, 4.0, 20.0]), (20.0,))
    >>> {k: round(v, 4) for k, v in scores_from_stats(s, (20.0,)).items()}
    {'rmse': 6.2183, 'mae': 4.6667, 'rmse_echo': 7.6158, 'mae_echo': 7.0, 'csi_20': 1.0, 'echo_fraction': 0.6667}
    """
    s = np.asarray(stats, dtype=np.float64)

    def ratio(a: float, b: float) -> float:
        return float(a / b) if b else float("nan")

    out = {
        "rmse": float(np.sqrt(ratio(s[1], s[0]))),
        "mae": ratio(s[2], s[0]),
        "rmse_echo": float(np.sqrt(ratio(s[4], s[3]))),
        "mae_echo": ratio(s[5], s[3]),
    }
    echo_fraction = ratio(s[3], s[0])
    for i, thr in enumerate(thresholds):
        hits, misses, fa = s[6 + 3 * i : 9 + 3 * i]
        out[f"csi_{thr:g}"] = ratio(hits, hits + misses + fa)
    out["echo_fraction"] = echo_fraction
    return out


def to_dbz(scaled: np.ndarray, clip_max: float) -> np.ndarray:
    """Scaled values (input or reconstruction) to dBZ, clipped to ``0..clip_max``.

    Examples
    --------
    >>> to_dbz(np.array([-0.1, 0.5, 1.2]), 60.0)
    array([ 0., 30., 60.])
    """
    return np.clip(np.asarray(scaled, dtype=np.float64), 0.0, 1.0) * clip_max


def pca_reconstruct_block(x: np.ndarray, mean: np.ndarray, components: np.ndarray) -> np.ndarray:
    """Project rows on the principal components and back: ``(x - mean) C^T C + mean``.

    Parameters
    ----------
    x : numpy.ndarray
        ``(n, features)`` scaled images, flattened.
    mean : numpy.ndarray
        ``(features,)`` training mean.
    components : numpy.ndarray
        ``(k, features)`` orthonormal rows.

    Returns
    -------
    numpy.ndarray
        ``(n, features)`` float32.

    Examples
    --------
    >>> pca_reconstruct_block(np.array([[1.0, 2.0]]), np.zeros(2), np.array([[1.0, 0.0]]))
    array([[1., 0.]], dtype=float32)
    """
    xc = np.asarray(x, dtype=np.float32) - mean.astype(np.float32)
    c = components.astype(np.float32)
    return ((xc @ c.T) @ c + mean.astype(np.float32)).astype(np.float32)


def pick_examples(echo_fraction: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` images to show: spread in time among those with more echo than the median.

    Examples
    --------
    >>> pick_examples(np.array([0.0, 0.5, 0.1, 0.6, 0.0, 0.7]), 2).tolist()
    [1, 5]
    """
    frac = np.asarray(echo_fraction, dtype=np.float64)
    if frac.size == 0:
        return np.zeros(0, dtype=np.int64)
    candidates = np.nonzero(frac > np.median(frac))[0]
    if candidates.size < n:
        candidates = np.argsort(-frac, kind="stable")[: max(n, 1)]
        candidates.sort()
    pos = np.unique(np.round(np.linspace(0, candidates.size - 1, min(n, candidates.size))).astype(int))
    return candidates[pos].astype(np.int64)


# ----------------------------------------------------------------------------- lazy wrapper


def better(name: str, ae: float, pca: float) -> bool:
    """Whether the autoencoder's score ``name`` beats PCA's: higher for a CSI, lower for an error; NaN never does.

    Examples
    --------
    >>> better("rmse", 2.0, 3.0), better("csi_20", 0.2, 0.3), better("mae", float("nan"), 1.0)
    (True, False, False)
    """
    if np.isnan(ae) or np.isnan(pca):
        return False
    return ae > pca if name.startswith("csi") else ae < pca


def json_safe(value: Any) -> Any:
    """``value`` with tuples as lists and NaN as None, nested (what a store attribute can hold).

    Examples
    --------
    >>> json_safe({"a": (1.0, float("nan")), "b": [{"c": float("nan")}]})
    {'a': [1.0, None], 'b': [{'c': None}]}
    """
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    return value
