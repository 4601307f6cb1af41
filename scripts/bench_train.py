"""Training throughput through wxdask's path versus a bare Keras ``fit`` on the same arrays in memory.

Both are measured in one run, interleaved (``--rounds``), with the same model,
seed, batch size and images:

- wxdask: :func:`wxdask.train.fit`, which reads shuffled batches from the Zarr
  store through its ``PyDataset`` (plus, per epoch, the held-out loss and a
  checkpoint, reported separately), once with its default image cache
  (``train.cache_mb``: the first epoch reads the store, later ones reuse what
  fits) and once with none (every batch read from the store);
- bare: ``model.fit(x, x, shuffle=True)`` with every training image already in
  memory as one float32 array.

Images/s count training images over the training phase of each epoch (epoch
start to its last training batch); one untimed warm-up fit of each kind comes
first, the first epoch of every ``fit`` (tracing) is left out, and the median
over the rest is taken. The ratio wxdask / bare is
the figure of merit (target >= 0.9).

Where a GPU is present (``nvidia-smi -L`` lists one), a second part runs in a
subprocess under ``KERAS_BACKEND=jax`` on a small full-grid (1059x1799) HRRR
store, the same architecture (``--arch``: the default EOF autoencoder, or the
seed's 969,123-parameter model), and prints images/s of both paths there too.

Usage::

    python scripts/bench_train.py                 # coarse grid, CPU, 16 synthetic days
    python scripts/bench_train.py --days 12 --epochs 4 --rounds 3
    python scripts/bench_train.py --store my.zarr # an existing store
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _timer_class():
    import keras

    class Timer(keras.callbacks.Callback):
        """Per epoch: seconds from epoch start to the last training batch, and to epoch end."""

        def __init__(self):
            super().__init__()
            self.train_s: list[float] = []
            self.epoch_s: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self._last = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.train_s.append(self._last - self._t0)
            self.epoch_s.append(time.perf_counter() - self._t0)

    return Timer


def _build_store(path: Path, days: int, grid: str, leads: tuple[int, ...]) -> "object":
    from wxdask.testing import make_refc_store

    start = np.datetime64("2020-06-01T00", "h")
    end = start + np.timedelta64(24 * days, "h")
    t = time.perf_counter()
    cfg = make_refc_store(path, str(start), str(end), leads=leads, grid=grid, seed=0)
    print(f"built a {days}-day {grid} store in {time.perf_counter() - t:.1f} s: {path}", flush=True)
    return cfg


def bench(store_cfg, *, epochs: int, batch_size: int, rounds: int, holdout_every: int, workdir: Path,
          cache_mb: int, arch: str = "eof") -> dict:
    """Measure the paths ``rounds`` times, interleaved; return images/s figures.

    wxdask runs twice per round: with its image cache (``train.cache_mb``,
    the default setting) and with none (every batch read from the store).
    """
    import keras

    from wxdask import model as wm
    from wxdask import store as wstore
    from wxdask import train
    from wxdask.config import ModelConfig, TrainConfig

    Timer = _timer_class()
    base = TrainConfig(model_dir=str(workdir / "m"), epochs=epochs, batch_size=batch_size, holdout_every=holdout_every)
    ds = wstore.open_input(store_cfg, ["refc", "status"])
    plan = train.plan_training(ds, ModelConfig(arch=arch), base, store_cfg.url)
    n = plan.split["n_train"]
    t = time.perf_counter()
    x = train.read_images(store_cfg, *plan.train_slots, plan.model.clip_max)
    read_s = time.perf_counter() - t
    n_params = wm.build_autoencoder(plan.model, plan.grid_shape).count_params()
    print(f"{n} training images {plan.grid_shape}, model.arch {arch} ({n_params:,} parameters), "
          f"batch {batch_size}, {epochs} epochs x {rounds} rounds; backend {keras.backend.backend()}; "
          f"the training set read from the store into memory (for the bare fit) in {read_s:.1f} s "
          f"({n / read_s:.0f} images/s)", flush=True)

    paths = {"wxdask": cache_mb, "wxdask_nocache": 0}
    train_s: dict[str, list[float]] = {k: [] for k in (*paths, "bare")}
    epoch_s: dict[str, list[float]] = {k: [] for k in paths}
    # warm-up, not timed: the first fit in a process runs slower for a while (thread pools, kernels)
    train.fit(store_cfg, TrainConfig(**{**base.__dict__, "model_dir": str(workdir / "warm"), "epochs": 2}), plan)
    keras.utils.set_random_seed(base.seed)
    warm = wm.build_autoencoder(plan.model, plan.grid_shape)
    train.compile_model(warm, wm.learning_rate(base.learning_rate, plan.model))
    warm.fit(x, x, batch_size=batch_size, epochs=2, shuffle=True, verbose=0)
    for r in range(rounds):
        line = []
        for name, mb in paths.items():
            d = workdir / f"{name}-{r}"
            shutil.rmtree(d, ignore_errors=True)
            cfg_r = TrainConfig(**{**base.__dict__, "model_dir": str(d), "cache_mb": mb})
            timer = Timer()
            train.fit(store_cfg, cfg_r, plan, callbacks=[timer])
            train_s[name] += timer.train_s[1:]
            epoch_s[name] += timer.epoch_s[1:]
            line.append(f"{name} {n / statistics.median(timer.train_s[1:]):.0f}")
        keras.utils.set_random_seed(base.seed)
        model = wm.build_autoencoder(plan.model, plan.grid_shape)
        train.compile_model(model, wm.learning_rate(base.learning_rate, plan.model))
        timer = Timer()
        model.fit(x, x, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0, callbacks=[timer])
        train_s["bare"] += timer.train_s[1:]
        line.append(f"bare {n / statistics.median(timer.train_s[1:]):.0f}")
        print(f"round {r + 1} (images/s): " + ", ".join(line), flush=True)
    out = {"n_train": n, "cache_mb": cache_mb}
    for k, v in train_s.items():
        out[k] = n / statistics.median(v)
    for k, v in epoch_s.items():
        out[k + "_whole_epoch"] = n / statistics.median(v)
    return out


def _report(res: dict, label: str) -> None:
    print(
        f"[{label}] wxdask training path (image cache {res['cache_mb']} MiB, the default): {res['wxdask']:.1f} "
        "images/s "
        f"({res['wxdask_whole_epoch']:.1f} counting each epoch's held-out loss and checkpoint)"
    )
    print(
        f"[{label}] wxdask training path, no cache (every batch from the store): {res['wxdask_nocache']:.1f} images/s "
        f"({res['wxdask_nocache_whole_epoch']:.1f} with held-out loss and checkpoint)"
    )
    print(f"[{label}] bare Keras fit, arrays in memory: {res['bare']:.1f} images/s")
    print(f"[{label}] ratio wxdask / bare: {res['wxdask'] / res['bare']:.3f} (target >= 0.9); "
          f"without the cache: {res['wxdask_nocache'] / res['bare']:.3f}", flush=True)


def _has_gpu() -> bool:
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default=None, help="existing store (default: build a synthetic one)")
    ap.add_argument("--days", type=int, default=16, help="days of the synthetic store")
    ap.add_argument("--grid", default="coarse", choices=["coarse", "hrrr"])
    ap.add_argument("--epochs", type=int, default=4, help="epochs per fit (the first is not timed)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved repetitions of both paths")
    ap.add_argument("--holdout-every", type=int, default=4)
    ap.add_argument("--cache-mb", type=int, default=1024, help="train.cache_mb of the cached wxdask run")
    ap.add_argument("--arch", default="eof", choices=["eof", "seed"], help="model.arch (default: the default, eof)")
    ap.add_argument("--no-gpu", action="store_true", help="skip the GPU (jax, full grid) part")
    ap.add_argument("--label", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from wxdask.config import StoreConfig

    with tempfile.TemporaryDirectory(prefix="wxdask-bench-train-") as tmp:
        work = Path(tmp)
        store_cfg = (
            StoreConfig(url=args.store) if args.store else _build_store(work / "store.zarr", args.days, args.grid, (0,))
        )
        res = bench(
            store_cfg,
            epochs=args.epochs,
            batch_size=args.batch_size,
            rounds=args.rounds,
            holdout_every=args.holdout_every,
            workdir=work,
            cache_mb=args.cache_mb,
            arch=args.arch,
        )
        import keras

        _report(res, args.label or f"{args.grid} grid, model.arch {args.arch}, {keras.backend.backend()} backend, CPU")

    if args.label is None and not args.no_gpu:
        if not _has_gpu():
            print("no GPU here: skipping the full-grid jax measurement")
            return
        env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
        cmd = [sys.executable, __file__, "--grid", "hrrr", "--days", "3", "--holdout-every", "3", "--epochs", "3",
               "--batch-size", "16", "--rounds", "1", "--arch", args.arch,
               "--label", f"hrrr grid 1059x1799, model.arch {args.arch}, jax, GPU"]
        print("running:", " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, env=env, check=True)


if __name__ == "__main__":
    main()
