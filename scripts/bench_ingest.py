"""Ingest benchmark: bytes on the wire, CPU per field against bare ecCodes, and scaling with workers.

Builds a synthetic archive on the full HRRR grid, serves it from the local S3
endpoint (moto) through a counting proxy, and prints, measured in this one run:

* bytes fetched per field / REFC message size (target <= 1.02, the .idx counted);
* ingest CPU seconds per field on the workers / a bare ``eccodes`` decode of the
  same message bytes in this process (target <= 1.5);
* fields per second with 1 and with 2 workers (target: 2 workers >= 1.8x one).

Usage::

    python scripts/bench_ingest.py [--hours 48] [--grid hrrr]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
from distributed import Client, LocalCluster

from wxdask import ingest, synth
from wxdask.config import Config
from wxdask.ingest import hrrr_key
from wxdask.s3local import ARCHIVE_BUCKET, LocalS3
from wxdask.testing import FlakyProxy

START = "2019-09-20T00"


def _worker_cpu() -> float:
    proc = psutil.Process()
    t = proc.cpu_times()
    return t.user + t.system


def refc_messages(archive: Path, times: np.ndarray) -> list[bytes]:
    """The REFC message (first in each file) of every field, as bytes."""
    messages = []
    for t in times:
        data = (archive / hrrr_key(t, 0)).read_bytes()
        messages.append(data[: int.from_bytes(data[8:16], "big")])
    return messages


def bare_decode_seconds(messages: list[bytes], repeat: int = 3) -> float:
    """CPU seconds per field of ``codes_new_from_message`` + ``codes_get_values``, best of ``repeat``."""
    import eccodes

    best = np.inf
    for _ in range(repeat):
        start = time.thread_time()
        for msg in messages:
            h = eccodes.codes_new_from_message(msg)
            eccodes.codes_get_values(h)
            eccodes.codes_release(h)
        best = min(best, (time.thread_time() - start) / len(messages))
    return best


def bare_decode_in_worker(messages: list[bytes]) -> float:
    """The same bare decode, run as a task on a Dask worker (where it is measured slower here)."""
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        return client.submit(bare_decode_seconds, messages, pure=False).result()


def run_ingest(endpoint: str, store: Path, end: str, n_workers: int, proxy: FlakyProxy | None = None
               ) -> tuple[float, float, int]:
    """Wall seconds, total worker CPU seconds and bytes through ``proxy`` of one ingest run."""
    cfg = Config.from_dict(
        {
            "store": {"url": str(store)},
            "ingest": {
                "start": START,
                "end": end,
                "leads": [0],
                "source": f"s3://{ARCHIVE_BUCKET}",
                "endpoint_url": endpoint,
            },
            "dask": {"progress": False},
        }
    )
    with (
        LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        Client(cluster) as client,
    ):
        # warm each worker (imports, first S3 connection, ecCodes tables) on a scratch store
        warm = cfg.replace(
            store={"url": str(store) + ".warm"}, ingest={"end": str(np.datetime64(START, "h") + 2 * n_workers)}
        )
        ingest.run(warm, client)
        wire0 = proxy.bytes_sent if proxy else 0
        cpu0 = sum(client.run(_worker_cpu).values())
        t0 = time.perf_counter()
        ingest.run(cfg, client)
        wall = time.perf_counter() - t0
        cpu = sum(client.run(_worker_cpu).values()) - cpu0
        wire = (proxy.bytes_sent if proxy else 0) - wire0
    return wall, cpu, wire


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=int, default=48,
                        help="fields in the archive (one per hour, lead 0; one task per 24, so >= 48 for 2 workers)")
    parser.add_argument("--grid", default="hrrr", choices=["hrrr", "coarse"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    times = np.arange(np.datetime64(START, "h"), np.datetime64(START, "h") + args.hours)
    end = str(times[-1] + 1)
    with tempfile.TemporaryDirectory() as tmp, LocalS3() as s3:
        tmp = Path(tmp)
        synth.write_archive(str(tmp), START, end, (0,), grid=args.grid, seed=0)
        archive = tmp / ARCHIVE_BUCKET
        s3.upload_archive(archive)
        messages = refc_messages(archive, times)
        message_bytes = sum(len(m) for m in messages)
        bare = bare_decode_seconds(messages)
        bare_worker = bare_decode_in_worker(messages)

        with FlakyProxy(s3.endpoint_url, fail_every=10**9) as proxy:
            wall1, cpu1, wire = run_ingest(proxy.url, tmp / "one.zarr", end, 1, proxy)
            wall2, _, _ = run_ingest(proxy.url, tmp / "two.zarr", end, 2)

    n = len(times)
    print(f"grid {args.grid}, {n} fields, mean REFC message {message_bytes / n / 1e3:.1f} kB")
    print(f"bytes fetched per field / message size: {wire / message_bytes:.4f}   (target <= 1.02)")
    print(
        f"ingest CPU per field {cpu1 / n * 1e3:.1f} ms / bare eccodes decode {bare * 1e3:.1f} ms: "
        f"{cpu1 / n / bare:.2f}   (target <= 1.5)"
    )
    print(
        f"  the same bare decode as a task on a worker: {bare_worker * 1e3:.1f} ms; "
        f"ingest / that: {cpu1 / n / bare_worker:.2f}"
    )
    print(
        f"fields/s: 1 worker {n / wall1:.2f}, 2 workers {n / wall2:.2f}: speed-up {wall1 / wall2:.2f}x   "
        "(target >= 1.8)"
    )


if __name__ == "__main__":
    main()
