"""Driver of scripts/bench_search_gpu.sh: all-pairs top-k of N random embeddings on one GPU worker.

Steps, each timed and printed:
1. a store holding ``embedding(time, lead_time, latent)`` of ``--n`` random
   ``--dim``-dim float32 rows (seeded), one lead, hourly times;
2. a LocalCluster with one worker advertising ``GPU=1`` (one thread), so
   :func:`wxdask.search.run` puts its search tasks there and they take the device
   path (:func:`wxdask.knn_device.knn_prepared_device` through keras.ops);
3. warm-up: ``search.run`` on a small store (jit compiles), then the timed
   ``search.run`` on the big one, end to end (read, search, staged write), with
   the task stream checked (every search task ran on the GPU worker);
4. a float64 brute-force check of a sample of rows;
5. reference: bare GEMM + top-k on the same device, torch if it has CUDA, else jax.
"""

from __future__ import annotations

import argparse
import sys
import time

from _gpu_bench import T0, say, start  # noqa: F401 - the drivers' shared start (scripts/ is on sys.path)


def build_store(url: str, n: int, dim: int, seed: int) -> object:
    import numpy as np
    import xarray as xr

    from wxdask.config import Config

    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, dim), dtype=np.float32)
    times = (np.datetime64("1990-01-01T00", "h") + np.arange(n).astype("timedelta64[h]")).astype("M8[ns]")
    ds = xr.Dataset({"embedding": (("time", "lead_time", "latent"), x, {"model_hash": "bench", "model_dir": "none"})},
                    coords={"time": times, "lead_time": [0]})
    ds.chunk({"time": 131072}).to_zarr(url, zarr_format=3, consolidated=False, mode="w")
    return Config.from_dict({"store": {"url": url}}), x[:, 0]


def bare_reference(x, k: int, block: int) -> tuple[str, float]:
    """Seconds of all-pairs GEMM + top-(k+1) on the device, data already there (torch/CUDA, else jax)."""
    n = x.shape[0]
    try:
        import torch

        if not torch.cuda.is_available():
            raise ImportError("no CUDA")
        dev = torch.device("cuda")
        xt = torch.from_numpy(x).to(dev)
        sq = (xt * xt).sum(1)
        for _ in range(2):  # warm
            torch.topk(sq[None, :] - 2 * xt[:block] @ xt.T, k + 1, largest=False)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for r0 in range(0, n, block):
            q = xt[r0:r0 + block]
            torch.topk(sq[None, :] - 2 * q @ xt.T, k + 1, largest=False)
        torch.cuda.synchronize()
        return f"torch {torch.__version__} on {torch.cuda.get_device_name()}", time.perf_counter() - t
    except ImportError:
        import jax

        xj = jax.device_put(x)
        sq = (xj * xj).sum(1)

        @jax.jit
        def step(q):
            return jax.lax.top_k(-(sq[None, :] - 2 * q @ xj.T), k + 1)

        step(xj[:block])[0].block_until_ready()
        t = time.perf_counter()
        outs = [step(xj[r0:r0 + block]) for r0 in range(0, n - block + 1, block)]
        for o in outs:
            o[0].block_until_ready()
        done = (n // block) * block
        return f"jax {jax.__version__} on {jax.devices()[0]}", (time.perf_counter() - t) * n / max(done, 1)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=1_000_000, help="embeddings in the store (all pairs searched)")
    p.add_argument("--dim", type=int, default=50)
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--block-size", type=int, default=8192, help="queries per task")
    p.add_argument("--chunk-size", type=int, default=131072, help="database rows per device GEMM")
    p.add_argument("--warmup-n", type=int, default=20000)
    p.add_argument("--check", type=int, default=200, help="rows checked against float64 brute force")
    p.add_argument("--bare-block", type=int, default=8192)
    p.add_argument("--workdir", default="/tmp/wxdask-bench-search-gpu")
    p.add_argument("--allow-cpu", action="store_true", help="run without a GPU (dry run)")
    args = p.parse_args()
    work = start(args.workdir, args.allow_cpu)
    if work is None:
        return 2
    import keras
    import numpy as np

    from wxdask import search, store
    from wxdask.client import gpu_workers, make_client
    big, x = build_store(str(work / "big.zarr"), args.n, args.dim, 0)
    warm, _ = build_store(str(work / "warm.zarr"), min(args.warmup_n, args.n), args.dim, 1)
    say(f"stores: {args.n:,} x {args.dim} float32 embeddings (+ {min(args.warmup_n, args.n):,} for warm-up)")

    sections = {"search": {"k": args.k, "exclude_window": "0h", "block_size": args.block_size,
                           "chunk_size": args.chunk_size},
                "dask": {"n_workers": 1, "gpu_workers": 1, "threads_per_worker": 1, "memory_limit": "100GiB",
                         "progress": False}}
    cfg = big.replace(**sections)
    client = make_client(cfg.dask)
    try:
        from distributed import get_task_stream

        gpus = gpu_workers(client)
        say(f"cluster up: GPU workers {gpus}")
        t = time.perf_counter()
        search.run(warm.replace(**sections), client)
        say(f"warm-up ({min(args.warmup_n, args.n):,} rows, compiles): {time.perf_counter() - t:.1f} s")
        with get_task_stream(client) as ts:
            t = time.perf_counter()
            line = search.run(cfg, client)
            dt = time.perf_counter() - t
        knn_on = {rec["worker"] for rec in ts.data if "knn-" in str(rec["key"])}
        n_knn = sum("knn-" in str(rec["key"]) for rec in ts.data)
        pairs = float(args.n) * args.n
        say(f"RESULT end to end from the store: {pairs / dt:.3g} pairs/s ({args.n:,} x {args.n:,} top-{args.k} in "
            f"{dt:.2f} s, block {args.block_size}, chunk {args.chunk_size}, 1 GPU worker, "
            f"KERAS_BACKEND={keras.backend.backend()})  [{line}]")
        say(f"{n_knn} search tasks ran on {sorted(knn_on)} (GPU workers {gpus}): {knn_on == set(gpus)}")
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()

    ds = store.open_input(big.store, ["neighbor_sqdist", "neighbor_time"])
    got_t = ds["neighbor_time"].values[:, 0]
    got_d = ds["neighbor_sqdist"].values[:, 0]
    rng = np.random.default_rng(2)
    rows = rng.choice(args.n, min(args.check, args.n), replace=False)
    x64 = x.astype(np.float64)
    ok = 0
    t0 = np.datetime64("1990-01-01T00", "h")
    for r in rows:
        d = ((x64 - x64[r]) ** 2).sum(axis=1)
        d[r] = np.inf
        want = np.lexsort((np.arange(args.n), d))[: args.k]
        got = ((got_t[r].astype("M8[h]") - t0).astype(np.int64))
        ok += np.array_equal(got, want) and np.allclose(got_d[r], d[want], rtol=1e-5)
    say(f"float64 brute force on {len(rows)} random rows: {ok} identical (order included)")

    what, secs = bare_reference(x, args.k, args.bare_block)
    say(
        f"reference: bare GEMM + top-{args.k + 1} ({what}), data on the device: {float(args.n) ** 2 / secs:.3g} "
        "pairs/s "
        f"({secs:.2f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
