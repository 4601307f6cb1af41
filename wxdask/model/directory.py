"""The model directory: its files and hash, its metadata, and which directory a stage uses.

Part of :mod:`wxdask.model`, which re-exports every name: :func:`file_hash`,
:func:`model_hash`, :func:`read_metadata`, :func:`write_metadata`,
:class:`ModelDir`, :func:`resolve_model` and :func:`check_model`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from wxdask.errors import ModelError
from wxdask.model.core import GRIDS, METADATA_FILE, MODEL_FILE, ModelInfo, Predictor
from wxdask.model.network import decoder_of, encoder_of, load_model

if TYPE_CHECKING:  # pragma: no cover
    import keras


# ----------------------------------------------------------------------------- model directory


def file_hash(path: str | os.PathLike, length: int = 16) -> str:
    """sha256 of a file's bytes, hex, first ``length`` characters."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def model_hash(model_dir: str | os.PathLike) -> str:
    """Content hash of ``DIR/model.keras`` (sha256, 16 hex characters).

    Later stages record it with their outputs to name the model they used.

    Raises
    ------
    ModelError
        If there is no model file.
    """
    path = Path(model_dir) / MODEL_FILE
    if not path.is_file():
        raise ModelError(f"no model at {str(path)!r}; train one with `wxdask train --model {model_dir}`")
    return file_hash(path)


def read_metadata(model_dir: str | os.PathLike, filename: str = METADATA_FILE) -> dict:
    """Read ``DIR/metadata.json``.

    Raises
    ------
    ModelError
        If the file is missing or not valid JSON.
    """
    path = Path(model_dir) / filename
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ModelError(
            f"no model metadata at {str(path)!r}; train a model with `wxdask train --model {model_dir}`"
        ) from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ModelError(f"model metadata {str(path)!r} is corrupt ({exc}); retrain the model") from None
    if not isinstance(data, dict):
        raise ModelError(f"model metadata {str(path)!r} is not a JSON object; retrain the model")
    return data


def write_metadata(model_dir: str | os.PathLike, data: dict, filename: str = METADATA_FILE) -> None:
    """Write ``DIR/metadata.json`` atomically (write a temporary file, then rename)."""
    path = Path(model_dir) / filename
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False, default=_json_default))
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


# ----------------------------------------------------------------------------- which model


def _metadata_value(meta: dict, *names: str) -> Any:
    """First of ``names`` found in ``meta``, its ``model``/``config``/``scaling`` sections."""
    places = [meta]
    for sec in ("model", "config", "scaling"):
        if isinstance(meta.get(sec), dict):
            places.append(meta[sec])
            if isinstance(meta[sec].get("model"), dict):
                places.append(meta[sec]["model"])
    for place in places:
        for name in names:
            if place.get(name) is not None:
                return place[name]
    return None


@dataclass(frozen=True)
class ModelDir:
    """A trained model directory (``model.keras`` + ``metadata.json``) as a model source.

    Small and picklable: workers load the model through
    :func:`wxdask.models.get_model`, once per process.

    Parameters
    ----------
    path : str
        Model directory.
    """

    path: str

    def metadata(self) -> ModelInfo:
        """Hash, grid, embedding size and clip of the model, from its directory (no Keras import).

        Raises
        ------
        ModelError
            If the directory holds no model or its metadata lacks the grid.
        """
        digest = model_hash(self.path)
        meta = read_metadata(self.path)
        grid = _metadata_value(meta, "grid_shape", "grid")
        if isinstance(grid, dict):
            grid = grid.get("shape")
        if isinstance(grid, str):
            grid = GRIDS.get(grid)
        if not (isinstance(grid, (list, tuple)) and len(grid) == 2):
            raise ModelError(f"model metadata in {self.path!r} does not give the grid shape; retrain the model")
        return ModelInfo(hash=digest, grid=(int(grid[0]), int(grid[1])),
                         n_latent=int(_metadata_value(meta, "n_latent") or 50),
                         clip_max=float(_metadata_value(meta, "clip_max") or 60.0))

    def load(self) -> keras.Model:
        """The whole autoencoder (call through :func:`wxdask.models.get_model`)."""
        return load_model(self.path)

    def encoder(self, model: Any, *, batch_size: int) -> Predictor:
        """Stored int16 images -> embeddings, scaled on the device (:class:`wxdask.models.KerasRawEncoder`)."""
        from wxdask.models import KerasRawEncoder

        return KerasRawEncoder(encoder_of(model), clip_max=self.metadata()["clip_max"], batch_size=batch_size)

    def decoder(self, model: Any, *, batch_size: int) -> Predictor:
        """Embeddings -> scaled images (:func:`decoder_of`)."""
        from wxdask.models import KerasPredictor

        return KerasPredictor(decoder_of(model), batch_size=batch_size)


def _given(value: Any) -> str | None:
    """A model directory that was given: not None, empty, or the text ``"None"`` of an old store."""
    if value is None or isinstance(value, float):
        return None
    text = os.fspath(value) if hasattr(value, "__fspath__") else str(value)
    return text if text.strip() and text != "None" else None


def resolve_model(explicit_dir: str | os.PathLike | None, embedding_attrs: Mapping[str, Any] | None = None) -> ModelDir:
    """The model directory a stage uses: the one configured, else the one recorded with the embedding.

    Parameters
    ----------
    explicit_dir : str or path or None
        The stage's configured ``model_dir`` (``--model``).
    embedding_attrs : mapping, optional
        Attributes of the store's ``embedding`` (``model_dir`` as written by ``wxdask embed``).

    Returns
    -------
    ModelDir

    Raises
    ------
    ModelError
        If neither names a directory.

    Examples
    --------
    >>> resolve_model("m1", {"model_dir": "m2"}).path, resolve_model(None, {"model_dir": "m2"}).path
    ('m1', 'm2')
    """
    found = _given(explicit_dir) or _given((embedding_attrs or {}).get("model_dir"))
    if found is None:
        raise ModelError("no model directory: give one with --model (the stage's model_dir); "
                         "the store's embedding records none")
    return ModelDir(found)


def check_model(source: Any, embedding_attrs: Mapping[str, Any], store_url: str) -> ModelInfo:
    """The model's metadata, after checking it is the model that made the store's embedding.

    Parameters
    ----------
    source : ModelSource
        A :class:`ModelDir` (or a test double with ``path`` and ``metadata()``).
    embedding_attrs : mapping
        Attributes of the store's ``embedding`` (its ``model_hash``).
    store_url : str
        The store, for the message.

    Returns
    -------
    ModelInfo

    Raises
    ------
    ModelError
        If the model is missing, or its hash is not the one recorded with the embedding.
    """
    meta = source.metadata()
    made_by = embedding_attrs.get("model_hash")
    if made_by != meta["hash"]:
        raise ModelError(
            f"the embeddings in {store_url!r} were made by model {made_by}, but {source.path!r} holds "
            f"model {meta['hash']}; use the model that made them, or re-embed with "
            f"`wxdask embed --store {store_url} --model {source.path}`"
        )
    return meta
