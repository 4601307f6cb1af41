"""Held-out evaluation, the stage: the lazy PCA wrappers, the autoencoder's scores, the pictures, :func:`run`.

Part of :mod:`wxdask.evaluate`, which re-exports every name.
"""

from __future__ import annotations

import datetime as _dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wxdask import model as wxmodel
from wxdask import store as wxstore
from wxdask import train as wxtrain
from wxdask.config import Config, StoreConfig
from wxdask.errors import ModelError, StoreLayoutError
from wxdask.evaluate.core import (
    THRESHOLDS,
    _stat_names,
    better,
    json_safe,
    pca_reconstruct_block,
    pick_examples,
    rmse,
    score_stats,
    scores_from_stats,
    to_dbz,
)

if TYPE_CHECKING:  # pragma: no cover
    import dask.array as da
    from distributed import Client

__all__ = ["EXAMPLES_PNG", "STORE_ATTR", "pca_inputs", "pca_stats", "autoencoder_stats", "plot_examples",
           "slots_on_days", "run"]

logger = logging.getLogger("wxdask.evaluate")

EXAMPLES_PNG = "heldout_examples.png"
#: Store attribute holding the latest evaluation.
STORE_ATTR = "wxdask_evaluation"

def pca_inputs(refc: da.Array, time_index: np.ndarray, lead_index: np.ndarray, clip_max: float,
               block: int) -> da.Array:
    """Scaled, flattened images of some slots, lazily, ``block`` images per chunk.

    Parameters
    ----------
    refc : dask.array.Array
        The store's ``refc`` as stored (int16 sixteenths of a dB, :func:`wxdask.store.stored_array`).
    time_index, lead_index : numpy.ndarray
        Positions of the slots.
    clip_max : float
        dBZ clip of the model's scaling.
    block : int
        Images per chunk.

    Returns
    -------
    dask.array.Array
        float32 ``(n, ny * nx)``. Nothing is computed.
    """
    import dask.array as da

    ny, nx = refc.shape[-2:]
    parts = []
    for i in range(0, len(time_index), block):
        imgs = wxtrain.slot_images(refc, time_index[i : i + block], lead_index[i : i + block], clip_max)
        parts.append(imgs.rechunk((-1, -1, -1, -1)).reshape(-1, ny * nx))
    return da.concatenate(parts, axis=0)


def pca_stats(x: da.Array, mean: np.ndarray, components: np.ndarray, clip_max: float,
              thresholds: tuple[float, ...] = THRESHOLDS) -> da.Array:
    """Score sums of the PCA reconstruction of every block of ``x``, lazily.

    Returns
    -------
    dask.array.Array
        float64 ``(n_blocks, len(STAT_NAMES))``; sum over axis 0 for the totals.
    """
    n_stats = len(_stat_names(tuple(thresholds)))
    # dask's @derived_from wrapper hides Array.map_blocks' own signature from type checkers
    map_blocks: Any = x.map_blocks
    return map_blocks(
        _pca_stats_block, mean, components, clip_max, tuple(thresholds),
        dtype=np.float64, chunks=((1,) * x.numblocks[0], (n_stats,)),
    )


def _pca_stats_block(x: np.ndarray, mean: np.ndarray, components: np.ndarray, clip_max: float,
                     thresholds: tuple[float, ...]) -> np.ndarray:
    recon = pca_reconstruct_block(x, mean, components)
    return score_stats(to_dbz(x, clip_max), to_dbz(recon, clip_max), thresholds)[None, :]


# ----------------------------------------------------------------------------- I/O


