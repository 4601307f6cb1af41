"""One slot: fetch its REFC message (:func:`fetch_refc`, :func:`fetch_slot`) and write it (:func:`write_slot`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from wxdask import store
from wxdask.config import StoreConfig
from wxdask.errors import CorruptMessageError, SourceError, SourceNotFoundError
from wxdask.grid import Grid
from wxdask.ingest.decode import decode_refc
from wxdask.ingest.header import MAX_IDX_BYTES, MAX_POINTS, STATUS, SlotFault, _max_message_bytes
from wxdask.ingest.idx import IdxEntry, check_message, find_refc, hrrr_key, parse_idx
from wxdask.ingest.source import Source, _info, _read, _Trace

#: One logger for the whole stage, named as before the split.
logger = logging.getLogger("wxdask.ingest")


@dataclass(frozen=True)
class Fetched:
    """A fetched REFC message and where it came from."""

    data: bytes
    entry: IdxEntry
    nbytes: int
    identity: str
    start: int
    end: int



def _not_found(status: str, message: str) -> SourceNotFoundError:
    """A :class:`SourceNotFoundError` carrying the slot status it stands for (read by :func:`fetch_slot`)."""
    err = SourceNotFoundError(message)
    err.reason = status  # type: ignore[attr-defined]
    return err


def fetch_refc(source: Source, init_time: np.datetime64, lead: int, grid: Grid | None = None,
               trace: _Trace | None = None) -> Fetched:
    """Fetch the REFC message of one archive file: two ranged reads, the ``.idx`` and the message.

    Each read also gives its object's size and identity (no HEAD request).
    Sizes are checked as soon as they are known: the sidecar (at most
    :data:`MAX_IDX_BYTES` are read), the object (zero bytes is a placeholder),
    and the REFC range against the largest message the grid can need (before
    it is read) and the object's size. The less usual faults (no sidecar, a
    range the object cannot serve) cost one lookup more, to say which.

    Raises
    ------
    SourceNotFoundError
        ``absent`` (no GRIB file), ``missing_idx`` (GRIB without sidecar) or
        ``no_refc`` (sidecar lists no REFC), as its ``reason`` attribute.
    SlotFault
        ``empty``, ``oversize``, ``mismatch`` (the sidecar's label) or ``corrupt``
        (a range past the end of the object).
    CorruptMessageError, SourceError
        As raised by :func:`check_message` and the reader.
    """
    trace = trace if trace is not None else _Trace()
    fs = source.filesystem()
    key = hrrr_key(init_time, lead)
    idx_path, grib_path = source.path(key + ".idx"), source.path(key)
    try:
        idx, trace.idx = _read_or_size(source, fs, idx_path, 0, MAX_IDX_BYTES + 1)
    except FileNotFoundError:
        try:
            trace.grib = _info(source, fs, grib_path)
        except FileNotFoundError:
            raise _not_found("absent", f"no GRIB object: {key} is not in the archive") from None
        raise _not_found("missing_idx", f"no .idx: {key} has no .idx sidecar") from None
    idx_size = int(trace.idx.get("size", 0))
    if idx_size == 0:
        raise SlotFault("empty", "zero-byte .idx", f"{key}.idx is an empty placeholder")
    if idx_size > MAX_IDX_BYTES:
        raise SlotFault("oversize", ".idx size", f"{key}.idx is {idx_size} bytes, more than the {MAX_IDX_BYTES} "
                                                 f"a sidecar can plausibly be; not read past byte {MAX_IDX_BYTES + 1}")
    try:
        entries = parse_idx(idx.decode("ascii", errors="replace"))
    except CorruptMessageError as exc:
        raise SlotFault("corrupt", ".idx", str(exc)) from None
    try:
        entry = find_refc(entries, init_time, lead)
    except SourceNotFoundError as exc:
        raise _not_found("no_refc", str(exc)) from None
    except CorruptMessageError as exc:
        raise SlotFault("mismatch", ".idx label", str(exc)) from None
    cap = _max_message_bytes(grid.nx * grid.ny if grid is not None else MAX_POINTS)
    try:
        if entry.end is not None and entry.end - entry.start > cap:  # refused unread; the object's size says why
            trace.grib = _info(source, fs, grib_path)
            _check_range(trace.grib, entry.start, entry.end, key)
            raise SlotFault("oversize", "message size",
                            f".idx gives REFC {entry.end - entry.start} bytes, more than the {cap} a REFC field on "
                            "this grid can need; not fetched")
        # the last message of a file has no end in the .idx: at most ``cap`` bytes are read, and one more to tell
        trace.start, trace.end = entry.start, entry.end if entry.end is not None else entry.start + cap + 1
        data, trace.grib = _read_or_size(source, fs, grib_path, trace.start, trace.end)
    except FileNotFoundError:
        raise _not_found("absent", f"no GRIB object: {key} has a .idx but no GRIB object") from None
    size = int(trace.grib.get("size", 0))
    end = entry.end if entry.end is not None else size
    _check_range(trace.grib, entry.start, end, key)
    if end - entry.start > cap:
        raise SlotFault("oversize", "message size", f"REFC runs {end - entry.start} bytes to the end of {key}, more "
                                                    f"than the {cap} a REFC field on this grid can need")
    trace.end = end
    if len(data) < end - entry.start:
        raise SlotFault("corrupt", "truncated", f"got {len(data)} of the {end - entry.start} bytes of REFC from {key}")
    claimed = int.from_bytes(data[8:16], "big") if len(data) >= 16 and data[:4] == b"GRIB" else 0
    if claimed > size - entry.start:
        if claimed > cap:
            raise SlotFault("oversize", "message size", f"section 0 says the message is {claimed} bytes, more than "
                                                        f"the {cap} a REFC field on this grid can need")
        raise SlotFault("corrupt", "truncated", f"section 0 says the message is {claimed} bytes, the object holds "
                                                f"{size - entry.start} from byte {entry.start}")
    check_message(data, entry)
    return Fetched(data, entry, len(idx) + len(data), trace.identity, entry.start, end)


def _read_or_size(source: Source, fs: Any, path: str, start: int, end: int) -> tuple[bytes, dict]:
    """:func:`_read`; a range the object cannot serve (it starts at or past the end) reads nothing, and a
    lookup gives the size (S3 answers such a range, an empty object's included, with no size)."""
    try:
        return _read(source, fs, path, start, end)
    except SourceError as exc:
        if not getattr(exc, "unsatisfiable", False):
            raise
    return b"", _info(source, fs, path)


def _check_range(info: dict, start: int, end: int, key: str) -> None:
    """The object ``info`` describes must be non-empty and hold bytes ``[start, end)``."""
    size = int(info.get("size", 0))
    if size == 0:
        raise SlotFault("empty", "zero-byte GRIB", f"{key} is an empty placeholder")
    if start >= size or end > size:
        raise SlotFault("corrupt", "range past end",
                        f".idx puts REFC at bytes {start}-{end}, the object is {size} bytes (truncated or stale .idx)")


@dataclass(frozen=True)
class SlotResult:
    """What happened to one ``(time, lead_time)`` slot.

    ``detail`` is the slot's reason (``"<kind>: <text>"``, empty when ok);
    ``identity`` the objects' identities (:func:`slot_identity`); ``start``,
    ``end`` the byte range of the GRIB object read (0, 0 when none).
    """

    time: np.datetime64
    lead: int
    status: str
    detail: str = ""
    nbytes: int = 0
    message_bytes: int = 0
    identity: str = ""
    start: int = 0
    end: int = 0
    unreachable: bool = False

    @property
    def kind(self) -> str:
        """The reason's kind (what summaries count)."""
        return self.detail.split(": ", 1)[0] if self.detail else ""


def fetch_slot(source: Source, grid: Grid | None, init_time: np.datetime64, lead: int, *, loose: bool = False
               ) -> tuple[SlotResult, np.ndarray | None, Grid | None]:
    """Fetch, check and decode one slot; every failure becomes a :class:`SlotResult`.

    ``loose`` bounds the fetch by the largest plausible grid rather than
    ``grid`` (the probe, which must tell a source on another grid).

    Returns
    -------
    result : SlotResult
        Status ``ok`` or the reason the slot is not filled.
    values : numpy.ndarray or None
        ``(ny, nx)`` int16 sixteenths of a dB when ok.
    grid : Grid or None
        The message's grid when ok.
    """
    trace = _Trace()

    def result(status: str, detail: str, **kw: Any) -> SlotResult:
        return SlotResult(init_time, lead, status, " ".join(detail.split()), identity=trace.identity,
                          start=trace.start, end=trace.end, **kw)

    try:
        got = fetch_refc(source, init_time, lead, None if loose else grid, trace)
        values, found = decode_refc(got.data, grid, init_time=init_time, lead=lead)
    except SourceNotFoundError as exc:
        reason = getattr(exc, "reason", "absent")
        return result(reason, str(exc) if reason != "no_refc" else f"no REFC: {exc}"), None, None
    except SlotFault as exc:
        return result(exc.status, str(exc)), None, None
    except CorruptMessageError as exc:
        return result("corrupt", f"message: {exc}"), None, None
    except SourceError as exc:
        kind = "unreachable" if getattr(exc, "unreachable", False) else "read error"
        return result("failed", f"{kind}: {exc}", unreachable=getattr(exc, "unreachable", False)), None, None
    return result("ok", "", nbytes=got.nbytes, message_bytes=len(got.data)), values, found


def _log_slot(result: SlotResult) -> None:
    """A warning for a slot that is not ok; absent files (common in the early archive) only at INFO."""
    level = logging.INFO if result.status == "absent" else logging.WARNING
    logger.log(level, "%s lead %d: %s (%s)", result.time, result.lead, result.status, result.detail)


#: Fill value of ``refc`` on disk (int16), what a slot is cleared to.
_REFC_FILL = np.int16(-32768)


def write_slot(store_cfg: StoreConfig, index: tuple[int, int], result: SlotResult, values: np.ndarray | None,
               *, clear: bool = False, shape: tuple[int, int] | None = None) -> SlotResult:
    """Write one slot's image, size, identity and reason, then its status (last, as the commit mark).

    ``clear`` (a slot that held an image before) resets ``refc`` to the fill
    value when the slot is no longer ok.
    """
    record: dict[str, Any] = {
        "grib_bytes": np.int32(result.message_bytes),
        "source_identity": result.identity,
        "grib_start": np.int64(result.start),
        "grib_end": np.int64(result.end),
        "reason": result.detail,
    }
    if result.status == "ok":
        record = {"refc": values, **record}
    else:
        _log_slot(result)
        if clear and shape is not None:
            record = {"refc": np.full(shape, _REFC_FILL, dtype=np.int16), **record}
    store.write_region(store_cfg, {**record, "status": np.int8(STATUS[result.status])}, index)
    return result
