"""Training the autoencoder from the Zarr store.

Core (pure numpy): :func:`valid_days`, :func:`holdout_mask`,
:func:`split_slots`, :func:`batch_order`.
Lazy wrapper: :func:`slot_images`, the scaled images of some ``(time, lead_time)``
slots as a dask array (one chunk per image; never computed here).
I/O: :func:`fit` (the Keras loop over batches read from the store, one
checkpoint per epoch) and :func:`run`.

The split is by whole days of *valid* time (``time + lead_time``): every
``train.holdout_every``-th day, counted from the first day in the store (day
0 is held out), is held out, so no image valid on a held-out day is ever
trained on. Neighbouring hours are near-copies, so a random split would leak.
The days of each side are recorded in ``metadata.json``.

Images are read lazily, one shuffled batch at a time, through a
``keras.utils.PyDataset`` that the backend prefetches; the archive is never
held in memory. The shuffle order of epoch ``e`` depends only on
``(train.seed, e)``, so a run resumed from a checkpoint sees the same batches
as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import logging
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence, cast

import numpy as np

from wxdask import model as wxmodel
from wxdask import store as wxstore
from wxdask.config import Config, ModelConfig, StoreConfig, TrainConfig
from wxdask.errors import ClusterError, ConfigError, ModelError, StoreLayoutError

if TYPE_CHECKING:  # pragma: no cover
    import dask.array as da
    import xarray as xr
    from distributed import Client

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_META",
    "TrainPlan",
    "valid_days",
    "holdout_mask",
    "split_slots",
    "batch_order",
    "slot_images",
    "read_images",
    "read_images_cached",
    "ImageCache",
    "grid_name",
    "plan_training",
    "fit",
    "run",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint-{epoch}.keras"
CHECKPOINT_META = "checkpoint.json"
#: Format of metadata.json written here.
METADATA_FORMAT = 1


# ----------------------------------------------------------------------------- core (numpy)


def valid_days(times: np.ndarray, leads: np.ndarray) -> np.ndarray:
    """Day (UTC) of the valid time ``time + lead`` of every slot.

    Parameters
    ----------
    times : numpy.ndarray
        Initialisation times, datetime64, shape ``(nt,)``.
    leads : numpy.ndarray
        Leads in whole hours, shape ``(nl,)``.

    Returns
    -------
    numpy.ndarray
        ``datetime64[D]``, shape ``(nt, nl)``.

    Examples
    --------
    >>> t = np.array(["2020-06-01T22", "2020-06-01T23"], dtype="datetime64[h]")
    >>> valid_days(t, np.array([0, 1])).astype(str).tolist()
    [['2020-06-01', '2020-06-01'], ['2020-06-01', '2020-06-02']]
    """
    t = np.asarray(times).astype("datetime64[h]")
    lead = np.asarray(leads).astype("timedelta64[h]")
    return (t[:, None] + lead[None, :]).astype("datetime64[D]")


def holdout_mask(days: np.ndarray, every: int, anchor: np.datetime64) -> np.ndarray:
    """Whether each day is held out: day index from ``anchor`` is a multiple of ``every``.

    Parameters
    ----------
    days : numpy.ndarray
        ``datetime64[D]`` of any shape.
    every : int
        Hold out one day in ``every`` (``train.holdout_every``).
    anchor : numpy.datetime64
        Day 0 (the first day in the store when training started).

    Returns
    -------
    numpy.ndarray
        bool, same shape as ``days``.

    Examples
    --------
    >>> d = np.arange(np.datetime64("2020-06-01"), np.datetime64("2020-06-08"))
    >>> holdout_mask(d, 3, np.datetime64("2020-06-01")).astype(int).tolist()
    [1, 0, 0, 1, 0, 0, 1]
    """
    index = (np.asarray(days, dtype="datetime64[D]") - np.datetime64(anchor, "D")).astype(np.int64)  # type: ignore[call-overload]  # numpy stubs lack datetime64(datetime64, unit)
    return index % int(every) == 0


def split_slots(
    status: np.ndarray, days: np.ndarray, heldout: np.ndarray, ok: int = 1
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Training and held-out slots among those with status ok.

    Parameters
    ----------
    status : numpy.ndarray
        ``(nt, nl)`` status codes.
    days : numpy.ndarray
        ``(nt, nl)`` valid days (:func:`valid_days`).
    heldout : numpy.ndarray
        ``(nt, nl)`` bool, True where the slot's day is held out (:func:`holdout_mask`).
    ok : int
        Status code of a filled slot.

    Returns
    -------
    tuple
        ``((train_time_index, train_lead_index), (heldout_time_index, heldout_lead_index))``,
        int64 arrays in time order. No slot is on both sides.

    Examples
    --------
    >>> status = np.array([[1], [1], [2], [1]])
    >>> days = np.array(["2020-06-01", "2020-06-01", "2020-06-02", "2020-06-02"], dtype="datetime64[D]")[:, None]
    >>> (tr, _), (ho, _) = split_slots(status, days, days == np.datetime64("2020-06-02"))
    >>> tr.tolist(), ho.tolist()
    ([0, 1], [3])
    """
    good = np.asarray(status) == ok
    held = np.asarray(heldout, dtype=bool)
    train = np.nonzero(good & ~held)
    test = np.nonzero(good & held)
    return (train[0].astype(np.int64), train[1].astype(np.int64)), (test[0].astype(np.int64), test[1].astype(np.int64))