def autoencoder_stats(store_cfg: StoreConfig, model_dir: str, slots: tuple[np.ndarray, np.ndarray],
                      clip_max: float, batch_size: int, n_examples: int,
                      thresholds: tuple[float, ...] = THRESHOLDS) -> dict:
    """Score the autoencoder on some slots; runs here or as a task on a GPU worker.

    Returns
    -------
    dict
        ``stats`` (summed :func:`score_stats`), ``examples`` (indices into the
        slots), ``truth`` and ``recon`` (dBZ of the examples, ``(k, ny, nx)``).
    """
    from wxdask.models import get_model

    model = get_model(wxmodel.ModelDir(str(model_dir)), wxmodel.model_hash(model_dir))
    ti, li = (np.asarray(s) for s in slots)
    total = np.zeros(len(_stat_names(tuple(thresholds))))
    echo = np.zeros(ti.size)
    for start in range(0, ti.size, batch_size):
        x = wxtrain.read_images(store_cfg, ti[start : start + batch_size], li[start : start + batch_size], clip_max)
        recon = np.asarray(model.predict_on_batch(x))
        truth_dbz = to_dbz(x[..., 0], clip_max)
        total += score_stats(truth_dbz, to_dbz(recon[..., 0], clip_max), thresholds)
        echo[start : start + x.shape[0]] = (truth_dbz >= thresholds[0]).mean(axis=(1, 2))
        logger.debug("autoencoder scored %d/%d held-out images", start + x.shape[0], ti.size)
    examples = pick_examples(echo, n_examples)
    x = wxtrain.read_images(store_cfg, ti[examples], li[examples], clip_max)
    recon = np.asarray(model.predict_on_batch(x))
    return {
        "stats": total,
        "examples": examples,
        "truth": to_dbz(x[..., 0], clip_max).astype(np.float32),
        "recon": to_dbz(recon[..., 0], clip_max).astype(np.float32),
    }


def plot_examples(path: str | Path, truth: np.ndarray, ae: np.ndarray, pca: np.ndarray, titles: list[str],
                  clip_max: float, n_latent: int) -> None:
    """Side-by-side PNG: original, autoencoder and PCA reconstruction, one row per example."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    n, ny, nx = truth.shape
    width = 12.0
    height = max(2.0, width / 3 * ny / nx * n + 0.6 * n)
    fig = Figure(figsize=(width, height), layout="constrained")
    axes = fig.subplots(n, 3, squeeze=False)
    im = None
    for i in range(n):
        for j, (img, name) in enumerate(((truth[i], "original"), (ae[i], f"autoencoder ({n_latent} numbers)"),
                                         (pca[i], f"PCA ({n_latent} components)"))):
            ax = axes[i, j]
            im = ax.imshow(np.ma.masked_less_equal(img, 0.0), origin="lower", vmin=0, vmax=clip_max,
                           cmap="turbo", interpolation="nearest")
            label = name if j == 0 else f"{name}, RMSE {rmse(truth[i], img):.2f} dBZ"
            ax.set_title(f"{titles[i]}: {label}" if j == 0 else label, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.6, label="dBZ")
    fig.savefig(str(path), dpi=100)


def slots_on_days(ds: Any, days: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(time_index, lead_index)`` of the ``ok`` slots of ``ds`` whose valid day is one of ``days``."""
    times, leads = ds["time"].values, ds["lead_time"].values
    status = np.asarray(ds["status"].values)
    vd = wxtrain.valid_days(times, leads)
    want = np.isin(vd, np.array(days, dtype="datetime64[D]"))
    ti, li = np.nonzero((status == wxstore.ok_code(ds["status"].attrs)) & want)
    return ti.astype(np.int64), li.astype(np.int64)


