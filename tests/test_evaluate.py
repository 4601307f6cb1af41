"""Evaluation: metric functions against hand values, chunked == whole, and a held-out run against numpy oracles."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wxdask import evaluate as ev
from wxdask import model as wm
from wxdask import train
from wxdask.errors import ModelError

keras = pytest.importorskip("keras")


# ----------------------------------------------------------------------------- metric functions (hand-computed)


def test_rmse_mae_by_hand():
    truth = np.array([[0.0, 10.0], [20.0, 0.0]])
    pred = np.array([[0.0, 13.0], [16.0, 5.0]])
    # errors 0, 3, -4, 5: squares 0 9 16 25 -> mean 12.5; abs 0 3 4 5 -> mean 3
    assert ev.rmse(truth, pred) == pytest.approx(np.sqrt(12.5))
    assert ev.mae(truth, pred) == pytest.approx(3.0)
    echo = (truth > 0) | (pred > 0)  # excludes only the (0, 0) point
    assert ev.rmse(truth, pred, echo) == pytest.approx(np.sqrt(50 / 3))
    assert ev.mae(truth, pred, echo) == pytest.approx(4.0)
    assert np.isnan(ev.rmse(truth, pred, np.zeros_like(echo)))


def test_csi_by_hand():
    truth = np.array([36.0, 50.0, 20.0, 10.0, 40.0, 0.0])
    pred = np.array([35.0, 30.0, 40.0, 10.0, 34.9, 0.0])
    # >= 35: hits {0}, misses {1, 4}, false alarms {2}
    assert ev.csi(truth, pred, 35.0) == pytest.approx(1 / 4)
    # >= 20: truth {0,1,2,4}, pred {0,1,2,4}: all hits
    assert ev.csi(truth, pred, 20.0) == 1.0
    assert np.isnan(ev.csi(truth, pred, 60.0))


def test_score_stats_pool_over_blocks_like_the_whole():
    rng = np.random.default_rng(0)
    truth = np.where(rng.random((10, 8, 9)) < 0.3, rng.uniform(0, 60, (10, 8, 9)), 0.0)
    pred = np.clip(truth + rng.normal(0, 5, truth.shape), 0, 60)
    total = sum(ev.score_stats(truth[i : i + 3], pred[i : i + 3]) for i in range(0, 10, 3))
    got = ev.scores_from_stats(total)
    echo = (truth > 0) | (pred > 0)
    assert got["rmse"] == pytest.approx(ev.rmse(truth, pred))
    assert got["mae"] == pytest.approx(ev.mae(truth, pred))
    assert got["rmse_echo"] == pytest.approx(ev.rmse(truth, pred, echo))
    assert got["mae_echo"] == pytest.approx(ev.mae(truth, pred, echo))
    assert got["csi_20"] == pytest.approx(ev.csi(truth, pred, 20.0))
    assert got["csi_35"] == pytest.approx(ev.csi(truth, pred, 35.0))
    assert got["echo_fraction"] == pytest.approx(echo.mean())


def test_pca_reconstruction_matches_scikit_learn():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(1)
    x = rng.random((40, 30)).astype(np.float32)
    pca = PCA(n_components=5).fit(x[:30])
    want = pca.inverse_transform(pca.transform(x[30:]))
    got = ev.pca_reconstruct_block(x[30:], pca.mean_, pca.components_)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("block", [1, 4, 7, 20])
def test_pca_stats_chunked_equals_numpy(block):
    import dask.array as da

    rng = np.random.default_rng(2)
    x = np.where(rng.random((13, 24)) < 0.4, rng.random((13, 24)), 0.0).astype(np.float32)
    mean = x.mean(axis=0)
    comps = np.linalg.svd(x - mean, full_matrices=False)[2][:3]
    lazy = ev.pca_stats(da.from_array(x, chunks=(block, 24)), mean, comps, 60.0)
    assert lazy.shape[0] == -(-13 // block)
    got = lazy.sum(axis=0).compute()
    recon = ev.pca_reconstruct_block(x, mean, comps)
    want = ev.score_stats(ev.to_dbz(x, 60.0), ev.to_dbz(recon, 60.0))
    np.testing.assert_allclose(got, want, rtol=1e-6)  # float32 matmul blocking differs per chunk


def test_pca_inputs_and_stats_are_lazy():
    import dask.array as da

    from wxdask.testing import raise_if_dask_computes

    rng = np.random.default_rng(3)
    refc = da.from_array(rng.integers(-160, 1100, size=(6, 2, 4, 5)).astype(np.int16), chunks=(1, 1, 4, 5))
    ti, li = np.array([0, 2, 3, 5, 5]), np.array([0, 1, 0, 0, 1])
    with raise_if_dask_computes():
        x = ev.pca_inputs(refc, ti, li, 60.0, 2)
        stats = ev.pca_stats(x, np.zeros(20, np.float32), np.zeros((3, 20), np.float32), 60.0)
    assert x.shape == (5, 20) and x.numblocks[0] == 3
    assert stats.shape[0] == 3


def test_pick_examples_spreads_over_echo_rich_images():
    frac = np.array([0.0, 0.2, 0.0, 0.3, 0.25, 0.0, 0.4, 0.1])
    got = ev.pick_examples(frac, 3)
    assert got.tolist() == [1, 4, 6]
    assert ev.pick_examples(np.zeros(3), 5).tolist() == [0, 1, 2]


# ----------------------------------------------------------------------------- a held-out run


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, coarse_6d_store):
    from wxdask.testing import train_config as tiny_cfg

    store = coarse_6d_store
    model_dir = tmp_path_factory.mktemp("evaluated") / "model"
    cfg = tiny_cfg(store, model_dir, epochs=2)
    cfg = cfg.replace(evaluate={"n_examples": 2, "batch_size": 20})
    train.run(cfg, None)
    text = ev.run(cfg, None)
    return cfg, text


def test_run_writes_scores_png_and_store_attrs(evaluated):
    from wxdask.store import open_store

    cfg, text = evaluated
    model_dir = cfg.train.model_dir
    meta = wm.read_metadata(model_dir)
    e = meta["evaluation"]
    assert e["model_hash"] == wm.model_hash(model_dir) == meta["hash"]
    assert e["n_heldout"] == 48 and e["heldout_days"] == ["2020-06-01", "2020-06-04"]
    keys = {"rmse", "mae", "rmse_echo", "mae_echo", "csi_20", "csi_35", "echo_fraction"}
    assert keys <= set(e["autoencoder"]) and keys <= set(e["pca"])
    assert e["pca"]["n_components"] == 8 and e["pca"]["n_fit"] == 96
    png = e["examples_png"]
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    attrs = open_store(cfg.store).attrs[ev.STORE_ATTR]
    assert attrs["model_hash"] == e["model_hash"]
    assert attrs["autoencoder"]["rmse"] == pytest.approx(e["autoencoder"]["rmse"])
    assert "autoencoder" in text and "PCA-8" in text and png in text
    json.dumps(attrs)  # plain JSON


def test_autoencoder_scores_match_a_numpy_oracle(evaluated):
    import xarray as xr

    cfg, _ = evaluated
    e = wm.read_metadata(cfg.train.model_dir)["evaluation"]["autoencoder"]
    ds = xr.open_zarr(cfg.store.url, consolidated=False)  # decoded dBZ
    days = ds["time"].values.astype("datetime64[D]")
    held = np.isin(days, np.array(["2020-06-01", "2020-06-04"], dtype="datetime64[D]"))
    x = wm.scale_input(ds["refc"].values[held, 0])[..., None]
    recon = np.asarray(wm.load_model(cfg.train.model_dir).predict(x, batch_size=48, verbose=0))
    truth = np.clip(x[..., 0], 0, 1) * 60.0
    pred = np.clip(recon[..., 0], 0, 1) * 60.0
    echo = (truth > 0) | (pred > 0)
    assert e["rmse"] == pytest.approx(ev.rmse(truth, pred), rel=1e-5)
    assert e["mae"] == pytest.approx(ev.mae(truth, pred), rel=1e-5)
    assert e["rmse_echo"] == pytest.approx(ev.rmse(truth, pred, echo), rel=1e-5)
    assert e["csi_20"] == pytest.approx(ev.csi(truth, pred, 20.0), rel=1e-5, nan_ok=True)


def test_pca_baseline_is_fitted_on_training_days_only(evaluated):
    """dask-ml's randomized PCA scores like an exact PCA fitted on the training days alone."""
    import xarray as xr
    from sklearn.decomposition import PCA

    cfg, _ = evaluated
    e = wm.read_metadata(cfg.train.model_dir)["evaluation"]["pca"]
    ds = xr.open_zarr(cfg.store.url, consolidated=False)
    days = ds["time"].values.astype("datetime64[D]")
    held = np.isin(days, np.array(["2020-06-01", "2020-06-04"], dtype="datetime64[D]"))
    x = wm.scale_input(ds["refc"].values[:, 0]).reshape(days.size, -1)
    pca = PCA(n_components=8, svd_solver="full").fit(x[~held])
    recon = pca.inverse_transform(pca.transform(x[held]))
    want = ev.rmse(ev.to_dbz(x[held], 60.0), ev.to_dbz(recon, 60.0))
    assert e["rmse"] == pytest.approx(want, rel=0.02)
    # fitted on all days (leaking the held-out ones) it would score better than recorded
    leaky = PCA(n_components=8, svd_solver="full").fit(x)
    leak = ev.rmse(ev.to_dbz(x[held], 60.0), ev.to_dbz(leaky.inverse_transform(leaky.transform(x[held])), 60.0))
    assert leak < e["rmse"]


