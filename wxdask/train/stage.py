"""Training, the stage: :func:`run` (plan, then :func:`~wxdask.train.fitting.fit` here or on a GPU worker).

Part of :mod:`wxdask.train`, which re-exports every name.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from wxdask import model as wxmodel
from wxdask.config import Config
from wxdask.train.fitting import fit
from wxdask.train.plan import plan_training

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

logger = logging.getLogger("wxdask.train")


def run(cfg: Config, client: Client | None) -> str:
    """Train the autoencoder on the store's non-held-out days; write the model directory.

    Parameters
    ----------
    cfg : Config
        Uses ``cfg.store``, ``cfg.model`` and ``cfg.train``.
    client : distributed.Client or None
        With ``train.on_gpu_worker``, training runs as one task on a worker
        with the ``GPU`` resource; otherwise in this process.

    Returns
    -------
    str
        A one-line summary naming the model directory.

    Raises
    ------
    StoreLayoutError, ModelError, ConfigError, ClusterError
        Before anything is written.
    """
    from wxdask import store
    from wxdask.client import here_or_on_gpu

    ds = store.open_input(cfg.store, ["refc", "status"])
    plan = plan_training(ds, cfg.model, cfg.train, cfg.store.url)
    model_dir = Path(cfg.train.model_dir)

    meta = None
    if (model_dir / wxmodel.METADATA_FILE).exists() and (model_dir / wxmodel.MODEL_FILE).exists():
        meta = wxmodel.read_metadata(model_dir)
    if meta is not None and int(meta.get("epochs_done", 0)) >= cfg.train.epochs:
        logger.info("%s already holds a model trained for %d epochs; nothing to do", model_dir, meta["epochs_done"])
        return _summary(meta, model_dir, "already trained")

    meta = here_or_on_gpu(client, cfg.train.on_gpu_worker, fit, cfg.store, cfg.train, plan,
                          key=f"wxdask-train-{os.getpid()}-{id(plan):x}")
    return _summary(meta, model_dir, "trained")


def _summary(meta: dict, model_dir: Path, verb: str) -> str:
    losses = meta.get("losses", {})
    loss = losses.get("loss") or [float("nan")]
    val = [v for v in losses.get("val_loss") or [] if v is not None] or [float("nan")]
    split = meta.get("split", {})
    arch = (meta.get("model") or {}).get("arch", "seed")
    start = losses.get("start_val_loss")
    began = "" if start is None else f" (before training{' = PCA' if arch == 'eof' else ''}: {start:.5f})"
    return (
        f"{model_dir}: {verb} {meta.get('epochs_done')} epochs of model.arch {arch} on {split.get('n_train')} "
        f"images ({len(split.get('train_days', []))} days), {split.get('n_heldout')} held out "
        f"({len(split.get('heldout_days', []))} days); loss {loss[-1]:.5f}, held-out loss {val[-1]:.5f}{began}, "
        f"hash {meta.get('hash')}"
    )
