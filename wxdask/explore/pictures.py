"""The explorer's pictures: the slot and its reconstruction, the error map, the analogs' mosaic, the centroids."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from wxdask.explore.base import _ExplorerBase
from wxdask.explore.core import _RENDER_LOCK, ANALOG_COLUMNS, ExploreRequestError, mosaic
from wxdask.explore.responses import Response, _json, _png


class _PictureViews(_ExplorerBase):
    """The ``/img/*`` maps drawn by :mod:`wxdask.plots`, and ``/api/slot_map`` (where the slot's maps lie)."""

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