def batch_order(n: int, batch_size: int, seed: int, epoch: int, *, shuffle: bool = True) -> list[np.ndarray]:
    """Indices ``0..n-1`` split into batches; shuffled by ``(seed, epoch)`` only.

    Each batch is sorted (reads in store order; the order within a batch does
    not change the batch's loss). The last batch may be short.

    Examples
    --------
    >>> [b.tolist() for b in batch_order(5, 2, seed=0, epoch=0, shuffle=False)]
    [[0, 1], [2, 3], [4]]
    >>> sorted(np.concatenate(batch_order(5, 2, seed=0, epoch=3)).tolist())
    [0, 1, 2, 3, 4]
    """
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(n) if shuffle else np.arange(n)
    return [np.sort(order[i : i + batch_size]) for i in range(0, n, batch_size)]


def grid_name(attrs: dict, shape: tuple[int, int]) -> str:
    """Name of the grid from ``refc.attrs["grid"]``, else from its shape.

    Examples
    --------
    >>> grid_name({}, (66, 112))
    'coarse'
    >>> grid_name({}, (10, 20))
    '10x20'
    """
    name = attrs.get("grid")
    if name:
        return str(name)
    for key, value in wxmodel.GRIDS.items():
        if tuple(value) == tuple(shape):
            return key
    return f"{shape[0]}x{shape[1]}"


# ----------------------------------------------------------------------------- lazy wrapper


def slot_images(refc: da.Array, time_index: np.ndarray, lead_index: np.ndarray, clip_max: float) -> da.Array:
    """Scaled model inputs of some slots, lazily.

    Parameters
    ----------
    refc : dask.array.Array
        The store's ``refc`` as stored (int16 sixteenths of a dB, :func:`wxdask.store.stored_array`),
        ``(time, lead_time, y, x)``.
    time_index, lead_index : numpy.ndarray
        Positions of the slots.
    clip_max : float
        dBZ clip of the model's scaling.

    Returns
    -------
    dask.array.Array
        float32 ``(n, ny, nx, 1)`` in ``[0, 1]``, one chunk per image. Nothing is computed.
    """
    raw = refc.vindex[np.asarray(time_index), np.asarray(lead_index)]
    return raw.map_blocks(_scale_block, clip_max, dtype=np.float32, new_axis=3, chunks=raw.chunks + ((1,),))


def _scale_block(block: np.ndarray, clip_max: float) -> np.ndarray:
    return wxmodel.scale_raw(block, clip_max)[..., None]


def read_images(store_cfg: StoreConfig, time_index: np.ndarray, lead_index: np.ndarray, clip_max: float) -> np.ndarray:
    """Read and scale the images of some slots: float32 ``(n, ny, nx, 1)``, in the order given."""
    return wxmodel.scale_raw(wxstore.read_slots(store_cfg, time_index, lead_index), clip_max)[..., None]