def run(cfg: Config, client: Client | None) -> str:
    """Score the model on its held-out days against PCA; write scores and a PNG.

    Scores go into ``metadata.json`` (key ``evaluation``) and the store's
    attributes (``wxdask_evaluation``); the PNG into the model directory.

    Parameters
    ----------
    cfg : Config
        Uses ``cfg.store``, ``cfg.evaluate`` and (for the model directory when
        ``evaluate.model_dir`` is unset, and ``on_gpu_worker``) ``cfg.train``.
    client : distributed.Client or None
        Runs the PCA fit and scoring; the autoencoder runs on a GPU worker when
        ``train.on_gpu_worker``, else here.

    Returns
    -------
    str
        A small table of both methods' scores.

    Raises
    ------
    ModelError
        If the model directory is missing, corrupt, or for another grid.
    StoreLayoutError
        If the store lacks ``refc`` or the held-out days hold no image.
    ConfigError, ClusterError
        With ``train.on_gpu_worker`` and no cluster, or no worker with the GPU resource
        (:func:`wxdask.client.here_or_on_gpu`).
    """
    from wxdask import store
    from wxdask.client import here_or_on_gpu
    from wxdask.eof import fit_pca

    ecfg = cfg.evaluate
    model_dir = Path(ecfg.model_dir or cfg.train.model_dir)
    meta = wxmodel.read_metadata(model_dir)
    if not (model_dir / wxmodel.MODEL_FILE).is_file():
        raise ModelError(f"no model at {str(model_dir / wxmodel.MODEL_FILE)!r}; train one with `wxdask train`")
    info = wxmodel.ModelDir(str(model_dir)).metadata()
    ds = store.open_input(cfg.store, ["refc", "status"])
    refc = ds["refc"]
    stored = store.stored_array(cfg.store)  # int16 sixteenths, lazily: what the PCA baseline scales
    shape = [int(s) for s in refc.shape[-2:]]
    if list(info["grid"]) != shape:
        raise ModelError(
            f"model {str(model_dir)!r} is for grid {meta.get('grid')}, but store {cfg.store.url!r} has grid "
            f"{wxtrain.grid_name(refc.attrs, (shape[0], shape[1]))!r} {shape}; evaluate it on its own store"
        )
    split = meta.get("split") or {}
    clip_max, n_latent = info["clip_max"], info["n_latent"]
    held = slots_on_days(ds, split.get("heldout_days", []))
    train_slots = slots_on_days(ds, split.get("train_days", []))
    if held[0].size == 0:
        raise StoreLayoutError(
            f"store {cfg.store.url!r} holds no ok image on the model's held-out days "
            f"({', '.join(split.get('heldout_days', [])[:5]) or 'none recorded'}); evaluate on the training store"
        )
    if train_slots[0].size == 0:
        raise StoreLayoutError(f"store {cfg.store.url!r} holds no ok image on the model's training days; "
                               "the PCA baseline needs them")
    model_hash = info["hash"]
    logger.info("evaluating %s on %d held-out images (%d days)", model_dir, held[0].size,
                len(split.get("heldout_days", [])))

    # Autoencoder: here, or as one task on a GPU worker.
    args = (cfg.store, str(model_dir), held, clip_max, ecfg.batch_size, ecfg.n_examples)
    ae = here_or_on_gpu(client, cfg.train.on_gpu_worker, autoencoder_stats, *args)
    ae_scores = scores_from_stats(ae["stats"])
    logger.info("autoencoder: %s", _fmt(ae_scores))

    # PCA baseline: fitted with dask-ml on a seeded sample of the training days.
    rng = np.random.default_rng(ecfg.seed)
    n_fit = min(ecfg.pca_max_train, train_slots[0].size)
    pick = np.sort(rng.choice(train_slots[0].size, n_fit, replace=False))
    x_fit = pca_inputs(stored, train_slots[0][pick], train_slots[1][pick], clip_max, ecfg.batch_size)
    if x_fit.nbytes < 2**30:
        x_fit = x_fit.persist()
    n_components = min(n_latent, n_fit, x_fit.shape[1])
    if n_components < n_latent:
        logger.warning("PCA baseline has only %d components (%d training images)", n_components, n_fit)
    mean, components = fit_pca(x_fit, n_components, power_iter=ecfg.pca_power_iter, seed=ecfg.seed)
    del x_fit
    x_held = pca_inputs(stored, held[0], held[1], clip_max, ecfg.batch_size)
    pca_total = pca_stats(x_held, mean, components, clip_max).sum(axis=0).compute()
    pca_scores = scores_from_stats(pca_total)
    logger.info("PCA-%d: %s", n_components, _fmt(pca_scores))

    # Side-by-side examples.
    ex = ae["examples"]
    x_ex = pca_inputs(stored, held[0][ex], held[1][ex], clip_max, max(1, ex.size)).compute()
    pca_ex = to_dbz(pca_reconstruct_block(x_ex, mean, components), clip_max).reshape(-1, *shape)
    times, leads = ds["time"].values, ds["lead_time"].values
    titles = [f"{np.datetime64(times[held[0][i]], 'h')} +{int(leads[held[1][i]])}h" for i in ex]
    png = model_dir / EXAMPLES_PNG
    plot_examples(png, ae["truth"], ae["recon"], pca_ex, titles, clip_max, n_latent)

    # What analogs are worth: analog forecasts of the held-out times, four spaces against persistence.
    from wxdask import analogs
    from wxdask.config import parse_duration
    from wxdask.models import get_encoder

    encoder = get_encoder(wxmodel.ModelDir(str(model_dir)), model_hash, batch_size=ecfg.batch_size)
    window_h = int(parse_duration(cfg.search.exclude_window, "search.exclude_window").astype(np.int64))
    analog = analogs.score_store(cfg.store, encoder, lambda raw: wxmodel.scale_raw(raw, clip_max), mean, components,
                                 split.get("heldout_days", []), clip_max=clip_max, window_h=window_h,
                                 seed=ecfg.seed, batch=ecfg.batch_size)
    logger.info("%s", analogs.format_scores(analog))

    beats = {k: bool(better(k, ae_scores[k], pca_scores[k])) for k in ae_scores if k != "echo_fraction"}
    evaluation = {
        "model_hash": model_hash,
        "model_dir": str(model_dir),
        "store": cfg.store.url,
        "n_heldout": int(held[0].size),
        "heldout_days": split.get("heldout_days", []),
        "units": "dBZ; truth and reconstructions clipped to 0..clip_max; echo = either image > 0 dBZ; "
                 "CSI of value >= threshold",
        "autoencoder": ae_scores,
        "pca": {
            **pca_scores,
            "n_components": int(n_components),
            "n_fit": int(n_fit),
            "fitted_on": "training days only",
            "solver": f"dask-ml randomized, iterated_power={ecfg.pca_power_iter}",
        },
        "autoencoder_better": beats,
        "analogs": analog,
        "examples_png": str(png),
        "evaluated_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    meta = wxmodel.read_metadata(model_dir)
    meta["evaluation"] = evaluation
    wxmodel.write_metadata(model_dir, meta)
    store.set_attrs(cfg.store, {STORE_ATTR: json_safe(evaluation)})
    return _table(evaluation, n_components) + "\n" + analogs.format_scores(analog)


def _fmt(scores: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in scores.items())


def _table(ev: dict, n_components: int) -> str:
    keys = ["rmse", "mae", "rmse_echo", "mae_echo", *[f"csi_{t:g}" for t in THRESHOLDS]]
    head = f"{'':<18}" + "".join(f"{k:>11}" for k in keys)
    rows = [head]
    for label, sc in (("autoencoder", ev["autoencoder"]), (f"PCA-{n_components}", ev["pca"])):
        rows.append(f"{label:<18}" + "".join(f"{sc[k]:>11.3f}" for k in keys))
    won = sum(ev["autoencoder_better"][k] for k in keys)
    return (
        f"held-out evaluation of {ev['model_dir']} ({ev['n_heldout']} images on {len(ev['heldout_days'])} days, "
        f"dBZ):\n" + "\n".join(rows) + f"\nautoencoder better than PCA on {won} of {len(keys)} scores; "
        f"examples: {ev['examples_png']}"
    )
