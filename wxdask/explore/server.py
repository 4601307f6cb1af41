"""The explorer's HTTP server: the standard library's threading server, GET and HEAD only."""

from __future__ import annotations

import logging
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from wxdask.config import StoreConfig
from wxdask.explore.app import Explorer
from wxdask.explore.responses import Response, _json

logger = logging.getLogger("wxdask.explore")  # one logger for the package, named as before the split


def make_server(explorer: Explorer, host: str = "127.0.0.1", port: int = 8050) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) answering with ``explorer``; ``port=0`` picks a free port."""

    class Handler(BaseHTTPRequestHandler):
        server_version = "wxdask-explore"

        def do_GET(self) -> None:
            self._send(explorer.handle(self.path))

        def do_HEAD(self) -> None:
            self._send(explorer.handle(self.path), body=False)

        def _refuse(self) -> None:
            self._send(_json({"error": f"{self.command} is not allowed: the explorer is read-only (GET only)"}, 405))

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

        def _send(self, resp: Response, body: bool = True) -> None:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            self.send_header("Cache-Control", "no-store")
            if resp.status == 405:
                self.send_header("Allow", "GET, HEAD")
            self.end_headers()
            if body:
                self.wfile.write(resp.body)

        def log_message(self, fmt: str, *args: Any) -> None:
            logger.debug("%s " + fmt, self.address_string(), *args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def serve(store_url: str, host: str = "127.0.0.1", port: int = 8050,
          on_ready: Callable[[str], None] | None = None) -> None:
    """Open the store read-only and serve the explorer until interrupted.

    Parameters
    ----------
    store_url : str
        The store.
    host, port : str, int
        Where to listen (loopback unless told).
    on_ready : callable, optional
        Called with the page's URL once listening.
    """
    explorer = Explorer(StoreConfig(url=store_url))
    explorer.warm_up()
    server = make_server(explorer, host, port)
    url = f"http://{host}:{server.server_address[1]}/"
    logger.info("explorer for %s at %s", store_url, url)
    if on_ready is not None:
        on_ready(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:  # pragma: no cover - interactive stop
        pass
    finally:
        server.server_close()
