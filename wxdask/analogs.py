"""What analogs are worth: analog forecasts scored against persistence and other analogs. Pure numpy.

For a query time ``t`` the analog method finds the nearest other time ``a``
(outside the exclusion window, in some space) and forecasts the query's next
hours ``t + h`` by the analog's ``a + h``. Four spaces are compared: the
autoencoder's embedding, PCA scores with as many components, the images
themselves (pixel RMSE), and a random eligible time (climatology). Persistence
forecasts ``t + h`` by the query image itself. Every forecast is scored with
:func:`wxdask.evaluate.score_stats` (RMSE, MAE, CSI) against the truth at
``t + h``, pooled over the queries, for each ``h``.

Times are positions on one hourly axis (one lead): a time is *eligible* as an
analog or a query when it and its next ``horizon`` hours all hold an image.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from wxdask.evaluate import THRESHOLDS, score_stats, scores_from_stats
from wxdask.search import knn_block

__all__ = ["METHODS", "eligible", "nearest_analogs", "random_analogs", "forecast_scores", "score_methods"]

#: The forecasts compared, in the order reported.
METHODS = ("embedding", "pca", "pixel", "random", "persistence")


def eligible(times: np.ndarray, have: np.ndarray, horizon: int) -> np.ndarray:
    """Positions whose image and next ``horizon`` hourly images exist.

    Parameters
    ----------
    times : numpy.ndarray
        ``(n,)`` sorted datetime64 times of the axis.
    have : numpy.ndarray
        ``(n,)`` bool, an image exists at that time.
    horizon : int
        Hours ahead.

    Examples
    --------
    >>> t = np.array(["2020-01-01T00", "2020-01-01T01", "2020-01-01T02", "2020-01-01T04"], dtype="M8[h]")
    >>> eligible(t, np.array([True, True, True, True]), 1).tolist()
    [True, True, False, False]
    """
    hours = np.asarray(times).astype("datetime64[h]").astype(np.int64)
    have = np.asarray(have, dtype=bool)
    pos = {int(h): i for i, h in enumerate(hours)}
    ok = have.copy()
    for step in range(1, int(horizon) + 1):
        nxt = np.array([pos.get(int(h) + step, -1) for h in hours])
        ok &= (nxt >= 0) & have[np.clip(nxt, 0, None)]
    return ok


def nearest_analogs(vectors: np.ndarray, times: np.ndarray, queries: np.ndarray, candidates: np.ndarray,
                    window_h: int) -> np.ndarray:
    """The nearest candidate position of each query (squared Euclidean), outside the window.

    Parameters
    ----------
    vectors : numpy.ndarray
        ``(n, d)`` one vector per position (embedding, PCA scores or flattened image).
    times : numpy.ndarray
        ``(n,)`` datetime64 times.
    queries : numpy.ndarray
        ``(m,)`` int query positions.
    candidates : numpy.ndarray
        ``(n,)`` bool, a position may be an analog.
    window_h : int
        Candidates less than this many hours from the query are excluded.

    Returns
    -------
    numpy.ndarray
        ``(m,)`` int64 positions, ``-1`` where none qualifies.

    Examples
    --------
    >>> v = np.array([[0.0], [0.1], [5.0], [0.2]])
    >>> t = np.arange(4).astype("M8[h]")
    >>> nearest_analogs(v, t, np.array([0]), np.ones(4, bool), 2).tolist()
    [3]
    """
    base = np.asarray(vectors, dtype=np.float32).copy()
    base[~np.asarray(candidates, dtype=bool)] = np.nan
    hours = np.asarray(times).astype("datetime64[h]").astype(np.int64)
    q = np.asarray(vectors, dtype=np.float32)[queries]
    idx, _ = knn_block(q, base, 1, q_index=np.asarray(queries), q_time=hours[queries], base_time=hours,
                       exclude_window=int(window_h))
    return idx[:, 0]


def random_analogs(times: np.ndarray, queries: np.ndarray, candidates: np.ndarray, window_h: int,
                   seed: int = 0) -> np.ndarray:
    """A random candidate outside the window for each query (climatology), reproducible by ``seed``.

    Examples
    --------
    >>> t = np.arange(10).astype("M8[h]")
    >>> a = random_analogs(t, np.array([0, 9]), np.ones(10, bool), 8, seed=1)
    >>> bool(a[0] >= 8 and a[1] <= 1)
    True
    """
    rng = np.random.default_rng(seed)
    hours = np.asarray(times).astype("datetime64[h]").astype(np.int64)
    cand = np.flatnonzero(candidates)
    out = np.full(len(queries), -1, dtype=np.int64)
    for i, qp in enumerate(np.asarray(queries)):
        ok = cand[np.abs(hours[cand] - hours[qp]) >= max(int(window_h), 1)]
        if ok.size:
            out[i] = ok[rng.integers(ok.size)]
    return out


def forecast_scores(image: Callable[[int], np.ndarray], times: np.ndarray, queries: np.ndarray,
                    sources: np.ndarray | None, horizon: int, *, persistence: bool = False,
                    thresholds: tuple[float, ...] = THRESHOLDS) -> list[dict[str, float]]:
    """Scores of forecasts ``image(source + h)`` (or ``image(query)`` for persistence) of ``image(query + h)``.

    Parameters
    ----------
    image : callable
        Position -> dBZ image, as the model sees it (clipped).
    times : numpy.ndarray
        ``(n,)`` datetime64 times (positions ``p + h`` are found by time).
    queries, sources : numpy.ndarray
        ``(m,)`` positions; a query whose source is ``-1`` is skipped (and counted).
    horizon : int
        Hours ahead: one score dict per ``h = 1 .. horizon``.
    persistence : bool
        Forecast every hour by the query image itself (``sources`` unused).

    Returns
    -------
    list of dict
        Per hour ahead: :func:`wxdask.evaluate.scores_from_stats` plus ``n_queries``.

    Examples
    --------
    >>> imgs = {0: np.zeros(2), 1: np.full(2, 30.0), 2: np.zeros(2), 3: np.full(2, 30.0)}
    >>> t = np.arange(4).astype("M8[h]")
    >>> forecast_scores(imgs.__getitem__, t, np.array([0]), np.array([2]), 1)[0]["rmse"]
    0.0
    >>> forecast_scores(imgs.__getitem__, t, np.array([0]), None, 1, persistence=True)[0]["rmse"]
    30.0
    """
    hours = np.asarray(times).astype("datetime64[h]").astype(np.int64)
    pos = {int(h): i for i, h in enumerate(hours)}
    out = []
    for h in range(1, int(horizon) + 1):
        stats = np.zeros(6 + 3 * len(thresholds))
        n = 0
        for i, qp in enumerate(np.asarray(queries)):
            src = int(qp) if persistence or sources is None else int(sources[i])
            if src < 0:
                continue
            truth = image(pos[int(hours[qp]) + h])
            pred = image(src) if persistence else image(pos[int(hours[src]) + h])
            stats += score_stats(truth, pred, thresholds)
            n += 1
        out.append({**scores_from_stats(stats, thresholds), "n_queries": n})
    return out


def score_methods(image: Callable[[int], np.ndarray], times: np.ndarray, queries: np.ndarray,
                  candidates: np.ndarray, spaces: dict[str, np.ndarray], window_h: int, horizon: int = 3,
                  seed: int = 0) -> dict[str, list[dict[str, float]]]:
    """Every method's forecast scores: the analogs of each space, a random analog, persistence.

    Parameters
    ----------
    spaces : dict
        Method name -> ``(n, d)`` vectors per position (``"embedding"``, ``"pca"``, ``"pixel"``).

    Returns
    -------
    dict
        Method -> one score dict per hour ahead (see :func:`forecast_scores`).
    """
    out = {}
    for name, vectors in spaces.items():
        src = nearest_analogs(vectors, times, queries, candidates, window_h)
        out[name] = forecast_scores(image, times, queries, src, horizon)
    out["random"] = forecast_scores(image, times, queries,
                                    random_analogs(times, queries, candidates, window_h, seed), horizon)
    out["persistence"] = forecast_scores(image, times, queries, None, horizon, persistence=True)
    return out
