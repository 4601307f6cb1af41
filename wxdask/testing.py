"""Helpers for tests, benchmarks and the demo: small real stores, a flaky S3 proxy, a compute counter.

Nothing here is mocked: :func:`make_refc_store` writes a synthetic archive and
ingests it with the real ingest code; :func:`make_store` builds a tiny store of
given values with ingest's own template through :mod:`wxdask.store`;
:class:`FlakyProxy` is a real HTTP proxy on loopback that injects S3 failures in
front of a real S3 endpoint; :func:`raise_if_dask_computes` checks that a lazy
wrapper builds a graph without computing it. Fake numpy models
(:func:`save_fake_model`) stand in for Keras where the test is not about Keras.
"""

from __future__ import annotations

import http.client
import http.server
import logging
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from wxdask.config import Config, StoreConfig

__all__ = [
    "TINY_GRID",
    "TINY_MODEL",
    "CountingScheduler",
    "FakeDecoder",
    "FakeEncoder",
    "FakeModelSource",
    "FlakyProxy",
    "HostScaledEncoder",
    "assert_one_error_line",
    "assert_same_store",
    "embed_config",
    "file_digests",
    "free_port",
    "load_store",
    "make_refc_store",
    "make_store",
    "make_tiny_store",
    "raise_if_dask_computes",
    "read_raw",
    "reference_embeddings",
    "save_fake_model",
    "save_keras_model",
    "save_model_dir_stub",
    "task_result_shapes",
    "train_config",
    "write_s3_archive",
]

logger = logging.getLogger(__name__)


def make_refc_store(
    path: str | Path,
    start: str,
    end: str,
    leads: Iterable[int] = (0,),
    grid: str = "coarse",
    seed: int = 0,
    *,
    archive_dir: str | Path | None = None,
    **synth_options: Any,
) -> StoreConfig:
    """Write a synthetic archive and ingest it into a store at ``path``.

    Runs in this process (no cluster) on a local archive directory, through the
    same :func:`wxdask.ingest.run` as the real stage.

    Parameters
    ----------
    path : str or Path
        Where the Zarr store goes.
    start, end : str
        Hourly initialisation times, ``end`` exclusive.
    leads : iterable of int
        Forecast leads.
    grid : {"coarse", "hrrr"}
        Grid of the synthetic archive.
    seed : int
        Seed of the synthetic weather.
    archive_dir : str or Path, optional
        Where the archive is written (a temporary directory by default).
    **synth_options
        Passed to :func:`wxdask.synth.write_archive` (``missing``, ``corrupt``, ...).

    Returns
    -------
    StoreConfig
        Pointing at the new store.
    """
    from wxdask import ingest, synth

    leads = tuple(leads)
    tmp = None
    if archive_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="wxdask-archive-")
        archive_dir = tmp.name
    try:
        synth.write_archive(str(archive_dir), start, end, leads, grid=grid, seed=seed, **synth_options)
        cfg = Config.from_dict({
            "store": {"url": str(path)},
            "ingest": {"start": start, "end": end, "leads": leads, "source": str(archive_dir)},
            "dask": {"progress": False},
        })
        ingest.run(cfg, None)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return cfg.store


