"""Benchmark: k-means (k=5) on 1,000,000 x 50 structured embeddings, wxdask against scikit-learn in memory.

    python scripts/bench_cluster.py                 # both wxdask engines against scikit-learn
    python scripts/bench_cluster.py --no-dask-ml    # the default (lloyd) engine only

The data: five regimes of unequal size (40/25/15/12/8 %) with different
spreads around seeded centres, plus a slow drift along one direction (a
trajectory, as hourly weather has). scikit-learn's ``KMeans(k)`` (its defaults:
k-means++, ``n_init="auto"``) runs on the numpy array with the process's
threads (both cores); wxdask runs on a LocalCluster of 2 single-thread workers,
with the data already persisted in their memory (as after reading the store),
and is timed from ``kmeans.fit`` to holding every label in this process (the
last Lloyd step's, when it left the centroids unchanged, as scikit-learn's
``labels_``; else from one more pass).

Runs are interleaved (scikit-learn, wxdask, scikit-learn, ...) because the
machine may be shared. Printed: each wall time, the ratio wxdask /
scikit-learn (best of each, and the median of the per-run ratios; target <= 2),
and the ratio of inertias (target <= 1.01), all inertias computed the same way
(:func:`wxdask.kmeans.inertia_block`, sum of squared distances in float64),
and the adjusted Rand index between the two labellings.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np


def structured(n: int, d: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 1.5, (k, d))
    sizes = np.array([0.40, 0.25, 0.15, 0.12, 0.08])[:k]
    truth = rng.choice(k, n, p=sizes / sizes.sum())
    spread = np.linspace(0.8, 1.4, k)[truth][:, None]
    drift = np.sin(np.linspace(0, 20, n))[:, None] * rng.normal(0, 1, d)[None, :] * 0.5
    x = centres[truth] + spread * rng.normal(size=(n, d)) + drift
    return x.astype(np.float32), truth


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=50)
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--block-size", type=int, default=131072)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs of each (the lloyd engine)")
    ap.add_argument("--no-dask-ml", action="store_true", help="skip the dask-ml engine (slow; run once)")
    args = ap.parse_args()

    import dask.array as da
    from distributed import Client, LocalCluster, wait
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from wxdask import kmeans
    from wxdask.config import KMeansConfig

    x, truth = structured(args.n, args.dim, args.k, 0)
    print(f"bench_cluster: N={args.n:,} x {args.dim}, k={args.k}, {args.workers} workers x 1 thread")

    KMeans(args.k, random_state=0).fit(x[:5000])  # warm up

    def run_sklearn() -> tuple[float, object, float]:
        t0 = time.perf_counter()
        sk = KMeans(args.k, random_state=0).fit(x)
        return time.perf_counter() - t0, sk, kmeans.inertia_block(x, sk.cluster_centers_, sk.labels_)

    def run_wxdask(client, xd, cfg, engine: str) -> tuple[float, object, np.ndarray, float]:
        t0 = time.perf_counter()
        result = kmeans.fit(xd, cfg, client, engine=engine)
        if result.labels is not None:  # the last Lloyd step's labels, kept on the workers
            labels = client.compute(result.labels).result()
        else:  # one more pass
            parts = xd.map_blocks(lambda b, c=result.centers: kmeans.assign_block(b, c)[0], drop_axis=1,
                                  dtype=np.int32)
            labels = client.compute(parts).result()
        seconds = time.perf_counter() - t0
        return seconds, result, labels, kmeans.inertia_block(x, result.centers, labels)

    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True, memory_limit="6GiB",
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        xd = client.persist(da.from_array(x, chunks=(args.block_size, -1)))
        wait(xd)
        cfg = KMeansConfig(k=args.k, block_size=args.block_size)
        kmeans.fit(xd[:20_000], cfg, client)  # warm up the workers
        sk_times, our_times, ratios = [], [], []
        print("  interleaved runs (this machine is shared: times vary from run to run)")
        for rep in range(args.repeats):
            t_sk, sk, sk_inertia = run_sklearn()
            t_ours, result, labels, inertia = run_wxdask(client, xd, cfg, "lloyd")
            sk_times.append(t_sk)
            our_times.append(t_ours)
            ratios.append(t_ours / t_sk)
            print(f"  run {rep + 1}: scikit-learn {t_sk:.2f} s ({sk.n_iter_} iterations, inertia {sk_inertia:.6g}); "
                  f"wxdask lloyd {t_ours:.2f} s ({result.n_iter} iterations, {result.n_candidates} k-means|| "
                  f"candidates, inertia {inertia:.6g}); ratio {t_ours / t_sk:.2f}")
        print(f"  scikit-learn ARI vs truth {adjusted_rand_score(truth, sk.labels_):.4f}; "
              f"wxdask ARI vs truth {adjusted_rand_score(truth, labels):.4f}, vs scikit-learn "
              f"{adjusted_rand_score(sk.labels_, labels):.4f}")
        print(f"  wall-time ratio wxdask/scikit-learn: best of each {min(our_times) / min(sk_times):.2f}, "
              f"median of runs {float(np.median(ratios)):.2f} (target <= 2)")
        print(f"  inertia ratio wxdask/scikit-learn = {inertia / sk_inertia:.5f} (target <= 1.01)")
        if not args.no_dask_ml:
            kmeans.fit(xd[:20_000], cfg, client, engine="dask-ml")  # warm up (dask-ml compiles numba code)
            t_dm, result, labels, inertia = run_wxdask(client, xd, cfg, "dask-ml")
            t_sk, sk, sk_inertia = run_sklearn()
            print(f"  wxdask with engine dask-ml: {t_dm:.2f} s ({result.n_iter} iterations), inertia {inertia:.6g}; "
                  f"scikit-learn right after {t_sk:.2f} s: ratio {t_dm / t_sk:.2f}, "
                  f"inertia ratio {inertia / sk_inertia:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
