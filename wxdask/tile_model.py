"""The tile autoencoder: tiles with echo from the store's images, its training and its held-out evaluation.

Core (pure numpy): :func:`store_grid`, :func:`raw_to_dbz`, :func:`select_tiles`,
:func:`gather_tiles`, :func:`tiling_record`.
I/O: :func:`slot_echo` (echo fraction of every tile of some slots, read through
:func:`wxdask.store.read_slots`), :func:`plan_tiles`, :func:`run_train` and
:func:`run_evaluate`. The embedding stage is :mod:`wxdask.tile_embed`.

The tile model is the whole-image model's code (:func:`wxdask.model.build_autoencoder`
on ``(size, size)`` inputs, ``cfg.tiles.model_config()``), trained by
:func:`wxdask.train.fit` with a tile dataset, on the same whole-day split as the
image model (:func:`wxdask.train.plan_training`): only tiles of images valid on
training days, and only tiles whose echo fraction (share of points > 0 dBZ,
:func:`wxdask.tiles.echo_fraction_block`) is at least ``tiles.echo_threshold``.
Clear-sky tiles would teach it nothing but the -10 floor.

Its directory holds ``model.keras`` and ``metadata.json`` like the image model's
(``grid.shape`` is ``[size, size]``), plus a ``tiles`` record: the store's grid
name, tile size, stride, offset, tiling shape and echo threshold.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wxdask import model as wxmodel
from wxdask import store as wxstore
from wxdask import train as wxtrain
from wxdask.errors import ConfigError, ModelError, StoreLayoutError
from wxdask.grid import Grid, get_grid
from wxdask.tiles import Tiling, echo_fraction_block, tiles_block, tiling_for

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr
    from distributed import Client

    from wxdask.config import Config, StoreConfig

__all__ = [
    "STORE_ATTR",
    "store_grid",
    "raw_to_dbz",
    "select_tiles",
    "gather_tiles",
    "tiling_record",
    "tiling_of_model",
    "slot_echo",
    "plan_tiles",
    "tile_train_config",
    "run_train",
    "tile_stats",
    "run_evaluate",
]

logger = logging.getLogger(__name__)

#: Store attribute holding the latest tile evaluation.
STORE_ATTR = "wxdask_tile_evaluation"


# ----------------------------------------------------------------------------- core (numpy)


def store_grid(ds: xr.Dataset) -> Grid:
    """The store's grid: the ``wxdask_grid`` attribute ingest writes, else ``refc.attrs["grid"]``.

    Raises
    ------
    StoreLayoutError
        If neither names a grid of the images' shape.
    """
    from wxdask.grid import Grid as _Grid

    params = ds.attrs.get("wxdask_grid")
    shape = tuple(int(s) for s in ds["refc"].shape[-2:])
    try:
        grid = _Grid(**params) if params else get_grid(wxtrain.grid_name(ds["refc"].attrs, shape))
    except (ConfigError, TypeError):
        raise StoreLayoutError(f"the store does not say which grid its {shape[0]}x{shape[1]} images are on "
                               "(no wxdask_grid attribute, no known refc grid); ingest it with wxdask") from None
    if grid.shape != shape:
        raise StoreLayoutError(f"the store's grid {grid.name!r} is {grid.shape}, its images are {shape}")
    return grid


def raw_to_dbz(raw: np.ndarray) -> np.ndarray:
    """Stored ``refc`` (int16 sixteenths of a dBZ) to float32 dBZ, the fill value to NaN.

    Examples
    --------
    >>> raw_to_dbz(np.array([-160, 480, -32768], dtype=np.int16)).tolist()
    [-10.0, 30.0, nan]
    """
    raw = np.asarray(raw)
    out = raw.astype(np.float32) * np.float32(wxmodel.RAW_SCALE)
    out[raw == np.iinfo(np.int16).min] = np.nan
    return out


def select_tiles(echo: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tiles to use: echo fraction at least ``threshold`` (NaN, a slot without image, never).

    Parameters
    ----------
    echo : numpy.ndarray
        ``(n, n_tile_y, n_tile_x)`` echo fractions.

    Returns
    -------
    tuple of numpy.ndarray
        ``(image, tile_y, tile_x)`` int64 indices, image-major.

    Examples
    --------
    >>> e = np.array([[[0.0, 0.5]], [[np.nan, 0.1]]])
    >>> [a.tolist() for a in select_tiles(e, 0.1)]
    [[0, 1], [0, 0], [1, 1]]
    """
    with np.errstate(invalid="ignore"):
        keep = np.asarray(echo) >= threshold
    k, iy, ix = np.nonzero(keep)
    return k.astype(np.int64), iy.astype(np.int64), ix.astype(np.int64)


