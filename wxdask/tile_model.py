"""The tile autoencoder: tiles with echo from the store's images, its training and its held-out evaluation.

Core (pure numpy): :func:`store_grid`, :func:`raw_to_dbz`, :func:`select_tiles`,
:func:`gather_tiles`, :func:`tiling_record`.
I/O: :func:`slot_echo` (echo fraction of every tile of some slots, read through
:func:`wxdask.store.read_slots`), :class:`TileSet`, :func:`plan_tiles`,
:func:`fit_tiles` and :func:`run_train`. Held-out evaluation is
:mod:`wxdask.tile_evaluate`, the embedding stage :mod:`wxdask.tile_embed`.

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
import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

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
    "store_grid",
    "raw_to_dbz",
    "select_tiles",
    "gather_tiles",
    "tiling_record",
    "tiling_of_model",
    "slot_echo",
    "TileSet",
    "plan_tiles",
    "fit_tiles",
    "tile_train_config",
    "run_train",
]

logger = logging.getLogger(__name__)

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
    shape = cast(tuple[int, int], tuple(int(s) for s in ds["refc"].shape[-2:]))
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

    PyDataset: Any = keras.utils.PyDataset

    class TileBatches(PyDataset):
        """Batches ``(x, x)`` of scaled tiles with echo, shuffled by ``(seed, epoch)`` like :mod:`wxdask.train`'s."""

        def __init__(self, store_cfg: StoreConfig, tiles: TileSet, tiling: Tiling, batch_size: int,
                     clip_max: float, seed: int, shuffle: bool, cache: Any = None, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.store_cfg, self.tiles, self.tiling, self.cache = store_cfg, tiles, tiling, cache
            self.batch_size, self.clip_max = int(batch_size), float(clip_max)
            self.seed, self.shuffle = int(seed), shuffle
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


def _plan_split(cfg: Config, ds: xr.Dataset) -> tuple[Any, Grid, Tiling]:
    """The image model's whole-day split and checks (:func:`wxdask.train.plan_training`), on tile inputs; cheap."""
    grid = store_grid(ds)
    tiling = tiling_for(cfg.tiles, grid)
    plan = wxtrain.plan_training(ds, cfg.tiles.model_config(), tile_train_config(cfg), cfg.store.url,
                                 input_shape=(tiling.size, tiling.size), input_name=f"{grid.name} tiles")
    return plan, grid, tiling


def _tile_plan(cfg: Config, plan: Any, tiling: Tiling) -> tuple[Any, TileSet, TileSet]:
    """The tiles with echo of each side (reads every image of the split once); ``plan.split`` counts tiles."""
    thr = cfg.tiles.echo_threshold
    train_tiles = TileSet.of(cfg.store, plan.train_slots, tiling, thr)
    held_tiles = TileSet.of(cfg.store, plan.heldout_slots, tiling, thr)
    for side, tiles, slots in (
        ("training", train_tiles, plan.train_slots),
        ("held-out", held_tiles, plan.heldout_slots),
    ):
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
    return dataclasses.replace(plan, split=split), train_tiles, held_tiles


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
    ModelError
        If the model directory holds a model of another architecture or tile size.
    """
    plan, grid, tiling = _plan_split(cfg, ds)
    plan, train_tiles, held_tiles = _tile_plan(cfg, plan, tiling)
    return plan, grid, tiling, train_tiles, held_tiles


def fit_tiles(store_cfg: StoreConfig, train_cfg: Any, plan: Any, tiling: Tiling, train_tiles: TileSet,
              held_tiles: TileSet, extra: dict) -> dict:
    """:func:`wxdask.train.fit` on tile datasets; runs here or as a task on a GPU worker."""
    TileBatches = _tile_batches_class()
    cache = wxtrain.ImageCache(train_cfg.cache_mb * 2**20) if train_cfg.cache_mb else None
    kw = {"workers": 1, "use_multiprocessing": False, "max_queue_size": 8}
    clip, bs, seed = plan.model.clip_max, train_cfg.batch_size, train_cfg.seed
    datasets = (TileBatches(store_cfg, train_tiles, tiling, bs, clip, seed, True, cache, **kw),
                TileBatches(store_cfg, held_tiles, tiling, bs, clip, seed, False, cache, **kw))
    return wxtrain.fit(store_cfg, train_cfg, plan, datasets=datasets, extra=extra)


def run_train(cfg: Config, client: Client | None) -> str:
    """Train the tile autoencoder on the training days' tiles with echo; write ``cfg.tiles.model_dir``.

    With ``train.on_gpu_worker`` it trains as one task on a worker with the
    ``GPU`` resource, as :func:`wxdask.train.run` does.

    Returns
    -------
    str
        One line naming the model directory, the tile counts and the losses.

    Raises
    ------
    StoreLayoutError, ModelError, ConfigError, ClusterError
        Before anything is written.
    """
    from wxdask.client import here_or_on_gpu

    ds = wxstore.open_input(cfg.store, ["refc", "status"])
    tcfg = tile_train_config(cfg)
    model_dir = Path(tcfg.model_dir)
    plan, grid, tiling = _plan_split(cfg, ds)  # checks a model already there is this one
    if (model_dir / wxmodel.METADATA_FILE).exists() and (model_dir / wxmodel.MODEL_FILE).exists():
        meta = wxmodel.read_metadata(model_dir)
        if meta.get("tiles") and int(meta.get("epochs_done", 0)) >= tcfg.epochs:
            return wxtrain._summary(meta, model_dir, "already trained").replace(" images", " tiles")
    plan, train_tiles, held_tiles = _tile_plan(cfg, plan, tiling)
    logger.info("tile model: %d px tiles (%dx%d per image), %d training and %d held-out tiles with echo",
                tiling.size, *tiling.shape, len(train_tiles), len(held_tiles))
    args = (cfg.store, tcfg, plan, tiling, train_tiles, held_tiles,
            {"tiles": tiling_record(grid, tiling, cfg.tiles.echo_threshold)})
    meta = here_or_on_gpu(client, tcfg.on_gpu_worker, fit_tiles, *args)
    return wxtrain._summary(meta, model_dir, "trained").replace(" images", " tiles")
