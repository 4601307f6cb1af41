"""Training, the Keras loop: datasets of store batches, callbacks, checkpoints, and :func:`fit`.

:func:`fit` runs where it is called (here, or as a task on a GPU worker) and
writes the model directory. Part of :mod:`wxdask.train`, which re-exports
every name.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import logging
import math
import os
import platform
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from wxdask import model as wxmodel
from wxdask.config import StoreConfig, TrainConfig
from wxdask.train.data import ImageCache, batch_order, read_images, read_images_cached
from wxdask.train.plan import CHECKPOINT_FILE, CHECKPOINT_META, TrainPlan, _fingerprint, _plain

logger = logging.getLogger("wxdask.train")

#: Format of metadata.json written here.
METADATA_FORMAT = 1


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
    learning_rate = wxmodel.learning_rate(train_cfg.learning_rate, plan.model)

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
        compile_model(model, learning_rate, schedule=train_cfg.lr_schedule, total_steps=steps)
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
        "learning_rate": learning_rate,
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