class FlakyProxy:
    """An HTTP proxy on loopback that makes some S3 requests fail, as S3 sometimes does.

    Requests are forwarded to ``upstream``. Every request whose path contains
    ``match`` and whose count (1-based, over matching requests) is in
    ``fail_on`` is answered with a failure instead: ``"503"`` (SlowDown-style
    service error), ``"500"``, or ``"drop"`` (connection closed without a reply).
    ``fail_every=n`` fails every n-th matching request. ``delay`` seconds are
    slept before forwarding each matching request (a slow network).
    ``requests`` logs ``(method, path, Range header)`` of every request and
    ``bytes_sent`` counts the body bytes returned. :meth:`kill` makes the
    endpoint die mid-run (connections refused, open ones closed unanswered).

    Examples
    --------
    >>> with FlakyProxy("http://127.0.0.1:5000", fail_every=3) as proxy:   # doctest: +SKIP
    ...     proxy.url
    'http://127.0.0.1:43127'
    """

    def __init__(self, upstream: str, *, mode: str = "503", fail_every: int = 3,
                 fail_on: Iterable[int] | None = None, match: str = ".grib2", delay: float = 0.0) -> None:
        if mode not in ("503", "500", "drop"):
            raise ValueError(f"mode must be '503', '500' or 'drop', got {mode!r}")
        self.upstream = upstream.removeprefix("http://").rstrip("/")
        self.mode = mode
        self.fail_every = fail_every
        self.fail_on = set(fail_on) if fail_on is not None else None
        self.match = match
        self.delay = delay
        self.seen = 0
        self.failed = 0
        self.requests: list[tuple[str, str, str | None]] = []
        self.bytes_sent = 0
        self.dead = False
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """Endpoint URL to give s3fs instead of the upstream's."""
        host, port = cast(tuple[str, int], self._server.server_address[:2])  # a TCP server
        return f"http://{host}:{port}"

    def _should_fail(self, path: str) -> bool:
        if self.match not in path:
            return False
        with self._lock:
            self.seen += 1
            n = self.seen
            fail = n in self.fail_on if self.fail_on is not None else n % self.fail_every == 0
            if fail:
                self.failed += 1
        return fail

    def _handler(self) -> type:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                if proxy.dead:  # the endpoint is gone: kept-alive connections die too
                    self.close_connection = True
                    self.connection.close()
                    return
                with proxy._lock:
                    proxy.requests.append((self.command, self.path, self.headers.get("Range")))
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                if proxy.delay and proxy.match in self.path:
                    time.sleep(proxy.delay)
                if proxy._should_fail(self.path):
                    if proxy.mode == "drop":
                        self.close_connection = True
                        self.connection.close()
                        return
                    payload = (b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>"
                               + (b"SlowDown" if proxy.mode == "503" else b"InternalError")
                               + b"</Code><Message>injected by FlakyProxy</Message></Error>")
                    self.send_response(int(proxy.mode))
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                # a HEAD reply has no body but the object's own Content-Length (its size)
                size = resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", size)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                    with proxy._lock:
                        proxy.bytes_sent += len(data)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        return Handler

    def start(self) -> FlakyProxy:
        """Start forwarding."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop forwarding."""
        if not self.dead:
            self._server.shutdown()
            self._server.server_close()
        self.dead = True

    def kill(self) -> None:
        """The endpoint dies: new connections are refused, open ones are closed unanswered."""
        self.dead = True
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FlakyProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ----------------------------------------------------------------------------- numpy stand-ins for the model


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



# ----------------------------------------------------------------------------- laziness


class CountingScheduler:
    """A Dask scheduler that counts the graphs it is asked to compute and refuses too many.

    Computes with the synchronous scheduler while allowed (as xarray's and
    flox's test helpers of the same name).
    """

    def __init__(self, max_computes: int = 0) -> None:
        self.total_computes = 0
        self.max_computes = max_computes

    def __call__(self, dsk: Any, keys: Any, **kwargs: Any) -> Any:
        import dask

        self.total_computes += 1
        if self.total_computes > self.max_computes:
            raise RuntimeError(
                f"Too many computes: {self.total_computes} > max_computes={self.max_computes} "
                "(a lazy function computed something)"
            )
        return dask.get(dsk, keys, **kwargs)


@contextmanager
def raise_if_dask_computes(max_computes: int = 0) -> Iterator[CountingScheduler]:
    """Fail if more than ``max_computes`` Dask graphs are computed inside the block.

    Sets ``dask.config`` ``scheduler`` to a :class:`CountingScheduler`, so every
    ``.compute()``, ``.values``, ``np.asarray``, ``dask.compute`` and
    ``.persist()`` of a collection goes through it, even while a distributed
    ``Client`` is the default. (Work submitted to a client directly, e.g.
    ``client.compute(...)`` or ``client.submit(...)``, does not.)

    Examples
    --------
    >>> import dask.array as da
    >>> with raise_if_dask_computes():
    ...     x = da.ones(4, chunks=2) + 1   # building a graph is fine
    >>> with raise_if_dask_computes(max_computes=1) as counter:
    ...     _ = x.sum().compute()
    >>> counter.total_computes
    1
    """
    import dask

    scheduler = CountingScheduler(max_computes)
    with dask.config.set(scheduler=scheduler):
        yield scheduler