def test_model_for_another_grid_or_missing_is_a_model_error(evaluated, tmp_path):
    cfg, _ = evaluated
    with pytest.raises(ModelError, match="no model metadata"):
        ev.run(cfg.replace(evaluate={"model_dir": str(tmp_path / "none")}), None)
    other = tmp_path / "other"
    other.mkdir()
    (other / wm.MODEL_FILE).write_bytes(b"x")
    wm.write_metadata(other, {"grid": {"name": "hrrr", "shape": [1059, 1799]},
                              "model": {"clip_max": 60, "n_latent": 50}})
    with pytest.raises(ModelError, match="for grid"):
        ev.run(cfg.replace(evaluate={"model_dir": str(other)}), None)
    assert json.loads((other / wm.METADATA_FILE).read_text()).get("evaluation") is None


def test_analog_scores_match_a_numpy_oracle(evaluated):
    """The pixel-space analog forecast and persistence, recomputed by brute force from the store."""
    import xarray as xr

    cfg, text = evaluated
    a = wm.read_metadata(cfg.train.model_dir)["evaluation"]["analogs"]
    assert set(a["methods"]) == {"embedding", "pca", "pixel", "random", "persistence"}
    assert a["window_h"] == 24 and a["horizon"] == 3 and "analog forecasts" in text
    ds = xr.open_zarr(cfg.store.url, consolidated=False)
    dbz = np.clip(ds["refc"].values[:, 0], 0, 60.0)
    hours = ds["time"].values.astype("datetime64[h]").astype(np.int64)
    ok = ds["status"].values[:, 0] == 1
    n = hours.size
    elig = np.array([all(0 <= i + h < n and ok[i + h] and hours[i + h] == hours[i] + h for h in range(4))
                     for i in range(n)])
    held = np.isin(ds["time"].values.astype("datetime64[D]"), np.array(["2020-06-01", "2020-06-04"], "M8[D]"))
    queries = np.flatnonzero(elig & held)
    assert a["n_queries"] == queries.size > 0
    scaled = dbz.reshape(n, -1) / 60.0
    for h in (1, 3):
        se_pix = se_per = 0.0
        for q in queries:
            cands = [c for c in np.flatnonzero(elig) if abs(hours[c] - hours[q]) >= 24]
            d = [((scaled[c] - scaled[q]) ** 2).sum() for c in cands]
            best = cands[int(np.argmin(d))]  # ties: the earlier
            se_pix += ((dbz[best + h] - dbz[q + h]) ** 2).sum()
            se_per += ((dbz[q] - dbz[q + h]) ** 2).sum()
        size = queries.size * dbz[0].size
        assert a["methods"]["pixel"][h - 1]["rmse"] == pytest.approx(np.sqrt(se_pix / size), rel=1e-4)
        assert a["methods"]["persistence"][h - 1]["rmse"] == pytest.approx(np.sqrt(se_per / size), rel=1e-4)
    assert json.dumps(wm.read_metadata(cfg.train.model_dir)["evaluation"]["analogs"])