def gather_tiles(images: np.ndarray, tiling: Tiling, k: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Tiles ``(k, iy, ix)`` of ``images`` ``(n, ny, nx)``: a contiguous ``(m, size, size)`` copy.

    Examples
    --------
    >>> imgs = np.arange(2 * 4 * 6).reshape(2, 4, 6)
    >>> gather_tiles(imgs, Tiling((4, 6), 2, 2), np.array([1]), np.array([0]), np.array([2]))[0].tolist()
    [[28, 29], [34, 35]]
    """
    return np.ascontiguousarray(tiles_block(images, tiling)[k, iy, ix])


def tiling_record(grid: Grid, tiling: Tiling, echo_threshold: float) -> dict:
    """The ``tiles`` record of a tile model's metadata.

    Examples
    --------
    >>> from wxdask.grid import COARSE
    >>> from wxdask.tiles import make_tiling
    >>> tiling_record(COARSE, make_tiling(COARSE, 500, multiple=8), 0.05)["shape"]
    [8, 14]
    """
    return {
        "grid_name": grid.name,
        "grid_shape": [int(s) for s in grid.shape],
        "size": int(tiling.size),
        "stride": int(tiling.stride),
        "offset": [int(v) for v in tiling.offset],
        "shape": [int(v) for v in tiling.shape],
        "echo_threshold": float(echo_threshold),
        "echo_dBZ": "a point has echo when > 0 dBZ",
    }


def tiling_of_model(meta: dict, grid: Grid, model_dir: str) -> Tiling:
    """The tiling a tile model was trained on, checked against the store's grid.

    Raises
    ------
    ModelError
        If the metadata has no ``tiles`` record (not a tile model) or is for another grid.
    """
    rec = meta.get("tiles")
    if not isinstance(rec, dict) or "size" not in rec:
        raise ModelError(f"{model_dir!r} is not a tile model (its metadata has no tiles record); "
                         "train one with `wxdask train --tiles`")
    if rec.get("grid_name") != grid.name or list(rec.get("grid_shape", [])) != list(grid.shape):
        raise ModelError(f"tile model {model_dir!r} was trained on tiles of grid {rec.get('grid_name')!r}, "
                         f"the store's grid is {grid.name!r}; train a tile model on this store")
    tiling = Tiling(grid_shape=grid.shape, size=int(rec["size"]), stride=int(rec["stride"]))
    if list(tiling.offset) != list(rec.get("offset", tiling.offset)):
        raise ModelError(f"tile model {model_dir!r} records tile offset {rec.get('offset')}, "
                         f"the tiling gives {list(tiling.offset)}")
    return tiling


# ----------------------------------------------------------------------------- reading


def slot_echo(store_cfg: StoreConfig, time_index: np.ndarray, lead_index: np.ndarray, tiling: Tiling,
              batch: int = 64) -> np.ndarray:
    """Echo fraction of every tile of some slots, ``(n, n_tile_y, n_tile_x)`` float32, ``batch`` images per read."""
    ti, li = np.asarray(time_index), np.asarray(lead_index)
    out = np.empty((ti.size, *tiling.shape), dtype=np.float32)
    for i in range(0, ti.size, batch):
        raw = wxstore.read_slots(store_cfg, ti[i : i + batch], li[i : i + batch])
        out[i : i + raw.shape[0]] = echo_fraction_block(raw_to_dbz(raw), tiling)
    return out


@dataclasses.dataclass(frozen=True)
class TileSet:
    """Tiles of some slots: ``slots`` ``(time_index, lead_index)`` and, per tile, its slot and tile index."""

    slots: tuple[np.ndarray, np.ndarray]
    k: np.ndarray
    iy: np.ndarray
    ix: np.ndarray

    def __len__(self) -> int:
        return int(self.k.size)

    @classmethod
    def of(cls, store_cfg: StoreConfig, slots: tuple[np.ndarray, np.ndarray], tiling: Tiling, threshold: float,
           batch: int = 64) -> TileSet:
        echo = slot_echo(store_cfg, slots[0], slots[1], tiling, batch) if slots[0].size else \
            np.zeros((0, *tiling.shape), np.float32)
        return cls((np.asarray(slots[0]), np.asarray(slots[1])), *select_tiles(echo, threshold))

    def read(self, store_cfg: StoreConfig, tiling: Tiling, idx: np.ndarray, clip_max: float,
             cache: Any = None) -> np.ndarray:
        """Scaled tiles ``idx`` ``(m, size, size, 1)``, reading each image once."""
        ks, inv = np.unique(self.k[idx], return_inverse=True)
        x = wxtrain.read_images_cached(store_cfg, self.slots[0][ks], self.slots[1][ks], clip_max, cache)
        return gather_tiles(x[..., 0], tiling, inv, self.iy[idx], self.ix[idx])[..., None]


@functools.lru_cache(maxsize=None)
def _tile_batches_class() -> type:
    keras = wxmodel._keras()

    class TileBatches(keras.utils.PyDataset):
        """Batches ``(x, x)`` of scaled tiles with echo, shuffled by ``(seed, epoch)`` like :mod:`wxdask.train`'s."""

        def __init__(self, store_cfg: StoreConfig, tiles: TileSet, tiling: Tiling, batch_size: int,
                     clip_max: float, seed: int, shuffle: bool, cache: Any = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.store_cfg, self.tiles, self.tiling, self.cache = store_cfg, tiles, tiling, cache
            self.batch_size, self.clip_max, self.seed, self.shuffle = int(batch_size), float(clip_max), int(seed), shuffle
            self.set_epoch(0)

        def set_epoch(self, epoch: int) -> None:
            self.epoch = int(epoch)
            self._batches = wxtrain.batch_order(len(self.tiles), self.batch_size, self.seed, self.epoch,
                                                shuffle=self.shuffle)

        @property
        def num_batches(self) -> int:
            return len(self._batches)

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            x = self.tiles.read(self.store_cfg, self.tiling, self._batches[i], self.clip_max, self.cache)
            return x, x

    return TileBatches


# ----------------------------------------------------------------------------- training


def tile_train_config(cfg: Config) -> Any:
    """``cfg.train`` with the tile model's directory, epochs and batch size (``cfg.tiles``)."""
    t = cfg.tiles
    return dataclasses.replace(cfg.train, model_dir=t.model_dir, epochs=t.epochs, batch_size=t.batch_size)


def plan_tiles(cfg: Config, ds: xr.Dataset) -> tuple[Any, Grid, Tiling, TileSet, TileSet]:
    """The training plan (same day split as the image model) and the tiles of each side.

    Returns
    -------
    tuple
        ``(plan, grid, tiling, train_tiles, heldout_tiles)``; ``plan.split`` counts tiles.

    Raises
    ------
    StoreLayoutError
        If a side has no tile with enough echo.
    """
    grid = store_grid(ds)
    tiling = tiling_for(cfg.tiles, grid)
    model_cfg = cfg.tiles.model_config()
    plan = wxtrain.plan_training(ds, model_cfg, tile_train_config(cfg), cfg.store.url,
                                 input_shape=(tiling.size, tiling.size), input_name=f"{grid.name} tiles")
    thr = cfg.tiles.echo_threshold
    train_tiles = TileSet.of(cfg.store, plan.train_slots, tiling, thr)
    held_tiles = TileSet.of(cfg.store, plan.heldout_slots, tiling, thr)
    for side, tiles, slots in (("training", train_tiles, plan.train_slots), ("held-out", held_tiles, plan.heldout_slots)):
        if len(tiles) == 0:
            raise StoreLayoutError(
                f"store {cfg.store.url!r}: no {side} tile of {tiling.size} px has echo fraction >= {thr} "
                f"({slots[0].size} images); lower tiles.echo_threshold or ingest stormier days")
    per_image = tiling.shape[0] * tiling.shape[1]
    split = {**plan.split, "unit": "tiles with echo fraction >= echo_threshold",
             "n_train": len(train_tiles), "n_heldout": len(held_tiles),
             "n_train_images": int(plan.train_slots[0].size), "n_heldout_images": int(plan.heldout_slots[0].size),
             "n_train_clear": int(plan.train_slots[0].size * per_image - len(train_tiles)),
             "n_heldout_clear": int(plan.heldout_slots[0].size * per_image - len(held_tiles))}
    return dataclasses.replace(plan, split=split), grid, tiling, train_tiles, held_tiles


def run_train(cfg: Config, client: Client | None) -> str:
    """Train the tile autoencoder on the training days' tiles with echo; write ``cfg.tiles.model_dir``.

    Returns
    -------
    str
        One line naming the model directory, the tile counts and the losses.

    Raises
    ------
    StoreLayoutError, ModelError, ConfigError
        Before anything is written.
    """
    ds = wxstore.open_input(cfg.store, ["refc", "status"], decode=False)
    tcfg = tile_train_config(cfg)
    model_dir = Path(tcfg.model_dir)
    if (model_dir / wxmodel.METADATA_FILE).exists() and (model_dir / wxmodel.MODEL_FILE).exists():
        meta = wxmodel.read_metadata(model_dir)
        if meta.get("tiles") and int(meta.get("epochs_done", 0)) >= tcfg.epochs:
            return wxtrain._summary(meta, model_dir, "already trained").replace(" images", " tiles")
    plan, grid, tiling, train_tiles, held_tiles = plan_tiles(cfg, ds)
    logger.info("tile model: %d px tiles (%dx%d per image), %d training and %d held-out tiles with echo",
                tiling.size, *tiling.shape, len(train_tiles), len(held_tiles))
    TileBatches = _tile_batches_class()
    cache = wxtrain.ImageCache(tcfg.cache_mb * 2**20) if tcfg.cache_mb else None
    kw = {"workers": 1, "use_multiprocessing": False, "max_queue_size": 8}
    clip = plan.model.clip_max
    datasets = (TileBatches(cfg.store, train_tiles, tiling, tcfg.batch_size, clip, tcfg.seed, True, cache, **kw),
                TileBatches(cfg.store, held_tiles, tiling, tcfg.batch_size, clip, tcfg.seed, False, cache, **kw))
    extra = {"tiles": tiling_record(grid, tiling, cfg.tiles.echo_threshold)}
    meta = wxtrain.fit(cfg.store, tcfg, plan, datasets=datasets, extra=extra)
    return wxtrain._summary(meta, model_dir, "trained").replace(" images", " tiles")


# ----------------------------------------------------------------------------- evaluation


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


def run_evaluate(cfg: Config, client: Client | None) -> str:
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
    """
    import dask.array as da
    from dask_ml.decomposition import PCA

    from wxdask import evaluate as ev
    from wxdask.client import gpu_workers

    ecfg = cfg.evaluate
    model_dir = Path(cfg.tiles.model_dir)
    info = wxmodel.ModelDir(str(model_dir)).metadata()
    meta = wxmodel.read_metadata(model_dir)
    ds = wxstore.open_input(cfg.store, ["refc", "status"], decode=False)
    tiling = tiling_of_model(meta, store_grid(ds), str(model_dir))
    thr = float(meta["tiles"]["echo_threshold"])
    split = meta.get("split") or {}
    held = TileSet.of(cfg.store, ev._slots_on_days(ds, split.get("heldout_days", [])), tiling, thr)
    train_slots = ev._slots_on_days(ds, split.get("train_days", []))
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
    if cfg.train.on_gpu_worker:
        if client is None or not gpu_workers(client):
            raise ConfigError("train.on_gpu_worker is set but there is no worker with the GPU resource")
        stats = client.submit(tile_stats, *args, resources={"GPU": 1}, pure=False).result()
    else:
        stats = tile_stats(*args)
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
        "autoencoder_better": {k: bool(ev._better(k, ae_scores[k], pca_scores[k]))
                               for k in ae_scores if k != "echo_fraction"},
        "evaluated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    meta = wxmodel.read_metadata(model_dir)
    meta["evaluation"] = evaluation
    wxmodel.write_metadata(model_dir, meta)
    wxstore.set_attrs(cfg.store, {STORE_ATTR: ev._json_safe(evaluation)})
    keys = ["rmse", "mae", "rmse_echo", "mae_echo", "csi_20", "csi_35"]
    rows = [f"{'':<14}" + "".join(f"{k:>11}" for k in keys)]
    for label, sc in (("autoencoder", ae_scores), (f"PCA-{n_components}", pca_scores)):
        rows.append(f"{label:<14}" + "".join(f"{sc[k]:>11.3f}" for k in keys))
    return (f"held-out tile evaluation of {model_dir} ({len(held)} tiles of {s} px with echo, "
            f"{held.slots[0].size} images, dBZ):\n" + "\n".join(rows))
