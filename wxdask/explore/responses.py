"""What the explorer answers with: a :class:`Response` (JSON or PNG) and the page's fixed static files."""

from __future__ import annotations

import functools
import io
import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from wxdask.explore.core import _jsonable

#: Static files of the page: URL path -> (file in ``static``, content type). Nothing else is served.
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes


def _json(data: Any, status: int = 200) -> Response:
    return Response(status, "application/json", json.dumps(_jsonable(data)).encode())


def _png(buf: io.BytesIO) -> Response:
    return Response(200, "image/png", buf.getvalue())


@functools.cache
def _static(name: str) -> bytes:
    return resources.files("wxdask.explore").joinpath("static", name).read_bytes()
