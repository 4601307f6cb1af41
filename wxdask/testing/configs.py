"""The tests' configs (:func:`embed_config`, :func:`train_config`) and the CLI's error check.

:func:`assert_one_error_line` checks a command's stderr. Part of
:mod:`wxdask.testing`, which re-exports every name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wxdask.config import Config, StoreConfig


def embed_config(store_cfg: StoreConfig, model_dir: str, **embed_kw: Any) -> Config:
    """The embed tests' config: batches of 3, 4 images per task, no progress bar."""
    return Config.from_dict({
        "store": {"url": store_cfg.url},
        "embed": {"model_dir": model_dir, "batch_size": 3, "images_per_task": 4, **embed_kw},
        "dask": {"progress": False},
    })


#: The train tests' tiny autoencoder (coarse grid).
TINY_MODEL = {"arch": "seed", "n_layers": 2, "pool": 4, "filters": [4, 8], "kernel": 3, "n_latent": 8}


def train_config(store_cfg: StoreConfig, model_dir: str | Path, **train_kw: Any) -> Config:
    """The train/evaluate tests' config: :data:`TINY_MODEL`, 2 epochs, every 3rd day held out."""
    return Config.from_dict({
        "store": {"url": store_cfg.url},
        "model": TINY_MODEL,
        "train": {"model_dir": str(model_dir), "epochs": 2, "batch_size": 16, "learning_rate": 3e-3,
                  "holdout_every": 3, **train_kw},
        "dask": {"progress": False},
    })


def assert_one_error_line(stderr: str, *needles: str) -> None:
    """``stderr`` is exactly one ``error: ...`` line holding every needle, and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], stderr
