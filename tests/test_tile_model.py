"""The tile model: training on training-day tiles with echo, held-out evaluation, tile embedding into the store."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from wxdask import model as wm
from wxdask import store as wxstore
from wxdask import tile_embed, tile_evaluate, tile_model, train
from wxdask.config import Config, StoreConfig
from wxdask.errors import ModelError
from wxdask.grid import COARSE
from wxdask.testing import file_digests
from wxdask.tiles import tile_coords

keras = pytest.importorskip("keras")

pytestmark = pytest.mark.timeout(600)

# 8 px (384 km) tiles on the 48 km coarse grid: 8 x 14 per image; a model that halves twice
TILES = {"size_km": 384.0, "n_layers": 2, "pool": 2, "filters": [4, 8], "kernel": 3, "epochs": 2,
         "batch_size": 64, "echo_threshold": 0.05}
ABSENT = (5, 0)  # a slot marked absent in this module's copy of the store


def tile_cfg(store: StoreConfig, model_dir: Path, **tiles) -> Config:
    return Config.from_dict({
        "store": {"url": store.url},
        "train": {"learning_rate": 3e-3, "holdout_every": 3, "seed": 0},
        "tiles": {**TILES, "model_dir": str(model_dir), **tiles},
        "evaluate": {"batch_size": 256, "pca_max_train": 2000},
        "embed": {"images_per_task": 24},
        "dask": {"progress": False},
    })


def copy_store(src: StoreConfig, dst: Path) -> StoreConfig:
    shutil.copytree(src.url, dst)
    return StoreConfig(url=str(dst))


@pytest.fixture(scope="module")
def base_store(tmp_path_factory, coarse_6d_store):
    store = copy_store(coarse_6d_store, tmp_path_factory.mktemp("tiles") / "s.zarr")
    wxstore.write_region(store, {"status": np.int8(2)}, ABSENT)
    wxstore.consolidate(store)
    return store


@pytest.fixture(scope="module")
def trained(base_store, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("tilemodel") / "model"
    cfg = tile_cfg(base_store, model_dir)
    line = tile_model.run_train(cfg, None)
    return cfg, line


def numpy_tiles(store: StoreConfig):
    """Slots, dBZ images and the tiles' echo fractions by direct numpy slicing (the oracle)."""
    ds = xr.open_zarr(store.url, consolidated=False)
    dbz = ds["refc"].values  # decoded: dBZ
    ok = ds["status"].values == 1
    size, ty, tx = 8, 66 // 8, 112 // 8
    r0, c0 = (66 - ty * size) // 2, (112 - tx * size) // 2
    frac = np.full(ok.shape + (ty, tx), np.nan)
    for i in range(ty):
        for j in range(tx):
            t = dbz[..., r0 + i * size : r0 + (i + 1) * size, c0 + j * size : c0 + (j + 1) * size]
            frac[..., i, j] = (t > 0).mean(axis=(-2, -1))
    frac[~ok] = np.nan
    return ds, ok, frac, (r0, c0, size)


def test_training_uses_only_training_day_tiles_with_echo(base_store, tmp_path):
    cfg = tile_cfg(base_store, tmp_path / "m")
    ds = wxstore.open_input(base_store, ["refc", "status"])
    plan, grid, tiling, tr, ho = tile_model.plan_tiles(cfg, ds)
    assert tiling.size == 8 and tiling.shape == (8, 14) and plan.grid_shape == (8, 8)

    nds, ok, frac, _ = numpy_tiles(base_store)
    days = (nds["time"].values.astype("datetime64[D]") - np.datetime64("2020-06-01")).astype(int)
    held_day = (days % 3 == 0)[:, None] & np.ones_like(ok)
    enough = frac >= 0.05
    want_train = enough & (ok & ~held_day)[..., None, None]
    want_held = enough & (ok & held_day)[..., None, None]
    assert len(tr) == int(want_train.sum()) > 0
    assert len(ho) == int(want_held.sum()) > 0
    assert plan.split["n_train"] == len(tr) and plan.split["n_heldout"] == len(ho)
    got = set(zip(tr.slots[0][tr.k].tolist(), tr.slots[1][tr.k].tolist(), tr.iy.tolist(), tr.ix.tolist()))
    assert got == set(map(tuple, np.argwhere(want_train).tolist()))
    assert not held_day[tr.slots[0], tr.slots[1]].any()
    assert ABSENT not in set(zip(tr.slots[0].tolist(), tr.slots[1].tolist()))
    # clear-sky tiles exist and are left out
    assert plan.split["n_train_clear"] == int((ok & ~held_day).sum()) * 112 - len(tr) > 0


