"""Ingest: HRRR composite reflectivity from the archive into the Zarr store.

Core (pure): :func:`hrrr_key`, :func:`parse_idx`, :func:`find_refc`,
:func:`check_message`, :func:`decode_refc`.
Lazy wrapper: :func:`ingest`, a Dask graph over ``(time, lead_time)`` slots.
I/O: :func:`run`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from wxdask import store
from wxdask.client import compute
from wxdask.config import Config, StoreConfig
from wxdask.errors import CorruptMessageError, SourceError, SourceNotFoundError, StoreLayoutError
from wxdask.grid import Grid, grid_from_message, grid_mapping_attrs, latlon, projection_xy

if TYPE_CHECKING:
    from dask.delayed import Delayed
    from distributed import Client

__all__ = [
    "IdxEntry",
    "Source",
    "SlotResult",
    "STATUS",
    "hrrr_key",
    "fcst_label",
    "fcst_lead",
    "parse_idx",
    "find_refc",
    "check_message",
    "decode_refc",
    "fetch_refc",
    "fetch_slot",
    "write_slot",
    "ingest_slot",
    "refc_template",
    "ingest",
    "summarize",
    "run",
]

logger = logging.getLogger(__name__)

#: Physically possible composite reflectivity, dBZ (HRRR floors at -10; ~75 is extreme).
REFC_MIN, REFC_MAX = -10.0, 100.0

_IDX_LINE = re.compile(r"^(?P<n>\d+(?:\.\d+)?):(?P<start>\d+):d=(?P<date>\d{10}):(?P<var>[^:]*):(?P<level>[^:]*):(?P<fcst>[^:]*):?")


def hrrr_key(init_time: np.datetime64, lead: int) -> str:
    """Key of one HRRR surface file within the bucket.

    Parameters
    ----------
    init_time : numpy.datetime64
        Model initialisation time (UTC), on the hour.
    lead : int
        Forecast hour (0 = analysis).

    Returns
    -------
    str
        ``hrrr.YYYYMMDD/conus/hrrr.tHHz.wrfsfcfFF.grib2``; append ``.idx`` for its sidecar.

    Examples
    --------
    >>> hrrr_key(np.datetime64("2019-09-20T05"), 1)
    'hrrr.20190920/conus/hrrr.t05z.wrfsfcf01.grib2'
    """
    t = np.datetime64(init_time, "h").item()
    return f"hrrr.{t:%Y%m%d}/conus/hrrr.t{t:%H}z.wrfsfcf{int(lead):02d}.grib2"


@dataclass(frozen=True)
class IdxEntry:
    """One line of a wgrib2-style ``.idx`` sidecar.

    ``end`` is exclusive (the next message's start) and ``None`` for the last
    message, which runs to the end of the file.
    """

    number: str
    start: int
    end: int | None
    date: str
    var: str
    level: str
    fcst: str


def fcst_label(lead: int) -> str:
    """The ``.idx`` forecast label of a lead: ``anl`` for 0, else ``N hour fcst``; :func:`fcst_lead` inverts it."""
    return "anl" if int(lead) == 0 else f"{int(lead)} hour fcst"


def fcst_lead(label: str) -> int | None:
    """The lead (hours) an ``.idx`` forecast label names, or ``None`` if it is no :func:`fcst_label` label."""
    m = re.fullmatch(r"anl|([1-9]\d*) hour fcst", label)
    return None if m is None else int(m[1] or 0)


def parse_idx(text: str) -> list[IdxEntry]:
    """Parse a ``.idx`` sidecar into entries with exclusive byte ranges.

    Parameters
    ----------
    text : str
        Whole sidecar, lines like ``1:0:d=2022101401:REFC:entire atmosphere:anl:``.

    Returns
    -------
    list of IdxEntry
        In file order. A message ends where the next one with a different start
        begins; sub-messages (``238.1``) sharing a start share the range.

    Raises
    ------
    CorruptMessageError
        If a line is malformed or starts go backwards.

    Examples
    --------
    >>> e = parse_idx("1:0:d=2022101401:REFC:entire atmosphere:anl:\\n2:500:d=2022101401:TMP:2 m above ground:anl:\\n")
    >>> (e[0].var, e[0].start, e[0].end, e[1].end)
    ('REFC', 0, 500, None)
    """
    rows = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _IDX_LINE.match(line.strip())
        if m is None:
            raise CorruptMessageError(f".idx line {lineno} is malformed: {line!r}")
        rows.append(m)
    starts = [int(m["start"]) for m in rows]
    if any(b < a for a, b in zip(starts, starts[1:])):
        raise CorruptMessageError(f".idx byte offsets go backwards: {starts}")
    entries = []
    for i, m in enumerate(rows):
        start = starts[i]
        end = next((s for s in starts[i + 1 :] if s > start), None)
        entries.append(IdxEntry(m["n"], start, end, m["date"], m["var"], m["level"], m["fcst"]))
    return entries


def find_refc(entries: list[IdxEntry], init_time: np.datetime64 | None = None, lead: int | None = None) -> IdxEntry:
    """The REFC entry of a sidecar (matched on ``:REFC:``, whatever the level label).

    Parameters
    ----------
    entries : list of IdxEntry
        Parsed sidecar.
    init_time, lead : optional
        When given, the entry's date and forecast label must agree with them.

    Raises
    ------
    SourceNotFoundError
        If no REFC message is listed.
    CorruptMessageError
        If the sidecar's date or lead disagree with the file it belongs to.
    """
    matches = [e for e in entries if e.var == "REFC"]
    if not matches:
        raise SourceNotFoundError("no REFC message in the .idx sidecar")
    entry = matches[0]
    if init_time is not None:
        want = f"{np.datetime64(init_time, 'h').item():%Y%m%d%H}"
        if entry.date != want:
            raise CorruptMessageError(f".idx says REFC is for d={entry.date}, expected d={want}")
    if lead is not None:
        if fcst_lead(entry.fcst) != lead:
            raise CorruptMessageError(f".idx says REFC is {entry.fcst!r}, expected {fcst_label(lead)!r}")
    return entry


def check_message(data: bytes, entry: IdxEntry) -> None:
    """Check that ``data`` is one whole GRIB2 message for ``entry``'s byte range.

    ecCodes decodes a message whose middle is garbage without complaint, so the
    framing is checked here: ``GRIB`` at the start, edition 2, the total length
    in section 0 equal to the bytes fetched (and to the range's length when it
    is closed), and ``7777`` at the end.

    Raises
    ------
    CorruptMessageError
        Naming what is wrong.

    Examples
    --------
    >>> msg = b"GRIB" + bytes([0, 0, 0, 2]) + (24).to_bytes(8, "big") + b"\\0" * 4 + b"7777"
    >>> check_message(msg, IdxEntry("1", 0, 24, "", "REFC", "", ""))
    """
    n = len(data)
    if entry.end is not None and n != entry.end - entry.start:
        raise CorruptMessageError(f"fetched {n} bytes, expected {entry.end - entry.start} for bytes {entry.start}-{entry.end}")
    if n < 16 or data[:4] != b"GRIB":
        raise CorruptMessageError(f"message at byte {entry.start} does not start with 'GRIB'")
    if data[7] != 2:
        raise CorruptMessageError(f"message at byte {entry.start} is GRIB edition {data[7]}, expected 2")
    total = int.from_bytes(data[8:16], "big")
    if total != n:
        raise CorruptMessageError(f"message at byte {entry.start} says it is {total} bytes long, got {n}")
    if data[-4:] != b"7777":
        raise CorruptMessageError(f"message at byte {entry.start} does not end with '7777'")


# --------------------------------------------------------------------------
# Slot status codes (the store's ``status`` variable)
# --------------------------------------------------------------------------

#: ``status`` codes and their meanings (CF flag_values / flag_meanings).
STATUS = {
    "not_tried": 0,
    "ok": 1,
    "absent": 2,
    "missing_idx": 3,
    "no_refc": 4,
    "corrupt": 5,
    "failed": 6,
}
STATUS_NAMES = {code: name for name, code in STATUS.items()}


def decode_refc(data: bytes, grid: Grid | None = None) -> tuple[np.ndarray, Grid]:
    """Decode one REFC GRIB2 message held in memory.

    Parameters
    ----------
    data : bytes
        One whole message (see :func:`check_message`).
    grid : Grid, optional
        The grid the message must be on.

    Returns
    -------
    values : numpy.ndarray
        ``(ny, nx)`` int16 in 1/16 dBZ, row 0 south (HRRR's scanning mode 64).
    grid : Grid
        The message's grid.

    Raises
    ------
    CorruptMessageError
        If the message is not REFC, is on another grid, is not on the 1/16 dB
        lattice, or holds values that REFC cannot have.
    """
    import eccodes

    try:
        handle = eccodes.codes_new_from_message(data)
    except eccodes.GribInternalError as exc:
        raise CorruptMessageError(f"ecCodes cannot read the message: {exc}") from None
    try:
        ident = tuple(eccodes.codes_get(handle, k) for k in ("discipline", "parameterCategory", "parameterNumber"))
        if ident != (0, 16, 196):
            raise CorruptMessageError(f"message is discipline/category/number {ident}, not REFC (0, 16, 196)")
        if eccodes.codes_get(handle, "scanningMode") != 64:
            raise CorruptMessageError("REFC message has scanningMode != 64 (row 0 must be the southern edge)")
        _check_lattice(handle)
        found = grid_from_message(handle)
        if grid is not None and found != grid:
            raise CorruptMessageError(f"message is on grid {found.name} {found.shape}, store holds {grid.name} {grid.shape}")
        values = eccodes.codes_get_values(handle)
    except eccodes.GribInternalError as exc:
        raise CorruptMessageError(f"ecCodes cannot decode the message: {exc}") from None
    finally:
        eccodes.codes_release(handle)
    return _quantise(values, found.shape), found


def _check_lattice(handle: int) -> None:
    """Values of the message must be exact sixteenths of a dB, as HRRR packs REFC.

    Packed values are ``R + X * 2**E / 10**D``; with ``D == 0``, ``E >= -4`` and
    ``16 * R`` whole, every value is an exact multiple of 1/16, so the int16
    store is lossless without looking at the values.
    """
    import eccodes

    ref = eccodes.codes_get_double(handle, "referenceValue")
    e = eccodes.codes_get_long(handle, "binaryScaleFactor")
    d = eccodes.codes_get_long(handle, "decimalScaleFactor")
    if d != 0 or e < -4 or (ref * 16) != round(ref * 16):
        raise CorruptMessageError(
            f"REFC packing (reference {ref}, binary scale {e}, decimal scale {d}) is not on the 1/16 dB "
            "lattice that HRRR packs it to; it cannot be stored losslessly as int16 sixteenths"
        )


def _quantise(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Float dBZ (exact multiples of 1/16, see :func:`decode_refc`) to int16 sixteenths.

    Checks the count and the physical range; works in place on ``values``.
    """
    if values.size != shape[0] * shape[1]:
        raise CorruptMessageError(f"message holds {values.size} values, grid needs {shape[0] * shape[1]}")
    lo, hi = float(values.min()), float(values.max())
    if not (REFC_MIN - 1e-3 <= lo and hi <= REFC_MAX) or not (np.isfinite(lo) and np.isfinite(hi)):
        raise CorruptMessageError(f"REFC values span {lo:.2f}..{hi:.2f} dBZ, outside the possible {REFC_MIN}..{REFC_MAX}")
    np.multiply(values, 16.0, out=values)
    return np.rint(values, out=values).astype(np.int16).reshape(shape)


# --------------------------------------------------------------------------
# Reading the archive (runs on workers)
# --------------------------------------------------------------------------


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
            opts: dict = {"anon": self.anon}
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


def _is_transient(exc: BaseException) -> bool:
    """Whether a read error is worth retrying (5xx, throttling, timeouts, dropped connections)."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
        return False
    names = {cls.__name__ for cls in type(exc).__mro__}
    transient = {"TimeoutError", "ConnectionError", "ClientError", "BotoCoreError", "ServerDisconnectedError",
                 "ClientPayloadError", "IncompleteReadError", "ReadTimeoutError", "EndpointConnectionError"}
    if names & transient:
        return True
    return isinstance(exc, OSError)


def _retry(source: Source, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
    """Call ``func`` with retries and exponential backoff for transient failures.

    Raises
    ------
    FileNotFoundError
        If the object does not exist (permanent, never retried).
    SourceError
        If a transient failure persists after ``source.retries`` attempts, or
        the failure is permanent (e.g. access denied).
    """
    delay = source.backoff
    for attempt in range(1, source.retries + 1):
        try:
            return func(*args, **kwargs)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below
            if not _is_transient(exc) or attempt == source.retries:
                raise SourceError(f"{what} failed after {attempt} attempt(s): {type(exc).__name__}: {exc}") from exc
            logger.warning("transient error (%s, attempt %d/%d): %s; retrying in %.1fs",
                           what, attempt, source.retries, exc, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")  # pragma: no cover


def _read(source: Source, fs: Any, path: str, start: int | None = None, end: int | None = None) -> bytes:
    """``fs.cat_file`` (a byte range when ``start`` is given, ``end`` exclusive) with retries."""
    if start is None:
        return _retry(source, f"reading {path!r}", fs.cat_file, path)
    return _retry(source, f"reading {path!r}", fs.cat_file, path, start=start, end=end)


def fetch_refc(source: Source, init_time: np.datetime64, lead: int) -> tuple[bytes, IdxEntry, int]:
    """Fetch the REFC message of one archive file: the ``.idx``, then one ranged GET.

    Returns
    -------
    data : bytes
        The message.
    entry : IdxEntry
        Its sidecar entry.
    nbytes : int
        Bytes fetched in all (sidecar included).

    Raises
    ------
    SourceNotFoundError
        ``absent`` (no GRIB file), ``missing_idx`` (GRIB without sidecar) or
        ``no_refc`` (sidecar lists no REFC), as its ``reason`` attribute.
    CorruptMessageError, SourceError
        As raised by :func:`check_message` and the reader.
    """
    fs = source.filesystem()
    key = hrrr_key(init_time, lead)
    try:
        idx = _read(source, fs, source.path(key + ".idx"))
    except FileNotFoundError:
        exists = _retry(source, f"looking for {key!r}", fs.exists, source.path(key))
        reason = "missing_idx" if exists else "absent"
        err = SourceNotFoundError(f"{key}: " + ("GRIB file has no .idx sidecar" if reason == "missing_idx" else "not in the archive"))
        err.reason = reason  # type: ignore[attr-defined]
        raise err from None
    try:
        entry = find_refc(parse_idx(idx.decode("ascii", errors="replace")), init_time, lead)
    except SourceNotFoundError as exc:
        exc.reason = "no_refc"  # type: ignore[attr-defined]
        raise
    try:
        data = _read(source, fs, source.path(key), entry.start, entry.end)
    except FileNotFoundError:
        err = SourceNotFoundError(f"{key}: .idx present but GRIB file missing")
        err.reason = "absent"  # type: ignore[attr-defined]
        raise err from None
    check_message(data, entry)
    return data, entry, len(idx) + len(data)


@dataclass(frozen=True)
class SlotResult:
    """What happened to one ``(time, lead_time)`` slot."""

    time: np.datetime64
    lead: int
    status: str
    detail: str = ""
    nbytes: int = 0
    message_bytes: int = 0


def fetch_slot(source: Source, grid: Grid | None, init_time: np.datetime64, lead: int
               ) -> tuple[SlotResult, np.ndarray | None, Grid | None]:
    """Fetch, check and decode one slot; every failure becomes a :class:`SlotResult`.

    Returns
    -------
    result : SlotResult
        Status ``ok`` or the reason the slot is not filled.
    values : numpy.ndarray or None
        ``(ny, nx)`` int16 sixteenths of a dB when ok.
    grid : Grid or None
        The message's grid when ok.
    """
    try:
        data, _, nbytes = fetch_refc(source, init_time, lead)
        values, found = decode_refc(data, grid)
    except SourceNotFoundError as exc:
        return SlotResult(init_time, lead, getattr(exc, "reason", "absent"), str(exc)), None, None
    except CorruptMessageError as exc:
        return SlotResult(init_time, lead, "corrupt", f"{hrrr_key(init_time, lead)}: {exc}"), None, None
    except SourceError as exc:
        return SlotResult(init_time, lead, "failed", str(exc)), None, None
    return SlotResult(init_time, lead, "ok", "", nbytes, len(data)), values, found


def write_slot(store_cfg: StoreConfig, index: tuple[int, int], result: SlotResult, values: np.ndarray | None) -> SlotResult:
    """Write one slot's image and message size, then its status (last, as the commit mark)."""
    status = {"status": np.int8(STATUS[result.status])}
    if result.status == "ok":
        store.write_region(store_cfg, {"refc": values, "grib_bytes": np.int32(result.message_bytes), **status}, index)
    else:
        logger.warning("%s lead %d: %s (%s)", result.time, result.lead, result.status, result.detail)
        store.write_region(store_cfg, status, index)
    return result


def ingest_slot(source: Source, store_cfg: StoreConfig, grid: Grid, init_time: np.datetime64, lead: int,
                index: tuple[int, int]) -> SlotResult:
    """Fetch, check, decode and write one slot; runs as one Dask task.

    The image is written before ``status``, so a slot interrupted half-way is
    retried by the next run.
    """
    result, values, _ = fetch_slot(source, grid, init_time, lead)
    return write_slot(store_cfg, index, result, values)


# --------------------------------------------------------------------------
# Lazy wrapper: the store's layout and the graph of slot tasks
# --------------------------------------------------------------------------


def refc_template(times: np.ndarray, leads: tuple[int, ...], grid: Grid, source: str = "") -> xr.Dataset:
    """The ingest stage's variables, coordinates and attributes, lazily filled.

    Returns
    -------
    xarray.Dataset
        ``refc(time, lead_time, y, x)`` (NaN), ``grib_bytes`` and ``status``
        (``not_tried``), with ``x``, ``y``, ``latitude``, ``longitude`` and the
        CF grid mapping ``lambert_conformal``. Chunks: one image per chunk.
    """
    import dask.array as da

    nt, nl = len(times), len(leads)
    ny, nx = grid.shape
    x, y = projection_xy(grid)
    lat, lon = latlon(grid)
    ds = xr.Dataset(
        {
            "refc": (("time", "lead_time", "y", "x"), da.full((nt, nl, ny, nx), np.nan, dtype=np.float32, chunks=(1, 1, ny, nx)), {
                "long_name": "composite reflectivity (entire atmosphere)",
                "units": "dBZ",
                "grid_mapping": "lambert_conformal",
                "grid": grid.name,
                "orientation": "row 0 (y index 0) is the southern edge, as HRRR stores it (scanningMode 64)",
                "encoding_note": "stored losslessly as int16 sixteenths of a dB (the GRIB message's 1/16 dB steps, -10 floor kept)",
                "grib_parameter": "discipline 0, category 16, number 196 (REFC), surface type 10",
            }),
            "grib_bytes": (("time", "lead_time"), da.zeros((nt, nl), dtype=np.int32, chunks=(1, 1)), {
                "long_name": "size of the REFC GRIB2 message", "units": "bytes"}),
            "status": (("time", "lead_time"), da.zeros((nt, nl), dtype=np.int8, chunks=(1, 1)), {
                "long_name": "why each slot is or is not filled",
                "flag_values": list(STATUS.values()),
                "flag_meanings": " ".join(STATUS),
            }),
            "lambert_conformal": ((), np.int32(0), grid_mapping_attrs(grid)),
        },
        coords={
            "time": ("time", np.asarray(times, dtype="datetime64[ns]"), {"long_name": "model initialisation time (UTC)"}),
            "lead_time": ("lead_time", np.asarray(leads, dtype=np.int16), {"long_name": "forecast lead", "units": "hours"}),
            "y": ("y", y, {"standard_name": "projection_y_coordinate", "units": "m"}),
            "x": ("x", x, {"standard_name": "projection_x_coordinate", "units": "m"}),
            "latitude": (("y", "x"), lat.astype(np.float32), {"standard_name": "latitude", "units": "degrees_north"}),
            "longitude": (("y", "x"), lon.astype(np.float32), {"standard_name": "longitude", "units": "degrees_east"}),
        },
        attrs={"title": "HRRR composite reflectivity", "source": source, "wxdask_grid": dataclasses.asdict(grid)},
    )
    return ds


#: Zarr encoding of the ingest stage's variables.
ENCODING = {
    "refc": {"dtype": "int16", "scale_factor": 1 / 16, "_FillValue": np.int16(-32768), "fill_value": -32768},
    "grib_bytes": {"fill_value": 0},
    "status": {"fill_value": 0},
}


def ingest(slots: list[tuple[np.datetime64, int, tuple[int, int]]], source: Source, store_cfg: StoreConfig,
           grid: Grid) -> list[Delayed]:
    """One independent task per slot; nothing is computed here.

    Parameters
    ----------
    slots : list of (init_time, lead, (time_index, lead_index))
        Slots to fetch and where they go in the store.

    Returns
    -------
    list of dask.delayed.Delayed
        Each computes to a :class:`SlotResult` after writing its slot.
    """
    import dask

    task = dask.delayed(ingest_slot, pure=True)
    return [
        task(source, store_cfg, grid, t, lead, index,
             dask_key_name=f"ingest-{np.datetime_as_string(t, unit='h')}-f{lead:02d}")
        for t, lead, index in slots
    ]


# --------------------------------------------------------------------------
# I/O: run the stage
# --------------------------------------------------------------------------


def _check_source(source: Source) -> None:
    """Fail early, with one clear line, when the archive root cannot be read."""
    fs = source.filesystem()
    root = source.root.rstrip("/")
    target = root[5:].split("/")[0] if root.startswith("s3://") else root
    try:
        ok = fs.exists(target)
    except Exception as exc:  # noqa: BLE001 - any failure here means unreadable
        raise SourceError(f"cannot read source {source.root!r} ({type(exc).__name__}: {exc})") from None
    if not ok:
        where = f" at {source.endpoint_url}" if source.endpoint_url else ""
        raise SourceNotFoundError(f"source {source.root!r}{where} does not exist or cannot be read")


def _probe_grid(source: Source, slots: list[tuple[np.datetime64, int]], limit: int = 48
                ) -> tuple[Grid | None, list[tuple[SlotResult, np.ndarray | None]]]:
    """Fetch slots in order until one decodes, to learn the source's grid.

    Returns the grid (``None`` if none of the first ``limit`` slots decodes) and
    the results of the slots tried, which the caller writes like any other.
    """
    tried = []
    for t, lead in slots[:limit]:
        result, values, grid = fetch_slot(source, None, t, lead)
        tried.append((result, values))
        if grid is not None:
            return grid, tried
    return None, tried


def _ok_slots(store_cfg: StoreConfig) -> set[tuple[np.datetime64, int]]:
    """Slots the store already holds (status ok); empty for a new store."""
    if not store.exists(store_cfg):
        return set()
    ds = store.open_store(store_cfg)
    if "status" not in ds:
        raise StoreLayoutError(f"store {store_cfg.url!r} has no 'status'; it was not made by wxdask ingest")
    status = ds["status"].values
    times = ds["time"].values.astype("datetime64[h]")
    leads = ds["lead_time"].values
    ti, li = np.nonzero(status == STATUS["ok"])
    return {(times[i], int(leads[j])) for i, j in zip(ti, li)}


def _store_grid(ds: xr.Dataset) -> Grid | None:
    params = ds.attrs.get("wxdask_grid")
    return Grid(**params) if params else None


def summarize(results: list[SlotResult]) -> str:
    """A short human summary: counts per status, then every slot that is not ok."""
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    lines = [f"{len(results)} slot(s) attempted: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    for r in results:
        if r.status != "ok":
            lines.append(f"  {np.datetime_as_string(r.time, unit='h')} f{r.lead:02d}: {r.status}: {r.detail}")
    return "\n".join(lines)


def run(cfg: Config, client: Client | None) -> str:
    """Ingest ``cfg.ingest``'s times and leads into ``cfg.store``; return a summary.

    Slots already ``ok`` in the store are skipped, so a rerun (after an
    interruption, or over a larger range) fetches only what is missing.

    Raises
    ------
    ConfigError
        If start/end are missing or invalid.
    SourceNotFoundError, SourceError
        If the source cannot be read at all.
    StoreLayoutError
        If the store holds a different grid or variable (it is left intact).
    """
    icfg = cfg.ingest
    times = icfg.times()
    source = Source(icfg.source, icfg.endpoint_url, icfg.anon, icfg.retries, icfg.backoff)
    _check_source(source)
    wanted = [(t, lead) for t in times for lead in icfg.leads]
    held = _ok_slots(cfg.store)
    pending = [slot for slot in wanted if slot not in held]
    logger.info("%d of %d slot(s) to fetch (%d already in the store)", len(pending), len(wanted), len(wanted) - len(pending))
    results: list[SlotResult] = []
    if pending:
        held_grid = _store_grid(store.open_store(cfg.store)) if store.exists(cfg.store) else None
        grid, probed = _probe_grid(source, pending)
        grid = grid or held_grid
        if grid is None:
            raise SourceNotFoundError(
                f"none of the first {min(48, len(pending))} requested files in {source.root!r} holds a readable "
                "REFC message, so the grid is unknown; check --start/--end and --source"
            )
        if held_grid is not None and held_grid != grid:
            raise StoreLayoutError(
                f"store {cfg.store.url!r} holds grid {held_grid.name} {held_grid.shape}, the source has "
                f"{grid.name} {grid.shape}: a different grid; use another --store"
            )
        template = refc_template(times, icfg.leads, grid, source=icfg.source)
        ds = store.init_output(cfg.store, template, ENCODING, check_equal=["x", "y", "refc.attrs"])
        time_index = {t: i for i, t in enumerate(ds["time"].values.astype("datetime64[h]"))}
        lead_index = {int(v): i for i, v in enumerate(ds["lead_time"].values)}
        def index(t: np.datetime64, lead: int) -> tuple[int, int]:
            return time_index[t], lead_index[lead]

        results = [write_slot(cfg.store, index(r.time, r.lead), r, values) for r, values in probed]
        todo = [(t, lead, index(t, lead)) for t, lead in pending[len(probed):]]
        results += compute(client, ingest(todo, source, cfg.store, grid), cfg.dask)
    store.set_attrs(cfg.store, {"wxdask_config": cfg.to_dict(), "wxdask_version": _version()})
    store.consolidate(cfg.store)
    done = len(wanted) - len(pending)
    summary = summarize(results) if results else "nothing to fetch"
    return f"{summary}\n{done} slot(s) were already ok; store: {cfg.store.url}"


def _version() -> str:
    from importlib.metadata import version

    return version("wxdask")
