"""Embedding: pure blocks, the chunk graph, incremental reruns, missing slots, real Keras encoders."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from wxdask import embed, models, store
from wxdask.errors import ModelError
from wxdask.model import scale_raw
from wxdask.testing import TINY_GRID as GRID
from wxdask.testing import (
    FakeEncoder,
    make_tiny_store,
    raise_if_dask_computes,
    read_raw,
    save_fake_model,
)
from wxdask.testing import embed_config as make_cfg
from wxdask.testing import reference_embeddings as reference

# ----------------------------------------------------------------------------- pure blocks


@pytest.mark.parametrize("batch_size", [1, 2, 5, 100])
def test_embed_block_batches_equal_one_call(batch_size):
    rng = np.random.default_rng(0)
    x = rng.integers(-160, 1100, size=(5, 4, 6)).astype(np.int16)
    enc = FakeEncoder(rng.standard_normal((24, 3)))

    class Raw:
        calls = []

        def predict(self, b):
            self.calls.append(len(b))
            return enc.predict(scale_raw(b))

    raw = Raw()
    got = embed.embed_block(x, raw, batch_size=batch_size)
    want = enc.predict(scale_raw(x))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got.dtype == np.float32
    assert max(raw.calls) <= batch_size and sum(raw.calls) == 5


def test_embed_block_rejects_bad_encoder_output():
    class Bad:
        def predict(self, b):
            return np.zeros((len(b) + 1, 2))

    with pytest.raises(ModelError, match="expected"):
        embed.embed_block(np.zeros((3, 2, 2), np.int16), Bad(), batch_size=2)


def test_chunk_spans_and_todo():
    ok = np.array([[1, 1], [1, 0], [1, 1], [0, 0], [1, 1]], dtype=bool)
    done = np.array([[1, 1], [1, 0], [0, 1], [0, 0], [1, 1]], dtype=bool)
    todo = embed.todo_block(ok, done)
    assert todo.sum() == 1 and todo[2, 0]
    assert embed.chunk_spans(todo, 2) == [(2, 4)]
    assert embed.chunk_spans(np.zeros((3, 1), bool), 2) == []


def test_embed_wrapper_is_lazy(tiny):
    store_cfg, source = tiny
    _, status = read_raw(store_cfg)
    ok = status == 1
    with raise_if_dask_computes():
        tasks = embed.embed(
            store_cfg, ok, ok, 2, source, source.metadata()["hash"], make_cfg(store_cfg, source.path).embed
        )
    assert len(tasks) == 4  # 7 times in chunks of 2
    assert store.open_input(store_cfg, ["refc"]).get("embedding") is None  # nothing was written


# ----------------------------------------------------------------------------- run (in process)


def test_run_equals_bare_encoder_and_missing_stay_nan(tiny):
    store_cfg, source = tiny
    cfg = make_cfg(store_cfg, source.path)
    out = embed.run(cfg, None, source=source)
    assert "embedded 12 images" in out and "2 slots without an image" in out
    ds = store.open_input(store_cfg, ["embedding"])
    got = ds["embedding"].values
    assert got.shape == (7, 2, 8) and got.dtype == np.float32
    want = reference(store_cfg, source)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.isnan(got[2, 1]).all() and np.isnan(got[5, 0]).all()
    assert np.isfinite(got[2, 0]).all()
    assert ds["embedding"].attrs["model_hash"] == source.metadata()["hash"]
    assert ds["embedding"].encoding["chunks"] == (2, 2, 8)  # images_per_task=4 over 2 leads


def test_rerun_embeds_only_new_slots(tiny, monkeypatch):
    store_cfg, source = tiny
    cfg = make_cfg(store_cfg, source.path)
    embed.run(cfg, None, source=source)
    first = store.open_input(store_cfg, ["embedding"])["embedding"].values
    assert "embedded 0 images" in embed.run(cfg, None, source=source)

    # a slot that became ok since (re-ingested) and one whose embedding was lost
    raw, _ = read_raw(store_cfg)
    new = np.full(GRID, 640, dtype=np.int16)
    store.write_region(store_cfg, {"refc": new, "status": np.int8(1)}, (5, 0))
    store.write_region(store_cfg, {"embedding": np.full((2, 2, 8), np.nan, np.float32)}, (slice(0, 2),))
    seen = []
    real = embed.embed_block
    monkeypatch.setattr(embed, "embed_block", lambda x, *a, **k: seen.append(len(x)) or real(x, *a, **k))
    out = embed.run(cfg, None, source=source)
    assert "embedded 5 images" in out and sum(seen) == 5  # 4 lost + 1 new
    got = store.open_input(store_cfg, ["embedding"])["embedding"].values
    np.testing.assert_allclose(got, reference(store_cfg, source), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got[2:5], first[2:5])


def test_other_model_reembeds_everything_with_warning(tiny, tmp_path, caplog):
    store_cfg, source = tiny
    embed.run(make_cfg(store_cfg, source.path), None, source=source)
    other = save_fake_model(tmp_path / "other", GRID, n_latent=6, seed=2)
    with caplog.at_level(logging.WARNING, logger="wxdask.embed"):
        out = embed.run(make_cfg(store_cfg, other.path), None, source=other)
    assert "embedded 12 images" in out
    assert any("embedded again" in r.getMessage() and other.metadata()["hash"] in r.getMessage()
               for r in caplog.records)
    ds = store.open_input(store_cfg, ["embedding"])
    assert ds["embedding"].attrs["model_hash"] == other.metadata()["hash"]
    np.testing.assert_allclose(ds["embedding"].values, reference(store_cfg, other), rtol=1e-5, atol=1e-6)


def test_image_gone_clears_embedding(tiny):
    store_cfg, source = tiny
    cfg = make_cfg(store_cfg, source.path)
    embed.run(cfg, None, source=source)
    store.write_region(store_cfg, {"status": np.int8(5)}, (3, 1))  # found corrupt on re-ingest
    embed.run(cfg, None, source=source)
    got = store.open_input(store_cfg, ["embedding"])["embedding"].values
    assert np.isnan(got[3, 1]).all() and np.isfinite(got[3, 0]).all()


def test_wrong_grid_is_a_model_error(tiny, tmp_path):
    store_cfg, _ = tiny
    other = save_fake_model(tmp_path / "g", (8, 8))
    with pytest.raises(ModelError, match="8x8 grid.*12x20"):
        embed.run(make_cfg(store_cfg, other.path), None, source=other)


def test_model_cache_loads_once_and_checks_hash(tmp_path):
    source = save_fake_model(tmp_path / "m", (4, 4), seed=3)
    h = source.metadata()["hash"]
    key = ("model", os.path.abspath(source.path))
    before = models.LOAD_COUNTS[key]
    a = models.get_encoder(source, h, batch_size=2)
    b = models.get_encoder(source, h, batch_size=2)
    models.get_decoder(source, h, batch_size=2)
    assert a is b and models.LOAD_COUNTS[key] == before + 1
    with pytest.raises(ModelError, match="changed during the run"):
        models.get_model(source, "0" * 16)


def test_framework_env_is_set(monkeypatch):
    for k in models.GPU_MEMORY_ENV:
        monkeypatch.delenv(k, raising=False)
    models.ensure_framework_env()
    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert os.environ["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"


# ----------------------------------------------------------------------------- real Keras models


def test_keras_embeddings_equal_bare_encoder(tmp_path, keras_model_dir):
    from wxdask import model as wm

    store_cfg = make_tiny_store(tmp_path / "s.zarr")
    out = embed.run(make_cfg(store_cfg, keras_model_dir), None)
    assert "embedded 12 images" in out
    got = store.open_input(store_cfg, ["embedding"])["embedding"].values
    raw, status = read_raw(store_cfg)
    enc = wm.encoder_of(wm.load_model(keras_model_dir))
    want = enc.predict(wm.scale_raw(raw.reshape(-1, *GRID))[..., None], verbose=0).reshape(7, 2, 8)
    want[status != 1] = np.nan
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert np.isnan(got[2, 1]).all()


def test_keras_raw_encoder_takes_int16_only(keras_model_dir):
    from wxdask import model as wm

    enc = models.KerasRawEncoder(wm.encoder_of(wm.load_model(keras_model_dir)), clip_max=60.0, batch_size=4)
    assert enc.model.inputs[0].dtype == "int16"
    with pytest.raises(TypeError, match="int16"):
        enc.predict(np.zeros((1, *GRID), np.float32))


JAX_CHECK = textwrap.dedent("""
    import sys
    import numpy as np, keras
    from wxdask import models, model as wm
    assert keras.backend.backend() == "jax"
    m = wm.load_model(sys.argv[1])
    enc = wm.encoder_of(m)
    rng = np.random.default_rng(0)
    raw = rng.integers(-160, 1100, size=(11, 12, 20)).astype(np.int16)
    fast = models.KerasRawEncoder(enc, clip_max=60.0, batch_size=4)
    slow = models.KerasRawEncoder(enc, clip_max=60.0, batch_size=4, fast=False)
    assert fast._jit is not None and slow._jit is None
    want = enc.predict(wm.scale_raw(raw)[..., None], verbose=0)
    np.testing.assert_allclose(fast.predict(raw), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(slow.predict(raw), want, rtol=1e-5, atol=1e-6)
    print("jax ok", fast.predict(raw[:3]).shape)
""")


def test_jax_backend_jitted_encoder_equals_predict(keras_model_dir):
    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    res = subprocess.run([sys.executable, "-c", JAX_CHECK, keras_model_dir], env=env, capture_output=True,
                         text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "jax ok (3, 8)" in res.stdout


@pytest.mark.slow
def test_cli_embed_on_a_local_cluster(tmp_path, keras_model_dir):
    from click.testing import CliRunner

    from wxdask.cli import main

    store_cfg = make_tiny_store(tmp_path / "s.zarr")
    args = ["embed", "--store", store_cfg.url, "--model", keras_model_dir, "--workers", "1",
            "--images-per-task", "4", "--batch-size", "3", "-q"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0, res.output
    assert "embedded 12 images" in res.output and "CPU workers" in res.output
    res = CliRunner().invoke(main, args)
    assert "embedded 0 images" in res.output and "12 already embedded" in res.output


def test_on_an_ingested_store(tmp_path):
    """The real ingest layout (make_refc_store): per-slot status chunks, int16 lead_time, a missing slot."""
    from wxdask.testing import make_refc_store

    store_cfg = make_refc_store(tmp_path / "s.zarr", "2022-06-01T00", "2022-06-01T04", leads=(0, 1),
                                missing="2022-06-01T02/1")
    source = save_fake_model(tmp_path / "fake", (66, 112), n_latent=50)
    out = embed.run(make_cfg(store_cfg, source.path), None, source=source)
    assert "embedded 7 images" in out and "1 slots without an image" in out
    got = store.open_input(store_cfg, ["embedding"])["embedding"].values
    np.testing.assert_allclose(got, reference(store_cfg, source), rtol=1e-5, atol=1e-6)
    assert np.isnan(got[2, 1]).all() and np.isfinite(got[2, 0]).all()


def test_store_grown_after_embedding_embeds_only_new_times(tiny):
    """Ingest extends the store along time (embedding's last time chunk is partly filled)."""
    import dask.array as da
    import pandas as pd
    import xarray as xr

    store_cfg, source = tiny
    cfg = make_cfg(store_cfg, source.path)
    embed.run(cfg, None, source=source)
    before = store.open_input(store_cfg, ["embedding"])["embedding"].values
    ds = store.open_store(store_cfg)
    times = pd.date_range("2022-06-01", periods=10, freq="h").values
    template = xr.Dataset(
        {
            "refc": (
                ("time", "lead_time", "y", "x"),
                da.full((10, 2, *GRID), np.nan, chunks=(1, 1, *GRID), dtype=np.float32),
            )
        },
        coords={"time": times, "lead_time": ds["lead_time"].values, "y": ds["y"].values, "x": ds["x"].values},
    )
    store.init_output(store_cfg, template, {"refc": {"dtype": "int16", "scale_factor": 1 / 16}})
    grown = store.open_input(store_cfg, ["embedding"])["embedding"].values
    assert grown.shape == (10, 2, 8) and np.isnan(grown[7:]).all()
    np.testing.assert_array_equal(grown[:7], before)
    for t in (7, 8, 9):
        store.write_region(store_cfg, {"refc": np.full((2, *GRID), 320, np.int16), "status": np.ones(2, np.int8)},
                           (t, slice(None)))
    assert "embedded 6 images" in embed.run(cfg, None, source=source)
    got = store.open_input(store_cfg, ["embedding"])["embedding"].values
    np.testing.assert_allclose(got, reference(store_cfg, source), rtol=1e-5, atol=1e-6)
