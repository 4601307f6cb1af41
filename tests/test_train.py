"""Training: the day split, batch order, resume after interruption, GPU-worker placement, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from wxdask import evaluate, train
from wxdask import model as wm
from wxdask import store as wxstore
from wxdask.config import StoreConfig
from wxdask.errors import ClusterError, ModelError, StoreLayoutError
from wxdask.testing import make_store
from wxdask.testing import train_config as tiny_cfg

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def store(coarse_6d_store):
    return coarse_6d_store


def tiny_contract_store(
    path: Path, status_value: int = 1, with_refc: bool = True, grid=(32, 48), nt: int = 48
) -> StoreConfig:
    """A store with the real layout (``wxdask.testing.make_store``), for bad-input cases: every image -10 dBZ."""
    times = np.datetime64("2020-06-01T00", "ns") + np.arange(nt) * np.timedelta64(1, "h")
    refc = np.full((nt, 1, *grid), -10.0)
    return make_store(path, times, (0,), grid=grid, refc=refc, status=np.full((nt, 1), status_value),
                      keep_refc=with_refc)


# ----------------------------------------------------------------------------- pure core


def test_valid_days_cross_midnight_with_leads():
    times = np.array(["2020-06-01T20", "2020-06-01T23"], dtype="datetime64[h]")
    days = train.valid_days(times, np.array([0, 1, 5, 30]))
    assert days.astype(str).tolist() == [
        ["2020-06-01", "2020-06-01", "2020-06-02", "2020-06-03"],
        ["2020-06-01", "2020-06-02", "2020-06-02", "2020-06-03"],
    ]


@pytest.mark.parametrize("every", [2, 3, 5, 7])
def test_split_never_puts_a_heldout_day_in_training(every):
    rng = np.random.default_rng(every)
    times = np.arange(np.datetime64("2020-01-01T00", "h"), np.datetime64("2020-02-15T00", "h"))[::3]
    leads = np.array([0, 1, 6, 18, 30, 48])
    status = rng.choice([0, 1, 1, 1, 2], size=(times.size, leads.size))
    days = train.valid_days(times, leads)
    anchor = np.datetime64("2019-12-30")
    held = train.holdout_mask(days, every, anchor)
    (tr_t, tr_l), (ho_t, ho_l) = train.split_slots(status, days, held)
    train_days = np.unique(days[tr_t, tr_l])
    held_days = np.unique(days[ho_t, ho_l])
    assert train_days.size and held_days.size and not np.intersect1d(train_days, held_days).size
    # every ok slot is on exactly one side; the held-out days are exactly every `every`-th day from the anchor
    assert tr_t.size + ho_t.size == int((status == 1).sum())
    assert set(((held_days - anchor).astype(int) % every).tolist()) == {0}
    assert np.all((train_days - anchor).astype(int) % every != 0)


def test_batch_order_is_a_seeded_permutation_per_epoch():
    a = train.batch_order(50, 16, seed=1, epoch=0)
    assert [len(b) for b in a] == [16, 16, 16, 2]
    assert sorted(np.concatenate(a).tolist()) == list(range(50))
    assert all(np.all(np.diff(b) > 0) for b in a)
    same = train.batch_order(50, 16, seed=1, epoch=0)
    assert all(np.array_equal(x, y) for x, y in zip(a, same))
    other = train.batch_order(50, 16, seed=1, epoch=1)
    assert not all(np.array_equal(x, y) for x, y in zip(a, other))


def test_ok_code_from_flags():
    assert wxstore.ok_code({"flag_values": [0, 3, 2], "flag_meanings": "not_tried ok absent"}) == 3
    assert wxstore.ok_code({"flag_values": [0], "flag_meanings": "a b"}) == 1


# ----------------------------------------------------------------------------- reading and planning


def test_slot_images_is_lazy():
    import dask.array as da

    from wxdask.testing import raise_if_dask_computes

    rng = np.random.default_rng(4)
    refc = da.from_array(rng.integers(-160, 1100, size=(6, 2, 4, 5)).astype(np.int16), chunks=(1, 1, 4, 5))
    with raise_if_dask_computes():
        imgs = train.slot_images(refc, np.array([0, 3, 5]), np.array([1, 0, 1]), 60.0)
    assert imgs.shape == (3, 4, 5, 1) and imgs.dtype == np.float32


def test_read_images_matches_decoded_store(store):
    ds = xr.open_zarr(store.url, consolidated=False)  # decoded: float dBZ with NaN for missing
    ti = np.array([3, 5, 40])
    li = np.array([0, 0, 0])
    got = train.read_images(store, ti, li, 60.0)
    want = wm.scale_input(ds["refc"].values[ti, li])[..., None]
    assert got.shape == (3, 66, 112, 1) and got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_image_cache_serves_later_epochs_without_reading_the_store(store, monkeypatch):
    from wxdask.store import region  # read_slots calls read_region of its own module

    calls = []
    real = region.read_region
    monkeypatch.setattr(region, "read_region", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    cache = train.ImageCache(max_bytes=10 * 66 * 112 * 2)  # ten images
    ti, li = np.array([7, 2, 30]), np.zeros(3, dtype=int)
    first = train.read_images_cached(store, ti, li, 60.0, cache)
    again = train.read_images_cached(store, ti, li, 60.0, cache)
    np.testing.assert_array_equal(first, train.read_images(store, ti, li, 60.0))
    np.testing.assert_array_equal(again, first)
    assert len(calls) == 2  # the first call, and read_images; the cached pass read nothing
    more = train.read_images_cached(store, np.arange(40, 50), np.zeros(10, dtype=int), 60.0, cache)
    assert more.shape == (10, 66, 112, 1) and cache.nbytes <= cache.max_bytes
    assert cache.get((7, 0)) is None and cache.get((49, 0)) is not None  # least recently used went first


def test_plan_splits_by_day_and_records_it(store, tmp_path):
    from wxdask.store import open_input

    cfg = tiny_cfg(store, tmp_path / "m")
    plan = train.plan_training(open_input(store, ["refc", "status"]), cfg.model, cfg.train, store.url)
    assert plan.grid == "coarse" and plan.grid_shape == (66, 112)
    assert plan.split["heldout_days"] == ["2020-06-01", "2020-06-04"]
    assert plan.split["train_days"] == ["2020-06-02", "2020-06-03", "2020-06-05", "2020-06-06"]
    assert (plan.split["n_train"], plan.split["n_heldout"]) == (96, 48)
    assert not (tmp_path / "m").exists()  # planning writes nothing


# ----------------------------------------------------------------------------- training


def _heldout_loss(model, store: StoreConfig, plan: train.TrainPlan) -> float:
    x = train.read_images(store, *plan.heldout_slots, 60.0)
    train.compile_model(model, 1e-3)
    return float(model.evaluate(x, x, batch_size=48, verbose=0))


def test_short_training_lowers_heldout_loss_and_writes_model_dir(store, tmp_path):
    from wxdask.store import open_input

    cfg = tiny_cfg(store, tmp_path / "m", epochs=2)
    plan = train.plan_training(open_input(store, ["refc", "status"]), cfg.model, cfg.train, store.url)
    keras.utils.set_random_seed(cfg.train.seed)
    before = _heldout_loss(wm.build_autoencoder(plan.model, plan.grid_shape), store, plan)

    text = train.run(cfg, None)
    assert str(tmp_path / "m") in text and "trained 2 epochs" in text
    meta = wm.read_metadata(tmp_path / "m")
    after = _heldout_loss(wm.load_model(tmp_path / "m"), store, plan)
    assert after < 0.9 * before, (before, after)
    assert meta["hash"] == wm.model_hash(tmp_path / "m")
    assert meta["grid"] == {"name": "coarse", "shape": [66, 112]}
    assert meta["split"]["heldout_days"] == ["2020-06-01", "2020-06-04"] and meta["split"]["holdout_every"] == 3
    assert meta["times"]["heldout"] == ["2020-06-01T00", "2020-06-04T23"]
    assert len(meta["losses"]["loss"]) == len(meta["losses"]["val_loss"]) == 2
    assert meta["epochs_done"] == 2 and meta["model"]["filters"] == [4, 8]
    assert meta["learning_rate"] == 3e-3  # as configured, not the architecture's default
    assert meta["scaling"]["clip_max"] == 60.0 and "keras" in meta["versions"]
    # a rerun with the same epochs does nothing
    mtime = (tmp_path / "m" / wm.MODEL_FILE).stat().st_mtime_ns
    assert "already trained" in train.run(cfg, None)
    assert (tmp_path / "m" / wm.MODEL_FILE).stat().st_mtime_ns == mtime


def test_short_training_of_the_default_model_improves_on_its_pca_start(store, tmp_path):
    """The default (EOF) model starts at the PCA of the training images; two epochs lower its held-out loss."""
    from wxdask.config import Config

    cfg = Config.from_dict({"store": {"url": store.url}, "dask": {"progress": False},
                            "train": {"model_dir": str(tmp_path / "m"), "epochs": 2, "batch_size": 16,
                                      "holdout_every": 3}})
    assert cfg.model.arch == "eof"
    train.run(cfg, None)
    meta = wm.read_metadata(tmp_path / "m")
    losses = meta["losses"]
    assert meta["model"]["arch"] == "eof" and meta["n_latent"] == 50
    assert meta["train"]["learning_rate"] is None and meta["learning_rate"] == wm.LEARNING_RATES["eof"] == 3e-4
    assert losses["val_loss"][-1] < losses["start_val_loss"], losses
    # the recorded start is the PCA start's held-out loss: rebuilt here, independently of fit()
    from wxdask import eof
    from wxdask.store import open_input

    plan = train.plan_training(open_input(store, ["refc", "status"]), cfg.model, cfg.train, store.url)
    x = train.read_images(store, *plan.train_slots, 60.0)[..., 0]
    n = min(cfg.train.eof_max_images, len(x))
    assert n == len(x)  # all of them: the sample is the whole training side here
    mean, comps = eof.fit_pca(x.reshape(len(x), -1), 50, power_iter=eof.POWER_ITER, seed=cfg.train.seed)
    start = wm.build_autoencoder(plan.model, plan.grid_shape)
    eof.set_eofs(start, mean, comps)
    assert _heldout_loss(start, store, plan) == pytest.approx(losses["start_val_loss"], rel=1e-3)


class Interrupt(Exception):
    pass


def test_resume_after_interruption_matches_an_uninterrupted_run(store, tmp_path):
    from wxdask.store import open_input

    ds = open_input(store, ["refc", "status"])
    full = tiny_cfg(store, tmp_path / "full", epochs=3, lr_schedule="cosine")  # the schedule resumes too
    train.fit(store, full.train, train.plan_training(ds, full.model, full.train, store.url))
    want = wm.read_metadata(tmp_path / "full")["losses"]

    class StopAfterSecondEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise Interrupt

    cut = tiny_cfg(store, tmp_path / "cut", epochs=3, lr_schedule="cosine")
    with pytest.raises(Interrupt):
        train.fit(store, cut.train, train.plan_training(ds, cut.model, cut.train, store.url),
                  callbacks=[StopAfterSecondEpoch()])
    ckpt = json.loads((tmp_path / "cut" / train.CHECKPOINT_META).read_text())
    assert ckpt["epochs_done"] == 2 and len(ckpt["losses"]["loss"]) == 2
    assert not (tmp_path / "cut" / wm.MODEL_FILE).exists()
    # a kill after the next epoch's model file but before its checkpoint.json: that file is not used
    saved = tmp_path / "cut" / ckpt["checkpoint_file"]
    assert [p.name for p in (tmp_path / "cut").glob("checkpoint-*.keras")] == [saved.name]
    (tmp_path / "cut" / train.CHECKPOINT_FILE.format(epoch=3)).write_bytes(b"half-written")

    plan = train.plan_training(ds, cut.model, cut.train, store.url)
    assert plan.resume
    train.run(cut, None)
    got = wm.read_metadata(tmp_path / "cut")
    assert got["epochs_done"] == 3
    np.testing.assert_allclose(got["losses"]["loss"], want["loss"], rtol=1e-3)
    np.testing.assert_allclose(got["losses"]["val_loss"], want["val_loss"], rtol=1e-3)

    # more epochs later continue from the checkpoint, keeping the earlier losses
    more = tiny_cfg(store, tmp_path / "cut", epochs=4, lr_schedule="cosine")
    train.run(more, None)
    again = wm.read_metadata(tmp_path / "cut")
    assert again["epochs_done"] == 4
    assert again["losses"]["loss"][:3] == got["losses"]["loss"]


# ----------------------------------------------------------------------------- bad input: one error, nothing written


def test_store_without_refc_is_one_clear_line(tmp_path):
    from click.testing import CliRunner

    from wxdask.cli import main

    bad = tiny_contract_store(tmp_path / "bad.zarr", with_refc=False)
    result = CliRunner().invoke(
        main, ["train", "--store", bad.url, "--model", str(tmp_path / "m"), "--workers", "1", "-q"]
    )
    assert result.exit_code == 1, result.output
    assert "has no variable 'refc'" in result.output and "wxdask ingest" in result.output
    assert not (tmp_path / "m").exists()


def test_store_without_ok_images_is_an_error(tmp_path):
    bad = tiny_contract_store(tmp_path / "empty.zarr", status_value=2)
    with pytest.raises(StoreLayoutError, match="no image with status ok"):
        train.run(tiny_cfg(bad, tmp_path / "m"), None)
    assert not (tmp_path / "m").exists()


def test_single_day_store_leaves_no_training_day(tmp_path):
    one = tiny_contract_store(tmp_path / "one.zarr", nt=20)
    with pytest.raises(StoreLayoutError, match="no training day"):
        train.run(tiny_cfg(one, tmp_path / "m"), None)


def test_model_dir_for_another_grid_is_refused_and_untouched(store, tmp_path):
    d = tmp_path / "m"
    d.mkdir()
    fingerprint = {"grid": "hrrr", "grid_shape": [1059, 1799], "model": {}, "holdout_every": 3}
    wm.write_metadata(
        d, {"fingerprint": fingerprint, "grid": {"name": "hrrr", "shape": [1059, 1799]}, "epochs_done": 1}
    )
    (d / wm.MODEL_FILE).write_bytes(b"model bytes")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    with pytest.raises(ModelError, match=r"grid 'hrrr' \(1059x1799\).*'coarse' \(66x112\)"):
        train.run(tiny_cfg(store, d), None)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before


# ----------------------------------------------------------------------------- on a GPU worker


def test_trains_as_a_task_on_the_gpu_worker(store, tmp_path):
    from distributed import Client, LocalCluster, Worker, get_task_stream

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        with pytest.raises(ClusterError, match="no worker advertises the GPU"):
            train.run(tiny_cfg(store, tmp_path / "m", on_gpu_worker=True, epochs=1), client)
        cluster.worker_spec["gpu-0"] = {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}}
        cluster.sync(cluster._correct_state)
        client.wait_for_workers(2)
        gpu = [
            a for a, w in client.scheduler_info(n_workers=-1)["workers"].items() if w.get("resources", {}).get("GPU")
        ]
        cfg = tiny_cfg(store, tmp_path / "m", on_gpu_worker=True, epochs=1)
        with get_task_stream(client) as ts:
            text = train.run(cfg, client)
        ran = [t["worker"] for t in ts.data if str(t["key"]).startswith("wxdask-train")]
        with get_task_stream(client) as ts:  # evaluation: the autoencoder on the GPU worker, PCA on the cluster
            evaluate.run(cfg.replace(evaluate={"n_examples": 1}), client)
        scored = [t["worker"] for t in ts.data if str(t["key"]).startswith("autoencoder_stats")]
        others = {t["worker"] for t in ts.data} - set(gpu)
    assert ran == gpu and scored == gpu and others
    assert "trained 1 epochs" in text and (tmp_path / "m" / wm.MODEL_FILE).exists()
    assert "evaluation" in wm.read_metadata(tmp_path / "m")
