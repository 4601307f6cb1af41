"""Benchmark: exact all-pairs top-k of wxdask.search on a LocalCluster against faiss-cpu on the same cores.

    python scripts/bench_search.py --n 1000000 --queries 100000   # all pairs at 1e5, then 1e5 queries x 1e6 rows
    python scripts/bench_search.py --all-pairs-n 20000 --n 200000 --queries 10000   # a loaded 2-core machine

Both sides search the same float32 random embeddings (50-dim, seeded) for the
k nearest *other* rows (faiss asks for k + 1 and drops the row itself). Printed:
wall time of each and their ratio (target <= 1.5), peak memory, and whether
the neighbour sets agree (rows that differ are checked to be distance ties at
the k-th place); a sample of rows is also checked against float64 brute force.

wxdask's time runs from building the graph to holding all N x k results in this
process, with the embeddings already in the workers' memory (as they are
after reading the store); faiss's from ``IndexFlatL2.add`` to its results. Needs
``pip install faiss-cpu`` (the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import numpy as np


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def wxdask_knn(client, xd, k: int, block_size: int, chunk_size: int, queries=None):
    """All-pairs (or the first ``queries`` rows against all) exact top-k on the cluster.

    Returns (records, seconds, peak MB).
    """
    import dask.array as da
    from distributed.diagnostics import MemorySampler

    from wxdask.search import knn

    n = xd.shape[0]
    q = xd if queries is None else xd[:queries]
    m = q.shape[0]
    ms = MemorySampler()
    with ms.sample("knn", measure="process", interval=0.2):
        t0 = time.perf_counter()
        rec = knn(q, xd, k, query_index=da.arange(m, chunks=block_size, dtype=np.int64), exclude_window=0,
                  block_size=block_size, chunk_size=chunk_size)
        out = client.compute(rec).result()
        seconds = time.perf_counter() - t0
    peak_cluster = float(ms.to_pandas().max().iloc[0]) / 2**20
    worker_peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(f"  wxdask: {m:,} queries x {n:,} rows, k={k}: {seconds:.2f} s; cluster memory peak {peak_cluster:,.0f} MB "
          f"(sum over workers, sampled), worker peak RSS {max(worker_peaks.values()):,.0f} MB; "
          f"an N x N float32 matrix would be {m * n * 4 / 2**20:,.0f} MB")
    return out, seconds, peak_cluster


def faiss_knn(x: np.ndarray, k: int, threads: int):
    import faiss

    faiss.omp_set_num_threads(threads)
    before = _rss_mb()
    t0 = time.perf_counter()
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    d, i = index.search(x, k + 1)
    seconds = time.perf_counter() - t0
    print(f"  faiss IndexFlatL2 ({threads} threads): {seconds:.2f} s; process peak RSS {_rss_mb():,.0f} MB "
          f"(was {before:,.0f} MB before)")
    return d, i, seconds


def drop_self(d: np.ndarray, i: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """faiss's k+1 results without the query row itself."""
    n = len(i)
    is_self = i == np.arange(n)[:, None]
    out_i = np.empty((n, k), dtype=np.int64)
    out_d = np.empty((n, k), dtype=np.float32)
    for r in range(n):
        keep = ~is_self[r]
        out_i[r] = i[r][keep][:k]
        out_d[r] = d[r][keep][:k]
    return out_d, out_i


def compare(ours: np.ndarray, fd: np.ndarray, fi: np.ndarray, x: np.ndarray, k: int) -> None:
    oi, od = ours["index"], ours["sqdist"]
    same = np.array([set(a) == set(b) for a, b in zip(oi, fi)])
    print(f"  neighbour sets identical in {same.sum():,} of {len(same):,} rows")
    bad = np.flatnonzero(~same)
    ties = 0
    x64 = x.astype(np.float64)
    for r in bad:
        extra_ours = set(oi[r]) - set(fi[r])
        extra_faiss = set(fi[r]) - set(oi[r])

        def d(j, r=r):
            return float(((x64[r] - x64[j]) ** 2).sum())

        kth = max(d(j) for j in oi[r])
        if all(abs(d(j) - kth) <= 1e-5 * kth for j in extra_ours) and all(
                abs(d(j) - kth) <= 1e-5 * kth for j in extra_faiss):
            ties += 1
    if len(bad):
        print(f"  of the {len(bad)} differing rows, {ties} differ only by ties at the k-th distance (1e-5 relative)")
    print(f"  sets agree (ties aside): {ties == len(bad)}")
    rng = np.random.default_rng(1)
    sample = rng.choice(len(x), 200, replace=False)
    exact = 0
    for r in sample:
        dd = ((x64 - x64[r]) ** 2).sum(axis=1)
        dd[r] = np.inf
        want = np.lexsort((np.arange(len(x)), dd))[:k]
        exact += np.array_equal(want, oi[r])
    print(f"  float64 brute force on {len(sample)} random rows: {exact} identical (order included)")
    print(f"  max |sqdist ours - faiss| = {np.nanmax(np.abs(od.astype(np.float64) - fd)):.2e}")


