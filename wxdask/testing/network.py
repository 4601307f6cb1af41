"""Network helpers: :class:`FlakyProxy`, a loopback HTTP proxy that injects S3 failures.

Also :func:`write_s3_archive` (a synthetic archive uploaded to a local S3
endpoint) and :func:`free_port`. Part of :mod:`wxdask.testing`, which
re-exports every name.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast


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