class ImageCache:
    """Stored images already read, by slot, least recently used out first, within ``max_bytes``.

    Thread-safe (reader threads of a ``PyDataset`` share it).

    Examples
    --------
    >>> c = ImageCache(max_bytes=2 * 8)
    >>> c.put((0, 0), np.zeros(4, np.int16)); c.put((1, 0), np.ones(4, np.int16))
    >>> c.put((2, 0), np.ones(4, np.int16))      # evicts (0, 0)
    >>> c.get((0, 0)) is None, c.get((2, 0)).tolist(), c.nbytes
    (True, [1, 1, 1, 1], 16)
    """

    def __init__(self, max_bytes: int) -> None:
        import collections
        import threading

        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[int, int], value: np.ndarray) -> None:
        if value.nbytes > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self.nbytes += value.nbytes
            while self.nbytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.nbytes -= old.nbytes


def read_images_cached(store_cfg: StoreConfig, time_index: np.ndarray, lead_index: np.ndarray, clip_max: float,
                       cache: ImageCache | None) -> np.ndarray:
    """:func:`read_images`, taking what it can from ``cache`` and caching what it reads."""
    if cache is None or cache.max_bytes == 0:
        return read_images(store_cfg, time_index, lead_index, clip_max)
    keys = list(zip(np.asarray(time_index).tolist(), np.asarray(lead_index).tolist()))
    got = [cache.get(k) for k in keys]
    missing = [i for i, g in enumerate(got) if g is None]
    if missing:
        raw = wxstore.read_slots(store_cfg, np.asarray(time_index)[missing], np.asarray(lead_index)[missing])
        for j, i in enumerate(missing):
            got[i] = raw[j]
            cache.put(keys[i], raw[j])
    return wxmodel.scale_raw(np.stack(cast(list[np.ndarray], got)), clip_max)[..., None]  # all filled now


# ----------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class TrainPlan:
    """Everything :func:`fit` needs besides the config, decided (and checked) before any write.

    Attributes
    ----------
    grid, grid_shape : str, tuple of int
        Grid name and ``(ny, nx)``.
    model : ModelConfig
        The architecture to build (fitted to the grid).
    train_slots, heldout_slots : tuple of numpy.ndarray
        ``(time_index, lead_index)`` of each side.
    split : dict
        Recorded in the metadata: rule, anchor day, days and counts of each side.
    times : dict
        First and last initialisation time of each side (ISO strings).
    resume : bool
        Whether a checkpoint of this model exists and is resumed.
    """

    grid: str
    grid_shape: tuple[int, int]
    model: ModelConfig
    train_slots: tuple[np.ndarray, np.ndarray]
    heldout_slots: tuple[np.ndarray, np.ndarray]
    split: dict
    times: dict
    store_url: str
    resume: bool = False


