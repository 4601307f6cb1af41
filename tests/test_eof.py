"""The EOF autoencoder (``model.arch: eof``, the default): PCA start, pooling, sub-models, cross-backend loading."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from wxdask import eof
from wxdask import model as wm
from wxdask.config import ModelConfig

keras = pytest.importorskip("keras")

SMALL = ModelConfig(n_latent=5, branch_filters=(4, 8), refine_filters=4, refine_layers=1)
GRID = (21, 34)


def _fields(n: int, shape: tuple[int, int] = GRID, seed: int = 0) -> np.ndarray:
    """Smooth non-negative blobs in [0, 1], like scaled radar images."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    out = np.zeros((n, *shape), np.float32)
    for i in range(n):
        for _ in range(3):
            cy, cx, r = rng.uniform(0, shape[0]), rng.uniform(0, shape[1]), rng.uniform(2, 6)
            out[i] += rng.uniform(0.2, 0.8) * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r**2))
    return np.clip(out, 0, 1)


def test_default_architecture_is_eof_with_nested_sub_models():
    assert ModelConfig().arch == "eof"
    m = wm.build_autoencoder(SMALL, GRID)
    assert [layer.name for layer in m.layers[1:]] == ["encoder", "decoder"]
    emb = m.get_layer("encoder").get_layer("refc_embedding")
    assert emb.units == 5 and emb.get_config()["activation"] == "linear"
    assert m.output.shape[1:] == (*GRID, 1)
    assert wm.encoder_of(m).output.shape[1:] == (5,)
    assert wm.decoder_of(m).input.shape[1:] == (5,)


def test_starts_exactly_at_pca_and_composes():
    x = _fields(40)
    flat = x.reshape(len(x), -1)
    mean, comps = eof.fit_pca(flat, 5, power_iter=eof.POWER_ITER, seed=0)
    np.testing.assert_allclose(comps @ comps.T, np.eye(5), atol=1e-4)
    keras.utils.set_random_seed(0)
    m = wm.build_autoencoder(SMALL, GRID)
    eof.set_eofs(m, mean, comps)
    z = np.asarray(wm.encoder_of(m).predict(x[..., None], verbose=0))
    np.testing.assert_allclose(z, (flat - mean) @ comps.T, rtol=1e-4, atol=1e-4)
    y = np.asarray(m.predict(x[..., None], verbose=0))[..., 0]
    pca = (z @ comps + mean).reshape(x.shape)
    np.testing.assert_allclose(y, pca, atol=1e-4)  # the refinement's residual starts at zero
    np.testing.assert_allclose(np.asarray(wm.decoder_of(m).predict(z, verbose=0))[..., 0], y, atol=1e-5)


def test_fewer_images_than_components_leaves_the_rest_zero():
    x = _fields(3)
    mean, comps = eof.fit_pca(x.reshape(3, -1), 3, power_iter=2, seed=0)
    m = wm.build_autoencoder(SMALL, GRID)
    eof.set_eofs(m, mean, comps)
    z = np.asarray(wm.encoder_of(m).predict(x[..., None], verbose=0))
    assert np.all(z[:, 3:] == 0)


@pytest.mark.parametrize("shape", [(8, 8), (9, 13), (10, 7)])
@pytest.mark.parametrize("factor", [2, 3, 4])
def test_pool_images_is_keras_same_average_pooling(shape, factor):
    x = np.random.default_rng(1).uniform(0, 1, (2, *shape)).astype(np.float32)
    want = keras.layers.AveragePooling2D(factor, padding="same")(x[..., None])
    np.testing.assert_allclose(eof.pool_images(x, factor), np.asarray(want)[..., 0], rtol=1e-5)


def test_large_grids_pool_the_linear_path():
    assert eof.linear_factor((66, 112), 150_000) == 1
    assert eof.linear_factor((265, 450), 150_000) == 1
    assert eof.linear_factor((1059, 1799), 150_000) == 4
    cfg = ModelConfig(n_latent=4, branch_filters=(2, 2), refine_filters=2, refine_layers=1, linear_max_points=150)
    m = wm.build_autoencoder(cfg, GRID)  # 11x17 blocks of 2x2 are still > 150 points: 3x3 blocks, 7x12
    f = eof.linear_factor(GRID, 150)
    assert f == 3
    enc = m.get_layer("encoder")
    assert enc.get_layer("eof_flatten").output.shape[1] == 7 * 12
    assert m.output.shape[1:] == (*GRID, 1)
    x = _fields(30)
    pooled = eof.pool_images(x, f).reshape(30, -1)
    mean, comps = eof.fit_pca(pooled, 4, power_iter=2, seed=0)
    eof.set_eofs(m, mean, comps)
    z = np.asarray(wm.encoder_of(m).predict(x[..., None], verbose=0))
    np.testing.assert_allclose(z, (pooled - mean) @ comps.T, rtol=1e-4, atol=1e-4)


def test_full_hrrr_grid_builds_with_a_50_number_embedding():
    m = wm.build_autoencoder(ModelConfig(), wm.GRIDS["hrrr"])
    assert m.output.shape[1:] == (1059, 1799, 1)
    assert m.get_layer("encoder").get_layer("refc_embedding").units == 50
    assert m.get_layer("decoder").get_layer("eof_decode").units == 265 * 450
    # everything but the full-resolution refinement works at the 4x4 block means: the size of the 12 km grid's model
    assert m.count_params() == wm.build_autoencoder(ModelConfig(), (265, 450)).count_params() == 15_951_749


def test_saved_eof_model_loads_in_safe_mode_under_jax(tmp_path):
    pytest.importorskip("jax")
    x = _fields(6)
    keras.utils.set_random_seed(3)
    m = wm.build_autoencoder(SMALL, GRID)
    mean, comps = eof.fit_pca(x.reshape(6, -1), 5, power_iter=2, seed=0)
    eof.set_eofs(m, mean, comps)
    m.compile(optimizer="adam", loss=keras.losses.LogCosh())
    m.fit(x[..., None], x[..., None], epochs=1, batch_size=3, verbose=0)  # the residual is no longer zero
    m.save(str(tmp_path / wm.MODEL_FILE))
    np.save(tmp_path / "x.npy", x[..., None])
    script = textwrap.dedent(f"""
        import numpy as np, keras
        assert keras.backend.backend() == "jax", keras.backend.backend()
        from wxdask import model as wm
        m = wm.load_model({str(tmp_path)!r})
        x = np.load({str(tmp_path / "x.npy")!r})
        z = np.asarray(wm.encoder_of(m).predict(x, verbose=0))
        np.save({str(tmp_path / "z.npy")!r}, z)
        np.save({str(tmp_path / "y.npy")!r}, np.asarray(wm.decoder_of(m).predict(z, verbose=0)))
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    loaded = wm.load_model(tmp_path)
    np.testing.assert_allclose(np.load(tmp_path / "z.npy"), np.asarray(wm.encoder_of(loaded).predict(x[..., None],
                               verbose=0)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), np.asarray(m.predict(x[..., None], verbose=0)),
                               rtol=1e-4, atol=1e-5)
