"""The explorer's app: :class:`Explorer`, its routes and parameters, and the dispatch of one GET."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

from wxdask.config import StoreConfig
from wxdask.errors import WxdaskError
from wxdask.explore.core import PNG_CACHE, TILE_PARAMS, ExploreRequestError
from wxdask.explore.pictures import _PictureViews
from wxdask.explore.responses import STATIC, Response, _json, _static
from wxdask.explore.tile_views import _TileViews
from wxdask.explore.views import _JsonViews

logger = logging.getLogger("wxdask.explore")  # one logger for the package, named as before the split


class Explorer(_JsonViews, _TileViews, _PictureViews):
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
        super().__init__(store_cfg)
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
