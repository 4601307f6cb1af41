"""Helpers for tests, benchmarks and the demo: small real stores and a flaky S3 proxy.

Nothing here is mocked: :func:`make_refc_store` writes a synthetic archive and
ingests it with the real ingest code; :class:`FlakyProxy` is a real HTTP proxy
on loopback that injects S3 failures in front of a real S3 endpoint.
"""

from __future__ import annotations

import http.client
import http.server
import logging
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from wxdask.config import Config, StoreConfig

__all__ = ["make_refc_store", "FlakyProxy", "FakeEncoder", "FakeDecoder", "FakeModelSource", "save_fake_model"]

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
        host, port = self._server.server_address[:2]
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
                length = resp.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length)
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


@dataclass(frozen=True)
class FakeModelSource:
    """A :class:`wxdask.embed.ModelSource` for a :func:`save_fake_model` directory (numpy, no Keras)."""

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
        return _HostScaledEncoder(FakeEncoder(model["encoder"]), self.metadata()["clip_max"])

    def decoder(self, model: Any, *, batch_size: int) -> Any:
        return FakeDecoder(model["decoder"], self.metadata()["grid"])


class _HostScaledEncoder:
    """Scales stored int16 images on the host, then calls a scaled-input encoder."""

    def __init__(self, encoder: Any, clip_max: float) -> None:
        self.encoder = encoder
        self.clip_max = clip_max

    def predict(self, x: Any) -> Any:
        from wxdask.model import scale_raw

        return self.encoder.predict(scale_raw(x, self.clip_max)[..., None])