def test_short_training_lowers_heldout_tile_loss_and_writes_metadata(trained):
    cfg, line = trained
    model_dir = Path(cfg.tiles.model_dir)
    meta = wm.read_metadata(model_dir)
    assert meta["grid"]["shape"] == [8, 8] and meta["n_latent"] == 50 and meta["clip_max"] == 60.0
    assert meta["tiles"] == {"grid_name": "coarse", "grid_shape": [66, 112], "size": 8, "stride": 8,
                             "offset": [1, 0], "shape": [8, 14], "echo_threshold": 0.05,
                             "echo_dBZ": "a point has echo when > 0 dBZ"}
    assert meta["hash"] == wm.model_hash(model_dir) and meta["epochs_done"] == 2
    assert meta["split"]["heldout_days"] == ["2020-06-01", "2020-06-04"]
    assert "tiles" in line and str(model_dir) in line

    model = wm.load_model(model_dir)  # safe mode
    assert model.get_layer("refc_embedding").units == 50 and model.input_shape[1:] == (8, 8, 1)

    # held-out loss of the same model untrained (same seed) vs trained
    ds = wxstore.open_input(cfg.store, ["refc", "status"])
    plan, _, tiling, _, ho = tile_model.plan_tiles(cfg.replace(tiles={"model_dir": str(model_dir) + "-x"}), ds)
    batches = tile_model._tile_batches_class()(cfg.store, ho, tiling, 256, 60.0, 0, False)
    keras.utils.set_random_seed(0)
    fresh = wm.build_autoencoder(cfg.tiles.model_config(), (8, 8))
    train.compile_model(fresh, 3e-3)
    before = fresh.evaluate(batches, verbose=0)
    assert meta["losses"]["val_loss"][-1] < before

    # a rerun with as many epochs does nothing
    assert "already trained" in tile_model.run_train(cfg, None)


def test_evaluation_writes_tile_scores_for_autoencoder_and_pca(trained):
    cfg, _ = trained
    out = tile_evaluate.run(cfg, None)
    meta = wm.read_metadata(cfg.tiles.model_dir)
    ev = meta["evaluation"]
    keys = {"rmse", "mae", "rmse_echo", "mae_echo", "csi_20", "csi_35", "echo_fraction"}
    assert keys <= set(ev["autoencoder"]) and keys <= set(ev["pca"])
    assert ev["pca"]["n_components"] == 50 and ev["model_hash"] == meta["hash"]
    assert ev["n_heldout"] == meta["split"]["n_heldout"]
    assert all(np.isfinite(ev[m]["rmse"]) and ev[m]["rmse"] > 0 for m in ("autoencoder", "pca"))
    attrs = xr.open_zarr(cfg.store.url, consolidated=False).attrs
    assert attrs[tile_evaluate.STORE_ATTR]["model_hash"] == meta["hash"]
    assert "PCA-50" in out and "autoencoder" in out


def reference_embedding(store: StoreConfig, model_dir: str):
    """Tile embeddings by encoding numpy tiles with the model directly: (time, lead, ty, tx, 50)."""
    ds, ok, frac, (r0, c0, size) = numpy_tiles(store)
    raw = wxstore.read_region(store, "refc", (slice(None),))
    enc = wm.encoder_of(wm.load_model(model_dir))
    nt, nl, ty, tx = frac.shape
    ref = np.full((nt, nl, ty, tx, 50), np.nan, np.float32)
    sel = np.argwhere(frac >= 0.05)
    tiles = np.stack([raw[t, ln, r0 + i * size : r0 + (i + 1) * size, c0 + j * size : c0 + (j + 1) * size]
                      for t, ln, i, j in sel])
    z = np.asarray(enc.predict(wm.scale_raw(tiles)[..., None], verbose=0))
    ref[tuple(sel.T)] = z
    return ref, frac, ok


