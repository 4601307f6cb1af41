"""``wxdask explore``: a read-only analog explorer for one store, in the browser.

One page over one store: a timeline of its slots (status, cluster ribbon,
interpolation residual), the picked slot's image on the map with its decoded
reconstruction and error, its k analogs (stored, or rerun for another
exclusion window), the regimes (decoded centroids, sizes, counts by month),
and the model's held-out scores against PCA.

Stack: the standard library's :class:`http.server.ThreadingHTTPServer`, JSON
endpoints, PNGs rendered on the server by :mod:`wxdask.plots` (matplotlib), and
one small static page (``explore_static/``: HTML, JS, CSS, no build step, no
CDN). Why not Panel/Bokeh: a Bokeh server app keeps per-session Python state
over a websocket, is harder to test endpoint by endpoint with plain HTTP and
would redraw the maps in a second (browser-side) colour scheme instead of the
project's own drawing functions; starlette/uvicorn are not installed. The
stdlib server adds no dependency, every view is one GET that a test (or curl)
can check for its status code and content type, and the maps are exactly the
pictures the CLI draws.

Safety: the store is opened once, read-only (:func:`wxdask.store.open_store`,
``xarray.open_zarr``), and read lazily: only what a view needs is loaded (the
timeline reads 1-D ``(time,)`` variables of one lead; a slot view reads one
image chunk). No request parameter reaches the filesystem: static files are a
fixed table, times and leads must be ones the store holds. Bad requests get a
4xx with a JSON ``{"error": ...}`` message, never a traceback.

Tiles: where the store holds ``tile_embedding``, a click on the slot's map
queries the tile there. The slot's PNG is drawn by :func:`wxdask.plots.image_panel`
on linear longitude/latitude axes, and ``/api/slot_map`` answers where those
axes lie in that PNG and their limits (recorded as it was drawn), so the page
turns a click into ``(lon, lat)`` and asks ``/api/tiles?lat&lon`` for the tile
holding it and its k analog tiles (:func:`wxdask.tile_search.query_tile`, the
same search as ``wxdask search --tiles --time --lat --lon``);
``/img/tiles.png`` outlines them on their maps
(:func:`wxdask.tile_search.plot_tile_query`), ``/img/tile_regimes.png`` draws
the slot's tiles in their regime's colour where ``tile_cluster`` exists
(:func:`wxdask.tile_regimes.plot_regime_map`).
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from wxdask.config import Config, StoreConfig
from wxdask.errors import WxdaskError

__all__ = ["ExploreRequestError", "Explorer", "brute_force_query", "load_decoder", "make_server", "mosaic", "serve"]

logger = logging.getLogger(__name__)

#: Static files of the page: URL path -> (file in ``explore_static``, content type). Nothing else is served.
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
#: Largest number of analogs one rerun query may ask for.
MAX_K = 50
#: Images per row of the analogs' mosaic.
ANALOG_COLUMNS = 4
#: Pictures kept once drawn (least recently used out first); the store is read-only, so they stay right.
PNG_CACHE = 64
#: Tile queries kept once answered (least recently used out first).
TILE_CACHE = 32
#: Tile search modes the page offers (``query_tile``'s ``same-place`` and ``anywhere``).
TILE_MODES = ("same_place", "anywhere")
#: matplotlib's pyplot and a Keras model are not thread-safe: every render holds this lock.
_RENDER_LOCK = threading.Lock()


#: Parameters of a tile query: the slot, the point, the search.
TILE_PARAMS = ("time", "lead", "lat", "lon", "mode", "k", "window")


class ExploreRequestError(WxdaskError, ValueError):
    """A bad request to the explorer; ``status`` is the HTTP status (4xx) it answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = int(status)


# ----------------------------------------------------------------------------- core (numpy)


