"""CPU benchmark: images/s through ``wxdask embed`` over images/s of a bare ``model.predict``.

Both are measured in one run on the same images: a store of synthetic
composite reflectivity (``wxdask.testing.make_refc_store``, real GRIB2
messages ingested by the real ingest code) and an untrained autoencoder built
for its grid (speed does not depend on the weights).

- bare: the encoder's ``predict`` on the store's images already in memory,
  scaled to float32 on the host (``wxdask.model.scale_raw``), ``batch_size``
  images per batch.
- embed: ``wxdask.embed.run`` on a LocalCluster, end to end from the store:
  plan, read int16 images in the workers, scale on the framework side, encode,
  write ``embedding``. The first run also loads the model in the workers
  (cold); the embedding is then deleted and the run repeated (warm, the
  model already cached in each worker process).

Usage::

    python scripts/bench_embed.py                      # 300 images of 265x450, 1 worker
    python scripts/bench_embed.py --days 5 --leads 0,1,2 --workers 2 --repeat 3

Prints one line per measurement and the ratio (target >= 0.9).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _mid_grid():
    from wxdask.grid import Grid

    # the HRRR domain at 12 km: every 4th point
    return Grid(name="custom", nx=450, ny=265, dx=12000.0, lat1=21.138123, lon1=237.280472)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--days", type=float, default=6.25, help="days of hourly runs in the store (default 6.25: 150 times)"
    )
    p.add_argument("--leads", default="0,1", help="lead hours (default 0,1: 300 images with --days 6.25)")
    p.add_argument("--grid", default="mid", choices=["coarse", "mid", "hrrr"],
                   help="coarse 66x112 (48 km), mid 265x450 (12 km, default), hrrr 1059x1799 (3 km)")
    p.add_argument("--workers", type=int, default=1, help="LocalCluster workers (one thread each)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--images-per-task", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3, help="timed warm runs of each (best is kept)")
    p.add_argument("--workdir", default=None, help="where the store and model go (default: a temp dir)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import numpy as np

    from wxdask import embed, store
    from wxdask import model as wm
    from wxdask.client import make_client
    from wxdask.config import Config, ModelConfig, StoreConfig
    from wxdask.testing import make_refc_store

    MID = _mid_grid()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="wxdask-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    leads = tuple(int(v) for v in args.leads.split(","))
    start = np.datetime64("2022-06-01T00", "h")
    end = start + np.timedelta64(int(round(args.days * 24)), "h")
    t0 = time.perf_counter()
    grid_arg = MID if args.grid == "mid" else args.grid
    store_cfg = StoreConfig(url=str(work / "bench.zarr"))
    if store.exists(store_cfg):  # an earlier run's store in --workdir: reused
        print(f"reusing {store_cfg.url} (delete it for a new one)")
    else:
        store_cfg = make_refc_store(work / "bench.zarr", str(start), str(end), leads=leads, grid=grid_arg)
    ds = store.open_input(store_cfg, ["refc", "status"])
    grid = (ds.sizes["y"], ds.sizes["x"])
    ok = ds["status"].values == 1
    print(f"store: {int(ok.sum())} images of {grid[0]}x{grid[1]} in {time.perf_counter() - t0:.1f} s ({store_cfg.url})")

    mcfg = wm.fit_config_to_grid(ModelConfig(), grid)
    model = wm.build_autoencoder(mcfg, grid)
    model_dir = work / "model"
    model_dir.mkdir(exist_ok=True)
    model.save(model_dir / wm.MODEL_FILE)
    wm.write_metadata(model_dir, {"grid": {"name": args.grid, "shape": list(grid)},
                                  "model": {"n_latent": mcfg.n_latent, "clip_max": mcfg.clip_max},
                                  "hash": wm.model_hash(model_dir)})
    print(f"model: {mcfg.n_layers} layers {mcfg.filters}, {model.count_params():,} parameters")

    # ---- bare model.predict on the same images, in memory
    raw = store.read_region(store_cfg, "refc", (slice(None),))[ok]
    x = wm.scale_raw(raw, mcfg.clip_max)[..., None]
    encoder = wm.encoder_of(wm.load_model(model_dir))
    encoder.predict(x[: args.batch_size], batch_size=args.batch_size, verbose=0)  # compile

    def bare_rate() -> tuple[float, object]:
        t = time.perf_counter()
        z = encoder.predict(x, batch_size=args.batch_size, verbose=0)
        return len(x) / (time.perf_counter() - t), z

    # ---- wxdask embed on a LocalCluster, from the store; bare and embed runs interleaved
    cfg = Config.from_dict({
        "store": {"url": store_cfg.url},
        "embed": {"model_dir": str(model_dir), "batch_size": args.batch_size, "images_per_task": args.images_per_task},
        "dask": {"n_workers": args.workers, "threads_per_worker": 1, "progress": False},
    })
    client = make_client(cfg.dask)
    bare, rates = [], []
    try:
        for i in range(args.repeat + 1):
            if i:
                rate, want = bare_rate()
                bare.append(rate)
                print(f"bare model.predict: {rate:.0f} images/s")
            store.drop_variables(store_cfg, ["embedding"])
            t = time.perf_counter()
            line = embed.run(cfg, client)
            rate = len(x) / (time.perf_counter() - t)
            label = "cold (loads the model)" if i == 0 else "warm"
            print(f"wxdask embed, {label}: {rate:.0f} images/s  [{line}]")
            if i:
                rates.append(rate)
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()

    got = store.open_input(store_cfg, ["embedding"])["embedding"].values[ok]
    diff = float(np.max(np.abs(got - want)))
    print(f"max |embed - bare predict| = {diff:.2e}")
    ratio = max(rates) / max(bare)
    print(f"best of {args.repeat}: bare {max(bare):.0f} images/s, embed {max(rates):.0f} images/s; "
          f"median ratio {float(np.median(np.array(rates) / np.array(bare))):.2f}")
    print(f"ratio embed/bare = {ratio:.2f} (target >= 0.9) with {args.workers} worker(s), batch {args.batch_size}, "
          f"{len(x)} images of {grid[0]}x{grid[1]}")
    return 0 if diff < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
