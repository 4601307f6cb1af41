"""The archive: :class:`Source` (S3 or a local directory), reads with retries, objects' identities.

Ranged reads of an anonymous S3 source are plain HTTP GETs (:func:`_http_get`,
urllib3, one connection pool per process): the bucket is public, nothing is
signed, and a read costs a fifth of the CPU of the same read through s3fs and
botocore. Lookups (HEAD) and reads with credentials go through s3fs.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from wxdask.errors import SourceError

#: One logger for the whole stage, named as before the split.
logger = logging.getLogger("wxdask.ingest")


@dataclass(frozen=True)
class Source:
    """Where the archive is and how to read it (picklable; sent to workers).

    ``root`` is ``s3://bucket[/prefix]`` or a local directory holding
    ``noaa-hrrr-bdp-pds/`` (or the bucket's content directly).
    """

    root: str
    endpoint_url: str | None = None
    anon: bool = True
    retries: int = 5
    backoff: float = 0.5

    def filesystem(self) -> Any:
        """The fsspec filesystem (cached per process by fsspec)."""
        import fsspec

        if self.root.startswith("s3://"):
            # botocore retries once; :func:`_retry` does the rest, so a dead endpoint is noticed in seconds
            opts: dict = {"anon": self.anon, "config_kwargs": {"connect_timeout": 5, "read_timeout": 60,
                                                                "retries": {"max_attempts": 1}}}
            if self.endpoint_url:
                opts["client_kwargs"] = {"endpoint_url": self.endpoint_url}
            return fsspec.filesystem("s3", **opts)
        return fsspec.filesystem("file")

    def path(self, key: str) -> str:
        """Full path of a key within the archive."""
        root = self.root.rstrip("/")
        if root.startswith("s3://"):
            return f"{root[5:]}/{key}"
        bucket_dir = os.path.join(root, "noaa-hrrr-bdp-pds")
        return os.path.join(bucket_dir if os.path.isdir(bucket_dir) else root, key)

    def url(self, path: str) -> str | None:
        """The plain HTTP(S) URL of an object :meth:`path` names, for anonymous S3 sources (None otherwise).

        Path style at a custom endpoint (``{endpoint}/{bucket}/{key}``),
        virtual-hosted style at AWS (``https://{bucket}.s3.amazonaws.com/{key}``).

        Examples
        --------
        >>> src = Source("s3://noaa-hrrr-bdp-pds")
        >>> src.url(src.path("hrrr.20220101/conus/a b.grib2"))
        'https://noaa-hrrr-bdp-pds.s3.amazonaws.com/hrrr.20220101/conus/a%20b.grib2'
        >>> src = Source("s3://bucket/pre", "http://127.0.0.1:9000/")
        >>> src.url(src.path("k"))
        'http://127.0.0.1:9000/bucket/pre/k'
        >>> Source("s3://bucket", anon=False).url("bucket/k") is None
        True
        """
        from urllib.parse import quote

        if not (self.anon and self.root.startswith("s3://")):
            return None
        bucket, _, key = path.partition("/")
        if self.endpoint_url:
            return f"{self.endpoint_url.rstrip('/')}/{bucket}/{quote(key, safe='/')}"
        return f"https://{bucket}.s3.amazonaws.com/{quote(key, safe='/')}"

    def where(self) -> str:
        """The endpoint (or root) in words, for messages."""
        return self.endpoint_url or ("AWS S3" if self.root.startswith("s3://") else self.root)


_UNREACHABLE = {"EndpointConnectionError", "ConnectTimeoutError", "ConnectionRefusedError", "ClientConnectorError",
                "ConnectTimeout", "ServerTimeoutError", "ConnectionRefused"}


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen and len(seen) < 10:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return seen


def _is_unreachable(exc: BaseException) -> bool:
    """Whether the endpoint itself cannot be reached (refused, or connecting timed out)."""
    return any({cls.__name__ for cls in type(e).__mro__} & _UNREACHABLE for e in _chain(exc))


def _is_unsatisfiable(exc: BaseException) -> bool:
    """An HTTP 416 (the range lies past the end of the object): permanent, never retried."""
    return any("InvalidRange" in str(e) or "not satisfiable" in str(e).lower() or " 416" in str(e) for e in _chain(exc))


def _is_transient(exc: BaseException) -> bool:
    """Whether a read error is worth retrying (5xx, throttling, timeouts, dropped connections)."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)) or _is_unsatisfiable(exc):
        return False
    names = {cls.__name__ for cls in type(exc).__mro__}
    transient = {"TimeoutError", "ConnectionError", "ClientError", "BotoCoreError", "ServerDisconnectedError",
                 "ClientPayloadError", "IncompleteReadError", "ReadTimeoutError", "EndpointConnectionError",
                 "ProtocolError"}
    if names & transient:
        return True
    return isinstance(exc, OSError)


def _retry(source: Source, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``func`` with retries and exponential backoff for transient failures.

    An unreachable endpoint (the client library has already retried the
    connection) gets at most two attempts, so a dead source is noticed soon.

    Raises
    ------
    FileNotFoundError
        If the object does not exist (permanent, never retried).
    SourceError
        If a transient failure persists after ``source.retries`` attempts, or
        the failure is permanent (e.g. access denied, a range past the end);
        ``unreachable`` and ``unsatisfiable`` attributes say which.
    """
    delay = source.backoff
    for attempt in range(1, source.retries + 1):
        try:
            return func(*args, **kwargs)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below
            unreachable = _is_unreachable(exc)
            last = attempt >= (min(2, source.retries) if unreachable else source.retries)
            if not _is_transient(exc) or last:
                err = SourceError(f"{what} failed after {attempt} attempt(s): {type(exc).__name__}: {exc}")
                err.unreachable = unreachable  # type: ignore[attr-defined]
                err.unsatisfiable = _is_unsatisfiable(exc)  # type: ignore[attr-defined]
                raise err from exc
            logger.warning("transient error (%s, attempt %d/%d): %s; retrying in %.1fs",
                           what, attempt, source.retries, exc, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def _read(source: Source, fs: Any, path: str, start: int, end: int) -> tuple[bytes, dict]:
    """Bytes ``[start, end)`` of one object (fewer where it ends sooner) and its info, in one request, with retries.

    The info (``size``, and ``ETag``/``LastModified`` or ``mtime``) is what a
    HEAD or a listing gives (so :func:`object_identity` reads the same), taken
    from the same response (S3's ``Content-Range``) or the open file: a slot
    costs one request per object.

    Raises
    ------
    FileNotFoundError
        If the object does not exist.
    SourceError
        As :func:`_retry`; ``unsatisfiable`` when the range starts at or past
        the end (S3 then says nothing of the size: :func:`_info` does).
    """
    if end <= start:
        raise ValueError(f"empty byte range {start}-{end} of {path!r}")
    url = source.url(path) if hasattr(fs, "_call_s3") else None
    if url is not None:
        data, info = _retry(source, f"reading {path!r}", _http_get, url, start, end)
        if info["size"] is None:  # a part, of a size the server does not say ("bytes 0-9/*")
            info["size"] = int(_info(source, fs, path)["size"])
        return data, info
    if hasattr(fs, "_call_s3"):  # s3fs: one GET whose headers carry the object's identity
        from fsspec.asyn import sync

        return _retry(source, f"reading {path!r}", sync, fs.loop, _s3_get, fs, path, start, end)
    return _retry(source, f"reading {path!r}", _local_get, path, start, end)  # Source's only other: local files


async def _s3_get(fs: Any, path: str, start: int, end: int) -> tuple[bytes, dict]:
    bucket, key, version = fs.split_path(path)
    extra = {"VersionId": version} if version else {}
    resp = await fs._call_s3("get_object", Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}", **extra)
    try:
        body = await resp["Body"].read()
    finally:
        resp["Body"].close()
    rng = str(resp.get("ContentRange") or "")
    total = rng.rpartition("/")[2]
    if total.isdigit():
        size = int(total)
    elif rng:  # a part, of a size the server does not say ("bytes 0-9/*")
        size = int((await fs._info(path, refresh=True))["size"])
    else:  # a server that ignored the range sent the whole object
        size, body = len(body), body[start:end]
    return body, {"ETag": resp.get("ETag"), "LastModified": resp.get("LastModified"), "size": size}


class _HTTPStatus(Exception):
    """An HTTP error status of a plain read: 5xx, 429 (throttled) and 408 are transient, the rest permanent."""

    def __init__(self, status: int, url: str, body: bytes) -> None:
        code = body.partition(b"<Code>")[2].partition(b"</Code>")[0].decode("ascii", "replace")[:40]
        super().__init__(f"HTTP {status} {code} for {url}".replace("  ", " "))
        self.status = status


class _TransientStatus(_HTTPStatus, OSError):
    """A 5xx, 429 or 408: worth retrying (an ``OSError``, as :func:`_is_transient` reads it)."""


_POOLS: dict[str, Any] = {}


def _pool(url: str) -> Any:
    """This process's urllib3 pool for ``url``: through the proxy the environment names for it, as botocore
    would (``HTTPS_PROXY``/``HTTP_PROXY``, ``NO_PROXY``; never for loopback); the timeouts of :meth:`Source.filesystem`;
    retries are :func:`_retry`'s."""
    import urllib.request
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    host = parts.hostname or ""
    if proxy and (host in ("localhost", "127.0.0.1", "::1") or urllib.request.proxy_bypass(host)):
        proxy = None  # loopback never goes through a proxy
    key = proxy or ""
    if key not in _POOLS:
        import urllib3

        opts: dict[str, Any] = {"num_pools": 8, "maxsize": 16, "retries": False,
                                "timeout": urllib3.Timeout(connect=5.0, read=60.0)}
        _POOLS[key] = urllib3.ProxyManager(proxy, **opts) if proxy else urllib3.PoolManager(**opts)
    return _POOLS[key]


def _http_get(url: str, start: int, end: int) -> tuple[bytes, dict]:
    """:func:`_read` as one plain ranged GET: the body and ``size``/``ETag``/``LastModified`` from its headers.

    ``size`` is None when the server sends a part without the object's size.

    Raises
    ------
    FileNotFoundError
        On 404. Other statuses raise :class:`_HTTPStatus` (``HTTP 416`` for a
        range past the end, which :func:`_is_unsatisfiable` reads).
    """
    # the stored bytes as they are (as botocore gives them): never un-gzipped on the way
    resp = _pool(url).request("GET", url, headers={"Range": f"bytes={start}-{end - 1}"}, preload_content=True,
                              decode_content=False)
    if resp.status == 404:
        raise FileNotFoundError(url)
    if resp.status == 403:
        raise PermissionError(f"HTTP 403 for {url} (the object is not public)")
    if resp.status not in (200, 206):
        cls = _TransientStatus if resp.status >= 500 or resp.status in (408, 429) else _HTTPStatus
        raise cls(resp.status, url, resp.data)
    body, headers = resp.data, resp.headers
    total = str(headers.get("Content-Range", "")).rpartition("/")[2]
    size: int | None = int(total) if total.isdigit() else None
    if resp.status == 200:  # the server ignored the range and sent the whole object
        size, body = len(body), body[start:end]
    expected = max(0, min(end, size if size is not None else end) - start)
    if len(body) != expected and (size is not None or len(body) > expected):
        raise _TransientStatus(resp.status, url, f"<Code>{len(body)} of {expected} bytes</Code>".encode())
    stamp = headers.get("Last-Modified")
    return body, {"ETag": headers.get("ETag"), "LastModified": parsedate_to_datetime(stamp) if stamp else None,
                  "size": size}


def _local_get(path: str, start: int, end: int) -> tuple[bytes, dict]:
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        f.seek(start)
        return f.read(end - start), {"size": st.st_size, "mtime": st.st_mtime}


def _info(source: Source, fs: Any, path: str) -> dict:
    """Size and identity of one object (a HEAD request; no body), with retries."""
    try:
        return _retry(source, f"looking up {path!r}", fs.info, path, refresh=True)
    except TypeError:  # filesystems without ``refresh``
        return _retry(source, f"looking up {path!r}", fs.info, path)


def object_identity(info: dict | None) -> str:
    """An object's identity from its listing or HEAD: ``etag/size`` (``mtime/size`` without ETag); ``-`` if absent."""
    if info is None:
        return "-"
    tag = str(info.get("ETag") or "").strip('"')
    if not tag:
        stamp: Any = info.get("mtime", info.get("LastModified"))
        tag = stamp.isoformat() if hasattr(stamp, "isoformat") else f"{float(stamp or 0):.6f}"
    return f"{tag}/{int(info.get('size', 0))}"


def slot_identity(grib: dict | None, idx: dict | None) -> str:
    """What a rerun compares to tell whether a slot's objects changed: both objects' identities."""
    return f"grib={object_identity(grib)};idx={object_identity(idx)}"


@dataclass
class _Trace:
    """What a fetch learned about a slot's objects, however it ended."""

    grib: dict | None = None
    idx: dict | None = None
    start: int = 0
    end: int = 0

    @property
    def identity(self) -> str:
        return slot_identity(self.grib, self.idx)