def test_embed_writes_tile_embedding_equal_to_direct_encoding(trained, tmp_path):
    cfg, _ = trained
    store = copy_store(cfg.store, tmp_path / "e.zarr")
    ecfg = cfg.replace(store={"url": store.url})
    line = tile_embed.run(ecfg, None)

    ds = xr.open_zarr(store.url)
    z, echo = ds["tile_embedding"], ds["tile_echo_fraction"]
    assert z.dims == ("time", "lead_time", "tile_y", "tile_x", "latent") and z.dtype == np.float32
    assert echo.dims == ("time", "lead_time", "tile_y", "tile_x") and echo.dtype == np.float32
    for name, (dims, values) in tile_coords(COARSE, tile_model.tiling_of_model(
            wm.read_metadata(cfg.tiles.model_dir), COARSE, "m")).items():
        assert ds[name].dims == dims
        np.testing.assert_allclose(ds[name].values, values)
    assert ds["tile_y"].dtype == np.int32 and ds["tile_x"].dtype == np.int32
    meta = wm.read_metadata(cfg.tiles.model_dir)
    assert {k: z.attrs[k] for k in ("model_hash", "tile_size", "tile_stride", "tile_offset", "echo_threshold",
                                    "grid_name")} == {"model_hash": meta["hash"], "tile_size": 8, "tile_stride": 8,
                                                      "tile_offset": [1, 0], "echo_threshold": 0.05,
                                                      "grid_name": "coarse"}
    assert z.attrs["model_dir"] == cfg.tiles.model_dir

    ref, frac, ok = reference_embedding(store, cfg.tiles.model_dir)
    np.testing.assert_allclose(echo.values, frac, atol=1e-6)  # NaN where no image, same NaNs
    np.testing.assert_allclose(z.values, ref, rtol=1e-5, atol=1e-5)
    assert np.isnan(z.values[ABSENT]).all() and np.isnan(echo.values[ABSENT]).all()
    n_tiles, n_clear = int((frac >= 0.05).sum()), int((frac < 0.05).sum())
    assert n_clear > 0 and np.isnan(z.values[frac < 0.05]).all()
    assert f"embedded {n_tiles} tiles of {int(ok.sum())} images" in line
    assert f"{n_clear} tiles below echo threshold 0.05 (clear sky)" in line and "1 slots without image" in line

    # a rerun embeds nothing new and changes no value
    again = tile_embed.run(ecfg, None)
    assert "embedded 0 tiles of 0 images" in again
    np.testing.assert_array_equal(xr.open_zarr(store.url)["tile_embedding"].values, z.values)

    # a failed embed (an unloadable model of another hash) leaves the store byte-identical
    bad = tmp_path / "bad"
    shutil.copytree(cfg.tiles.model_dir, bad)
    (bad / "model.keras").write_bytes(b"not a keras model")
    before = file_digests(store.url)
    with pytest.raises(ModelError, match="cannot load model"):
        tile_embed.run(ecfg.replace(tiles={"model_dir": str(bad)}), None)
    assert file_digests(store.url) == before
    assert not list((Path(wxstore.control_url(store)) / "staging").glob("*"))


def test_failed_first_embed_leaves_store_untouched(trained, tmp_path):
    cfg, _ = trained
    store = copy_store(cfg.store, tmp_path / "f.zarr")
    bad = tmp_path / "bad"
    shutil.copytree(cfg.tiles.model_dir, bad)
    (bad / "model.keras").write_bytes(b"junk")
    before = file_digests(store.url)
    with pytest.raises(ModelError):
        tile_embed.run(cfg.replace(store={"url": store.url}, tiles={"model_dir": str(bad)}), None)
    assert file_digests(store.url) == before


