#!/usr/bin/env bash
# End-to-end embedding throughput on one GPU: store -> GPU worker (KERAS_BACKEND=jax) -> embedding.
#
# Made for a single-H200 machine with no network and no TensorFlow, whose python3 has jax (CUDA),
# torch, numpy, xarray, fsspec, pandas, pyyaml, click, msgpack, psutil ... but not keras, dask,
# distributed or zarr. Those come as wheels from a folder carried with the repository.
#
# 1. Here (with network to PyPI), once, from the repository root:
#        bash scripts/bench_embed_gpu.sh --download        # fills wheels/ (~10 MB, git-ignored)
#    which runs, for CPython 3.12 on manylinux x86-64 (the H200 image's python3):
#        python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#            -d wheels/ keras==3.15.1 namex==0.1.0 optree==0.20.0 dask==2026.8.0 distributed==2026.8.0 \
#            partd==1.4.2 locket==1.0.0 tblib==3.2.2 zict==3.0.0 tornado==6.6.1 zarr==3.1.6 \
#            numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0
#    (--no-deps: the machine's own numpy, jax, ml-dtypes, ... must not be shadowed).
# 2. There, from the repository root (wheels/ travels with the working tree):
#        bash scripts/bench_embed_gpu.sh [--images 4096] [--batch-size 64]
#    It installs the wheels into /tmp/wxdask-site (no network, no venv), builds a store of full-grid
#    (1059x1799) synthetic images, starts a LocalCluster with one GPU worker (GPU=1, one thread),
#    warms it (model load + compile, on a small store), then times `wxdask.embed.run` on the big store
#    and prints images/s end to end, plus a bare Keras predict on in-memory images for reference.
#    Everything is bounded by `timeout` to finish within 5 minutes.
#
# Dry run on a CPU machine (tiny grid, jax on CPU, this repository's environment, no install):
#        WXDASK_BENCH_NO_INSTALL=1 JAX_PLATFORMS=cpu bash scripts/bench_embed_gpu.sh --grid coarse --images 96 --allow-cpu
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=${WXDASK_WHEELS:-wheels}
PY=${PYTHON:-python3}
PKGS=(keras==3.15.1 namex==0.1.0 optree==0.20.0 dask==2026.8.0 distributed==2026.8.0 partd==1.4.2
      locket==1.0.0 tblib==3.2.2 zict==3.0.0 tornado==6.6.1 zarr==3.1.6 numcodecs==0.16.6
      donfig==0.8.1.post1 google-crc32c==1.9.0)

if [[ "${1:-}" == "--download" ]]; then
    mkdir -p "$WHEELS"
    "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" "${PKGS[@]}"
    ls -la "$WHEELS"
    exit 0
fi

source scripts/_gpu_env.sh
# zarr: read and decode many chunks of a batch at once
export ZARR_ASYNC__CONCURRENCY=${ZARR_ASYNC__CONCURRENCY:-64} ZARR_THREADING__MAX_WORKERS=${ZARR_THREADING__MAX_WORKERS:-16}

left=$(( 290 - ($(date +%s) - start) ))
timeout --kill-after=5 "$left" "$PY" scripts/_bench_embed_gpu.py "$@"
echo "total $(( $(date +%s) - start )) s"
