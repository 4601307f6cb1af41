"""Decoding: reconstruction scores, compression ratios, the PNG, and real Keras decoders."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from wxdask import decode, embed, models, store
from wxdask.config import Config
from wxdask.errors import ConfigError, ModelError, StoreLayoutError
from wxdask.model import ModelDir
from wxdask.testing import TINY_GRID as GRID
from wxdask.testing import embed_config as make_cfg
from wxdask.testing import (
    make_tiny_store,
    raise_if_dask_computes,
    read_raw,
    save_fake_model,
    save_keras_model,
)


def dcfg(store_cfg, model_dir: str) -> Config:
    return make_cfg(store_cfg, model_dir).replace(decode={"model_dir": model_dir, "batch_size": 3})


@pytest.fixture
def embedded(tiny):
    store_cfg, source = tiny
    embed.run(make_cfg(store_cfg, source.path), None, source=source)
    return store_cfg, source


def test_decode_wrapper_is_lazy(embedded):
    store_cfg, source = embedded
    ds = store.open_input(store_cfg, ["embedding"])
    valid = (ds["status"].values == 1) & np.isfinite(ds["embedding"].values).all(axis=2)
    with raise_if_dask_computes():
        tasks = decode.decode(store_cfg, valid, 2, source, source.metadata()["hash"], 60.0,
                              dcfg(store_cfg, source.path).decode)
    assert len(tasks) == 4  # 7 times in chunks of 2
    assert "reconstruction_rmse" not in store.open_store(store_cfg)  # nothing was written


def test_rmse_and_ratios_written(embedded):
    store_cfg, source = embedded
    out = decode.run(dcfg(store_cfg, source.path), None, source=source)
    assert "decoded 12 embeddings" in out and "RMSE median" in out
    ds = store.open_input(store_cfg, ["reconstruction_rmse"])
    rmse = ds["reconstruction_rmse"].values

    raw, status = read_raw(store_cfg)
    z = ds["embedding"].values
    model = source.load()
    for t, lead in [(0, 0), (3, 1), (6, 0)]:
        dec = np.clip((z[t, lead] @ model["decoder"]).reshape(GRID), 0, 1) * 60
        orig = np.clip(raw[t, lead] / 16.0, 0, 60)
        assert rmse[t, lead] == pytest.approx(np.sqrt(np.mean((orig - dec) ** 2)), rel=1e-4)
    assert np.isnan(rmse[2, 1]) and np.isnan(rmse[5, 0])
    assert ds["reconstruction_rmse"].attrs["model_hash"] == source.metadata()["hash"]

    # stored bytes of each image chunk on disk over 8 float32 numbers
    stored = ds["compression_ratio_stored"].values
    chunk_file = Path(store_cfg.url) / "refc" / "c" / "3" / "1" / "0" / "0"
    assert stored[3, 1] == pytest.approx(chunk_file.stat().st_size / 32)
    grib = ds["compression_ratio_grib"].values
    assert grib[4, 0] == pytest.approx(ds["grib_bytes"].values[4, 0] / 32)
    assert np.isnan(stored[2, 1]) and np.isnan(grib[5, 0])
    assert ds["compression_ratio_stored"].attrs["uncompressed_image_ratio"] == pytest.approx(12 * 20 * 2 / 32)


def test_without_grib_bytes_only_stored_ratio(embedded, caplog):
    store_cfg, source = embedded
    store.drop_variables(store_cfg, ["grib_bytes"])
    with caplog.at_level(logging.WARNING, logger="wxdask.decode"):
        out = decode.run(dcfg(store_cfg, source.path), None, source=source)
    assert "no grib_bytes" in out and any("only the stored-image" in r.getMessage() for r in caplog.records)
    ds = store.open_input(store_cfg, ["compression_ratio_stored"])
    assert np.isfinite(ds["compression_ratio_stored"].values[0, 0])
    assert np.isnan(ds["compression_ratio_grib"].values).all()


def test_decode_with_another_model_is_an_error(embedded, tmp_path):
    store_cfg, _ = embedded
    other = save_fake_model(tmp_path / "other", GRID, n_latent=8, seed=9)
    with pytest.raises(ModelError, match="made by model"):
        decode.run(dcfg(store_cfg, other.path), None, source=other)


def test_png_of_one_slot(embedded, tmp_path):
    store_cfg, source = embedded
    out = tmp_path / "pair.png"
    msg = decode.decode_png(dcfg(store_cfg, source.path), "2022-06-01T03", 1, str(out), source=source)
    assert str(out) in msg and "RMSE" in msg and "lead 1 h" in msg
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000

    # default slot: the embedded one with the largest GRIB message
    msg = decode.decode_png(dcfg(store_cfg, source.path), out=str(tmp_path / "auto.png"), source=source)
    ds = store.open_input(store_cfg, ["grib_bytes"])
    t, lead = np.unravel_index(np.argmax(np.where(ds["status"].values == 1, ds["grib_bytes"].values, -1)), (7, 2))
    assert f"lead {int(ds['lead_time'].values[lead])} h" in msg
    assert np.datetime_as_string(ds["time"].values[t], unit="h") in msg


def test_png_errors_name_the_problem(embedded, tmp_path):
    store_cfg, source = embedded
    cfg = dcfg(store_cfg, source.path)
    with pytest.raises(ConfigError, match="not in the store"):
        decode.decode_png(cfg, "2023-01-01T00", 0, str(tmp_path / "x.png"), source=source)
    with pytest.raises(ConfigError, match="lead 7"):
        decode.decode_png(cfg, "2022-06-01T00", 7, str(tmp_path / "x.png"), source=source)
    with pytest.raises(StoreLayoutError, match="image is missing"):
        decode.decode_png(cfg, "2022-06-01T02", 1, str(tmp_path / "x.png"), source=source)


def test_keras_decode_close_to_model_reconstruction(tmp_path):
    pytest.importorskip("keras")
    from wxdask import model as wm

    model_dir = save_keras_model(tmp_path / "model", seed=3)
    store_cfg = make_tiny_store(tmp_path / "s.zarr")
    embed.run(make_cfg(store_cfg, model_dir), None)
    out = decode.run(dcfg(store_cfg, model_dir), None)
    assert "decoded 12 embeddings" in out

    m = wm.load_model(model_dir)
    raw, status = read_raw(store_cfg)
    z = store.open_input(store_cfg, ["embedding"])["embedding"].values
    src = ModelDir(model_dir)
    decoder = models.get_decoder(src, src.metadata()["hash"], batch_size=4)
    ok = np.argwhere(status == 1)
    decoded = decode.decode_block(z[ok[:, 0], ok[:, 1]], decoder, clip_max=60.0, batch_size=4)
    own = np.clip(m.predict(wm.scale_raw(raw[ok[:, 0], ok[:, 1]])[..., None], verbose=0)[..., 0], 0, 1) * 60
    np.testing.assert_allclose(decoded, own, atol=1e-3)
    assert np.abs(own).max() > 0.01  # not a trivially zero image

    rmse = store.open_input(store_cfg, ["reconstruction_rmse"])["reconstruction_rmse"].values
    orig = np.clip(raw[ok[:, 0], ok[:, 1]] / 16.0, 0, 60)
    want = np.sqrt(((orig - own) ** 2).mean(axis=(1, 2)))
    np.testing.assert_allclose(rmse[ok[:, 0], ok[:, 1]], want, rtol=1e-3)


def test_cli_decode_png_and_errors(tmp_path):
    pytest.importorskip("keras")
    from click.testing import CliRunner

    from wxdask.cli import main

    model_dir = save_keras_model(tmp_path / "model")
    store_cfg = make_tiny_store(tmp_path / "s.zarr")
    embed.run(make_cfg(store_cfg, model_dir), None)
    png = tmp_path / "one.png"
    res = CliRunner().invoke(main, ["decode", "--store", store_cfg.url, "--model", model_dir,
                                    "--time", "2022-06-01T04", "--lead", "1", "--out", str(png)])
    assert res.exit_code == 0, res.output
    assert "RMSE" in res.output and png.stat().st_size > 5000
    res = CliRunner().invoke(main, ["decode", "--store", store_cfg.url, "--model", model_dir,
                                    "--time", "2022-06-01T02", "--lead", "1"])
    assert res.exit_code == 1 and "image is missing" in res.output
