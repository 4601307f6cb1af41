# Sourced by the GPU benchmarks (bench_embed_gpu.sh, bench_search_gpu.sh) from the repository root:
# installs the carried wheels (wheels/, filled by `bash scripts/bench_embed_gpu.sh --download`) into
# /tmp/wxdask-site without network, puts them and this repository on PYTHONPATH, and sets the
# framework's GPU memory settings. Sets `start` (epoch seconds) and `PY`.
WHEELS=${WXDASK_WHEELS:-wheels}
PY=${PYTHON:-python3}
start=$(date +%s)
if [[ -z "${WXDASK_BENCH_NO_INSTALL:-}" ]]; then
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        echo "no wheels in $WHEELS/: run 'bash scripts/bench_embed_gpu.sh --download' on a machine with network" >&2
        exit 2
    fi
    SITE=/tmp/wxdask-site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    echo "installed $(ls "$WHEELS"/*.whl | wc -l) wheels into $SITE in $(( $(date +%s) - start )) s"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export KERAS_BACKEND=${KERAS_BACKEND:-jax}
# one process's framework must not take the whole GPU (also set by wxdask.models in each worker)
export XLA_PYTHON_CLIENT_PREALLOCATE=false TF_FORCE_GPU_ALLOW_GROWTH=true TF_CPP_MIN_LOG_LEVEL=2
export PYTHONUNBUFFERED=1
