"""Driver of scripts/bench_embed_gpu.sh: full-grid store, one GPU worker, images/s end to end.

Steps, each timed and printed:
1. a store of ``--images`` full-grid images laid out as ingest makes them
   (``wxdask.ingest.refc_template`` + ``ENCODING``), filled with ``--distinct``
   synthetic fields (``wxdask.synth.refc_field``, rendered in parallel) cycled
   over the slots, each slot written as its own chunk;
2. an untrained autoencoder of the default (seed's) architecture for the grid;
3. a LocalCluster with one worker advertising ``GPU=1`` (one thread);
4. warm-up: ``wxdask.embed.run`` on a small store of the same grid (model load,
   jit compile), then the timed ``wxdask.embed.run`` on the big store;
5. reference: bare Keras ``predict`` on float32 images in memory (``--bare``).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

from _gpu_bench import T0, say, start  # noqa: F401 - the drivers' shared start (scripts/ is on sys.path)


def _field(args: tuple) -> object:
    import numpy as np

    from wxdask import synth

    seed, when, grid = args
    return np.rint(synth.refc_field(seed, when, 0, grid) * 16).astype(np.int16)


def build_store(url: str, n: int, grid_name: str, distinct: int, threads: int) -> object:
    import numpy as np

    from wxdask import ingest, store
    from wxdask.config import StoreConfig
    from wxdask.grid import get_grid

    grid = get_grid(grid_name)
    cfg = StoreConfig(url=url)
    times = np.arange(np.datetime64("2022-06-01T00", "h"), np.datetime64("2022-06-01T00", "h") + n)
    store.init_output(cfg, ingest.refc_template(times, (0,), grid, source="synthetic"), ingest.ENCODING)
    whens = [str(times[(i * 7) % n]) for i in range(distinct)]
    spawn = multiprocessing.get_context("spawn")  # no fork of a process with threads (zarr, jax)
    with ProcessPoolExecutor(min(distinct, os.cpu_count() or 1), mp_context=spawn) as pool:
        fields = list(pool.map(_field, [(0, w, grid_name) for w in whens]))
    ok = np.int8(ingest.STATUS["ok"])

    def write(i: int) -> None:  # one image per chunk: threads never share one
        store.write_region(cfg, {"refc": fields[i % distinct]}, (i, 0))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, range(n)))
    # the small per-slot arrays are sharded (one object holds many slots): written whole, once, last
    store.write_region(cfg, {"grib_bytes": np.full((n, 1), 400_000, np.int32), "status": np.full((n, 1), ok)},
                       (slice(None), slice(None)))
    return cfg


def save_model(model_dir: Path, grid_shape: tuple[int, int]) -> object:
    from wxdask import model as wm
    from wxdask.config import ModelConfig

    mcfg = wm.fit_config_to_grid(ModelConfig(), grid_shape)
    model = wm.build_autoencoder(mcfg, grid_shape)
    model_dir.mkdir(parents=True, exist_ok=True)
    model.save(model_dir / wm.MODEL_FILE)
    wm.write_metadata(model_dir, {"grid": {"name": "bench", "shape": list(grid_shape)},
                                  "model": {"n_latent": mcfg.n_latent, "clip_max": mcfg.clip_max},
                                  "hash": wm.model_hash(model_dir)})
    return model


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=4096, help="images in the timed store")
    p.add_argument("--warmup-images", type=int, default=256)
    p.add_argument("--grid", default="hrrr", choices=["hrrr", "coarse"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--images-per-task", type=int, default=1024)
    p.add_argument("--distinct", type=int, default=32, help="distinct synthetic fields cycled over the slots")
    p.add_argument("--bare", type=int, default=512, help="images for the bare-predict reference (0: skip)")
    p.add_argument("--workdir", default="/tmp/wxdask-bench-gpu")
    p.add_argument("--allow-cpu", action="store_true", help="run without a GPU (dry run)")
    args = p.parse_args()
    work = start(args.workdir, args.allow_cpu)
    if work is None:
        return 2
    import keras
    import numpy as np

    from wxdask import embed, models, store
    from wxdask.client import gpu_workers, make_client
    from wxdask.config import Config
    threads = max(4, os.cpu_count() or 4)
    big = build_store(str(work / "big.zarr"), args.images, args.grid, args.distinct, threads)
    say(f"store: {args.images} images of {args.grid} written")
    warm = build_store(str(work / "warm.zarr"), args.warmup_images, args.grid, min(args.distinct, 8), threads)
    ds = store.open_input(big, ["refc"])
    grid_shape = (ds.sizes["y"], ds.sizes["x"])
    stored_mb = sum(f.stat().st_size for f in (work / "big.zarr" / "refc").rglob("*") if f.is_file()) / 1e6
    say(
        f"warm-up store written; big store holds {stored_mb:.0f} MB of refc "
        f"({stored_mb * 1e3 / args.images:.0f} kB/image)"
    )

    model = save_model(work / "model", grid_shape)
    say(f"model: {model.count_params():,} parameters at {grid_shape}")

    cfg = Config.from_dict({
        "store": {"url": big.url},
        "embed": {"model_dir": str(work / "model"), "batch_size": args.batch_size,
                  "images_per_task": args.images_per_task},
        "dask": {"n_workers": 1, "gpu_workers": 1, "threads_per_worker": 1, "memory_limit": "64GiB",
                 "progress": False},
    })
    client = make_client(cfg.dask)
    try:
        say(f"cluster up: GPU workers {gpu_workers(client)}")
        t = time.perf_counter()
        line = embed.run(cfg.replace(store={"url": warm.url}), client)
        say(f"warm-up ({args.warmup_images} images, model load + compile): {time.perf_counter() - t:.1f} s  [{line}]")
        t = time.perf_counter()
        line = embed.run(cfg, client)
        dt = time.perf_counter() - t
        say(f"RESULT end to end from the store: {args.images / dt:.0f} images/s "
            f"({args.images} images of {grid_shape[0]}x{grid_shape[1]} in {dt:.2f} s, batch {args.batch_size}, "
            f"1 GPU worker, KERAS_BACKEND={keras.backend.backend()})  [{line}]")
        loads = client.run(lambda: dict(models.LOAD_COUNTS))
        say(f"model loads per worker: {loads}")
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()

    got = store.open_input(big, ["embedding"])["embedding"].values
    finite = np.isfinite(got).all(axis=-1)
    say(f"embedded slots: {int(finite.sum())}/{finite.size}")

    if args.bare:
        from wxdask import model as wm

        n = min(args.bare, args.images)
        raw = store.read_region(big, "refc", (slice(0, n), 0))
        x = wm.scale_raw(raw)[..., None]
        enc = wm.encoder_of(model)
        enc.predict(x[: args.batch_size], batch_size=args.batch_size, verbose=0)
        t = time.perf_counter()
        want = enc.predict(x, batch_size=args.batch_size, verbose=0)
        rate = n / (time.perf_counter() - t)
        say(f"reference: bare Keras predict on {n} float32 images in host memory: {rate:.0f} images/s")
        diff = float(np.nanmax(np.abs(got[:n, 0] - want)))
        say(f"max |embed - bare predict| on those images: {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
