"""Numpy stand-ins for the model (:func:`save_fake_model`, :class:`FakeModelSource`), and a tiny real Keras one.

Keras is imported only inside :func:`save_keras_model`. Part of
:mod:`wxdask.testing`, which re-exports every name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wxdask.config import StoreConfig
from wxdask.testing.stores import TINY_GRID, read_raw


class FakeEncoder:
    """A numpy encoder: scaled images ``(n, ny, nx[, 1])`` -> ``(n, n_latent)`` by a fixed linear map.

    Examples
    --------
    >>> import numpy as np
    >>> enc = FakeEncoder(np.ones((6, 2), dtype=np.float32))
    >>> enc.predict(np.ones((1, 2, 3, 1), dtype=np.float32))
    array([[6., 6.]], dtype=float32)
    """

    def __init__(self, weights: Any) -> None:
        import numpy as np

        self.weights = np.asarray(weights, dtype=np.float32)

    def predict(self, x: Any, **kwargs: Any) -> Any:
        import numpy as np

        x = np.asarray(x, dtype=np.float32)
        return x.reshape(x.shape[0], -1) @ self.weights


class FakeDecoder:
    """A numpy decoder: ``(n, n_latent)`` -> scaled images ``(n, ny, nx, 1)`` (pseudo-inverse of the encoder)."""

    def __init__(self, weights: Any, grid_shape: tuple[int, int]) -> None:
        import numpy as np

        self.weights = np.asarray(weights, dtype=np.float32)
        self.grid_shape = tuple(grid_shape)

    def predict(self, z: Any, **kwargs: Any) -> Any:
        import numpy as np

        z = np.asarray(z, dtype=np.float32)
        return (z @ self.weights).reshape(z.shape[0], *self.grid_shape, 1)


def save_fake_model(model_dir: str | Path, grid_shape: tuple[int, int], n_latent: int = 8, seed: int = 0,
                    clip_max: float = 60.0) -> FakeModelSource:
    """Write a fake model (numpy weights + metadata) to ``model_dir`` and return its source.

    The hash changes with ``seed`` (as a retrained model's would).
    """
    import hashlib
    import json

    import numpy as np

    path = Path(model_dir)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ny, nx = grid_shape
    enc = (rng.standard_normal((ny * nx, n_latent)) / np.sqrt(ny * nx)).astype(np.float32)
    dec = np.linalg.pinv(enc).astype(np.float32)
    np.savez(path / "fake_model.npz", encoder=enc, decoder=dec)
    digest = hashlib.sha256((path / "fake_model.npz").read_bytes()).hexdigest()[:16]
    meta = {"hash": digest, "grid": [ny, nx], "n_latent": n_latent, "clip_max": clip_max}
    (path / "fake_metadata.json").write_text(json.dumps(meta))
    return FakeModelSource(str(path))


def save_model_dir_stub(model_dir: str | Path, grid_shape: tuple[int, int], n_latent: int = 8,
                        content: bytes = b"not a keras model") -> str:
    """Write a model directory that :class:`wxdask.model.ModelDir` reads the metadata of, but cannot load.

    Its hash is that of ``content``: enough to test which model a stage picks
    and that a model of another hash is refused before anything is loaded.

    Returns
    -------
    str
        The directory.
    """
    from wxdask import model as wm

    path = Path(model_dir)
    path.mkdir(parents=True, exist_ok=True)
    (path / wm.MODEL_FILE).write_bytes(content)
    wm.write_metadata(path, {"grid": {"name": "stub", "shape": list(grid_shape)},
                             "model": {"n_latent": n_latent, "clip_max": 60.0}, "hash": wm.model_hash(path)})
    return str(path)


@dataclass(frozen=True)
class FakeModelSource:
    """A :class:`wxdask.models.ModelSource` for a :func:`save_fake_model` directory (numpy, no Keras).

    The test double of :class:`wxdask.model.ModelDir`: the same protocol, loaded through the same cache.
    """

    path: str

    def metadata(self) -> dict:
        import json

        meta = json.loads((Path(self.path) / "fake_metadata.json").read_text())
        meta["grid"] = tuple(meta["grid"])
        return meta

    def load(self) -> Any:
        import numpy as np

        with np.load(Path(self.path) / "fake_model.npz") as data:
            return {"encoder": data["encoder"], "decoder": data["decoder"]}

    def encoder(self, model: Any, *, batch_size: int) -> Any:
        return HostScaledEncoder(FakeEncoder(model["encoder"]), self.metadata()["clip_max"])

    def decoder(self, model: Any, *, batch_size: int) -> Any:
        return FakeDecoder(model["decoder"], self.metadata()["grid"])


class HostScaledEncoder:
    """A raw-int16 encoder made of a scaled-input one: scales stored int16 images on the host, then calls it.

    Parameters
    ----------
    encoder : Predictor
        Scaled images ``(n, ny, nx, 1)`` -> ``(n, n_latent)``.
    clip_max : float
        The model's clip.
    """

    def __init__(self, encoder: Any, clip_max: float) -> None:
        self.encoder = encoder
        self.clip_max = clip_max

    def predict(self, x: Any) -> Any:
        from wxdask.model import scale_raw

        return self.encoder.predict(scale_raw(x, self.clip_max)[..., None])


def reference_embeddings(store_cfg: StoreConfig, source: FakeModelSource) -> Any:
    """A bare :class:`FakeEncoder` run on the store's images: ``(time, lead, latent)``, NaN where not ok."""
    from wxdask.model import scale_raw

    raw, status = read_raw(store_cfg)
    enc = FakeEncoder(source.load()["encoder"])
    z = enc.predict(scale_raw(raw.reshape(-1, *raw.shape[2:]))[..., None])
    z = z.reshape(*raw.shape[:2], -1)
    z[status != 1] = float("nan")
    return z


def save_keras_model(model_dir: str | Path, grid: tuple[int, int] = TINY_GRID, n_latent: int = 8,
                     seed: int = 0) -> str:
    """A tiny untrained Keras autoencoder saved as a model directory (model.keras + metadata.json)."""
    import keras

    from wxdask import model as wm
    from wxdask.config import ModelConfig

    model_dir = Path(model_dir)
    keras.utils.set_random_seed(seed)
    mcfg = ModelConfig(n_layers=2, pool=2, filters=(4, 8), kernel=3, n_latent=n_latent, arch="seed")
    m = wm.build_autoencoder(mcfg, grid)
    model_dir.mkdir(parents=True, exist_ok=True)
    m.save(model_dir / wm.MODEL_FILE)
    wm.write_metadata(model_dir, {"grid": {"name": "tiny", "shape": list(grid)},
                                  "model": {"n_latent": n_latent, "clip_max": mcfg.clip_max},
                                  "hash": wm.model_hash(model_dir)})
    return str(model_dir)
