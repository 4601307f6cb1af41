"""Training, the plan: grid, architecture, split and resume state, decided and checked before any write.

Part of :mod:`wxdask.train`, which re-exports every name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wxdask import model as wxmodel
from wxdask import store as wxstore
from wxdask.config import ModelConfig, TrainConfig
from wxdask.errors import ModelError, StoreLayoutError
from wxdask.train.data import grid_name, holdout_mask, split_slots, valid_days

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

CHECKPOINT_FILE = "checkpoint-{epoch}.keras"
CHECKPOINT_META = "checkpoint.json"


@dataclass(frozen=True)
class TrainPlan:
    """Everything :func:`fit` needs besides the config, decided (and checked) before any write.

    Attributes
    ----------
    grid, grid_shape : str, tuple of int
        Grid name and ``(ny, nx)``.
    model : ModelConfig
        The architecture to build (fitted to the grid).
    train_slots, heldout_slots : tuple of numpy.ndarray
        ``(time_index, lead_index)`` of each side.
    split : dict
        Recorded in the metadata: rule, anchor day, days and counts of each side.
    times : dict
        First and last initialisation time of each side (ISO strings).
    resume : bool
        Whether a checkpoint of this model exists and is resumed.
    """

    grid: str
    grid_shape: tuple[int, int]
    model: ModelConfig
    train_slots: tuple[np.ndarray, np.ndarray]
    heldout_slots: tuple[np.ndarray, np.ndarray]
    split: dict
    times: dict
    store_url: str
    resume: bool = False


def _fingerprint(grid: str, grid_shape: tuple[int, int], model_cfg: ModelConfig, every: int) -> dict:
    return {
        "grid": grid,
        "grid_shape": [int(s) for s in grid_shape],
        "model": _plain(dataclasses.asdict(model_cfg)),
        "holdout_every": int(every),
    }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _existing_state(model_dir: Path) -> tuple[dict | None, dict | None]:
    """Metadata and checkpoint record already in a model directory, checked for sanity."""
    if model_dir.exists() and not model_dir.is_dir():
        raise ModelError(f"--model {str(model_dir)!r} is a file, not a model directory")
    meta = ckpt = None
    if (model_dir / wxmodel.METADATA_FILE).exists():
        meta = wxmodel.read_metadata(model_dir)
    elif (model_dir / wxmodel.MODEL_FILE).exists():
        raise ModelError(
            f"{str(model_dir)!r} holds a model.keras without metadata.json (not trained by wxdask); "
            "use another --model directory"
        )
    if (model_dir / CHECKPOINT_META).exists():
        ckpt = wxmodel.read_metadata(model_dir, CHECKPOINT_META)
    return meta, ckpt


def _check_same_model(model_dir: Path, record: dict, fingerprint: dict, what: str) -> None:
    old = dict(record.get("fingerprint") or {})
    if "grid_shape" not in old and isinstance(record.get("grid"), dict):  # metadata from elsewhere
        old.update(grid=record["grid"].get("name"), grid_shape=record["grid"].get("shape"))
    if old.get("grid_shape") != fingerprint["grid_shape"]:
        shape = "x".join(str(s) for s in old.get("grid_shape") or ["?", "?"])
        new = "x".join(str(s) for s in fingerprint["grid_shape"])
        raise ModelError(
            f"{str(model_dir)!r} holds a {what} for grid {old.get('grid')!r} ({shape}), but the store has grid "
            f"{fingerprint['grid']!r} ({new}); use another --model directory"
        )
    if old.get("model") != fingerprint["model"]:
        raise ModelError(
            f"{str(model_dir)!r} holds a {what} with another architecture ({old.get('model')}); "
            f"this config builds {fingerprint['model']}; use another --model directory"
        )
    if old.get("holdout_every") != fingerprint["holdout_every"]:
        raise ModelError(
            f"{str(model_dir)!r} holds a {what} trained with train.holdout_every={old.get('holdout_every')}, "
            f"not {fingerprint['holdout_every']}; use another --model directory"
        )


def plan_training(ds: xr.Dataset, model_cfg: ModelConfig, train_cfg: TrainConfig, store_url: str, *,
                  input_shape: tuple[int, int] | None = None, input_name: str | None = None) -> TrainPlan:
    """Decide and check what :func:`fit` will do, reading only the store's small variables.

    ``input_shape`` (with its name ``input_name``) trains a model on inputs of
    another shape than the store's grid (tiles, :mod:`wxdask.tile_model`): the
    architecture is then used as given; the split is the same whole-day split.

    Raises
    ------
    StoreLayoutError
        If the store holds no image with status ok, or the split leaves a side empty.
    ModelError
        If the model directory holds a model for another grid or architecture.
    ConfigError
        If the architecture does not fit the grid.
    """
    refc = ds["refc"]
    ny, nx = (int(s) for s in refc.shape[-2:])
    grid = grid_name(refc.attrs, (ny, nx))
    if input_shape is None:
        fitted = wxmodel.fit_config_to_grid(model_cfg, (ny, nx))
    else:
        fitted, grid, (ny, nx) = model_cfg, input_name or grid, (int(input_shape[0]), int(input_shape[1]))
    fingerprint = _fingerprint(grid, (ny, nx), fitted, train_cfg.holdout_every)

    model_dir = Path(train_cfg.model_dir)
    meta, ckpt = _existing_state(model_dir)
    for record, what in ((meta, "model"), (ckpt, "checkpoint")):
        if record is not None:
            _check_same_model(model_dir, record, fingerprint, what)

    times = ds["time"].values
    leads = ds["lead_time"].values
    if times.size == 0 or leads.size == 0:
        raise StoreLayoutError(f"store {store_url!r} holds no times; ingest a time range first")
    status = np.asarray(ds["status"].values)
    ok = wxstore.ok_code(ds["status"].attrs)
    n_ok = int((status == ok).sum())
    if n_ok == 0:
        raise StoreLayoutError(
            f"store {store_url!r} holds no image with status ok ({times.size} times x {leads.size} leads, "
            f"{times[0]} to {times[-1]}); ingest a time range that the archive has"
        )

    days = valid_days(times, leads)
    previous = ckpt or meta
    if previous is not None and previous.get("split", {}).get("anchor_day"):
        anchor = np.datetime64(previous["split"]["anchor_day"], "D")
    else:
        anchor = np.datetime64(times.min(), "D")
    held = holdout_mask(days, train_cfg.holdout_every, anchor)
    (tr_t, tr_l), (ho_t, ho_l) = split_slots(status, days, held, ok)
    if tr_t.size == 0 or ho_t.size == 0:
        ok_days = np.unique(days[status == ok])
        side = "training" if tr_t.size == 0 else "held-out"
        raise StoreLayoutError(
            f"store {store_url!r} has images on {ok_days.size} day(s) ({ok_days[0]} to {ok_days[-1]}); with "
            f"train.holdout_every={train_cfg.holdout_every} no {side} day is left; ingest more days"
        )
    train_days = np.unique(days[tr_t, tr_l])
    held_days = np.unique(days[ho_t, ho_l])
    split = {
        "by": "valid day (time + lead_time), UTC",
        "rule": "held out when (day - anchor_day) is a multiple of holdout_every",
        "holdout_every": int(train_cfg.holdout_every),
        "anchor_day": str(anchor),
        "train_days": [str(d) for d in train_days],
        "heldout_days": [str(d) for d in held_days],
        "n_train": int(tr_t.size),
        "n_heldout": int(ho_t.size),
        "leads": [int(v) for v in leads],
    }
    span = {
        "train": [_iso(times[tr_t].min()), _iso(times[tr_t].max())],
        "heldout": [_iso(times[ho_t].min()), _iso(times[ho_t].max())],
    }
    return TrainPlan(
        grid=grid,
        grid_shape=(ny, nx),
        model=fitted,
        train_slots=(tr_t, tr_l),
        heldout_slots=(ho_t, ho_l),
        split=split,
        times=span,
        store_url=store_url,
        resume=ckpt is not None,
    )


def _iso(t: np.datetime64) -> str:
    return str(np.datetime64(t, "h"))  # type: ignore[call-overload]  # numpy stubs lack datetime64(datetime64, unit)
