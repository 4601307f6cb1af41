"""K-means weather regimes over every embedding in the store.

Core (pure numpy): :func:`assign_block`, :func:`inertia_block`,
:func:`lloyd_block`, :func:`min_sqdist_block`, :func:`sample_block`,
:func:`reduce_candidates`, :func:`count_by_month`, :func:`size_order`.
Lazy wrappers: :func:`slot_matrix` (the valid embeddings as one Dask array)
and :func:`regimes` (labels and distances of every slot for given centroids).
Fitting and I/O: :func:`fit` (computes; called by :func:`run`) and
:func:`run`, with :func:`cluster_sizes`, :func:`format_sizes` and
:func:`adjusted_rand` for people.

Two engines fit the centroids, both with ``k-means||`` initialisation:

``"dask-ml"``
    :class:`dask_ml.cluster.KMeans`, with DESIGN.md's traps avoided:
    ``init="k-means||"`` (its ``k-means++`` crashes with current
    scikit-learn), ``oversampling_factor`` 10 by default (2 undersamples), and
    the inertia recomputed here (dask-ml's ``inertia_`` sums unsquared
    distances when ``max_iter`` stops the loop). ``tol`` is absolute.
``"lloyd"``
    The same algorithm written on Dask arrays: k-means|| (Bahmani et al. 2012)
    with per-block sampling, weighted reduction of the candidates, then Lloyd
    iterations, each one graph of :func:`lloyd_block` tasks summed in float64.
    It stops when the centroids move less than ``tol`` (absolute, as dask-ml)
    or the assignments no longer change. dask-ml 2025.1's Lloyd step alone
    (scikit-learn's ``pairwise_distances_argmin_min`` per block) takes longer
    than scikit-learn's whole in-memory fit, so this engine is the default;
    ``scripts/bench_cluster.py`` measures both.

Either way the labels, sizes and inertia written to the store come from one
final pass (:func:`assign_block`, :func:`inertia_block`) with the fitted
centroids, clusters numbered by decreasing size.

Modules, by concern: :mod:`~wxdask.kmeans.core` (the numpy core),
:mod:`~wxdask.kmeans.lazy` (the lazy wrappers), :mod:`~wxdask.kmeans.fitting`
(the engines, k-means|| and Lloyd on the cluster) and
:mod:`~wxdask.kmeans.stage` (:func:`run`, the I/O, :func:`adjusted_rand`).
"""

from __future__ import annotations

import logging

# The stage lives in submodules; every name the single module had is re-exported here, so callers use
# ``wxdask.kmeans.X`` as before. A test that patches a name to change how another function of the package
# behaves patches the submodule that holds that function (e.g. ``wxdask.kmeans.fitting.INIT_SAMPLE``).
from wxdask.kmeans.core import (  # noqa: F401 - private names, re-exported for callers
    _SUB,
    _lloyd_task,
    _nearest32,
    _scores,
    assign_block,
    count_by_month,
    inertia_block,
    lloyd_block,
    min_sqdist_block,
    reduce_candidates,
    sample_block,
    size_order,
)
from wxdask.kmeans.fitting import (  # noqa: F401 - private names, re-exported for callers
    DASK_ML_INIT_ROUNDS,
    ENGINES,
    INIT_ROUNDS,
    INIT_SAMPLE,
    KMeansFit,
    _fit_dask_ml,
    _fit_lloyd,
    _label_counts,
    _random_row,
    _round_trip,
    _stack,
    _subsample,
    _sum_parts,
    _total,
    _update_d2,
    fit,
    init_scalable,
)
from wxdask.kmeans.lazy import (  # noqa: F401 - private names, re-exported for callers
    _select,
    regimes,
    slot_matrix,
)
from wxdask.kmeans.stage import (  # noqa: F401 - private names, re-exported for callers
    _plot_path,
    adjusted_rand,
    cluster_sizes,
    format_sizes,
    plot_centroids,
    run,
)

__all__ = [
    "ENGINES",
    "assign_block",
    "inertia_block",
    "lloyd_block",
    "min_sqdist_block",
    "sample_block",
    "reduce_candidates",
    "count_by_month",
    "size_order",
    "slot_matrix",
    "regimes",
    "KMeansFit",
    "init_scalable",
    "fit",
    "run",
    "cluster_sizes",
    "format_sizes",
    "adjusted_rand",
]

logger = logging.getLogger(__name__)
