"""The explorer's tile views: the tile under a click, its analog tiles, the slot's tile regimes."""

from __future__ import annotations

import io
import re
from typing import Any

import numpy as np

from wxdask.config import Config
from wxdask.explore.base import _ExplorerBase
from wxdask.explore.core import _RENDER_LOCK, TILE_CACHE, TILE_MODES, ExploreRequestError, _finite, parse_window
from wxdask.explore.responses import Response, _json, _png


class _TileViews(_ExplorerBase):
    """``/api/tiles``, ``/img/tiles.png`` and ``/img/tile_regimes.png``."""

    def _float(self, params: dict[str, str], name: str) -> float:
        if name not in params:
            raise ExploreRequestError(f"missing parameter {name!r} (click a point on the map)")
        text = params[name].strip()
        if not re.fullmatch(r"[-+]?(\d{1,3}(\.\d{0,20})?|\.\d{1,20})", text):
            raise ExploreRequestError(f"{name} must be a number of degrees like 35.2, got {params[name]!r}")
        return float(text)

    def _tile_query(self, params: dict[str, str]) -> tuple[Any, int, str, int]:
        """``(TileResult, window hours, mode, k)`` of one tile query, by :func:`wxdask.tile_query.query_tile`."""
        import dataclasses

        from wxdask import tile_query
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
            result = tile_query.query_tile(cfg, None, lat=lat, lon=lon, time=str(self.times[ti]),
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
        from wxdask import tile_query, tile_search

        def make() -> tuple:
            return tile_search.store_tiling(self.ds["tile_embedding"])

        grid, tiling = self._cached("tiling", make)
        bounds = tile_query.tile_bounds(self.ds, ty, tx)
        lons, lats = tile_query.tile_outline(grid, tiling, ty, tx, on_latlon=True, bounds=bounds)
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
        from wxdask import tile_query

        result, *_ = self._tile_query(params)
        cfg = Config(store=self.cfg)
        buf = io.BytesIO()
        with _RENDER_LOCK:
            tile_query.plot_tile_query(cfg, result, buf)
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
