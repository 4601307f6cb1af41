"""Time every view of ``wxdask explore`` on a one-year coarse store (median of several requests).

    python scripts/bench_explore.py --store /tmp/year.zarr            # builds it there first if absent
    python scripts/bench_explore.py --store /tmp/year.zarr --repeats 9

Building runs the real stages on a synthetic archive (coarse 66x112 grid, lead 0, a year of hourly
analyses with a few missing and corrupt hours): ingest, train (1 epoch), evaluate, embed, decode,
search, interpolate, cluster, on a LocalCluster of two workers; that takes several minutes.

Then it opens the store with :class:`wxdask.explore.Explorer`, serves it on a free loopback port, waits
for the decoder to load (its warm-up), and requests each endpoint ``--repeats`` times over plain HTTP,
each request for another random slot where the view takes one, and prints the first (cold) time and
the median. Not a test: a shared machine makes the numbers noisy.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np


def build(path: Path, days: int, seed: int) -> None:
    from distributed import Client, LocalCluster

    from wxdask import pipeline
    from wxdask.config import Config
    from wxdask.testing import make_refc_store

    start = np.datetime64("2019-01-01T00", "h")
    end = start + 24 * days
    hours = np.arange(start, end)
    rng = np.random.default_rng(seed)
    missing = [str(t) for t in rng.choice(hours, 5, replace=False)]
    corrupt = [(str(t), 0, "garbage") for t in rng.choice(hours, 3, replace=False)]
    t0 = time.perf_counter()
    make_refc_store(path, str(start), str(end), leads=(0,), seed=seed, missing=missing, corrupt=corrupt)
    print(f"ingest: {time.perf_counter() - t0:.0f} s", flush=True)
    cfg = Config.from_dict({
        "store": {"url": str(path)}, "dask": {"progress": False},
        "train": {"model_dir": str(path.with_suffix(".model")), "epochs": 1, "batch_size": 32},
        "evaluate": {"n_examples": 1, "pca_max_train": 1000},
        "search": {"k": 10, "exclude_window": "24h"}, "interpolate": {"n_decode": 2},
        "kmeans": {"k": 6, "plot": str(path.with_suffix(".centroids.png"))},
    })
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address="127.0.0.1:0") as cluster, \
            Client(cluster) as client:
        for stage in ["train", "evaluate", "embed", "decode", "search", "interpolate", "cluster"]:
            t0 = time.perf_counter()
            pipeline.run(cfg, client, [stage])
            print(f"{stage}: {time.perf_counter() - t0:.0f} s", flush=True)


def get(url: str) -> tuple[int, float]:
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=300) as resp:
            resp.read()
            code = resp.status
    except urllib.error.HTTPError as err:
        err.read()
        code = err.code
    return code, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, type=Path)
    parser.add_argument("--days", type=int, default=365, help="Days of the store it builds (default: a year).")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if not (args.store / "zarr.json").exists():
        build(args.store, args.days, args.seed)

    from wxdask import explore, store  # noqa: F401 - imported before the clock starts
    from wxdask.config import StoreConfig

    t0 = time.perf_counter()
    explorer = explore.Explorer(StoreConfig(url=str(args.store)))
    t_first_open = time.perf_counter() - t0  # includes xarray's first open_zarr in this process
    t0 = time.perf_counter()
    explorer = explore.Explorer(StoreConfig(url=str(args.store)))
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    explorer.warm_up().join()
    t_model = time.perf_counter() - t0
    server = explore.make_server(explorer, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    ds = explorer.ds
    ok = np.flatnonzero(ds["status"].values[:, 0] == 1)
    rng = np.random.default_rng(args.seed)
    print(f"store {args.store}: {ds.sizes['time']} times x {ds.sizes['lead_time']} leads, "
          f"grid {ds.sizes['y']}x{ds.sizes['x']}; open {t_first_open * 1000:.0f} ms (first in this process), "
          f"{t_open * 1000:.0f} ms (again); warm-up in the background (first "
          f"lead's timeline: status is one chunk per slot; decoder load) {t_model:.1f} s")

    def slot() -> str:
        return str(explorer.times[int(rng.choice(ok))])

    views = {
        "page /": lambda: "/",
        "/api/summary": lambda: "/api/summary",
        "/api/timeline": lambda: "/api/timeline?lead=0",
        "/api/slot": lambda: f"/api/slot?time={slot()}&lead=0",
        "/api/query (window 24h, k 10)": lambda: f"/api/query?time={slot()}&lead=0&window=24h&k=10",
        "/api/regimes": lambda: "/api/regimes",
        "/api/scores": lambda: "/api/scores",
        "/img/slot.png (stored, decoded)": lambda: f"/img/slot.png?time={slot()}&lead=0",
        "/img/error.png (decoded - stored)": lambda: f"/img/error.png?time={slot()}&lead=0",
        "/img/analogs.png (query + 10 analogs)": lambda: f"/img/analogs.png?time={slot()}&lead=0",
        "/img/centroids.png": lambda: "/img/centroids.png",
        "bad request (unknown time)": lambda: "/api/slot?time=1999-01-01T00&lead=0",
    }
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; pictures are cached once drawn, "
          "so each PNG request asks for another slot")
    print(f"| view | status | first request | median of {args.repeats} |")
    print("| --- | --- | --- | --- |")
    for name, target in views.items():
        code, first = get(base + target())
        times = []
        for _ in range(args.repeats):
            code, dt = get(base + target())
            times.append(dt)
        print(f"| {name} | {code} | {first * 1000:.0f} ms | {statistics.median(times) * 1000:.0f} ms |", flush=True)
    server.shutdown()


if __name__ == "__main__":
    main()
