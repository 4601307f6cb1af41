"""The explorer's JSON views: the store's summary, a lead's timeline, a slot, a rerun query, regimes, scores."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from wxdask.explore.base import _ExplorerBase
from wxdask.explore.core import ExploreRequestError, _finite
from wxdask.explore.responses import Response, _json


class _JsonViews(_ExplorerBase):
    """The ``/api/*`` views of the store, its slots and its regimes."""

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