def test_tile_embed_tasks_run_on_the_gpu_worker(trained, tmp_path):
    from distributed import get_task_stream

    from wxdask.client import gpu_workers, make_client
    from wxdask.config import DaskConfig

    cfg, _ = trained
    store = copy_store(cfg.store, tmp_path / "g.zarr")
    client = make_client(DaskConfig(n_workers=2, gpu_workers=1, memory_limit="3GiB", progress=False))
    try:
        (gpu,) = gpu_workers(client)
        with get_task_stream(client) as ts:
            line = tile_embed.run(cfg.replace(store={"url": store.url}, embed={"images_per_task": 48}), client)
        tasks = [t for t in ts.data if str(t["key"]).startswith("tile-embed-chunk-")]
        assert len(tasks) == 3 and {t["worker"] for t in tasks} == {gpu}
        assert "1 GPU worker(s)" in line

        # training with train.on_gpu_worker: one task, on the GPU worker
        gcfg = cfg.replace(tiles={"model_dir": str(tmp_path / "gm"), "epochs": 1}, train={"on_gpu_worker": True})
        with get_task_stream(client) as ts:
            assert "trained 1 epochs" in tile_model.run_train(gcfg, client)
        fits = [t for t in ts.data if "fit_tiles" in str(t["key"])]
        assert len(fits) == 1 and fits[0]["worker"] == gpu
        assert wm.read_metadata(tmp_path / "gm")["tiles"]["size"] == 8
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    ref, _, _ = reference_embedding(store, cfg.tiles.model_dir)
    np.testing.assert_allclose(xr.open_zarr(store.url)["tile_embedding"].values, ref, rtol=1e-5, atol=1e-5)


def test_embed_with_another_model_replaces_the_tile_outputs(trained, tmp_path):
    cfg, _ = trained
    store = copy_store(cfg.store, tmp_path / "r.zarr")
    first = cfg.replace(store={"url": store.url})
    tile_embed.run(first, None)
    old = xr.open_zarr(store.url)["tile_embedding"].values

    other = tmp_path / "other"
    tile_model.run_train(first.replace(tiles={"model_dir": str(other), "epochs": 1}, train={"seed": 7}), None)
    second = first.replace(tiles={"model_dir": str(other), "echo_threshold": 0.2})
    line = tile_embed.run(second, None)
    ds = xr.open_zarr(store.url)
    z = ds["tile_embedding"]
    assert z.attrs["model_hash"] == wm.model_hash(other) and z.attrs["echo_threshold"] == 0.2
    frac = ds["tile_echo_fraction"].values
    assert np.isnan(z.values[frac < 0.2]).all() and np.isfinite(z.values[frac >= 0.2]).all()
    assert not np.allclose(np.nan_to_num(z.values), np.nan_to_num(old))
    assert f"embedded {int((frac >= 0.2).sum())} tiles" in line
    assert not list((Path(wxstore.control_url(store)) / "staging").glob("*"))


@pytest.mark.slow
def test_cli_tiles_train_evaluate_embed(base_store, tmp_path):
    from click.testing import CliRunner

    from wxdask.cli import main

    store = copy_store(base_store, tmp_path / "c.zarr")
    model_dir = str(tmp_path / "m")
    sets = [a for k, v in TILES.items() if k not in ("epochs", "filters")
            for a in ("--set", f"tiles.{k}={v}")]
    sets += ["--set", "tiles.filters=[4, 8]", "--set", "train.holdout_every=3", "--workers", "1", "-q"]
    common = ["--store", store.url, "--model", model_dir, "--tiles", *sets]
    res = CliRunner().invoke(main, ["train", *common, "--epochs", "1"])
    assert res.exit_code == 0, res.output
    assert "trained 1 epochs" in res.output and wm.read_metadata(model_dir)["tiles"]["size"] == 8
    res = CliRunner().invoke(main, ["evaluate", *common])
    assert res.exit_code == 0, res.output
    assert "held-out tile evaluation" in res.output
    res = CliRunner().invoke(main, ["embed", *common])
    assert res.exit_code == 0, res.output
    assert "tiles below echo threshold" in res.output and "CPU workers" in res.output
    assert "tile_embedding" in xr.open_zarr(store.url).data_vars
