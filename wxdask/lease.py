"""One writer per store: a lease file beside the store that a writing command holds for its run.

Zarr has no locks, and two wxdask runs writing one store at once (two
``wxdask ingest`` with overlapping ranges, ``ingest`` while ``embed`` rewrites
a variable, a Job restarted while its first pod still runs) would interleave
metadata rewrites and chunk writes and leave a store that neither run made.
So every writing command takes a *lease* first: a small JSON object at
``<store>.wxdask-lease.json`` (beside the store, e.g. ``data/hrrr.zarr`` has
``data/hrrr.zarr.wxdask-lease.json``) naming the run (a uuid), the host, the
pid, the command, when it started and its last heartbeat.

- **Taken atomically.** On a local filesystem with ``os.open(O_CREAT | O_EXCL)``;
  on an fsspec filesystem with an exclusive-create mode (``open(path, "xb")``)
  when the filesystem has one, else by writing the lease, waiting a moment and
  reading it back (another writer that raced in between overwrites it, and
  whoever reads someone else's run id backs off). That fallback leaves a window
  of about the read-back delay in which two writers can both believe they hold
  it; object stores with conditional writes (S3's ``If-None-Match``, which s3fs
  uses for ``"xb"``) close it.
- **Refreshed** by a daemon thread every ``store.lease_heartbeat`` seconds.
- **Released** at the end of the command, also when it fails.
- A second writer **refuses at once** (:class:`~wxdask.errors.StoreBusyError`,
  one red line naming the holder's command, host, pid and start time).
- A lease whose heartbeat is older than ``store.lease_stale`` seconds (default
  3 x the heartbeat), or whose holder is a process on this host that no longer
  exists, is a dead run's: it is **broken** with a warning naming it.
- **Readers never need it.** The lease is not inside the store (a file at the
  store's root would make zarr's ``mode="w-"`` creation refuse the directory,
  and the store is moved whole when a stage inserts earlier times), so
  ``xarray.open_zarr`` and ``zarr.consolidate_metadata`` never see it.

Why a lease and not Icechunk
----------------------------
Icechunk (DESIGN.md: 1.1.21 works with zarr 3.1.6 here) gives transactions:
a writer's changes become visible in one commit, a second session committing
over the same chunks gets ``ConflictError``, and the history can be read or
rolled back. It would make a half-written store impossible rather than merely
unlikely. Its cost is the store contract: an Icechunk repository is not a
plain Zarr directory, so every reader (``xarray.open_zarr(url)`` in users'
notebooks, the Dask workers, other tools) must open it through icechunk
(``Repository.open(...).readonly_session("main").store``), and its local
filesystem storage is documented as unsafe for concurrent commits. wxdask
promises a store readable with plain ``xarray.open_zarr``; every stage is
already resumable and writes disjoint, chunk-aligned regions, so the only
failure left to prevent is two *runs* at once, which a lease prevents while
keeping the store plain Zarr.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

import fsspec

from wxdask.config import StoreConfig
from wxdask.errors import StoreBusyError

__all__ = ["LEASE_SUFFIX", "StoreLease", "lease_url", "read_lease"]

logger = logging.getLogger(__name__)

#: Appended to the store's URL to name its lease.
LEASE_SUFFIX = ".wxdask-lease.json"


def lease_url(cfg: StoreConfig) -> str:
    """URL of the lease of the store at ``cfg.url``."""
    return cfg.url.rstrip("/") + LEASE_SUFFIX


def _now() -> float:
    return time.time()


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_lease(cfg: StoreConfig) -> dict | None:
    """The lease held on a store, or ``None`` when none is (or it cannot be parsed)."""
    fs, path = fsspec.core.url_to_fs(lease_url(cfg), **cfg.storage_options)
    return _read(fs, path)


def _read(fs: fsspec.AbstractFileSystem, path: str) -> dict | None:
    try:
        doc = json.loads(fs.cat_file(path))
    except (FileNotFoundError, ValueError, UnicodeDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocol or "local" in protocol


class StoreLease:
    """The write lease on one store, held from :meth:`acquire` to :meth:`release`.

    Parameters
    ----------
    cfg : StoreConfig
        The store; ``lease_heartbeat`` and ``stale_after`` time the lease.
    command : str
        What the holder runs (shown to a refused second writer). Keep secrets
        out of it: the CLI passes the command's name, not its arguments.

    Examples
    --------
    >>> with StoreLease(StoreConfig(url="my.zarr"), "wxdask ingest"):   # doctest: +SKIP
    ...     ingest.run(cfg, client)
    """

    def __init__(self, cfg: StoreConfig, command: str) -> None:
        self.cfg = cfg
        self.url = lease_url(cfg)
        self.fs, self.path = fsspec.core.url_to_fs(self.url, **cfg.storage_options)
        self.local = _is_local(self.fs)
        self.interval = float(cfg.lease_heartbeat)
        self.stale_after = cfg.stale_after
        now = _now()
        self.record: dict[str, Any] = {
            "run": uuid.uuid4().hex,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": command,
            "store": cfg.url,
            "since": _iso(now),
            "heartbeat": _iso(now),
            "heartbeat_unix": now,
            "heartbeat_s": self.interval,
        }
        self.held = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------- taking it
    def acquire(self) -> StoreLease:
        """Take the lease, breaking a stale one; start the heartbeat.

        Raises
        ------
        StoreBusyError
            If another live run holds it, naming that run.
        """
        for _ in range(3):
            if self._create():
                self.held = True
                logger.debug("took the lease %s (run %s)", self.url, self.record["run"])
                self._thread = threading.Thread(target=self._beat, name="wxdask-lease", daemon=True)
                self._thread.start()
                return self
            holder = self._holder()
            if holder is None:
                continue  # released, or broken, meanwhile: try again
            why = self._dead(holder)
            if why is None:
                raise StoreBusyError(self._busy_message(holder))
            logger.warning("breaking the lease on %s of %s: %s", self.cfg.url, _describe(holder), why)
            self._break(holder)
        raise StoreBusyError(f"store {self.cfg.url!r}: could not take its lease {self.url!r} "
                             "(other runs keep taking it); try again")

    def _payload(self) -> bytes:
        return json.dumps(self.record, indent=1).encode()

    def _create(self) -> bool:
        """Create the lease exclusively; ``False`` when it already exists."""
        data = self._payload()
        if self.local:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            return True
        try:
            with self.fs.open(self.path, "xb") as f:
                f.write(data)
            return True
        except FileExistsError:
            return False
        except (ValueError, NotImplementedError, TypeError):
            pass  # no exclusive create on this filesystem: write, then read back
        if self.fs.exists(self.path):
            return False
        self.fs.pipe_file(self.path, data)
        time.sleep(min(1.0, self.interval / 4))
        current = _read(self.fs, self.path)
        return current is not None and current.get("run") == self.record["run"]

    def _holder(self) -> dict | None:
        """The lease's current content; a lease still being written gets a moment to finish."""
        for _ in range(10):
            doc = _read(self.fs, self.path)
            if doc is not None:
                return doc
            if not self.fs.exists(self.path):
                return None
            time.sleep(0.1)
        try:  # unreadable for a second: judge it by its modification time
            mtime = self.fs.modified(self.path).timestamp()
        except (FileNotFoundError, NotImplementedError, AttributeError):
            mtime = 0.0
        return {"run": None, "host": "?", "pid": "?", "command": "? (unreadable lease)",
                "since": _iso(mtime), "heartbeat_unix": mtime}

    def _dead(self, holder: dict) -> str | None:
        """Why the holder is a dead run, or ``None`` when it may be alive."""
        beat = holder.get("heartbeat_unix")
        age = _now() - float(beat) if isinstance(beat, (int, float)) else float("inf")
        if age > self.stale_after:
            return f"its last heartbeat was {age:.0f} s ago (stale after {self.stale_after:g} s)"
        pid = holder.get("pid")
        if holder.get("host") == self.record["host"] and isinstance(pid, int) and pid != os.getpid():
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return f"process {pid} no longer exists on this host"
            except PermissionError:
                pass
        return None

    def _break(self, holder: dict) -> None:
        """Remove a dead run's lease, but never a lease someone else took meanwhile."""
        if self.local:
            aside = f"{self.path}.broken-{self.record['run']}"
            try:
                os.rename(self.path, aside)
            except FileNotFoundError:
                return
            moved = _read(self.fs, aside)
            if moved is not None and moved.get("run") != holder.get("run"):
                try:  # a live run's lease, taken since we looked: put it back (unless yet another exists)
                    os.link(aside, self.path)
                except FileExistsError:
                    pass
            os.unlink(aside)
            return
        current = _read(self.fs, self.path)
        if current is None or current.get("run") == holder.get("run"):
            try:
                self.fs.rm_file(self.path)
            except FileNotFoundError:
                pass

    def _busy_message(self, holder: dict) -> str:
        beat = holder.get("heartbeat_unix")
        age = f"{_now() - float(beat):.0f} s ago" if isinstance(beat, (int, float)) else "unknown"
        return (f"store {self.cfg.url!r} is being written by another run: {_describe(holder)} "
                f"(last heartbeat {age}); wait for it to finish. If it is dead, its lease {self.url!r} "
                f"is broken after {self.stale_after:g} s without a heartbeat")

    # -------------------------------------------------------------- keeping it
    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.refresh()
            except Exception:  # a failed refresh must never kill the run; the next one retries
                logger.warning("could not refresh the lease %s", self.url, exc_info=True)

    def refresh(self) -> None:
        """Write a fresh heartbeat, unless the lease has been broken and taken by another run."""
        if not self.held:
            return
        current = _read(self.fs, self.path)
        if current is None or current.get("run") != self.record["run"]:
            logger.error("lost the lease on %s: %s holds it now; this run's writes may conflict with it",
                         self.cfg.url, _describe(current) if current else "nobody")
            self.held = False
            return
        now = _now()
        self.record.update(heartbeat=_iso(now), heartbeat_unix=now)
        if self.local:
            tmp = f"{self.path}.{self.record['run']}.tmp"
            with open(tmp, "wb") as f:
                f.write(self._payload())
            os.replace(tmp, self.path)
        else:
            self.fs.pipe_file(self.path, self._payload())

    # -------------------------------------------------------------- giving it back
    def release(self) -> None:
        """Stop the heartbeat and remove the lease if this run still holds it."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not self.held:
            return
        self.held = False
        current = _read(self.fs, self.path)
        if current is not None and current.get("run") != self.record["run"]:
            return
        try:
            if self.local:
                os.unlink(self.path)
            else:
                self.fs.rm_file(self.path)
        except FileNotFoundError:
            pass
        logger.debug("released the lease %s", self.url)

    def __enter__(self) -> StoreLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _describe(holder: dict) -> str:
    return (f"{holder.get('command', '?')!s} on host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, "
            f"since {holder.get('since', '?')}")
