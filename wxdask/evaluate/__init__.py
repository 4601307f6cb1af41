"""Held-out evaluation of the autoencoder against a PCA baseline.

Core (pure numpy): :func:`rmse`, :func:`mae`, :func:`csi`, :func:`score_stats`,
:func:`scores_from_stats`, :func:`pca_reconstruct_block`, :func:`pick_examples`.
Lazy wrapper: :func:`pca_inputs` (scaled, flattened images of some slots as a
dask array) and :func:`pca_stats` (per-block score sums of the PCA
reconstruction, as a dask array).
I/O: :func:`run`.

Modules: :mod:`~wxdask.evaluate.core` (the numpy core) and
:mod:`~wxdask.evaluate.stage` (the lazy wrappers, the autoencoder's scores,
the pictures and :func:`run`).

Both reconstructions are scored the same way, in dBZ, against the model's view
of the truth (``clip(dBZ, 0, clip_max)``), after clipping each reconstruction
to ``0..clip_max``: RMSE and MAE over all points of all held-out images and
over the points where either image has echo (> 0 dBZ), and the critical
success index ``hits / (hits + misses + false alarms)`` of ``>= 20`` and
``>= 35`` dBZ, all pooled over the held-out images (sums first, ratios last).
The PCA baseline has as many components as the embedding, is fitted with
dask-ml on (a seeded sample of) the training days only, in the same scaled
space as the model's input.
"""

from __future__ import annotations

from wxdask.evaluate.core import (
    STAT_NAMES,
    THRESHOLDS,
    better,
    csi,
    json_safe,
    mae,
    pca_reconstruct_block,
    pick_examples,
    rmse,
    score_stats,
    scores_from_stats,
    to_dbz,
)
from wxdask.evaluate.stage import (
    EXAMPLES_PNG,
    STORE_ATTR,
    autoencoder_stats,
    pca_inputs,
    pca_stats,
    plot_examples,
    run,
    slots_on_days,
)

__all__ = [
    "THRESHOLDS",
    "STAT_NAMES",
    "EXAMPLES_PNG",
    "STORE_ATTR",
    "rmse",
    "mae",
    "csi",
    "score_stats",
    "scores_from_stats",
    "to_dbz",
    "pca_reconstruct_block",
    "pick_examples",
    "better",
    "json_safe",
    "pca_inputs",
    "pca_stats",
    "autoencoder_stats",
    "plot_examples",
    "slots_on_days",
    "run",
]