# ----------------------------------------------------------------------------- small stores, through wxdask.store


def _tiny_grid(grid: Any) -> Any:
    from wxdask.grid import Grid, get_grid

    if isinstance(grid, (str, Grid)):
        return get_grid(grid)
    ny, nx = grid
    return Grid(name="custom", nx=int(nx), ny=int(ny), dx=3000.0, lat1=21.138123, lon1=237.280472)


def make_store(
    path: str | Path,
    times: Any,
    leads: Iterable[int] = (0,),
    *,
    grid: Any = (12, 20),
    refc: Any = None,
    status: Any = None,
    grib_bytes: Any = None,
    embedding: Any = None,
    embedding_attrs: dict | None = None,
    embedding_chunk: int | None = None,
    keep_refc: bool | None = None,
    refc_encoding: dict | None = None,
) -> StoreConfig:
    """A small store with the real layout, built in this process through :mod:`wxdask.store`.

    The ingest stage's own template and encoding (:func:`wxdask.ingest.refc_template`,
    :data:`wxdask.ingest.ENCODING`: int16 ``lead_time``, ``refc`` float32 dBZ stored
    as int16 sixteenths of a dB (:func:`wxdask.store.sixteenths_codec`), one image
    per chunk, per-slot ``status`` chunks) are
    created with :func:`wxdask.store.init_output`; slots are then written as
    :func:`wxdask.ingest.write_slot` writes them (image and ``grib_bytes``
    first, ``status`` last, codes from :data:`wxdask.ingest.STATUS`).

    Parameters
    ----------
    path : str or Path
        Where the Zarr store goes (must not exist).
    times : array-like of datetime64
        Initialisation times (need not be regular).
    leads : iterable of int
        Forecast leads.
    grid : (ny, nx), str or Grid
        A tiny custom Lambert grid of that shape (3 km), or a named grid.
    refc : numpy.ndarray, optional
        ``(time, lead_time, y, x)`` dBZ; a slot whose image is all NaN is not
        written. Without it (and without ``status``) the store has no ``refc``
        variable: the layout of a store that holds only embeddings.
    status : numpy.ndarray, optional
        ``(time, lead_time)`` codes (int) or names (``"ok"``, ``"absent"``, ...).
        Default: ``ok`` where ``refc`` has an image, ``absent`` elsewhere.
    grib_bytes : numpy.ndarray, optional
        ``(time, lead_time)`` message sizes of the ok slots (default 0).
    embedding : numpy.ndarray, optional
        ``(time, lead_time, latent)`` float32, written as the embed stage's
        variable (float32, NaN fill, chunks ``(embedding_chunk, n_leads, n_latent)``).
    embedding_attrs : dict, optional
        Attributes of ``embedding`` (default ``{"model_hash": "fake"}``).
    embedding_chunk : int, optional
        Time chunk of ``embedding`` (default: all times).
    keep_refc : bool, optional
        Whether ``refc`` is kept (default: when ``refc`` or ``status`` is given).
    refc_encoding : dict, optional
        Replaces ingest's int16 packing of ``refc`` (only for oracles that need
        unquantized images, e.g. ``{"dtype": "float32"}``: plain float32, no codec).

    Returns
    -------
    StoreConfig
        Pointing at the new store.
    """
    import numpy as np
    import xarray as xr

    from wxdask import ingest, store

    cfg = StoreConfig(url=str(path))
    times = np.asarray(times).astype("datetime64[ns]")
    leads = tuple(int(v) for v in leads)
    g = _tiny_grid(grid)
    nt, nl = len(times), len(leads)
    template = ingest.refc_template(times, leads, g, source="wxdask.testing.make_store")
    encoding = {k: dict(v) for k, v in ingest.ENCODING.items()}
    if refc_encoding is not None:
        encoding["refc"] = dict(refc_encoding)
    store.init_output(cfg, template, encoding)

    if refc is not None:
        refc = np.asarray(refc, dtype=np.float64)
        if refc.shape != (nt, nl, *g.shape):
            raise ValueError(f"refc must have shape {(nt, nl, *g.shape)}, got {refc.shape}")
        has_image = ~np.isnan(refc).all(axis=(2, 3))
    else:
        has_image = np.zeros((nt, nl), dtype=bool)
    if status is None:
        codes = np.where(has_image, ingest.STATUS["ok"], ingest.STATUS["absent"]) if refc is not None else None
    else:
        status = np.asarray(status)
        codes = (np.vectorize(ingest.STATUS.__getitem__)(status) if status.dtype.kind in "UO" else status)
        codes = np.broadcast_to(codes, (nt, nl)).astype(np.int8)
    sizes = np.zeros((nt, nl), np.int32) if grib_bytes is None else np.broadcast_to(grib_bytes, (nt, nl))
    if codes is not None:
        float_refc = refc_encoding is not None and np.dtype(refc_encoding.get("dtype", "int16")).kind == "f"
        for ti in range(nt):
            for li in range(nl):
                code = int(codes[ti, li])
                values: dict[str, Any] = {}
                if code == ingest.STATUS["ok"] and has_image[ti, li]:
                    img = refc[ti, li]
                    values["refc"] = (img.astype(np.float32) if float_refc
                                      else np.where(np.isnan(img), -32768, np.round(img * 16)).astype(np.int16))
                    values["grib_bytes"] = np.int32(sizes[ti, li])
                values["status"] = np.int8(code)  # last, as the commit mark
                store.write_region(cfg, values, (ti, li))
    if keep_refc is None:
        keep_refc = refc is not None or status is not None
    if not keep_refc:
        store.drop_variables(cfg, ["refc"])

    if embedding is not None:
        import dask.array as da

        e = np.asarray(embedding, dtype=np.float32)
        nz = e.shape[2]
        chunk = min(embedding_chunk or nt, nt)
        data = da.full((nt, nl, nz), np.nan, dtype=np.float32, chunks=(chunk, nl, nz))
        attrs = {"model_hash": "fake"} if embedding_attrs is None else dict(embedding_attrs)
        ds = store.open_store(cfg)
        emb_template = xr.Dataset(
            {"embedding": (("time", "lead_time", "latent"), data, attrs)},
            coords={"time": ds["time"], "lead_time": ds["lead_time"], "latent": np.arange(nz, dtype=np.int32)},
        )
        store.init_output(cfg, emb_template, {"embedding": {"chunks": (chunk, nl, nz), "dtype": "float32",
                                                            "_FillValue": np.float32(np.nan)}})
        store.write_region(cfg, {"embedding": e}, (slice(None),))
    return cfg


