"""Ingest benchmark: bytes on the wire, CPU per field against bare ecCodes + zstd, and scaling with workers.

Builds a synthetic archive on the full HRRR grid, serves it from the local S3
endpoint (moto, in a process of its own) through a counting proxy, and prints, measured in this one run:

* bytes fetched per field / REFC message size (target <= 1.02, the .idx counted);
* ingest CPU seconds per field on the workers / a bare ``eccodes`` decode of the
  same message bytes plus a bare zstd compression of the same int16 image, with
  the store's own ``refc`` codec settings, in this process (target <= 1.5);
* fields per second with 1 and with 2 workers, runs interleaved (1, 2, 1, 2, ...),
  the median of the per-pair ratios (target: 2 workers >= 1.8x one);
* with ``--local``, the same CPU and scaling figures for the archive read as a local
  directory (no S3 server, no S3 client): on a 2-core machine the moto server shares
  the cores with the workers, and this separates the workers' own scaling from it.

Workers are started by :func:`wxdask.client.make_client`, as ``wxdask ingest`` starts them.

Usage::

    python scripts/bench_ingest.py [--hours 96] [--repeats 3] [--grid hrrr] [--local]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import multiprocessing
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import psutil

from wxdask import ingest, synth
from wxdask import store as wxstore
from wxdask.client import close_client, make_client
from wxdask.config import Config, StoreConfig
from wxdask.ingest import hrrr_key
from wxdask.s3local import ARCHIVE_BUCKET, LocalS3
from wxdask.testing import FlakyProxy

START = "2019-09-20T00"


def _worker_cpu() -> float:
    proc = psutil.Process()
    t = proc.cpu_times()
    return t.user + t.system


def _machine_cpu() -> float:
    """CPU seconds the whole machine has been busy (every core, every process)."""
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


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


def _serve_s3(archive: str, conn: Any) -> None:
    """Serve ``archive`` from a moto endpoint until told to stop (run in its own process)."""
    with LocalS3() as s3:
        s3.upload_archive(archive)
        conn.send(s3.endpoint_url)
        conn.recv()


@contextlib.contextmanager
def s3_process(archive: Path) -> Iterator[str]:
    """The archive on a local S3 endpoint in a separate process, so moto's Python (and its GIL) shares no
    process with the scheduler and the client, which it otherwise serializes against."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve_s3, args=(str(archive), child), daemon=True)
    proc.start()
    try:
        yield parent.recv()
    finally:
        parent.send("stop")
        proc.join(30)


def refc_codec(store_url: str) -> Any:
    """The zstd codec of the store's ``refc``, as a numcodecs codec with the store's own settings."""
    from numcodecs import Zstd
    from zarr.codecs import ZstdCodec

    from wxdask import store

    codecs = store.open_store(StoreConfig(url=store_url))["refc"].encoding["compressors"]
    if len(codecs) != 1 or not isinstance(codecs[0], ZstdCodec):
        raise SystemExit(f"refc is not stored with zstd alone ({codecs!r}): update this benchmark")
    return Zstd(level=codecs[0].level, checksum=codecs[0].checksum)


def stored_images(store_url: str, n: int) -> np.ndarray:
    """The first ``n`` ingested ``refc`` images, raw int16 as stored, ``(n, ny, nx)``."""
    from wxdask import store

    return store.read_region(StoreConfig(url=store_url), "refc", (slice(0, n), 0))


def bare_zstd_seconds(images: np.ndarray, codec: Any, repeat: int = 3) -> float:
    """CPU seconds per image of ``codec.encode`` of the little-endian int16 bytes, best of ``repeat``."""
    best = np.inf
    for _ in range(repeat):
        start = time.thread_time()
        for image in images:
            codec.encode(np.ascontiguousarray(image, dtype="<i2"))
        best = min(best, (time.thread_time() - start) / len(images))
    return best


def _bare_both(messages: list[bytes], images: np.ndarray, codec: Any) -> tuple[float, float]:
    return bare_decode_seconds(messages), bare_zstd_seconds(images, codec)


def _dask(n_workers: int) -> dict:
    return {"n_workers": n_workers, "threads_per_worker": 1, "progress": False, "dashboard_address": ":0"}


def _bare_from_disk(archive: Path, times: np.ndarray, store_url: str, n_images: int, codec: Any
                    ) -> tuple[float, float]:
    return _bare_both(refc_messages(archive, times), stored_images(store_url, n_images), codec)


def _bare_wall(archive: Path, times: np.ndarray, store_url: str, n_images: int, codec: Any) -> float:
    messages, images = refc_messages(archive, times), stored_images(store_url, n_images)
    t0 = time.perf_counter()
    _bare_both(messages, images, codec)
    return time.perf_counter() - t0


