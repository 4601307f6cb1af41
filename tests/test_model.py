"""The autoencoder: architecture, scaling, sub-models, save/load, model directory, cross-backend loading."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from wxdask import model as wm
from wxdask.config import ModelConfig
from wxdask.errors import ConfigError, ModelError

keras = pytest.importorskip("keras")

TINY = ModelConfig(n_layers=2, pool=4, filters=(4, 8), kernel=3, n_latent=6, arch="seed")
GRID = (37, 50)  # crops to 32x48, pooled 2x3


def _images(n: int, shape: tuple[int, int] = GRID, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(0, 1, size=(n, *shape, 1)).astype(np.float32)


# ----------------------------------------------------------------------------- scaling


def test_scale_raw_equals_scale_input_of_dbz_bit_for_bit():
    raw = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)
    got = wm.scale_raw(raw)
    want = wm.scale_input(raw.astype(np.float64) / 16)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, want)


def test_scale_input_clips_and_divides():
    x = np.array([-10.0, -0.0625, 0.0, 6.0, 59.9375, 60.0, 75.0, np.nan])
    got = wm.scale_input(x)
    np.testing.assert_allclose(got, [0, 0, 0, 0.1, 59.9375 / 60, 1, 1, 0], rtol=1e-7)
    np.testing.assert_allclose(wm.scale_input(np.array([30.0]), clip_max=40.0), [0.75])


# ----------------------------------------------------------------------------- architecture


def test_full_hrrr_grid_seed_architecture_has_969123_parameters():
    seed = ModelConfig(arch="seed")
    m = wm.build_autoencoder(seed, wm.GRIDS["hrrr"])
    assert m.count_params() == 969_123
    assert wm.build_autoencoder(ModelConfig(arch="seed", upsample_first=True),
                                wm.GRIDS["hrrr"]).count_params() == 969_123
    assert m.get_layer("cropped").output.shape[1:3] == (1024, 1792)
    emb = m.get_layer("refc_embedding")
    assert emb.units == 50 and emb.get_config()["activation"] == "linear"
    assert m.get_layer("encoder_pool_3").output.shape[1:] == (4, 7, 128)
    assert [m.get_layer(f"encoder_conv_{i}").filters for i in range(4)] == [16, 32, 64, 128]
    assert [m.get_layer(f"decoder_conv_{i}").filters for i in range(4)] == [128, 64, 32, 16]
    assert m.output.shape[1:] == (1059, 1799, 1)
    names = [layer.name for layer in m.layers]
    assert names.index("decoder_conv_3") < names.index("decoder_upsamp_3")  # the seed's order by default


def test_coarse_grid_gets_fewer_layers_and_same_bottleneck():
    cfg = wm.fit_config_to_grid(ModelConfig(arch="seed"), wm.GRIDS["coarse"])
    assert (cfg.n_layers, cfg.filters, cfg.n_latent) == (2, (16, 32), 50)
    m = wm.build_autoencoder(cfg, wm.GRIDS["coarse"])
    assert m.get_layer("cropped").output.shape[1:3] == (64, 112)
    assert m.get_layer("encoder_pool_1").output.shape[1:] == (4, 7, 32)
    assert m.output.shape[1:] == (66, 112, 1)


def test_handmade_config_that_does_not_fit_is_an_error():
    with pytest.raises(ConfigError, match="n_layers=3"):
        wm.fit_config_to_grid(ModelConfig(n_layers=3, pool=4, filters=(4, 8, 16), arch="seed"), (66, 112))
    with pytest.raises(ConfigError, match="smaller than pool"):
        wm.build_autoencoder(ModelConfig(arch="seed"), (66, 112))


def test_border_is_zero_and_encoder_decoder_compose_to_the_model():
    keras.utils.set_random_seed(1)
    m = wm.build_autoencoder(TINY, GRID)
    x = _images(3)
    y = np.asarray(m.predict(x, verbose=0))
    (s, n), (w, e) = wm.crop_padding(GRID, 16)
    assert (s, n, w, e) == (2, 3, 1, 1)
    assert np.all(y[:, :s] == 0) and np.all(y[:, -n:] == 0) and np.all(y[:, :, :w] == 0) and np.all(y[:, :, -e:] == 0)
    z = np.asarray(wm.encoder_of(m).predict(x, verbose=0))
    assert z.shape == (3, 6)
    dec = wm.decoder_of(m)
    assert dec.input.shape[1:] == (6,)
    np.testing.assert_allclose(np.asarray(dec.predict(z, verbose=0)), y, rtol=1e-5, atol=1e-6)


def test_decoder_of_a_foreign_model_is_a_model_error():
    inp = keras.Input((4,))
    foreign = keras.Model(inp, keras.layers.Dense(2)(inp))
    with pytest.raises(ModelError, match="refc_embedding"):
        wm.decoder_of(foreign)


# ----------------------------------------------------------------------------- save / load / directory


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny trained-for-a-step model saved as a wxdask model directory."""
    d = tmp_path_factory.mktemp("model")
    keras.utils.set_random_seed(2)
    m = wm.build_autoencoder(TINY, GRID)
    m.compile(optimizer="adam", loss=keras.losses.LogCosh())
    x = _images(8, seed=3)
    m.fit(x, x, epochs=1, batch_size=4, verbose=0)
    m.save(str(d / wm.MODEL_FILE))
    wm.write_metadata(d, {"grid": {"name": "test", "shape": list(GRID)}, "hash": wm.model_hash(d)})
    return d, m, x