def _fingerprint(grid: str, grid_shape: tuple[int, int], model_cfg: ModelConfig, every: int) -> dict:
    return {
        "grid": grid,
        "grid_shape": [int(s) for s in grid_shape],
        "model": _plain(dataclasses.asdict(model_cfg)),
        "holdout_every": int(every),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _existing_state(model_dir: Path) -> tuple[dict | None, dict | None]:
    """Metadata and checkpoint record already in a model directory, checked for sanity."""
    if model_dir.exists() and not model_dir.is_dir():
        raise ModelError(f"--model {str(model_dir)!r} is a file, not a model directory")
    meta = ckpt = None
    if (model_dir / wxmodel.METADATA_FILE).exists():
        meta = wxmodel.read_metadata(model_dir)
    elif (model_dir / wxmodel.MODEL_FILE).exists():
        raise ModelError(
            f"{str(model_dir)!r} holds a model.keras without metadata.json (not trained by wxdask); "
            "use another --model directory"
        )
    if (model_dir / CHECKPOINT_META).exists():
        ckpt = wxmodel.read_metadata(model_dir, CHECKPOINT_META)
    return meta, ckpt


def _check_same_model(model_dir: Path, record: dict, fingerprint: dict, what: str) -> None:
    old = dict(record.get("fingerprint") or {})
    if "grid_shape" not in old and isinstance(record.get("grid"), dict):  # metadata from elsewhere
        old.update(grid=record["grid"].get("name"), grid_shape=record["grid"].get("shape"))
    if old.get("grid_shape") != fingerprint["grid_shape"]:
        shape = "x".join(str(s) for s in old.get("grid_shape") or ["?", "?"])
        new = "x".join(str(s) for s in fingerprint["grid_shape"])
        raise ModelError(
            f"{str(model_dir)!r} holds a {what} for grid {old.get('grid')!r} ({shape}), but the store has grid "
            f"{fingerprint['grid']!r} ({new}); use another --model directory"
        )
    if old.get("model") != fingerprint["model"]:
        raise ModelError(
            f"{str(model_dir)!r} holds a {what} with another architecture ({old.get('model')}); "
            f"this config builds {fingerprint['model']}; use another --model directory"
        )
    if old.get("holdout_every") != fingerprint["holdout_every"]:
        raise ModelError(
            f"{str(model_dir)!r} holds a {what} trained with train.holdout_every={old.get('holdout_every')}, "
            f"not {fingerprint['holdout_every']}; use another --model directory"
        )


def plan_training(ds: xr.Dataset, model_cfg: ModelConfig, train_cfg: TrainConfig, store_url: str, *,
                  input_shape: tuple[int, int] | None = None, input_name: str | None = None) -> TrainPlan:
    """Decide and check what :func:`fit` will do, reading only the store's small variables.

    ``input_shape`` (with its name ``input_name``) trains a model on inputs of
    another shape than the store's grid (tiles, :mod:`wxdask.tile_model`): the
    architecture is then used as given; the split is the same whole-day split.

    Raises
    ------
    StoreLayoutError
        If the store holds no image with status ok, or the split leaves a side empty.
    ModelError
        If the model directory holds a model for another grid or architecture.
    ConfigError
        If the architecture does not fit the grid.
    """
    refc = ds["refc"]
    ny, nx = (int(s) for s in refc.shape[-2:])
    grid = grid_name(refc.attrs, (ny, nx))
    if input_shape is None:
        fitted = wxmodel.fit_config_to_grid(model_cfg, (ny, nx))
    else:
        fitted, grid, (ny, nx) = model_cfg, input_name or grid, (int(input_shape[0]), int(input_shape[1]))
    fingerprint = _fingerprint(grid, (ny, nx), fitted, train_cfg.holdout_every)

    model_dir = Path(train_cfg.model_dir)
    meta, ckpt = _existing_state(model_dir)
    for record, what in ((meta, "model"), (ckpt, "checkpoint")):
        if record is not None:
            _check_same_model(model_dir, record, fingerprint, what)

    times = ds["time"].values
    leads = ds["lead_time"].values
    if times.size == 0 or leads.size == 0:
        raise StoreLayoutError(f"store {store_url!r} holds no times; ingest a time range first")
    status = np.asarray(ds["status"].values)
    ok = wxstore.ok_code(ds["status"].attrs)
    n_ok = int((status == ok).sum())
    if n_ok == 0:
        raise StoreLayoutError(
            f"store {store_url!r} holds no image with status ok ({times.size} times x {leads.size} leads, "
            f"{times[0]} to {times[-1]}); ingest a time range that the archive has"
        )

    days = valid_days(times, leads)
    previous = ckpt or meta
    if previous is not None and previous.get("split", {}).get("anchor_day"):
        anchor = np.datetime64(previous["split"]["anchor_day"], "D")
    else:
        anchor = np.datetime64(times.min(), "D")
    held = holdout_mask(days, train_cfg.holdout_every, anchor)
    (tr_t, tr_l), (ho_t, ho_l) = split_slots(status, days, held, ok)
    if tr_t.size == 0 or ho_t.size == 0:
        ok_days = np.unique(days[status == ok])
        side = "training" if tr_t.size == 0 else "held-out"
        raise StoreLayoutError(
            f"store {store_url!r} has images on {ok_days.size} day(s) ({ok_days[0]} to {ok_days[-1]}); with "
            f"train.holdout_every={train_cfg.holdout_every} no {side} day is left; ingest more days"
        )
    train_days = np.unique(days[tr_t, tr_l])
    held_days = np.unique(days[ho_t, ho_l])
    split = {
        "by": "valid day (time + lead_time), UTC",
        "rule": "held out when (day - anchor_day) is a multiple of holdout_every",
        "holdout_every": int(train_cfg.holdout_every),
        "anchor_day": str(anchor),
        "train_days": [str(d) for d in train_days],
        "heldout_days": [str(d) for d in held_days],
        "n_train": int(tr_t.size),
        "n_heldout": int(ho_t.size),
        "leads": [int(v) for v in leads],
    }
    span = {
        "train": [_iso(times[tr_t].min()), _iso(times[tr_t].max())],
        "heldout": [_iso(times[ho_t].min()), _iso(times[ho_t].max())],
    }
    return TrainPlan(
        grid=grid,
        grid_shape=(ny, nx),
        model=fitted,
        train_slots=(tr_t, tr_l),
        heldout_slots=(ho_t, ho_l),
        split=split,
        times=span,
        store_url=store_url,
        resume=ckpt is not None,
    )


def _iso(t: np.datetime64) -> str:
    return str(np.datetime64(t, "h"))  # type: ignore[call-overload]  # numpy stubs lack datetime64(datetime64, unit)


# ----------------------------------------------------------------------------- Keras pieces


@functools.lru_cache(maxsize=None)
def _keras_classes() -> tuple[type, type, type]:
    keras = wxmodel._keras()

    PyDataset: Any = keras.utils.PyDataset
    Callback: Any = keras.callbacks.Callback

    class StoreBatches(PyDataset):
        """Batches ``(x, x)`` of scaled images read from the store, shuffled by ``(seed, epoch)``."""

        def __init__(self, store_cfg: StoreConfig, slots: tuple[np.ndarray, np.ndarray], batch_size: int,
                     clip_max: float, seed: int, shuffle: bool, cache: ImageCache | None = None,
                     **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.store_cfg = store_cfg
            self.cache = cache
            self.time_index, self.lead_index = (np.asarray(s) for s in slots)
            self.batch_size = int(batch_size)
            self.clip_max = float(clip_max)
            self.seed = int(seed)
            self.shuffle = shuffle
            self.set_epoch(0)

        def set_epoch(self, epoch: int) -> None:
            self.epoch = int(epoch)
            self._batches = batch_order(len(self.time_index), self.batch_size, self.seed, self.epoch,
                                        shuffle=self.shuffle)

        @property
        def num_batches(self) -> int:
            return len(self._batches)

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            idx = self._batches[i]
            x = read_images_cached(self.store_cfg, self.time_index[idx], self.lead_index[idx], self.clip_max,
                                   self.cache)
            return x, x

    class EpochSetter(Callback):
        """Tell the datasets which epoch starts (before the backend starts reading it)."""

        def __init__(self, datasets: Sequence[Any]) -> None:
            super().__init__()
            self.datasets = datasets

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            for d in self.datasets:
                d.set_epoch(epoch)

    class Checkpointer(Callback):
        """Save ``checkpoint-<epoch>.keras`` (with optimizer state), then ``checkpoint.json``, after every epoch."""

        def __init__(self, model_dir: Path, record: dict, epochs: int) -> None:
            super().__init__()
            self.model_dir = model_dir
            self.record = record
            self.epochs = epochs

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            losses = self.record["losses"]
            losses["loss"].append(float(logs["loss"]))
            losses["val_loss"].append(float(logs["val_loss"]) if "val_loss" in logs else None)
            self.record["epochs_done"] = epoch + 1
            # checkpoint.json is the commit mark: it names the model file of its own epoch, so
            # a run killed between the two writes resumes from a consistent pair
            name = CHECKPOINT_FILE.format(epoch=epoch + 1)
            _save_model(self.model, self.model_dir / name)
            self.record["checkpoint_file"] = name
            wxmodel.write_metadata(self.model_dir, self.record, CHECKPOINT_META)
            for stale in self.model_dir.glob(CHECKPOINT_FILE.format(epoch="*")):
                if stale.name != name:
                    stale.unlink()
            logger.info("epoch %d/%d: loss %.6f, held-out loss %s", epoch + 1, self.epochs, losses["loss"][-1],
                        "n/a" if losses["val_loss"][-1] is None else f"{losses['val_loss'][-1]:.6f}")

    return StoreBatches, EpochSetter, Checkpointer


def _save_model(model: Any, path: Path) -> None:
    """Save atomically: a temporary ``.keras`` file next to ``path``, then rename."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(str(tmp))
    os.replace(tmp, path)


def _init_eofs(model: Any, store_cfg: StoreConfig, plan: TrainPlan, train_cfg: TrainConfig,
               batch: int = 64) -> None:
    """Start an EOF autoencoder at the PCA of (a seeded sample of at most ``train.eof_max_images``) training images."""
    from wxdask import eof

    t_idx, l_idx = plan.train_slots
    rng = np.random.default_rng(train_cfg.seed)
    n = min(train_cfg.eof_max_images, t_idx.size)
    pick = np.sort(rng.choice(t_idx.size, n, replace=False))
    factor = eof.linear_factor(plan.grid_shape, plan.model.linear_max_points)
    parts = []
    for i in range(0, n, batch):
        sel = pick[i:i + batch]
        images = read_images(store_cfg, t_idx[sel], l_idx[sel], plan.model.clip_max)[..., 0]
        parts.append(eof.pool_images(images, factor).reshape(len(sel), -1))
    x = np.concatenate(parts)
    k = min(plan.model.n_latent, n, x.shape[1])
    logger.info("fitting the EOF autoencoder's start: PCA-%d of %d training images", k, n)
    mean, components = eof.fit_pca(x, k, power_iter=eof.POWER_ITER, seed=train_cfg.seed)
    eof.set_eofs(model, mean, components)


def make_datasets(store_cfg: StoreConfig, plan: TrainPlan, train_cfg: TrainConfig, *,
                  workers: int | None = None) -> tuple[Any, Any]:
    """The training (shuffled) and held-out (in order) ``PyDataset`` of a plan.

    ``workers=None`` picks 1 under the tensorflow backend (tf.data prefetches)
    and 2 reader threads under other backends. Both share one
    :class:`ImageCache` of ``train.cache_mb``.
    """
    keras = wxmodel._keras()
    StoreBatches = _keras_classes()[0]
    if workers is None:
        workers = 1 if keras.backend.backend() == "tensorflow" else 2
    kw = {"workers": workers, "use_multiprocessing": False, "max_queue_size": 8}
    clip = plan.model.clip_max
    cache = ImageCache(train_cfg.cache_mb * 2**20) if train_cfg.cache_mb else None
    train_ds = StoreBatches(store_cfg, plan.train_slots, train_cfg.batch_size, clip, train_cfg.seed, True,
                            cache=cache, **kw)
    held_ds = StoreBatches(store_cfg, plan.heldout_slots, train_cfg.batch_size, clip, train_cfg.seed, False,
                           cache=cache, **kw)
    return train_ds, held_ds


def compile_model(model: Any, learning_rate: float, *, schedule: str = "constant", total_steps: int = 0) -> None:
    """Adam + LogCosh, as the seed; optionally a cosine decay of the rate over ``total_steps``."""
    keras = wxmodel._keras()
    lr: Any = learning_rate
    if schedule == "cosine" and total_steps > 0:
        lr = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps, alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss=keras.losses.LogCosh())


def _versions() -> dict:
    import importlib.metadata as im

    out = {"python": platform.python_version()}
    for pkg in ("wxdask", "keras", "tensorflow", "tensorflow-cpu", "jax", "torch", "numpy", "dask", "distributed",
                "xarray", "zarr", "dask-ml", "scikit-learn"):
        try:
            out[pkg] = im.version(pkg)
        except im.PackageNotFoundError:
            pass
    try:
        import keras

        out["keras_backend"] = keras.backend.backend()
    except ImportError:  # pragma: no cover
        pass
    return out


# ----------------------------------------------------------------------------- I/O


def fit(store_cfg: StoreConfig, train_cfg: TrainConfig, plan: TrainPlan, *,
        callbacks: Sequence[Any] = (), datasets: tuple[Any, Any] | None = None, extra: dict | None = None) -> dict:
    """Train (or resume training) and write ``model.keras`` and ``metadata.json``.

    Runs where it is called: in this process, or as a task on a GPU worker.
    After every epoch the model and optimizer state go to ``checkpoint-<epoch>.keras``
    and then the losses so far, naming that file, to ``checkpoint.json``; a rerun
    resumes from there.

    Parameters
    ----------
    store_cfg : StoreConfig
        The store to read images from.
    train_cfg : TrainConfig
        Epochs, batch size, learning rate, seed, model directory.
    plan : TrainPlan
        From :func:`plan_training` (grid, architecture, split).
    callbacks : sequence of keras.callbacks.Callback
        Extra callbacks (tests use one to interrupt a run).
    datasets : tuple, optional
        ``(train, held_out)`` ``PyDataset`` with ``set_epoch`` (default:
        :func:`make_datasets`, whole images); tiles pass their own.
    extra : dict, optional
        More entries for ``metadata.json`` (the tile model's ``tiles`` record).

    Returns
    -------
    dict
        The metadata written to ``metadata.json``.
    """
    from wxdask import store

    keras = wxmodel._keras()
    model_dir = Path(train_cfg.model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(plan.grid, plan.grid_shape, plan.model, train_cfg.holdout_every)

    if plan.resume and (model_dir / CHECKPOINT_META).exists():
        record = wxmodel.read_metadata(model_dir, CHECKPOINT_META)
        model = wxmodel.load_checkpoint(model_dir, record["checkpoint_file"])
        initial_epoch = int(record["epochs_done"])
        logger.info("resuming %s from epoch %d", model_dir, initial_epoch)
    else:
        keras.utils.set_random_seed(train_cfg.seed)
        model = wxmodel.build_autoencoder(plan.model, plan.grid_shape)
        if plan.model.arch == "eof":
            _init_eofs(model, store_cfg, plan, train_cfg)
        steps = train_cfg.epochs * math.ceil(plan.split["n_train"] / train_cfg.batch_size)
        compile_model(model, wxmodel.learning_rate(train_cfg.learning_rate, plan.model),
                      schedule=train_cfg.lr_schedule, total_steps=steps)
        initial_epoch = 0
        record = {"fingerprint": fingerprint, "split": plan.split, "epochs_done": 0,
                  "losses": {"loss": [], "val_loss": []}}
    record["split"] = plan.split

    store.open_input(store_cfg, ["refc"])  # fails early, naming the store, if it went away
    train_ds, held_ds = datasets if datasets is not None else make_datasets(store_cfg, plan, train_cfg)
    if initial_epoch == 0 and "start_val_loss" not in record["losses"]:
        # The held-out loss before any training (for arch eof: the PCA start's), to show what training added.
        record["losses"]["start_val_loss"] = float(model.evaluate(held_ds, verbose=0))
        logger.info("held-out loss before training: %.6g", record["losses"]["start_val_loss"])
    _, EpochSetter, Checkpointer = _keras_classes()
    n_train, n_held = plan.split["n_train"], plan.split["n_heldout"]
    if initial_epoch < train_cfg.epochs:
        logger.info("training on %d images (%d days), holding out %d images (%d days), epochs %d..%d",
                    n_train, len(plan.split["train_days"]), n_held, len(plan.split["heldout_days"]),
                    initial_epoch + 1, train_cfg.epochs)
        keras.utils.set_random_seed(train_cfg.seed + initial_epoch)
        model.fit(
            train_ds,
            validation_data=held_ds,
            epochs=train_cfg.epochs,
            initial_epoch=initial_epoch,
            shuffle=False,
            verbose=0,
            callbacks=[EpochSetter([train_ds, held_ds]), Checkpointer(model_dir, record, train_cfg.epochs),
                       *callbacks],
        )
    _save_model(model, model_dir / wxmodel.MODEL_FILE)
    meta = {
        "format": METADATA_FORMAT,
        "fingerprint": fingerprint,
        "grid": {"name": plan.grid, "shape": list(plan.grid_shape)},
        "model": _plain(dataclasses.asdict(plan.model)),
        "train": _plain(dataclasses.asdict(train_cfg)),
        "learning_rate": wxmodel.learning_rate(train_cfg.learning_rate, plan.model),
        "n_params": int(model.count_params()),
        "n_latent": int(plan.model.n_latent),
        "clip_max": float(plan.model.clip_max),
        "scaling": {
            "input": "clip(dBZ, 0, clip_max) / clip_max, float32",
            "clip_max": plan.model.clip_max,
            "stored": "int16 sixteenths of a dBZ (refc as wxdask.store.read_slots reads it): dBZ = raw / 16",
            "output": "reconstruction * clip_max = dBZ",
        },
        "store": plan.store_url,
        "split": record["split"],
        "times": plan.times,
        "epochs_done": int(record["epochs_done"]),
        "losses": record["losses"],
        "loss_function": "LogCosh on scaled images",
        "versions": _versions(),
        "trained_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "hash": wxmodel.model_hash(model_dir),
        **(extra or {}),
    }
    old = model_dir / wxmodel.METADATA_FILE
    if old.exists():
        previous = wxmodel.read_metadata(model_dir)
        if previous.get("evaluation") and previous.get("hash") == meta["hash"]:
            meta["evaluation"] = previous["evaluation"]
    wxmodel.write_metadata(model_dir, meta)
    return meta


def run(cfg: Config, client: Client | None) -> str:
    """Train the autoencoder on the store's non-held-out days; write the model directory.

    Parameters
    ----------
    cfg : Config
        Uses ``cfg.store``, ``cfg.model`` and ``cfg.train``.
    client : distributed.Client or None
        With ``train.on_gpu_worker``, training runs as one task on a worker
        with the ``GPU`` resource; otherwise in this process.

    Returns
    -------
    str
        A one-line summary naming the model directory.

    Raises
    ------
    StoreLayoutError, ModelError, ConfigError, ClusterError
        Before anything is written.
    """
    from wxdask import store
    from wxdask.client import gpu_workers

    ds = store.open_input(cfg.store, ["refc", "status"])
    plan = plan_training(ds, cfg.model, cfg.train, cfg.store.url)
    model_dir = Path(cfg.train.model_dir)

    meta = None
    if (model_dir / wxmodel.METADATA_FILE).exists() and (model_dir / wxmodel.MODEL_FILE).exists():
        meta = wxmodel.read_metadata(model_dir)
    if meta is not None and int(meta.get("epochs_done", 0)) >= cfg.train.epochs:
        logger.info("%s already holds a model trained for %d epochs; nothing to do", model_dir, meta["epochs_done"])
        return _summary(meta, model_dir, "already trained")

    if cfg.train.on_gpu_worker:
        if client is None:
            raise ConfigError("train.on_gpu_worker needs a Dask cluster; got no client")
        if not gpu_workers(client):
            raise ClusterError(
                "train.on_gpu_worker is set but no worker advertises the GPU resource; start one with "
                "`dask worker ... --resources GPU=1` (or set dask.gpu_workers), or unset train.on_gpu_worker"
            )
        logger.info("training on a GPU worker")
        future = client.submit(fit, cfg.store, cfg.train, plan, resources={"GPU": 1}, pure=False,
                               key=f"wxdask-train-{os.getpid()}-{id(plan):x}")
        meta = future.result()
    else:
        meta = fit(cfg.store, cfg.train, plan)
    return _summary(meta, model_dir, "trained")


def _summary(meta: dict, model_dir: Path, verb: str) -> str:
    losses = meta.get("losses", {})
    loss = losses.get("loss") or [float("nan")]
    val = [v for v in losses.get("val_loss") or [] if v is not None] or [float("nan")]
    split = meta.get("split", {})
    arch = (meta.get("model") or {}).get("arch", "seed")
    start = losses.get("start_val_loss")
    began = "" if start is None else f" (before training{' = PCA' if arch == 'eof' else ''}: {start:.5f})"
    return (
        f"{model_dir}: {verb} {meta.get('epochs_done')} epochs of model.arch {arch} on {split.get('n_train')} "
        f"images ({len(split.get('train_days', []))} days), {split.get('n_heldout')} held out "
        f"({len(split.get('heldout_days', []))} days); loss {loss[-1]:.5f}, held-out loss {val[-1]:.5f}{began}, "
        f"hash {meta.get('hash')}"
    )
