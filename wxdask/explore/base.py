"""The explorer's data layer: the store opened read-only, request parameters, cached reads, the decoder."""

from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from wxdask.config import StoreConfig
from wxdask.explore.core import _RENDER_LOCK, MAX_K, ExploreRequestError, _finite, brute_force_query, parse_window
from wxdask.explore.responses import Response

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


# ----------------------------------------------------------------------------- the store and its reads


class _ExplorerBase:
    """The store and what every view reads from it; :class:`wxdask.explore.Explorer` adds the views."""

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

    # -- analogs (stored, or rerun by brute force)

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
