"""Exact all-pairs nearest-neighbour (analog) search in embedding space.

Distances are squared Euclidean, as the seed reported them.

Core (pure numpy): :func:`prepare_base`, :func:`knn_block`, :func:`merge_knn`.
Lazy wrappers: :func:`knn` (a Dask array of neighbours for a Dask array of
queries) and :func:`nearest_neighbours` (every slot of the store's embedding).
I/O: :func:`run` (all pairs, written back to the store). One-off queries (one
time or one image) and their tables and pictures are in :mod:`wxdask.query`.

How the search is blocked: the database (``N x n_latent`` float32, 20 MB for
ten years of hourly analyses) is prepared once, as a single graph key, and
every task holds it; each task takes one block of at most ``block_size``
queries and walks the database in chunks of ``chunk_size`` rows: one GEMM
gives ``-2 q.b + |b|^2`` (the squared distance less ``|q|^2``, which does not
change the ranking), rows keep only the entries at or below their running
k-th best, and a deterministic merge keeps the k best. No task builds more than
a ``block_size x chunk_size`` matrix; the whole run holds ``N x k`` results.
The k distances kept are then recomputed exactly (float64 differences), and
ties are broken by the lower database index (earlier time, then lower lead).

A slot is never its own neighbour; ``exclude_window`` drops every slot whose
initialisation time differs from the query's by less than the window (the
seed's "not within +/- 1 day"; ``0`` drops only the query itself); missing
(NaN) slots are never neighbours and get no neighbours.

Modules, by concern: :mod:`~wxdask.search.prepared` (the neighbour record, the
prepared database, time helpers), :mod:`~wxdask.search.topk` (the blocked
top-k walk over the database), :mod:`~wxdask.search.core` (:func:`knn_block`,
:func:`merge_knn`, one search task), :mod:`~wxdask.search.lazy` (:func:`knn`,
:func:`nearest_neighbours`) and :mod:`~wxdask.search.stage` (GPU placement,
:func:`run`).
"""

from __future__ import annotations

import logging

# The stage lives in submodules; every name the single module had is re-exported here, so callers use
# ``wxdask.search.X`` as before. A test that patches a name to change how another function of the package
# behaves patches the submodule that holds that function (e.g. ``wxdask.search.core._knn_prepared``).
from wxdask.search.core import (  # noqa: F401 - private names, re-exported for callers
    _as_records,
    _exact,
    _knn_prepared,
    _knn_task,
    knn_block,
    merge_knn,
)
from wxdask.search.lazy import (  # noqa: F401 - private names, re-exported for callers
    _search_attrs,
    check_embedding,
    knn,
    nearest_neighbours,
)
from wxdask.search.prepared import (  # noqa: F401 - private names, re-exported for callers
    _FMAX,
    _MISSING,
    _NAT,
    _QSUB,
    _SAMPLE,
    DEVICE_CHUNK,
    NEIGHBOR_DTYPE,
    PreparedBase,
    _hours,
    prepare_base,
    window_hours,
)
from wxdask.search.stage import (  # noqa: F401 - private names, re-exported for callers
    count_found,
    gpu_resources,
    on_gpu,
    run,
)
from wxdask.search.topk import (  # noqa: F401 - private names, re-exported for callers
    _key_score,
    _knn_rows,
    _merge_keys,
    _sample_threshold,
    _score_key,
)

__all__ = [
    "PreparedBase",
    "NEIGHBOR_DTYPE",
    "prepare_base",
    "knn_block",
    "merge_knn",
    "knn",
    "nearest_neighbours",
    "window_hours",
    "check_embedding",
    "gpu_resources",
    "on_gpu",
    "run",
]

logger = logging.getLogger(__name__)
