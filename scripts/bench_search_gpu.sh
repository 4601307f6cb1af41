#!/usr/bin/env bash
# End-to-end exact all-pairs search throughput on one GPU: store -> GPU worker (KERAS_BACKEND=jax) -> neighbours.
#
# Made for a single-H200 machine with no network and no TensorFlow, whose python3 has jax (CUDA),
# torch, numpy, xarray, ... but not keras, dask, distributed or zarr: those come as wheels from wheels/,
# carried with the repository, exactly as for bench_embed_gpu.sh (same wheel list):
# 1. Here (with network to PyPI), once, from the repository root:
#        bash scripts/bench_embed_gpu.sh --download        # fills wheels/ (git-ignored)
# 2. There, from the repository root (carry wheels/):
#        bash scripts/bench_search_gpu.sh [--n 1000000] [--block-size 8192] [--chunk-size 131072]
#    It installs the wheels into /tmp/wxdask-site (no network, no venv), writes a store of N random
#    50-dim embeddings, starts a LocalCluster with one GPU worker (GPU=1, one thread), warms it on a
#    small store, then times `wxdask.search.run` (all pairs, top-10, exact) end to end and prints
#    pairs/s, checks every search task ran on the GPU worker and a sample of rows against float64
#    brute force, then a bare torch (or jax) GEMM + top-k on the same device for reference.
#    Bounded by `timeout` to finish within 5 minutes.
#
# Dry run on a CPU machine (tiny N, jax on CPU, this repository's environment, no install):
#        WXDASK_BENCH_NO_INSTALL=1 JAX_PLATFORMS=cpu bash scripts/bench_search_gpu.sh --n 20000 --allow-cpu
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/_gpu_env.sh

left=$(( 290 - ($(date +%s) - start) ))
timeout --kill-after=5 "$left" "$PY" scripts/_bench_search_gpu.py "$@"
echo "total $(( $(date +%s) - start )) s"
