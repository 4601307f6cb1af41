"""Training the autoencoder from the Zarr store.

Core (pure numpy): :func:`valid_days`, :func:`holdout_mask`,
:func:`split_slots`, :func:`batch_order`.
Lazy wrapper: :func:`slot_images`, the scaled images of some ``(time, lead_time)``
slots as a dask array (one chunk per image; never computed here).
I/O: :func:`fit` (the Keras loop over batches read from the store, one
checkpoint per epoch) and :func:`run`.

The split is by whole days of *valid* time (``time + lead_time``): every
``train.holdout_every``-th day, counted from the first day in the store (day
0 is held out), is held out, so no image valid on a held-out day is ever
trained on. Neighbouring hours are near-copies, so a random split would leak.
The days of each side are recorded in ``metadata.json``.

Images are read lazily, one shuffled batch at a time, through a
``keras.utils.PyDataset`` that the backend prefetches; the archive is never
held in memory. The shuffle order of epoch ``e`` depends only on
``(train.seed, e)``, so a run resumed from a checkpoint sees the same batches
as an uninterrupted one.

Modules, by concern: :mod:`~wxdask.train.data` (the split, batch order and
image reads, with the image cache), :mod:`~wxdask.train.plan`
(:func:`plan_training`), :mod:`~wxdask.train.fitting` (the Keras datasets,
callbacks and checkpoints, :func:`fit`) and :mod:`~wxdask.train.stage`
(:func:`run`).
"""

from __future__ import annotations

import logging

# The stage lives in submodules; every name the single module had is re-exported here, so callers use
# ``wxdask.train.X`` as before. A test that patches a function to see its calls from another function of the
# package patches the submodule that holds the caller.
from wxdask.train.data import (  # noqa: F401 - private names, re-exported for callers
    ImageCache,
    _scale_block,
    batch_order,
    grid_name,
    holdout_mask,
    read_images,
    read_images_cached,
    slot_images,
    split_slots,
    valid_days,
)
from wxdask.train.fitting import (  # noqa: F401 - private names, re-exported for callers
    METADATA_FORMAT,
    _init_eofs,
    _keras_classes,
    _save_model,
    _versions,
    compile_model,
    fit,
    make_datasets,
)
from wxdask.train.plan import (  # noqa: F401 - private names, re-exported for callers
    CHECKPOINT_FILE,
    CHECKPOINT_META,
    TrainPlan,
    _check_same_model,
    _existing_state,
    _fingerprint,
    _iso,
    _plain,
    plan_training,
)
from wxdask.train.stage import (  # noqa: F401 - private names, re-exported for callers
    _summary,
    run,
)

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_META",
    "TrainPlan",
    "valid_days",
    "holdout_mask",
    "split_slots",
    "batch_order",
    "slot_images",
    "read_images",
    "read_images_cached",
    "ImageCache",
    "grid_name",
    "plan_training",
    "fit",
    "run",
]

logger = logging.getLogger(__name__)