def bare_scaling(archive: Path, times: np.ndarray, store_url: str, n_images: int, codec: Any, repeats: int
                 ) -> list[float]:
    """The machine's own ceiling: throughput of the bare decode + zstd in 2 processes at once over 1 process,
    interleaved pairs (no Dask, no S3, nothing else running)."""
    from concurrent.futures import ProcessPoolExecutor

    args = (archive, times, store_url, n_images, codec)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        list(pool.map(_bare_wall, *[[a, a] for a in args]))  # both processes warm (imports, ecCodes tables)
        ratios = []
        for _ in range(repeats):
            one = pool.submit(_bare_wall, *args).result()
            two = [f.result() for f in [pool.submit(_bare_wall, *args) for _ in range(2)]]
            ratios.append(2 * one / max(two))
    return ratios


def bare_in_worker(archive: Path, times: np.ndarray, store_url: str, n_images: int, codec: Any
                   ) -> tuple[float, float]:
    """The same bare decode and compression, run as a task on a Dask worker started like ingest's (which
    reads the messages and images itself: a graph of paths, not of 100 MB of bytes)."""
    client = make_client(Config.from_dict({"dask": _dask(1)}).dask)
    try:
        return client.submit(_bare_from_disk, archive, times, store_url, n_images, codec, pure=False).result()
    finally:
        close_client(client)


def run_ingest(endpoint: str | None, store: Path, end: str, n_workers: int, proxy: FlakyProxy | None = None,
               local: Path | None = None) -> tuple[float, float, int, float]:
    """Wall seconds, total worker CPU seconds, bytes through ``proxy`` and the machine's other CPU seconds
    (the client and the scheduler, which :func:`make_client` starts in this process, the S3 server, the
    rest of the machine) of one ingest run.

    Reads the archive from ``endpoint``, or from the directory ``local`` when given.
    """
    where = {"source": str(local)} if local is not None else {"source": f"s3://{ARCHIVE_BUCKET}",
                                                             "endpoint_url": endpoint}
    cfg = Config.from_dict(
        {
            "store": {"url": str(store)},
            "ingest": {"start": START, "end": end, "leads": [0], **where},
            "dask": _dask(n_workers),
        }
    )
    client = make_client(cfg.dask)
    try:
        # warm each worker (imports, first S3 connection, ecCodes tables) on a scratch store
        warm = cfg.replace(
            store={"url": str(store) + ".warm"}, ingest={"end": str(np.datetime64(START, "h") + 2 * n_workers)}
        )
        ingest.run(warm, client)
        wire0 = proxy.bytes_sent if proxy else 0
        cpu0 = sum(client.run(_worker_cpu).values())
        here0 = _machine_cpu()
        t0 = time.perf_counter()
        ingest.run(cfg, client)
        wall = time.perf_counter() - t0
        here = _machine_cpu() - here0
        cpu = sum(client.run(_worker_cpu).values()) - cpu0
        here -= cpu
        wire = (proxy.bytes_sent if proxy else 0) - wire0
    finally:
        close_client(client)
    ok = int(wxstore.ok_mask(wxstore.open_store(cfg.store)).sum())
    n = int((np.datetime64(end, "h") - np.datetime64(START, "h")).astype(np.int64))
    if ok != n:  # a run that stored less than it was asked would flatter every figure
        raise SystemExit(f"{store}: {ok} of {n} fields ok after ingest")
    return wall, cpu, wire, here


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=int, default=96,
                        help="fields in the archive (one per hour, lead 0; one task per 24, so 96 gives each of "
                             "2 workers 2 tasks)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved 1-worker / 2-worker pairs")
    parser.add_argument("--grid", default="hrrr", choices=["hrrr", "coarse"])
    parser.add_argument("--local", action="store_true",
                        help="also measure CPU and scaling with the archive read as a local directory")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("bench_ingest").setLevel(logging.INFO)

    times = np.arange(np.datetime64(START, "h"), np.datetime64(START, "h") + args.hours)
    end = str(times[-1] + 1)
    n = len(times)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synth.write_archive(str(tmp), START, end, (0,), grid=args.grid, seed=0)
        archive = tmp / ARCHIVE_BUCKET
        messages = refc_messages(archive, times)
        message_bytes = sum(len(m) for m in messages)

        with s3_process(archive) as endpoint_url:
            stats = _measure(args, tmp, end, messages, endpoint_url)
    _report(args, n, message_bytes, *stats)


