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

from typing import TYPE_CHECKING, Callable

import numpy as np

from wxdask.evaluate import THRESHOLDS, score_stats, scores_from_stats
from wxdask.search import knn_block

if TYPE_CHECKING:
    from wxdask.config import StoreConfig
    from wxdask.model import Predictor

__all__ = ["METHODS", "eligible", "nearest_analogs", "random_analogs", "forecast_scores", "score_methods",
           "score_store", "format_scores"]

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


# ----------------------------------------------------------------------------- I/O (the store)

#: Pixel-space analogs compare images block-averaged to at most this many points (exact on small grids).
PIXEL_MAX_POINTS = 16384


def _block_mean(x: np.ndarray, f: int) -> np.ndarray:
    """``(n, ny, nx)`` averaged over ``f x f`` blocks (edges dropped)."""
    if f == 1:
        return x.reshape(x.shape[0], -1)
    n, ny, nx = x.shape
    x = x[:, : ny // f * f, : nx // f * f]
    return x.reshape(n, ny // f, f, nx // f, f).mean(axis=(2, 4)).reshape(n, -1)


def score_store(store_cfg: "StoreConfig", encoder: "Predictor", scaled: Callable[[np.ndarray], np.ndarray],
                pca_mean: np.ndarray, pca_components: np.ndarray, heldout_days: list[str], *, clip_max: float,
                window_h: int, horizon: int = 3, seed: int = 0, batch: int = 64) -> dict:
    """Analog forecast scores of a store's held-out days, for every method of :data:`METHODS`.

    The first lead (the analyses, lead 0, when the store has them) forms the
    hourly axis. Every ok image is encoded (``encoder``: stored int16 ->
    embedding), projected on the PCA components, and block-averaged for the
    pixel space; queries are the eligible times valid on ``heldout_days``, analogs
    any eligible time of the archive outside the window.

    Parameters
    ----------
    encoder : Predictor
        Stored int16 images -> embeddings.
    scaled : callable
        Stored int16 images -> the model's scaled input (``model.scale_raw``).

    Returns
    -------
    dict
        ``{"lead_time", "window_h", "horizon", "n_queries", "methods": {name: [scores per hour]}}``.
    """
    from wxdask import store

    ds = store.open_store(store_cfg)
    li = 0
    times = ds["time"].values
    have = store.ok_mask(ds)[:, li]
    ok_pos = np.flatnonzero(have)
    ny, nx = ds.sizes["y"], ds.sizes["x"]
    f = 1
    while (ny // f) * (nx // f) > PIXEL_MAX_POINTS:
        f += 1
    n = times.size
    vectors: dict[str, np.ndarray] = {}
    for b0 in range(0, ok_pos.size, batch):
        pos = ok_pos[b0 : b0 + batch]
        raw = store.read_slots(store_cfg, pos, np.full(pos.size, li))
        x = np.asarray(scaled(raw), dtype=np.float32).reshape(pos.size, -1)
        parts = {
            "embedding": np.asarray(encoder.predict(raw), dtype=np.float32),
            "pca": (x - pca_mean) @ pca_components.T,
            "pixel": _block_mean(x.reshape(pos.size, ny, nx), f).astype(np.float32),
        }
        for name, v in parts.items():
            if name not in vectors:
                vectors[name] = np.full((n, v.shape[1]), np.nan, dtype=np.float32)
            vectors[name][pos] = v
    days = times.astype("datetime64[h]") + np.timedelta64(int(ds["lead_time"].values[li]), "h")
    held = np.isin(days.astype("datetime64[D]").astype(str), list(heldout_days))
    cand = eligible(times, have, horizon)
    queries = np.flatnonzero(cand & held)
    cache: dict[int, np.ndarray] = {}

    def image(p: int) -> np.ndarray:
        if p not in cache:
            raw = store.read_slots(store_cfg, np.array([p]), np.array([li]))[0]
            cache[p] = np.clip(raw.astype(np.float32) * np.float32(0.0625), 0.0, clip_max)
        return cache[p]

    methods = score_methods(image, times, queries, cand, vectors, window_h, horizon, seed) if queries.size else {}
    return {"lead_time": int(ds["lead_time"].values[li]), "window_h": int(window_h), "horizon": int(horizon),
            "n_queries": int(queries.size), "pixel_block": f, "methods": methods}


def format_scores(result: dict) -> str:
    """A small table: RMSE and CSI 20 of each method at each hour ahead."""
    methods = result.get("methods") or {}
    if not methods:
        return "analog forecasts: no held-out time has its next hours in the store"
    hours = range(1, result["horizon"] + 1)
    head = f"{'method':<12}" + "".join(f"{'RMSE +' + str(h) + 'h':>11}{'CSI20 +' + str(h) + 'h':>11}" for h in hours)
    rows = [head]
    for name in METHODS:
        if name in methods:
            rows.append(f"{name:<12}" + "".join(f"{s['rmse']:>11.3f}{s['csi_20']:>11.3f}" for s in methods[name]))
    return (f"analog forecasts of {result['n_queries']} held-out times (lead {result['lead_time']}, analogs "
            f"outside +/-{result['window_h']} h; dBZ):\n" + "\n".join(rows))