def faiss_queries(x: np.ndarray, m: int, k: int, threads: int):
    """faiss ``IndexFlatL2`` top-(k+1) of the first ``m`` rows against all ``x``; returns (d, i, seconds)."""
    import faiss

    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    d, i = index.search(x[:m], k + 1)
    seconds = time.perf_counter() - t0
    print(f"  faiss IndexFlatL2 ({threads} threads): {m:,} queries x {len(x):,} rows: {seconds:.2f} s; "
          f"process peak RSS {_rss_mb():,.0f} MB")
    return d, i, seconds


def side_by_side(label: str, m: int, n: int, ours_s: list, faiss_s: list, peak_mb: float) -> None:
    pairs = float(m) * n
    best_o = min(ours_s)
    line = (f"  {label}: {m:,} queries x {n:,} rows = {pairs:.3g} pairs | wxdask {pairs / best_o:.3g} pairs/s "
            f"({best_o:.2f} s)")
    if faiss_s:
        best_f = min(faiss_s)
        line += (
            f" | faiss {pairs / best_f:.3g} pairs/s ({best_f:.2f} s) | time ratio wxdask/faiss {best_o / best_f:.2f}"
        )
    print(line + f" | wxdask cluster memory peak {peak_mb:,.0f} MB")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000, help="database rows of the large run (default 1e6)")
    ap.add_argument(
        "--queries", type=int, default=100_000, help="queries of the large run (its first rows; default 1e5)"
    )
    ap.add_argument("--all-pairs-n", type=int, default=100_000, help="rows of the all-pairs run (default 1e5; 0: skip)")
    ap.add_argument("--dim", type=int, default=50)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--block-size", type=int, default=4096)
    ap.add_argument("--chunk-size", type=int, default=4096)
    ap.add_argument("--memory-limit", default="6GiB")
    ap.add_argument("--skip-faiss", action="store_true")
    ap.add_argument("--repeats", type=int, default=2, help="interleaved runs of each at the all-pairs size")
    args = ap.parse_args()

    import dask.array as da
    from distributed import Client, LocalCluster, wait

    print(f"bench_search: all pairs at N={args.all_pairs_n:,}, then {args.queries:,} queries against N={args.n:,}; "
          f"dim={args.dim}, k={args.k}, {args.workers} workers x 1 thread, block {args.block_size}, "
          f"chunk {args.chunk_size}")
    summary = []
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      memory_limit=args.memory_limit, dashboard_address=":0") as cluster, Client(cluster) as client:
        if args.all_pairs_n:
            xd = da.random.default_rng(0).standard_normal((args.all_pairs_n, args.dim), dtype=np.float32,
                                                          chunks=(args.block_size, -1))
            xd = client.persist(xd)
            wait(xd)
            wxdask_knn(client, xd[:2000], args.k, args.block_size, args.chunk_size)  # warm up the workers
            print(f"N = {args.all_pairs_n:,}, all pairs (runs interleaved: this machine may be shared)")
            x = None if args.skip_faiss else xd.compute()
            ours_t, faiss_t, peaks = [], [], []
            for rep in range(args.repeats):
                ours, t_ours, peak = wxdask_knn(client, xd, args.k, args.block_size, args.chunk_size)
                ours_t.append(t_ours)
                peaks.append(peak)
                if x is not None:
                    fd, fi, t_faiss = faiss_knn(x, args.k, args.workers)
                    faiss_t.append(t_faiss)
                    print(f"  run {rep + 1}: time ratio wxdask / faiss = {t_ours / t_faiss:.2f}")
            if x is not None:
                fd, fi = drop_self(fd, fi, args.k)
                compare(ours, fd, fi, x, args.k)
                del x
            summary.append(("all pairs", args.all_pairs_n, args.all_pairs_n, ours_t, faiss_t, max(peaks)))
            del xd
        if args.n and args.queries:
            m = min(args.queries, args.n)
            print(f"N = {args.n:,}, {m:,} queries")
            xm = client.persist(da.random.default_rng(1).standard_normal((args.n, args.dim), dtype=np.float32,
                                                                          chunks=(args.block_size, -1)))
            wait(xm)
            ours, t_ours, peak = wxdask_knn(client, xm, args.k, args.block_size, args.chunk_size, queries=m)
            faiss_t = []
            if not args.skip_faiss:
                x = xm.compute()
                fd, fi, t_faiss = faiss_queries(x, m, args.k, args.workers)
                faiss_t.append(t_faiss)
                fd, fi = drop_self(fd, fi, args.k)
                same = np.mean([set(a) == set(b) for a, b in zip(ours["index"], fi)])
                print(f"  neighbour sets identical in {100 * same:.2f}% of the {m:,} queries")
                del x
            summary.append((f"N={args.n:.0e}", m, args.n, [t_ours], faiss_t, peak))
        print("summary (best times; pairs = queries x database rows)")
        for row in summary:
            side_by_side(*row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