def test_save_load_round_trip_same_outputs(saved):
    d, m, x = saved
    loaded = wm.load_model(d)
    np.testing.assert_array_equal(np.asarray(loaded.predict(x, verbose=0)), np.asarray(m.predict(x, verbose=0)))
    np.testing.assert_array_equal(np.asarray(wm.encoder_of(loaded).predict(x, verbose=0)),
                                  np.asarray(wm.encoder_of(m).predict(x, verbose=0)))
    assert wm.read_metadata(d)["hash"] == wm.model_hash(d)
    assert len(wm.model_hash(d)) == 16 and int(wm.model_hash(d), 16) >= 0


def test_model_hash_follows_file_content(saved, tmp_path):
    d, m, _ = saved
    other = tmp_path / "other"
    other.mkdir()
    (other / wm.MODEL_FILE).write_bytes((d / wm.MODEL_FILE).read_bytes())
    assert wm.model_hash(other) == wm.model_hash(d)
    (other / wm.MODEL_FILE).write_bytes((d / wm.MODEL_FILE).read_bytes() + b"\0")
    assert wm.model_hash(other) != wm.model_hash(d)


def test_missing_or_corrupt_model_directory_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="no model at"):
        wm.load_model(tmp_path)
    with pytest.raises(ModelError, match="no model at"):
        wm.model_hash(tmp_path)
    with pytest.raises(ModelError, match="no model metadata"):
        wm.read_metadata(tmp_path)
    (tmp_path / wm.MODEL_FILE).write_bytes(b"not a zip file")
    with pytest.raises(ModelError, match="cannot load model"):
        wm.load_model(tmp_path)
    (tmp_path / wm.METADATA_FILE).write_text("{not json")
    with pytest.raises(ModelError, match="corrupt"):
        wm.read_metadata(tmp_path)


def test_metadata_write_is_json_with_numpy_values(tmp_path):
    wm.write_metadata(tmp_path, {"a": np.float32(1.5), "b": (1, 2), "c": np.arange(2)})
    assert json.loads((tmp_path / wm.METADATA_FILE).read_text()) == {"a": 1.5, "b": [1, 2], "c": [0, 1]}
    assert not list(tmp_path.glob("*.tmp"))


def test_same_embeddings_under_jax_backend(saved, tmp_path):
    """The .keras file written under tensorflow loads in safe mode under jax and embeds the same."""
    pytest.importorskip("jax")
    d, m, x = saved
    np.save(tmp_path / "x.npy", x)
    script = textwrap.dedent(f"""
        import numpy as np, keras
        assert keras.backend.backend() == "jax", keras.backend.backend()
        from wxdask import model as wm
        m = wm.load_model({str(d)!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        np.save({str(tmp_path / "z.npy")!r}, np.asarray(wm.encoder_of(m).predict(x, verbose=0)))
        np.save({str(tmp_path / "y.npy")!r}, np.asarray(wm.decoder_of(m).predict(
            np.asarray(wm.encoder_of(m).predict(x, verbose=0)), verbose=0)))
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    z_tf = np.asarray(wm.encoder_of(m).predict(x, verbose=0))
    z_jax = np.load(tmp_path / "z.npy")
    np.testing.assert_allclose(z_jax, z_tf, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), np.asarray(m.predict(x, verbose=0)), rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- which model a stage uses


def test_resolve_model_explicit_then_recorded_and_never_the_text_none(tmp_path):
    assert wm.resolve_model("a", {"model_dir": "b"}) == wm.ModelDir("a")
    assert wm.resolve_model(None, {"model_dir": "b"}) == wm.ModelDir("b")
    assert wm.resolve_model(tmp_path, {}).path == str(tmp_path)
    for attrs in ({}, {"model_dir": None}, {"model_dir": "None"}, {"model_dir": ""}, None):
        with pytest.raises(ModelError, match="no model directory"):
            wm.resolve_model(None, attrs)
    with pytest.raises(ModelError, match="no model directory"):
        wm.resolve_model("None", {})


def test_check_model_reads_metadata_and_refuses_another_hash(tmp_path):
    from wxdask.testing import save_model_dir_stub

    d = save_model_dir_stub(tmp_path / "m", (6, 7), n_latent=3)
    info = wm.ModelDir(d).metadata()
    assert info == {"hash": wm.model_hash(d), "grid": (6, 7), "n_latent": 3, "clip_max": 60.0}
    assert wm.check_model(wm.ModelDir(d), {"model_hash": info["hash"]}, "s.zarr") == info
    with pytest.raises(ModelError, match="made by model 0123.*holds model"):
        wm.check_model(wm.ModelDir(d), {"model_hash": "0123"}, "s.zarr")
    with pytest.raises(ModelError, match="no model at"):  # a missing directory: the same error class
        wm.check_model(wm.resolve_model(str(tmp_path / "gone"), {}), {"model_hash": "0123"}, "s.zarr")


def test_decode_dbz_clips_to_the_models_range():
    class Scaled:
        def predict(self, z):
            return np.repeat(z[:, :, None, None], 2, axis=3)  # (n, 1, 1, 2): no channel axis

    out = wm.decode_dbz(np.array([[-0.5], [0.25], [2.0]], dtype=np.float32), Scaled(), clip_max=40.0, batch_size=2)
    np.testing.assert_array_equal(out[:, 0, 0, 0], [0.0, 10.0, 40.0])
    with pytest.raises(ValueError, match="n > 0"):
        wm.decode_dbz(np.zeros((0, 3)), Scaled(), clip_max=60.0)