def read_raw(cfg: StoreConfig) -> tuple[Any, Any]:
    """``refc`` as stored (int16 sixteenths of a dB) and ``status``, as numpy arrays."""
    from wxdask import store

    store.open_input(cfg, ["refc", "status"])  # names a missing variable
    whole = (slice(None),)
    return store.read_region(cfg, "refc", whole), store.read_region(cfg, "status", whole)


#: Grid of the tiny embed/decode stores.
TINY_GRID = (12, 20)


def make_tiny_store(path: str | Path, nt: int = 7, leads: tuple[int, ...] = (0, 1), grid: tuple[int, int] = TINY_GRID,
                    missing: tuple[tuple[int, int], ...] = ((2, 1), (5, 0)), seed: int = 0) -> StoreConfig:
    """A tiny ingested-like store of random echoes from 2022-06-01T00, hourly; ``missing`` slots are absent.

    Random GRIB message sizes in ``grib_bytes``. Built with :func:`make_store`.
    """
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(seed)
    ny, nx = grid
    nl = len(leads)
    dbz = rng.uniform(-10, 70, size=(nt, nl, ny, nx))
    dbz[dbz < 15] = -10.0
    dbz = np.round(dbz * 16) / 16
    grib = rng.integers(200, 5000, size=(nt, nl)).astype(np.int32)
    for t, lead in missing:
        dbz[t, lead] = np.nan
        grib[t, lead] = 0
    times = pd.date_range("2022-06-01", periods=nt, freq="h").values
    return make_store(path, times, leads, grid=grid, refc=dbz, grib_bytes=grib)


