"""Ingest at archive scale on a tiny grid: 10^3 / 10^4 / 10^5 slots, most of them absent.

Writes a synthetic archive (coarse grid, ``--present`` hours present, every later hour absent) in a
local directory, ingests ``N`` hourly slots of lead 0 on a LocalCluster, then reruns over the unchanged
archive, and prints per N: client peak RSS, wall time per slot (first run and rerun), tasks submitted
(one per shard of 24 runs), the most in flight at once, and objects in the store.

    python scripts/bench_ingest_scale.py --slots 1000,10000 --workers 2
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
import time

import numpy as np


def _peak_rss(stop: threading.Event, out: list[int]) -> None:
    import psutil

    proc = psutil.Process()
    while not stop.is_set():
        out[0] = max(out[0], proc.memory_info().rss)
        time.sleep(0.05)


def _objects(path: str) -> int:
    return sum(len(files) for _, _, files in os.walk(path))


def bench(n: int, present: int, workers: int, tmp: str) -> dict:
    from distributed import Client, LocalCluster

    from wxdask import ingest, synth
    from wxdask import store as store_mod
    from wxdask.config import Config

    start = np.datetime64("2015-01-01T00", "h")
    archive = os.path.join(tmp, f"archive-{n}")
    synth.write_archive(archive, str(start), str(start + np.timedelta64(present, "h")), (0,), grid="coarse", seed=0)
    store = os.path.join(tmp, f"store-{n}.zarr")
    cfg = Config.from_dict({
        "store": {"url": store},
        "ingest": {"start": str(start), "end": str(start + np.timedelta64(n, "h")), "leads": [0], "source": archive},
        "dask": {"progress": False},
    })
    row: dict = {"slots": n, "tasks": -(-n // ingest.SHARD_TIMES)}
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        row["window"] = max(16, 4 * sum(client.nthreads().values()))
        for label in ("first", "rerun"):
            stop, peak = threading.Event(), [0]
            watcher = threading.Thread(target=_peak_rss, args=(stop, peak), daemon=True)
            watcher.start()
            t0 = time.perf_counter()
            ingest.run(cfg, client)
            wall = time.perf_counter() - t0
            stop.set()
            watcher.join()
            row[f"{label}_ms_per_slot"] = 1e3 * wall / n
            status = store_mod.open_store(cfg.store, dask=False)["status"].values
            if np.any(status == ingest.STATUS["not_tried"]):  # a run that skipped slots would flatter the figures
                raise SystemExit(f"{store}: {int(np.sum(status == ingest.STATUS['not_tried']))} of {n} slots "
                                 f"not tried after the {label} run")
            row[f"{label}_client_peak_mb"] = peak[0] / 2**20
    row["objects"] = _objects(store)
    row["status_objects"] = _objects(os.path.join(store, "status"))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", default="1000,10000,100000", help="comma-separated slot counts")
    parser.add_argument("--present", type=int, default=48, help="hours present in the archive (the rest absent)")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("wxdask").setLevel(logging.ERROR)
    logging.getLogger("distributed").setLevel(logging.WARNING)  # its own config sets INFO on import
    with tempfile.TemporaryDirectory(prefix="wxdask-bench-scale-") as tmp:
        print(
            "| slots | tasks | in flight (max) | first run ms/slot | rerun ms/slot | client peak RSS MB "
            "(first/rerun) | objects in store | status objects |"
        )
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for n in (int(v) for v in args.slots.split(",")):
            r = bench(n, min(args.present, n), args.workers, tmp)
            print(
                f"| {r['slots']} | {r['tasks']} | {r['window']} | {r['first_ms_per_slot']:.2f} | "
                f"{r['rerun_ms_per_slot']:.2f} "
                f"| {r['first_client_peak_mb']:.0f} / {r['rerun_client_peak_mb']:.0f} | {r['objects']} | "
                f"{r['status_objects']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
