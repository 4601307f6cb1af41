"""Held-out evaluation of the tile model against PCA of tiles, with the whole-image evaluation's scores.

I/O: :func:`tile_stats` (summed :func:`wxdask.evaluate.score_stats` of the
autoencoder and of PCA on some tiles, in one pass; here or on a GPU worker) and
:func:`run`. Everything else is :mod:`wxdask.evaluate`'s: the scores
(:func:`~wxdask.evaluate.score_stats`, :func:`~wxdask.evaluate.scores_from_stats`),
the clipping to dBZ and the PCA reconstruction; and :mod:`wxdask.tile_model`'s
tiles. The PCA baseline has as many components as the embedding and is fitted
with dask-ml on a seeded sample of the training days' tiles with echo; both
methods are scored on every held-out tile with echo.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wxdask import model as wxmodel
from wxdask import store as wxstore
from wxdask.errors import StoreLayoutError
from wxdask.tile_model import TileSet, store_grid, tiling_of_model
from wxdask.tiles import Tiling

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

    from wxdask.config import Config, StoreConfig

__all__ = ["STORE_ATTR", "tile_stats", "run"]

logger = logging.getLogger(__name__)

#: Store attribute holding the latest tile evaluation.
STORE_ATTR = "wxdask_tile_evaluation"


def tile_stats(store_cfg: StoreConfig, model_dir: str, tiles: TileSet, tiling: Tiling, clip_max: float,
               batch_size: int, mean: np.ndarray, components: np.ndarray) -> dict:
    """Summed :func:`wxdask.evaluate.score_stats` of the autoencoder and of PCA on some tiles.

    Runs here or as a task on a GPU worker; the model comes from the per-process cache.
    """
    from wxdask import evaluate as ev
    from wxdask.models import get_model

    model = get_model(wxmodel.ModelDir(str(model_dir)), wxmodel.model_hash(model_dir))
    ae = np.zeros(len(ev.STAT_NAMES))
    pca = np.zeros(len(ev.STAT_NAMES))
    s = tiling.size
    for i in range(0, len(tiles), batch_size):
        x = tiles.read(store_cfg, tiling, np.arange(i, min(i + batch_size, len(tiles))), clip_max)
        truth = ev.to_dbz(x[..., 0], clip_max)
        recon = np.asarray(model.predict_on_batch(x))[..., 0]
        ae += ev.score_stats(truth, ev.to_dbz(recon, clip_max))
        rp = ev.pca_reconstruct_block(x.reshape(-1, s * s), mean, components).reshape(-1, s, s)
        pca += ev.score_stats(truth, ev.to_dbz(rp, clip_max))
    return {"autoencoder": ae, "pca": pca}


def run(cfg: Config, client: Client | None) -> str:
    """Score the tile model on held-out tiles with echo against PCA of training tiles.

    Scores (the whole-image evaluation's: RMSE, MAE, echo-point scores, CSI 20/35)
    go to the tile model's ``metadata.json`` (``evaluation``) and the store
    attribute ``wxdask_tile_evaluation``.

    Raises
    ------
    ModelError
        If the directory holds no tile model, or one for another grid.
    StoreLayoutError
        If the held-out or training days hold no tile with echo.
    ConfigError, ClusterError
        With ``train.on_gpu_worker`` and no cluster, or no worker with the GPU resource
        (:func:`wxdask.client.here_or_on_gpu`).
    """
    import dask.array as da
    from dask_ml.decomposition import PCA

    from wxdask import evaluate as ev
    from wxdask.client import here_or_on_gpu

    ecfg = cfg.evaluate
    model_dir = Path(cfg.tiles.model_dir)
    info = wxmodel.ModelDir(str(model_dir)).metadata()
    meta = wxmodel.read_metadata(model_dir)
    ds = wxstore.open_input(cfg.store, ["refc", "status"])
    tiling = tiling_of_model(meta, store_grid(ds), str(model_dir))
    thr = float(meta["tiles"]["echo_threshold"])
    split = meta.get("split") or {}
    held = TileSet.of(cfg.store, ev.slots_on_days(ds, split.get("heldout_days", [])), tiling, thr)
    train_slots = ev.slots_on_days(ds, split.get("train_days", []))
    if len(held) == 0:
        raise StoreLayoutError(f"store {cfg.store.url!r} holds no tile with echo on the tile model's held-out days")
    clip_max, n_latent, s = info["clip_max"], info["n_latent"], tiling.size

    # PCA baseline: fitted with dask-ml on a seeded sample of the training days' tiles with echo.
    rng = np.random.default_rng(ecfg.seed)
    n_slots = min(ecfg.pca_max_train, train_slots[0].size)
    pick = np.sort(rng.choice(train_slots[0].size, n_slots, replace=False))
    fit_tiles = TileSet.of(cfg.store, (train_slots[0][pick], train_slots[1][pick]), tiling, thr)
    if len(fit_tiles) == 0:
        raise StoreLayoutError(f"store {cfg.store.url!r} holds no tile with echo on the training days; "
                               "the PCA baseline needs them")
    n_fit = min(ecfg.pca_max_train, len(fit_tiles))
    sel = np.sort(rng.choice(len(fit_tiles), n_fit, replace=False))
    x_fit = fit_tiles.read(cfg.store, tiling, sel, clip_max).reshape(n_fit, s * s)
    n_components = min(n_latent, n_fit, s * s)
    pca = PCA(n_components=n_components, svd_solver="randomized", iterated_power=ecfg.pca_power_iter,
              random_state=ecfg.seed)
    pca.fit(da.from_array(x_fit, chunks=(max(1, min(n_fit, 4096)), -1)))
    mean = np.asarray(pca.mean_.compute() if hasattr(pca.mean_, "compute") else pca.mean_, dtype=np.float32)
    components = np.asarray(pca.components_, dtype=np.float32)

    args = (cfg.store, str(model_dir), held, tiling, clip_max, ecfg.batch_size, mean, components)
    stats = here_or_on_gpu(client, cfg.train.on_gpu_worker, tile_stats, *args)
    ae_scores, pca_scores = ev.scores_from_stats(stats["autoencoder"]), ev.scores_from_stats(stats["pca"])
    evaluation = {
        "model_hash": info["hash"],
        "model_dir": str(model_dir),
        "store": cfg.store.url,
        "n_heldout": len(held),
        "n_heldout_images": int(held.slots[0].size),
        "heldout_days": split.get("heldout_days", []),
        "tiles": meta["tiles"],
        "units": "dBZ; truth and reconstructions clipped to 0..clip_max; echo = either tile > 0 dBZ; "
                 "CSI of value >= threshold; held-out tiles with echo fraction >= echo_threshold",
        "autoencoder": ae_scores,
        "pca": {**pca_scores, "n_components": int(n_components), "n_fit": int(n_fit),
                "fitted_on": "training days' tiles with echo only",
                "solver": f"dask-ml randomized, iterated_power={ecfg.pca_power_iter}"},
        "autoencoder_better": {k: bool(ev.better(k, ae_scores[k], pca_scores[k]))
                               for k in ae_scores if k != "echo_fraction"},
        "evaluated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    meta = wxmodel.read_metadata(model_dir)
    meta["evaluation"] = evaluation
    wxmodel.write_metadata(model_dir, meta)
    wxstore.set_attrs(cfg.store, {STORE_ATTR: ev.json_safe(evaluation)})
    keys = ["rmse", "mae", "rmse_echo", "mae_echo", "csi_20", "csi_35"]
    rows = [f"{'':<14}" + "".join(f"{k:>11}" for k in keys)]
    for label, sc in (("autoencoder", ae_scores), (f"PCA-{n_components}", pca_scores)):
        rows.append(f"{label:<14}" + "".join(f"{sc[k]:>11.3f}" for k in keys))
    return (f"held-out tile evaluation of {model_dir} ({len(held)} tiles of {s} px with echo, "
            f"{held.slots[0].size} images, dBZ):\n" + "\n".join(rows))