def embed_config(store_cfg: StoreConfig, model_dir: str, **embed_kw: Any) -> Config:
    """The embed tests' config: batches of 3, 4 images per task, no progress bar."""
    return Config.from_dict({
        "store": {"url": store_cfg.url},
        "embed": {"model_dir": model_dir, "batch_size": 3, "images_per_task": 4, **embed_kw},
        "dask": {"progress": False},
    })


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


#: The train tests' tiny autoencoder (coarse grid).
TINY_MODEL = {"arch": "seed", "n_layers": 2, "pool": 4, "filters": [4, 8], "kernel": 3, "n_latent": 8}


def train_config(store_cfg: StoreConfig, model_dir: str | Path, **train_kw: Any) -> Config:
    """The train/evaluate tests' config: :data:`TINY_MODEL`, 2 epochs, every 3rd day held out."""
    return Config.from_dict({
        "store": {"url": store_cfg.url},
        "model": TINY_MODEL,
        "train": {"model_dir": str(model_dir), "epochs": 2, "batch_size": 16, "learning_rate": 3e-3,
                  "holdout_every": 3, **train_kw},
        "dask": {"progress": False},
    })


# ----------------------------------------------------------------------------- archives, ports, store comparison


def write_s3_archive(s3: Any, directory: str | Path, start: str, end: str, leads: Iterable[int] = (0,), *,
                     bucket: str | None = None, grid: str = "coarse", seed: int = 0, **synth_options: Any) -> Path:
    """Write a synthetic archive under ``directory`` and upload it to a :class:`wxdask.s3local.LocalS3`.

    Parameters
    ----------
    s3 : wxdask.s3local.LocalS3
        The running endpoint.
    directory : str or Path
        Where the archive is written (it gets the ``noaa-hrrr-bdp-pds/`` folder).
    start, end, leads, grid, seed, **synth_options
        As :func:`wxdask.synth.write_archive`.
    bucket : str, optional
        Bucket to upload into (default: the archive's own, ``noaa-hrrr-bdp-pds``).

    Returns
    -------
    Path
        The archive's bucket directory (holding ``hrrr.YYYYMMDD/``).
    """
    from wxdask import synth
    from wxdask.s3local import ARCHIVE_BUCKET

    directory = Path(directory)
    synth.write_archive(str(directory), start, end, tuple(leads), grid=grid, seed=seed, **synth_options)
    root = directory / ARCHIVE_BUCKET
    if bucket is None:
        s3.upload_archive(root)
    else:
        s3.upload_archive(root, bucket=bucket)
    return root


def free_port() -> int:
    """A TCP port on loopback that was free a moment ago."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_store(path: str | Path, **open_kw: Any) -> Any:
    """The whole store at ``path`` read into memory (``xarray.open_zarr``, unconsolidated)."""
    import xarray as xr

    return xr.open_zarr(str(path), consolidated=False, **open_kw).load()


def assert_same_store(a: Any, b: Any) -> None:
    """Identical variables, coordinates and attributes, apart from the run's own config (paths, endpoints).

    ``a`` and ``b`` are datasets or store paths.
    """
    import xarray as xr

    a = a.copy() if isinstance(a, xr.Dataset) else load_store(a)
    b = b.copy() if isinstance(b, xr.Dataset) else load_store(b)
    for ds in (a, b):
        ds.attrs.pop("wxdask_config", None)
    xr.testing.assert_identical(a, b)


def file_digests(root: str | Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path: compare two to see that nothing was written."""
    import hashlib

    root = Path(root)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@contextmanager
def task_result_shapes() -> Iterator[dict]:
    """Record the shape of every numpy result of the tasks computed inside (``{key: shape}``).

    Use with the synchronous scheduler and fusion off, to see that no task holds
    a large block (e.g. an N x N distance matrix).
    """
    import dask
    import numpy as np

    sizes: dict = {}

    class _Record(dask.callbacks.Callback):
        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
            if isinstance(result, np.ndarray):
                sizes[key] = result.shape

    with _Record(), dask.config.set({"scheduler": "sync", "optimization.fuse.active": False}):
        yield sizes



def assert_one_error_line(stderr: str, *needles: str) -> None:
    """``stderr`` is exactly one ``error: ...`` line holding every needle, and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for needle in needles:
        assert needle in lines[0], stderr