def _measure(args: argparse.Namespace, tmp: Path, end: str, messages: list[bytes], endpoint_url: str) -> tuple:
    """Everything the report prints, measured against ``endpoint_url``."""
    n = len(messages)
    # bytes on the wire: one run through the counting proxy (the timed runs go to the endpoint directly,
    # so the proxy's one thread does not serialize them)
    with FlakyProxy(endpoint_url, fail_every=10**9) as proxy:
        _, _, wire, _ = run_ingest(proxy.url, tmp / "wire.zarr", end, 1, proxy)
    codec = refc_codec(str(tmp / "wire.zarr"))
    images = stored_images(str(tmp / "wire.zarr"), min(n, 24))
    decode, zstd = _bare_both(messages, images, codec)
    times = np.arange(np.datetime64(START, "h"), np.datetime64(START, "h") + n)
    decode_w, zstd_w = bare_in_worker(tmp / ARCHIVE_BUCKET, times, str(tmp / "wire.zarr"), len(images), codec)
    ceiling = bare_scaling(tmp / ARCHIVE_BUCKET, times, str(tmp / "wire.zarr"), len(images), codec, args.repeats)

    runs = {"s3": _pairs(args, tmp, end, n, endpoint_url, None)}
    if args.local:
        runs["local"] = _pairs(args, tmp, end, n, None, tmp)
    return wire, codec, decode, zstd, decode_w, zstd_w, ceiling, runs


def _pairs(args: argparse.Namespace, tmp: Path, end: str, n: int, endpoint_url: str | None, local: Path | None
           ) -> tuple[dict[int, list[float]], list[float], list[tuple[float, float]]]:
    """Interleaved 1-worker / 2-worker runs: walls by worker count, CPU per field of the 1-worker runs, and
    the CPU seconds of the 2-worker runs (workers', this process's)."""
    log = logging.getLogger("bench_ingest")
    tag = "local" if local is not None else "s3"
    walls: dict[int, list[float]] = {1: [], 2: []}
    cpus, busy = [], []
    for i in range(args.repeats):
        for workers in (1, 2):
            wall, cpu, _, here = run_ingest(endpoint_url, tmp / f"run-{tag}-{i}-{workers}.zarr", end, workers,
                                            local=local)
            walls[workers].append(wall)
            if workers == 1:
                cpus.append(cpu / n)
            else:
                busy.append((cpu, here))
            log.info("%s pair %d, %d worker(s): %.2f s, %.2f fields/s", tag, i, workers, wall, n / wall)
    return walls, cpus, busy


def _report(args: argparse.Namespace, n: int, message_bytes: int, wire: int, codec: Any, decode: float, zstd: float,
            decode_w: float, zstd_w: float, ceiling: list[float], runs: dict) -> None:
    print(f"grid {args.grid}, {n} fields, mean REFC message {message_bytes / n / 1e3:.1f} kB, zstd {codec}; "
          f"load average at the end {os.getloadavg()[0]:.2f}")
    print(f"bytes fetched per field / message size: {wire / message_bytes:.4f}   (target <= 1.02)")
    print(f"the machine's own ceiling: bare decode + zstd, 2 processes at once / 1, per pair "
          f"{', '.join(f'{r:.2f}' for r in ceiling)}: median {float(np.median(ceiling)):.2f}x")
    for tag, (walls, cpus, busy) in runs.items():
        print(f"-- archive read from {'the local S3 endpoint' if tag == 's3' else 'a local directory'}")
        _report_runs(n, decode, zstd, decode_w, zstd_w, walls, cpus, busy)


def _report_runs(n: int, decode: float, zstd: float, decode_w: float, zstd_w: float, walls: dict, cpus: list,
                 busy: list) -> None:
    cpu = float(np.median(cpus))
    ratios = [w1 / w2 for w1, w2 in zip(walls[1], walls[2])]
    print(
        f"ingest CPU per field {cpu * 1e3:.1f} ms (median of {len(cpus)} 1-worker runs) / bare eccodes decode "
        f"{decode * 1e3:.1f} ms + bare zstd {zstd * 1e3:.1f} ms = {cpu / (decode + zstd):.2f}   (target <= 1.5)"
    )
    print(f"  against the decode alone: {cpu / decode:.2f}")
    print(
        f"  the same bare decode + zstd as a task on a worker: {decode_w * 1e3:.1f} + {zstd_w * 1e3:.1f} ms; "
        f"ingest / that: {cpu / (decode_w + zstd_w):.2f}"
    )
    print(
        f"fields/s, interleaved: 1 worker {', '.join(f'{n / w:.2f}' for w in walls[1])}; "
        f"2 workers {', '.join(f'{n / w:.2f}' for w in walls[2])}"
    )
    print(
        f"speed-up per pair {', '.join(f'{r:.2f}' for r in ratios)}: median {float(np.median(ratios)):.2f}x   "
        "(target >= 1.8)"
    )
    workers, here = (float(np.median(v)) for v in zip(*busy))
    cores = os.cpu_count() or 1
    best = (workers + here) / min(cores, 2)
    print(
        f"  2-worker runs: workers' CPU {workers:.2f} s + the rest of the machine's (client, scheduler, S3 "
        f"server) {here:.2f} s on {cores} "
        f"core(s): no faster than {best:.2f} s, a speed-up of at most {float(np.median(walls[1])) / best:.2f}x"
    )


if __name__ == "__main__":
    main()