def brute_force_query(emb: np.ndarray, hours: np.ndarray, ti: int, li: int, k: int,
                      window_hours: int) -> list[tuple[int, int, float]]:
    """Exact k nearest other slots of slot ``(ti, li)``, as ``wxdask search`` defines them.

    Squared Euclidean distance (float64); slots whose initialisation time is less
    than ``window_hours`` from the query's are excluded (``0``: only the slot
    itself); slots with a NaN embedding are never neighbours; ties go to the
    earlier slot (lower time, then lower lead).

    Parameters
    ----------
    emb : numpy.ndarray
        ``(time, lead_time, latent)`` embeddings.
    hours : numpy.ndarray
        ``(time,)`` int hours of each initialisation time.
    ti, li : int
        Index of the query slot.
    k : int
        Neighbours wanted.
    window_hours : int
        Exclusion window in hours.

    Returns
    -------
    list of (int, int, float)
        ``(time index, lead index, squared distance)``, nearest first; fewer
        than ``k`` where fewer qualify; empty if the query has no embedding.

    Examples
    --------
    >>> e = np.array([[[0.0]], [[1.0]], [[3.0]], [[1.0]]], dtype=np.float32)
    >>> brute_force_query(e, np.arange(4), 0, 0, 2, 0)
    [(1, 0, 1.0), (3, 0, 1.0)]
    >>> brute_force_query(e, np.arange(4), 0, 0, 2, 2)
    [(3, 0, 1.0), (2, 0, 9.0)]
    """
    nt, nl, d = emb.shape
    flat = emb.reshape(nt * nl, d).astype(np.float64)
    q = flat[ti * nl + li]
    if not np.isfinite(q).all():
        return []
    sq = ((flat - q) ** 2).sum(axis=1)
    ok = np.asarray(np.isfinite(flat).all(axis=1))
    ok[ti * nl + li] = False
    if window_hours > 0:
        slot_hours = np.repeat(np.asarray(hours, dtype=np.int64), nl)
        ok &= np.abs(slot_hours - int(hours[ti])) >= window_hours
    cand = np.flatnonzero(ok)
    order = cand[np.lexsort((cand, sq[cand]))[:k]]
    return [(int(i // nl), int(i % nl), float(sq[i])) for i in order]


def mosaic(images: list[np.ndarray | None], ncols: int, gap: int = 2) -> np.ndarray:
    """Images ``(y, x)`` side by side in rows of ``ncols``, first at the top left.

    NaN (drawn grey) between images and for ``None``; -10 dBZ (blank) in unused cells. Row 0 is
    south in the store, so the blocks are placed for drawing with ``origin="lower"``.

    Examples
    --------
    >>> m = mosaic([np.zeros((2, 3)), None, np.ones((2, 3))], ncols=2, gap=1)
    >>> m.shape, int(np.isnan(m).sum()), int((m == -10).sum()), float(m[:2, :3].sum())
    ((5, 7), 17, 6, 6.0)
    """
    shape = next((im.shape for im in images if im is not None), (1, 1))
    ny, nx = shape
    nrows = -(-len(images) // ncols)
    out = np.full((nrows * ny + (nrows - 1) * gap, ncols * nx + (ncols - 1) * gap), np.nan, dtype=np.float32)
    for k in range(nrows * ncols):
        row = nrows - 1 - k // ncols  # drawn with origin="lower": the last block row is at the top
        r0, c0 = row * (ny + gap), (k % ncols) * (nx + gap)
        if k >= len(images):
            out[r0:r0 + ny, c0:c0 + nx] = -10.0
        elif images[k] is not None:
            out[r0:r0 + ny, c0:c0 + nx] = images[k]
    return out


def parse_window(text: str) -> int:
    """Exclusion window in whole hours from ``"24h"``, ``"2d"``, ``"6"`` or ``"0"``.

    Examples
    --------
    >>> parse_window("24h"), parse_window("2d"), parse_window("0")
    (24, 48, 0)
    """
    m = re.fullmatch(r"\s*(\d{1,6})\s*([hd]?)\s*", str(text))
    if not m:
        raise ExploreRequestError(f"window must be whole hours like '24h', '2d' or '0', got {text!r}")
    return int(m.group(1)) * (24 if m.group(2) == "d" else 1)


def _finite(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _jsonable(value: Any) -> Any:
    """Attributes (numpy scalars, arrays, NaN) to plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# ----------------------------------------------------------------------------- the model (one place)


def load_decoder(embedding_attrs: dict, store_url: str) -> tuple[Any, float]:
    """The decoder of the model that made the embeddings, and its clip (dBZ of a scaled 1).

    Through the one model access (:func:`wxdask.models.decoder_for`: the model
    recorded with the embedding, its hash checked, loaded once per process).

    Raises
    ------
    ExploreRequestError
        (status 409) if the model directory is missing, unreadable, or holds
        another model than the embedding's ``model_hash``.
    """
    from wxdask.errors import WxdaskError
    from wxdask.models import decoder_for

    model_dir = str(embedding_attrs.get("model_dir") or "")
    if not model_dir or not os.path.isdir(model_dir):
        raise ExploreRequestError(f"model directory {model_dir!r} (from the embedding's attributes) is missing: "
                                  "decoded views are off", status=409)
    try:
        decoder, info = decoder_for(None, embedding_attrs, store_url)
        return decoder, info["clip_max"]
    except WxdaskError as exc:
        raise ExploreRequestError(f"{exc}: decoded views are off", status=409) from None
    except Exception as exc:
        raise ExploreRequestError(f"cannot load the model at {model_dir!r}: {exc}; decoded views are off",
                                  status=409) from exc


# ----------------------------------------------------------------------------- the app


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes


def _json(data: Any, status: int = 200) -> Response:
    return Response(status, "application/json", json.dumps(_jsonable(data)).encode())


def _png(buf: io.BytesIO) -> Response:
    return Response(200, "image/png", buf.getvalue())


class Explorer:
    """Answers the explorer's GET requests over one store, opened read-only.

    Parameters
    ----------
    store_cfg : StoreConfig
        The store.

    Raises
    ------
    StoreLayoutError
        If there is no store there.
    """

    def __init__(self, store_cfg: StoreConfig) -> None:
        from wxdask import store

        self.cfg = store_cfg
        self.ds = store.open_store(store_cfg)
        self.times = self.ds["time"].values.astype("datetime64[h]")
        self.hours = self.times.astype(np.int64)
        self.leads = [int(v) for v in self.ds["lead_time"].values]
        self._time_index = {int(h): i for i, h in enumerate(self.hours)}
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()
        self._cache: dict[str, Any] = {}
        self._pngs: OrderedDict[str, Response] = OrderedDict()  # the last PNG_CACHE pictures drawn
        self._tiles: OrderedDict[tuple, Any] = OrderedDict()  # the last TILE_CACHE tile queries
        self.routes: dict[str, Callable[[dict[str, str]], Response]] = {
            "/api/summary": self.summary,
            "/api/timeline": self.timeline,
            "/api/slot": self.slot,
            "/api/query": self.query,
            "/api/regimes": self.regimes,
            "/api/scores": self.scores,
            "/api/tiles": self.tile_view,
            "/api/slot_map": self.slot_map,
            "/img/slot.png": self.slot_png,
            "/img/tiles.png": self.tiles_png,
            "/img/tile_regimes.png": self.tile_regimes_png,
            "/img/error.png": self.error_png,
            "/img/analogs.png": self.analogs_png,
            "/img/centroids.png": self.centroids_png,
        }
        self.params = {
            "/api/summary": (), "/api/regimes": (), "/api/scores": (), "/img/centroids.png": (),
            "/api/timeline": ("lead",), "/api/slot": ("time", "lead"), "/api/slot_map": ("time", "lead"),
            "/api/tiles": TILE_PARAMS, "/img/tiles.png": TILE_PARAMS, "/img/tile_regimes.png": ("time", "lead"),
            "/img/slot.png": ("time", "lead"), "/img/error.png": ("time", "lead"),
            "/api/query": ("time", "lead", "window", "k"), "/img/analogs.png": ("time", "lead", "window", "k"),
        }

    # -- dispatch

    def handle(self, target: str) -> Response:
        """Answer one GET ``target`` (path and query string); never raises."""
        try:
            parts = urlsplit(target)
            path = parts.path
            if path in STATIC:
                name, ctype = STATIC[path]
                return Response(200, ctype, _static(name))
            if path not in self.routes:
                raise ExploreRequestError(f"no such page {path!r}; the explorer serves "
                                          f"{', '.join(sorted([*STATIC, *self.routes]))}", status=404)
            params = self._params(path, parts.query)
            if not path.startswith("/img/"):
                return self.routes[path](params)
            key = path + "?" + "&".join(f"{k}={v}" for k, v in sorted(params.items()))
            with self._lock:
                if key in self._pngs:
                    self._pngs.move_to_end(key)
                    return self._pngs[key]
            resp = self.routes[path](params)
            with self._lock:
                self._pngs[key] = resp
                while len(self._pngs) > PNG_CACHE:
                    self._pngs.popitem(last=False)
            return resp
        except ExploreRequestError as exc:
            return _json({"error": str(exc)}, exc.status)
        except WxdaskError as exc:
            return _json({"error": str(exc)}, 409)
        except Exception:
            logger.exception("explorer failed on %s", target)
            return _json({"error": "internal error while answering this request (see the server's log)"}, 500)

    def _params(self, path: str, query: str) -> dict[str, str]:
        try:
            raw = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=10)
        except ValueError as exc:
            raise ExploreRequestError(f"malformed query string {query!r}") from exc
        allowed = self.params[path]
        out = {}
        for key, values in raw.items():
            if key not in allowed:
                raise ExploreRequestError(f"unknown parameter {key!r} for {path}; it takes "
                                          f"{', '.join(allowed) or 'no parameters'}")
            if len(values) != 1:
                raise ExploreRequestError(f"parameter {key!r} given {len(values)} times")
            out[key] = values[0]
        return out

    def warm_up(self) -> threading.Thread:
        """Read the first lead's timeline and load the decoder in a background thread.

        A store written by ``wxdask ingest`` holds ``status`` in one chunk per slot, so the first
        timeline of a year reads 8760 small chunks; the decoder's first load imports Keras.
        """
        def load() -> None:
            for name in ("status", "cluster", "interp_residual"):  # the first lead's timeline
                self._column(name, 0)
            try:
                self._decoder()
            except ExploreRequestError as exc:
                logger.warning("%s", exc)

        thread = threading.Thread(target=load, name="wxdask-explore-warm-up", daemon=True)
        thread.start()
        return thread

    # -- parameters

    def _lead(self, params: dict[str, str]) -> int:
        text = params.get("lead", str(self.leads[0]))
        if not re.fullmatch(r"\s*-?\d{1,4}\s*", text):
            raise ExploreRequestError(f"lead must be a whole number of hours, got {text!r}")
        lead = int(text)
        if lead not in self.leads:
            raise ExploreRequestError(f"lead {lead} is not in the store; it holds leads {self.leads}", status=404)
        return self.leads.index(lead)

    def _time(self, params: dict[str, str]) -> int:
        if "time" not in params:
            raise ExploreRequestError("missing parameter 'time' (an initialisation time like 2019-06-01T05)")
        text = params["time"].strip()
        if not re.fullmatch(r"\d{4}-\d\d-\d\d([T ]\d\d(:\d\d(:\d\d)?)?)?Z?", text):
            raise ExploreRequestError(f"time must look like 2019-06-01T05, got {params['time']!r}")
        try:
            t = np.datetime64(text.rstrip("Z").replace(" ", "T"), "m")
        except ValueError as exc:
            raise ExploreRequestError(f"time {params['time']!r} is not a valid date and hour") from exc
        hour = t.astype("datetime64[h]")
        i = self._time_index.get(int(hour.astype(np.int64))) if hour == t else None
        if i is None:
            span = (f"{self.times[0]} to {self.times[-1]}, {len(self.times)} times" if len(self.times)
                    else "no times")
            raise ExploreRequestError(f"time {text} is not in the store (it holds {span})", status=404)
        return i

    def _k(self, params: dict[str, str], default: int) -> int:
        text = params.get("k", str(default))
        if not re.fullmatch(r"\s*\d{1,3}\s*", text) or not 1 <= int(text) <= MAX_K:
            raise ExploreRequestError(f"k must be a whole number from 1 to {MAX_K}, got {text!r}")
        return int(text)

    def _need(self, *names: str) -> None:
        missing = [n for n in names if n not in self.ds.variables]
        if missing:
            makers = {"embedding": "embed", "neighbor_time": "search", "cluster": "cluster",
                      "centroid": "cluster", "refc": "ingest", "tile_embedding": "embed --tiles",
                      "tile_cluster": "cluster --tiles"}
            hints = sorted({f"`wxdask {makers[n]}`" for n in missing if n in makers})
            raise ExploreRequestError(f"this store has no {', '.join(missing)}"
                                      + (f"; run {' and '.join(hints)} first" if hints else ""), status=409)

    # -- cached reads

    def _cached(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()`` once per key; computed outside the lock (two racing requests may both compute)."""
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = make()
        with self._lock:
            return self._cache.setdefault(key, value)

    def _column(self, name: str, li: int) -> np.ndarray | None:
        if name not in self.ds.variables:
            return None
        from wxdask import store

        # Straight Zarr reads (no dask graph): status has one chunk per slot, and a year has 8760 of them.
        return self._cached(f"col/{name}/{li}", lambda: store.read_region(self.cfg, name, (slice(None), li)))

    def _embedding(self) -> np.ndarray:
        self._need("embedding")
        return self._cached("embedding", lambda: self.ds["embedding"].values.astype(np.float32))

    def _slot_embedding(self, ti: int, li: int) -> np.ndarray:
        """One slot's embedding: from the whole array if a query loaded it, else one chunk read."""
        self._need("embedding")
        with self._lock:
            whole = self._cache.get("embedding")
        if whole is not None:
            return whole[ti, li]
        return self.ds["embedding"].isel(time=ti, lead_time=li).values.astype(np.float32)

    def _status_names(self) -> dict[int, str]:
        attrs = self.ds["status"].attrs if "status" in self.ds.variables else {}
        values, meanings = attrs.get("flag_values"), attrs.get("flag_meanings")
        if values is None or meanings is None:
            return {}
        return {int(v): m for v, m in zip(np.atleast_1d(values), str(meanings).split())}

    def _decoder(self) -> tuple[Any, float]:
        """The decoder, loaded once; raises (409) with the reason when there is none."""
        def make() -> Any:
            if "embedding" not in self.ds.variables:
                return ExploreRequestError("this store has no embedding; run `wxdask embed` first", status=409)
            attrs = self.ds["embedding"].attrs
            try:
                return load_decoder(dict(attrs), self.cfg.url)
            except ExploreRequestError as exc:
                return exc

        with self._model_lock:  # one load at a time
            found = self._cached("decoder", make)
        if isinstance(found, ExploreRequestError):
            raise found
        return found

    def _decode(self, z: np.ndarray) -> np.ndarray:
        from wxdask.model import decode_dbz

        decoder, clip = self._decoder()
        with _RENDER_LOCK:
            return decode_dbz(np.atleast_2d(z), decoder, clip_max=clip)

    def _latlon(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        def make() -> tuple:
            if "latitude" in self.ds.variables and "longitude" in self.ds.variables:
                return self.ds["latitude"].values, self.ds["longitude"].values
            return None, None
        return self._cached("latlon", make)

    def _image(self, ti: int, li: int) -> np.ndarray | None:
        if "refc" not in self.ds.variables:
            return None
        img = self.ds["refc"].isel(time=ti, lead_time=li).values.astype(np.float32)
        return img if np.isfinite(img).any() else None

    def _images(self, slots: list[tuple[int, int]]) -> list[np.ndarray | None]:
        """Several slots' images in one read (one graph, not one per image)."""
        import xarray as xr

        t = xr.DataArray([a for a, _ in slots], dims="slot")
        lead = xr.DataArray([b for _, b in slots], dims="slot")
        block = self.ds["refc"].isel(time=t, lead_time=lead).values.astype(np.float32)
        return [im if np.isfinite(im).any() else None for im in block]

    # -- JSON views

    def summary(self, params: dict[str, str]) -> Response:
        """What the store holds: times, leads, which views are available."""
        emb = self.ds["embedding"].attrs if "embedding" in self.ds.variables else {}
        model_msg = None
        with self._lock:
            tried = self._cache.get("decoder")
        if isinstance(tried, ExploreRequestError):
            model_msg = str(tried)
        elif emb and tried is None and not os.path.isdir(str(emb.get("model_dir", ""))):
            model_msg = (f"model directory {emb.get('model_dir')!r} (from the embedding's attributes) is missing: "
                         "decoded views are off")
        k_clusters = int(self.ds.sizes["cluster_id"]) if "cluster_id" in self.ds.sizes else 0
        return _json({
            "store": self.cfg.url,
            "n_times": len(self.times),
            "first": str(self.times[0]) if len(self.times) else None,
            "last": str(self.times[-1]) if len(self.times) else None,
            "leads": self.leads,
            "variables": sorted(map(str, self.ds.data_vars)),
            "has_embedding": "embedding" in self.ds.variables,
            "has_neighbors": "neighbor_time" in self.ds.variables,
            "has_clusters": "cluster" in self.ds.variables,
            "k": int(self.ds.sizes.get("rank", 0)),
            "exclude_window": str(self.ds.attrs.get("search_exclude_window", "0")),
            "n_clusters": k_clusters,
            "model_dir": emb.get("model_dir"),
            "model_hash": emb.get("model_hash"),
            "model_message": model_msg,
            "status_names": {str(k): v for k, v in self._status_names().items()},
            "tiles": "tile_embedding" in self.ds.variables,
            "has_tile_regimes": "tile_cluster" in self.ds.variables and "tile_embedding" in self.ds.variables,
            "tile_k": int(self.ds.attrs.get("tile_search_k", 5)),
            "tile_exclude_window": str(self.ds.attrs.get("tile_search_exclude_window",
                                                         self.ds.attrs.get("search_exclude_window", "0"))),
            "tile_mode": str(self.ds.attrs.get("tile_search_mode", "same-place")).replace("-", "_"),
        })

    def timeline(self, params: dict[str, str]) -> Response:
        """Per slot of one lead: status, cluster, interpolation residual (1-D reads only)."""
        li = self._lead(params)
        status = self._column("status", li)
        cluster = self._column("cluster", li)
        resid = self._column("interp_residual", li)
        names = self._status_names()
        return _json({
            "lead": self.leads[li],
            "n": len(self.times),
            "start_hour": int(self.hours[0]) if len(self.hours) else 0,
            "hours": (self.hours - (self.hours[0] if len(self.hours) else 0)).tolist(),
            "status": None if status is None else [names.get(int(s), str(int(s))) for s in status],
            "cluster": None if cluster is None else np.asarray(cluster, dtype=np.int64).tolist(),
            "residual": None if resid is None else [_finite(r) for r in resid],
        })

    def _stored_neighbors(self, ti: int, li: int) -> list[dict]:
        if "neighbor_time" not in self.ds.variables:
            return []
        nt = self.ds["neighbor_time"].isel(time=ti, lead_time=li).values
        nl = self.ds["neighbor_lead"].isel(time=ti, lead_time=li).values
        nd = self.ds["neighbor_sqdist"].isel(time=ti, lead_time=li).values
        out = []
        for rank, (t, lead, d) in enumerate(zip(nt, nl, nd), start=1):
            if np.isnat(t) or int(lead) < 0:
                continue
            out.append({"rank": rank, "time": str(np.datetime64(t, "h")), "lead": int(lead), "sqdist": _finite(d)})
        return out

    def slot(self, params: dict[str, str]) -> Response:
        """One slot: status, cluster, scores, stored analogs."""
        ti, li = self._time(params), self._lead(params)
        info: dict[str, Any] = {"time": str(self.times[ti]), "lead": self.leads[li], "index": ti}
        status = self._column("status", li)
        if status is not None:
            info["status"] = self._status_names().get(int(status[ti]), str(int(status[ti])))
        for name in ("cluster", "interp_residual", "step_sqdist", "reconstruction_rmse", "cluster_sqdist"):
            col = self._column(name, li)
            if col is not None:
                info[name] = int(col[ti]) if name == "cluster" else _finite(col[ti])
        info["neighbors"] = self._stored_neighbors(ti, li)
        info["exclude_window"] = str(self.ds.attrs.get("search_exclude_window", "0"))
        info["has_embedding"] = bool("embedding" in self.ds.variables
                                     and np.isfinite(self._slot_embedding(ti, li)).all())
        return _json(info)

    def _query(self, params: dict[str, str]) -> tuple[int, int, int, list[dict]]:
        self._need("embedding")
        ti, li = self._time(params), self._lead(params)
        window = parse_window(params.get("window", str(self.ds.attrs.get("search_exclude_window", "0"))))
        k = self._k(params, int(self.ds.sizes.get("rank", 5)) or 5)
        emb = self._embedding()
        if not np.isfinite(emb[ti, li]).all():
            raise ExploreRequestError(f"slot {self.times[ti]} lead {self.leads[li]} has no embedding "
                                      "(see its status)", status=404)
        found = brute_force_query(emb, self.hours, ti, li, k, window)
        out = [{"rank": r, "time": str(self.times[t]), "lead": self.leads[lead], "sqdist": d}
               for r, (t, lead, d) in enumerate(found, start=1)]
        return ti, li, window, out

    def query(self, params: dict[str, str]) -> Response:
        """Rerun one query (brute force over the stored embedding) with another window or k."""
        ti, li, window, out = self._query(params)
        return _json({"time": str(self.times[ti]), "lead": self.leads[li], "window_hours": window,
                      "neighbors": out})

    def regimes(self, params: dict[str, str]) -> Response:
        """Cluster sizes and counts by month."""
        self._need("cluster_size")
        sizes = self.ds["cluster_size"].values
        out: dict[str, Any] = {"sizes": sizes.tolist(), "cluster_id": self.ds["cluster_id"].values.tolist()}
        if "cluster_count" in self.ds.variables:
            out["months"] = self.ds["month"].values.tolist()
            out["counts"] = self.ds["cluster_count"].transpose("month", "cluster_id").values.tolist()
        for key in ("kmeans_inertia", "kmeans_engine", "kmeans_n_iter", "kmeans_converged", "kmeans_lead"):
            if key in self.ds.attrs:
                out[key] = self.ds.attrs[key]
        return _json(out)

    def scores(self, params: dict[str, str]) -> Response:
        """Held-out scores against PCA, analog and interpolation scores, where the store has them."""
        attrs = self.ds.attrs
        analog = {k: v for k, v in attrs.items() if k.startswith(("analog", "search_score"))}
        interp = {k: v for k, v in attrs.items() if k.startswith("interp_") and k != "interp_dbz_scores"}
        recon = {}
        if "reconstruction_rmse" in self.ds.variables:
            recon = {k: v for k, v in self.ds["reconstruction_rmse"].attrs.items() if k.endswith("_dBZ")}
        return _json({"evaluation": attrs.get("wxdask_evaluation"), "analog": analog or None,
                      "interpolation": interp or None, "interp_dbz_scores": attrs.get("interp_dbz_scores"),
                      "reconstruction_rmse": recon or None})

    # -- tiles

    def _float(self, params: dict[str, str], name: str) -> float:
        if name not in params:
            raise ExploreRequestError(f"missing parameter {name!r} (click a point on the map)")
        text = params[name].strip()
        if not re.fullmatch(r"[-+]?(\d{1,3}(\.\d{0,20})?|\.\d{1,20})", text):
            raise ExploreRequestError(f"{name} must be a number of degrees like 35.2, got {params[name]!r}")
        return float(text)

    def _tile_query(self, params: dict[str, str]) -> tuple[Any, int, str, int]:
        """``(TileResult, window hours, mode, k)`` of one tile query, by :func:`wxdask.tile_search.query_tile`."""
        import dataclasses

        from wxdask import tile_search
        from wxdask.config import Config
        from wxdask.errors import ConfigError, StoreLayoutError

        self._need("tile_embedding")
        ti, li = self._time(params), self._lead(params)
        lat, lon = self._float(params, "lat"), self._float(params, "lon")
        mode = params.get("mode", "same_place").strip().replace("-", "_")
        if mode not in TILE_MODES:
            raise ExploreRequestError(f"mode must be one of {', '.join(TILE_MODES)}, got {params['mode']!r}")
        default_window = str(self.ds.attrs.get("tile_search_exclude_window",
                                               self.ds.attrs.get("search_exclude_window", "0")))
        window = parse_window(params.get("window", default_window))
        k = self._k(params, int(self.ds.attrs.get("tile_search_k", 5)) or 5)
        key = (ti, li, lat, lon, mode, k, window)
        with self._lock:
            if key in self._tiles:
                self._tiles.move_to_end(key)
                return self._tiles[key]
        cfg = Config.from_dict({"dask": {"progress": False},
                                "tiles": {"k": k, "exclude_window": f"{window}h", "anywhere": mode == "anywhere"}})
        cfg = dataclasses.replace(cfg, store=self.cfg)
        try:
            result = tile_search.query_tile(cfg, None, lat=lat, lon=lon, time=str(self.times[ti]),
                                            lead=self.leads[li])
        except StoreLayoutError as exc:
            raise ExploreRequestError(f"tile view is off: {exc}", status=409) from None
        except ConfigError as exc:
            msg = str(exc)
            status = 404 if "no embedding" in msg else 400
            raise ExploreRequestError(msg, status=status) from None
        found = (result, window, mode, k)
        with self._lock:
            self._tiles[key] = found
            while len(self._tiles) > TILE_CACHE:
                self._tiles.popitem(last=False)
        return found

    def _tile_info(self, ty: int, tx: int) -> dict[str, Any]:
        """One tile's index, centre and bounds (projection metres and the outline's lat/lon extent)."""
        from wxdask import tile_search

        def make() -> tuple:
            return tile_search.store_tiling(self.ds["tile_embedding"])

        grid, tiling = self._cached("tiling", make)
        bounds = tile_search.tile_bounds(self.ds, ty, tx)
        lons, lats = tile_search.tile_outline(grid, tiling, ty, tx, on_latlon=True, bounds=bounds)
        info: dict[str, Any] = {"tile_y": ty, "tile_x": tx}
        if "tile_latitude" in self.ds.variables and "tile_longitude" in self.ds.variables:
            lon_c = float(self.ds["tile_longitude"].values[ty, tx])
            info.update(latitude=float(self.ds["tile_latitude"].values[ty, tx]),
                        longitude=lon_c - 360 if lon_c > 180 else lon_c)
        if bounds is not None:
            info["bounds_m"] = dict(zip(("x_min", "x_max", "y_min", "y_max"), bounds))
        info["bounds_latlon"] = {"lat_min": float(lats.min()), "lat_max": float(lats.max()),
                                 "lon_min": float(lons.min()), "lon_max": float(lons.max())}
        return info

    def tile_view(self, params: dict[str, str]) -> Response:
        """The tile holding ``(lat, lon)`` at the slot and its k analog tiles (``mode``, ``window``, ``k``)."""
        result, window, mode, k = self._tile_query(params)
        neigh = []
        for rank, row in enumerate(result.neighbors, start=1):
            if row["index"] < 0:
                continue
            neigh.append({"rank": rank, "time": str(np.datetime64(row["time"], "h")), "lead": int(row["lead"]),
                          "tile_y": int(row["tile_y"]), "tile_x": int(row["tile_x"]),
                          "latitude": _finite(row["latitude"]), "longitude": _finite(row["longitude"]),
                          "sqdist": _finite(row["sqdist"])})
        ty, tx = result.tile
        return _json({"time": str(np.datetime64(result.time, "h")), "lead": int(result.lead),
                      "lat": float(params["lat"]), "lon": float(params["lon"]), "mode": mode,
                      "window_hours": window, "k": k,
                      "label": result.label, "tile": self._tile_info(ty, tx), "neighbors": neigh})

    def tiles_png(self, params: dict[str, str]) -> Response:
        """The query tile and its analog tiles outlined on their slots' maps."""
        from wxdask import tile_search

        result, *_ = self._tile_query(params)
        cfg = Config(store=self.cfg)
        buf = io.BytesIO()
        with _RENDER_LOCK:
            tile_search.plot_tile_query(cfg, result, buf)
        return _png(buf)

    def tile_regimes_png(self, params: dict[str, str]) -> Response:
        """The slot's image with each tile outlined in its regime's colour (``tile_cluster``)."""
        from wxdask import tile_regimes

        self._need("tile_embedding", "tile_cluster")
        ti, li = self._time(params), self._lead(params)
        buf = io.BytesIO()
        with _RENDER_LOCK:
            tile_regimes.plot_regime_map(Config(store=self.cfg), str(self.times[ti]), buf, lead=self.leads[li])
        return _png(buf)

    # -- pictures

    def _reconstruction(self, ti: int, li: int) -> tuple[np.ndarray | None, np.ndarray | None, str]:
        """``(stored image, decoded image, note)``; the note says why there is no decoded image."""
        self._need("refc")
        img = self._image(ti, li)
        decoded, note = None, ""
        try:
            z = self._slot_embedding(ti, li)
            if np.isfinite(z).all():
                decoded = self._decode(z)[0]
            else:
                note = "no embedding"
        except ExploreRequestError as exc:
            note = str(exc)
        return img, decoded, note

    def _slot_render(self, ti: int, li: int) -> tuple[bytes, list[dict]]:
        """The slot's PNG and where its maps lie in it (:func:`wxdask.plots.image_panel`'s ``axes_out``)."""
        from wxdask import plots

        img, decoded, note = self._reconstruction(ti, li)
        name = f"{self.times[ti]} lead {self.leads[li]}"
        if img is None and decoded is None:
            raise ExploreRequestError(f"slot {name} has no image and no embedding (see its status)", status=404)
        lat, lon = self._latlon()
        titles = [f"stored {name}" if img is not None else f"{name}: no stored image",
                  "decoded from the embedding" if decoded is not None else f"not decoded: {note[:60]}"]
        buf = io.BytesIO()
        axes: list[dict] = []
        with _RENDER_LOCK:
            plots.image_panel([img, decoded], titles, buf, latitude=lat, longitude=lon, ncols=2, axes_out=axes)
        with self._lock:
            self._cache[f"slot_map/{ti}/{li}"] = axes
        return buf.getvalue(), axes

    def slot_png(self, params: dict[str, str]) -> Response:
        """The slot's stored image and its decoded reconstruction, on the map."""
        ti, li = self._time(params), self._lead(params)
        return Response(200, "image/png", self._slot_render(ti, li)[0])

    def slot_map(self, params: dict[str, str]) -> Response:
        """Where the maps of ``/img/slot.png`` lie in it and their lon/lat limits (a click -> a point)."""
        ti, li = self._time(params), self._lead(params)
        with self._lock:
            axes = self._cache.get(f"slot_map/{ti}/{li}")
        if axes is None:
            axes = self._slot_render(ti, li)[1]
        return _json({"time": str(self.times[ti]), "lead": self.leads[li], "panels": axes,
                      "tiles": "tile_embedding" in self.ds.variables})

    def error_png(self, params: dict[str, str]) -> Response:
        """Decoded minus stored (both clipped as the model sees them), on a diverging scale."""
        ti, li = self._time(params), self._lead(params)
        img, decoded, note = self._reconstruction(ti, li)
        if decoded is None:
            raise ExploreRequestError(f"no decoded image for {self.times[ti]} lead {self.leads[li]}: {note}",
                                      status=409 if "model" in note or "embedding;" in note else 404)
        if img is None or img.shape != decoded.shape:
            raise ExploreRequestError(f"no stored image for {self.times[ti]} lead {self.leads[li]} "
                                      "(see its status)", status=404)
        _, clip = self._decoder()
        error = np.clip(decoded, 0, clip) - np.clip(img, 0, clip)
        rmse = float(np.sqrt(np.mean(error ** 2)))
        lat, lon = self._latlon()
        buf = io.BytesIO()
        with _RENDER_LOCK:
            _error_panel(buf, error, f"decoded - stored, RMSE {rmse:.2f} dB", lat, lon)
        return _png(buf)

    def analogs_png(self, params: dict[str, str]) -> Response:
        """The slot beside its analogs' images (stored analogs, or a rerun with ``window``/``k``)."""
        from wxdask import plots

        ti, li = self._time(params), self._lead(params)
        self._need("refc")
        if "window" in params or "k" in params or "neighbor_time" not in self.ds.variables:
            _, _, _, neigh = self._query(params)
        else:
            neigh = self._stored_neighbors(ti, li)
        slots = [(ti, li)] + [(self._time({"time": n["time"]}), self.leads.index(n["lead"])) for n in neigh]
        images = self._images(slots)
        ncols = min(len(images), ANALOG_COLUMNS)
        title = (f"query {self.times[ti]} +{self.leads[li]}h top left,\n"
                 f"then analogs 1-{len(neigh)} by rows (grey: no image)")
        buf = io.BytesIO()
        with _RENDER_LOCK:  # one mosaic in one panel: a dozen map axes would take seconds to lay out
            plots.image_panel([mosaic(images, ncols)], [title], buf)
        return _png(buf)

    def centroids_png(self, params: dict[str, str]) -> Response:
        """Every cluster centroid decoded to a map, titled with its size (drawn once, then cached)."""
        from wxdask import plots

        self._need("centroid")

        def make() -> bytes:
            centers = self.ds["centroid"].values
            maps = self._decode(centers)
            sizes = self.ds["cluster_size"].values if "cluster_size" in self.ds.variables else [None] * len(maps)
            titles = [f"cluster {i}: {int(n)} slots" if n is not None else f"cluster {i}"
                      for i, n in enumerate(sizes)]
            lat, lon = self._latlon()
            buf = io.BytesIO()
            with _RENDER_LOCK:
                plots.image_panel(list(maps), titles, buf, latitude=lat, longitude=lon)
            return buf.getvalue()

        return Response(200, "image/png", self._cached("centroids.png", make))


def _error_panel(buf: io.BytesIO, error: np.ndarray, title: str, lat: np.ndarray | None,
                 lon: np.ndarray | None) -> None:
    """One map of a difference in dB on a diverging scale (the dBZ maps come from :mod:`wxdask.plots`)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from wxdask import plots

    lim = max(float(np.nanmax(np.abs(error))), 1.0)
    step = max(1, int(np.ceil(max(error.shape) / plots.MAX_DRAW)))
    fig, ax = plt.subplots(figsize=(4.6, 3.0), layout="constrained")
    if lat is not None and lon is not None and lat.shape == error.shape:
        lo = np.where(lon > 180, lon - 360, lon)
        m: Any = ax.pcolormesh(lo[::step, ::step], lat[::step, ::step], error[::step, ::step], cmap="RdBu_r",
                          vmin=-lim, vmax=lim, shading="nearest", rasterized=True)
        ax.set_aspect(1.0 / np.cos(np.deg2rad(np.nanmean(lat))))
        ax.set_xlabel("longitude", fontsize=7)
        ax.set_ylabel("latitude", fontsize=7)
    else:
        m = ax.imshow(error[::step, ::step], origin="lower", cmap="RdBu_r", vmin=-lim, vmax=lim)
    ax.set_title(title, fontsize=8)
    ax.tick_params(labelsize=6)
    fig.colorbar(m, ax=ax, shrink=0.9).set_label("dB (decoded - stored)", fontsize=7)
    fig.savefig(buf, dpi=100)
    plt.close(fig)


@functools.cache
def _static(name: str) -> bytes:
    return resources.files("wxdask").joinpath("explore_static", name).read_bytes()


# ----------------------------------------------------------------------------- the server


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 8050) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) answering with ``explorer``; ``port=0`` picks a free port."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "wxdask-explore"

        def do_GET(self) -> None:
            self._send(explorer.handle(self.path))

        def do_HEAD(self) -> None:
            self._send(explorer.handle(self.path), body=False)

        def _refuse(self) -> None:
            self._send(_json({"error": f"{self.command} is not allowed: the explorer is read-only (GET only)"}, 405))

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

        def _send(self, resp: Response, body: bool = True) -> None:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            self.send_header("Cache-Control", "no-store")
            if resp.status == 405:
                self.send_header("Allow", "GET, HEAD")
            self.end_headers()
            if body:
                self.wfile.write(resp.body)

        def log_message(self, fmt: str, *args: Any) -> None:
            logger.debug("%s " + fmt, self.address_string(), *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve(store_url: str, host: str = "127.0.0.1", port: int = 8050,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Open the store read-only and serve the explorer until interrupted.

    Parameters
    ----------
    store_url : str
        The store.
    host, port : str, int
        Where to listen (loopback unless told).
    on_ready : callable, optional
        Called with the page's URL once listening.
    """
    explorer = Explorer(StoreConfig(url=store_url))
    explorer.warm_up()
    server = make_server(explorer, host, port)
    url = f"http://{host}:{server.server_address[1]}/"
    logger.info("explorer for %s at %s", store_url, url)
    if on_ready is not None:
        on_ready(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # pragma: no cover - interactive stop
        pass
    finally:
        server.server_close()
