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
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from wxdask import store
from wxdask.config import Config, StoreConfig
from wxdask.errors import ConfigError, CorruptMessageError, SourceError, SourceNotFoundError, StoreLayoutError
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
    "MessageHeader",
    "read_header",
    "check_slot",
    "SlotFault",
    "decode_refc",
    "fetch_refc",
    "fetch_slot",
    "write_slot",
    "ingest_slot",
    "ingest_group",
    "group_slots",
    "refc_template",
    "ingest",
    "summarize",
    "status_report",
    "parse_retry",
    "object_identity",
    "slot_identity",
    "run",
]

logger = logging.getLogger(__name__)

#: Physically possible composite reflectivity, dBZ (HRRR floors at -10; ~75 is extreme).
REFC_MIN, REFC_MAX = -10.0, 100.0

_IDX_LINE = re.compile(
    r"^(?P<n>\d+(?:\.\d+)?):(?P<start>\d+):d=(?P<date>\d{10}):(?P<var>[^:]*):(?P<level>[^:]*):(?P<fcst>[^:]*):?"
)


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
    t = np.datetime64(init_time, "h").item()  # type: ignore[call-overload]  # numpy stubs lack datetime64(datetime64, unit)
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
        want = f"{np.datetime64(init_time, 'h').item():%Y%m%d%H}"  # type: ignore[call-overload]  # numpy stubs lack datetime64(datetime64, unit)
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
        raise CorruptMessageError(
            f"fetched {n} bytes, expected {entry.end - entry.start} for bytes {entry.start}-{entry.end}"
        )
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
# Slot status codes (the store's ``status`` variable) and per-slot faults
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
    "mismatch": 7,
    "off_lattice": 8,
    "empty": 9,
    "oversize": 10,
}
STATUS_NAMES = {code: name for name, code in STATUS.items()}

#: Statuses that ``--retry`` may name (``not_tried`` and ``failed`` are always retried).
RETRYABLE = tuple(name for name in STATUS if name not in ("not_tried", "ok"))

#: Largest ``.idx`` sidecar read (real ones are ~10-30 kB; a bigger one is refused unread).
MAX_IDX_BYTES = 1 << 20
#: Largest grid accepted before the grid is known (HRRR has 1.9e6 points).
MAX_POINTS = 20_000_000

#: Hours per unit of GRIB2 code table 4.4 (indicatorOfUnitOfTimeRange).
TIME_UNIT_HOURS = {0: Fraction(1, 60), 1: Fraction(1), 2: Fraction(24), 10: Fraction(3), 11: Fraction(6),
                   12: Fraction(12), 13: Fraction(1, 3600)}
_UNIT_NAMES = {0: "minute", 1: "hour", 2: "day", 10: "3-hour period", 11: "6-hour period", 12: "12-hour period",
               13: "second"}


class SlotFault(CorruptMessageError):
    """A message or object that cannot fill its slot, with the status it earns.

    ``str(exc)`` is the slot's reason, ``"<kind>: <detail>"``; ``kind`` groups
    reasons in summaries.
    """

    def __init__(self, status: str, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.status = status
        self.kind = kind


def _max_message_bytes(points: int) -> int:
    """A generous bound on a REFC message of ``points`` values (32 bits each, plus headers)."""
    return 4 * points + (1 << 16)


@dataclass(frozen=True)
class MessageHeader:
    """What a GRIB2 message says about itself, read from its bytes (no decoding).

    ``reference_time`` is section 1's (to the minute); ``forecast_time`` is in
    the unit ``time_unit`` (code table 4.4); ``n_points`` is section 3's count,
    ``nx``/``ny`` its Lambert conformal dimensions (0 on other templates);
    ``n_values`` is section 5's count of packed values.
    """

    discipline: int
    total_length: int
    reference_time: np.datetime64
    grid_template: int
    n_points: int
    nx: int
    ny: int
    product_template: int
    category: int
    number: int
    time_unit: int
    forecast_time: int
    n_values: int
    data_template: int
    reference_value: float
    binary_scale: int
    decimal_scale: int
    bits: int

    @property
    def lead_hours(self) -> Fraction | None:
        """The forecast time in hours, exactly; ``None`` for an unknown unit."""
        per = TIME_UNIT_HOURS.get(self.time_unit)
        return None if per is None else self.forecast_time * per

    def lead_text(self) -> str:
        unit = _UNIT_NAMES.get(self.time_unit, f"unit code {self.time_unit}")
        text = f"{self.forecast_time} {unit}{'s' if self.forecast_time != 1 else ''}"
        hours = self.lead_hours
        return text if hours is None or self.time_unit == 1 else f"{text} ({float(hours):g} h)"


def _signed(raw: bytes) -> int:
    """GRIB2's sign-and-magnitude integers (the top bit is the sign)."""
    value = int.from_bytes(raw, "big")
    top = 1 << (8 * len(raw) - 1)
    return -(value & (top - 1)) if value & top else value


def read_header(data: bytes, *, max_points: int = MAX_POINTS) -> MessageHeader:
    """Read the header keys of one GRIB2 message from its bytes, checking every claimed size.

    Nothing is decoded or allocated by size: a hostile header (a message of
    many GB, a grid of billions of points) is refused here, before ecCodes
    sees it.

    Parameters
    ----------
    data : bytes
        One whole message (see :func:`check_message`).
    max_points : int
        Largest grid accepted.

    Returns
    -------
    MessageHeader

    Raises
    ------
    SlotFault
        ``oversize`` when the message claims more points than ``max_points``.
    CorruptMessageError
        When the sections do not fit the message or a needed one is missing.
    """
    n = len(data)
    if n < 16 or data[:4] != b"GRIB" or data[7] != 2:
        raise CorruptMessageError("not a GRIB2 message")
    total = int.from_bytes(data[8:16], "big")
    if total != n:
        raise SlotFault("oversize" if total > n else "corrupt", "message size",
                        f"section 0 says the message is {total} bytes, it holds {n}")
    sections: dict[int, bytes] = {}
    pos = 16
    while pos < total - 4:
        if pos + 5 > total - 4:
            raise CorruptMessageError(f"section header at byte {pos} runs past the end of the message")
        length, number = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4]
        if length < 5 or pos + length > total - 4:
            raise SlotFault(
                "oversize" if length > total else "corrupt",
                "message size",
                f"section {number} claims {length} bytes at byte {pos}, past the end of the {total}-byte message",
            )
        sections.setdefault(number, data[pos : pos + length])
        pos += length
    need = {1: 21, 3: 14, 4: 22, 5: 20, 7: 5}
    for number, size in need.items():
        if number not in sections:
            raise CorruptMessageError(f"message has no section {number}")
        if len(sections[number]) < size:
            raise CorruptMessageError(f"section {number} is {len(sections[number])} bytes, too short")
    s1, s3, s4, s5 = sections[1], sections[3], sections[4], sections[5]
    n_points = int.from_bytes(s3[6:10], "big")
    template = int.from_bytes(s3[12:14], "big")
    nx = ny = 0
    if template == 30 and len(s3) >= 38:
        nx, ny = int.from_bytes(s3[30:34], "big"), int.from_bytes(s3[34:38], "big")
    n_values = int.from_bytes(s5[5:9], "big")
    for what, count in (("section 3 numberOfDataPoints", n_points), ("section 3 Nx*Ny", nx * ny),
                        ("section 5 numberOfValues", n_values)):
        if count > max_points:
            raise SlotFault(
                "oversize", "points", f"{what} is {count}, more than the {max_points} of any plausible grid"
            )
    if nx and nx * ny != n_points:
        raise CorruptMessageError(f"grid is {nx} x {ny} = {nx * ny} points but section 3 says {n_points}")
    if n_values > n_points:
        raise CorruptMessageError(f"section 5 holds {n_values} values for {n_points} grid points")
    year, month, day, hour, minute = int.from_bytes(s1[12:14], "big"), s1[14], s1[15], s1[16], s1[17]
    try:
        ref = np.datetime64(f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}", "m")
    except ValueError:
        raise CorruptMessageError(
            f"section 1 reference time {year}-{month}-{day} {hour}:{minute} is not a date"
        ) from None
    return MessageHeader(
        discipline=data[6], total_length=total, reference_time=ref, grid_template=template,
        n_points=n_points, nx=nx, ny=ny,
        product_template=int.from_bytes(s4[7:9], "big"), category=s4[9], number=s4[10],
        time_unit=s4[17], forecast_time=_signed(s4[18:22]),
        n_values=n_values, data_template=int.from_bytes(s5[9:11], "big"),
        reference_value=float(np.frombuffer(s5[11:15], dtype=">f4")[0]),
        binary_scale=_signed(s5[15:17]), decimal_scale=_signed(s5[17:19]), bits=s5[19],
    )


def check_slot(header: MessageHeader, init_time: np.datetime64 | None = None, lead: int | None = None,
               grid: Grid | None = None) -> None:
    """Check that a message belongs to its slot: parameter, run, lead and grid size.

    Parameters
    ----------
    header : MessageHeader
        From :func:`read_header`.
    init_time, lead : optional
        The slot's run and lead in hours (a message's lead is converted to hours
        from its unit; a non-whole-hour lead matches no hourly slot).
    grid : Grid, optional
        The store's grid.

    Raises
    ------
    SlotFault
        ``mismatch``, naming what the slot expects and what the message says.
    """
    ident = (header.discipline, header.category, header.number)
    if ident != (0, 16, 196):
        raise SlotFault(
            "mismatch",
            "parameter",
            f"slot holds REFC (discipline/category/number 0/16/196), message is {'/'.join(map(str, ident))}",
        )
    if init_time is not None:
        want = np.datetime64(init_time, "m")  # type: ignore[call-overload]  # numpy stubs lack datetime64(datetime64, unit)
        if header.reference_time != want:
            raise SlotFault(
                "mismatch",
                "date",
                f"slot is run {np.datetime_as_string(want, unit='h')}, message says run "
                f"{np.datetime_as_string(header.reference_time, unit='m')}",
            )
    if lead is not None:
        if header.product_template not in (0, 8):
            raise SlotFault(
                "mismatch",
                "product",
                f"slot holds an instantaneous field (template 4.0), message is template 4.{header.product_template}",
            )
        hours = header.lead_hours
        if hours is None or hours != lead:
            raise SlotFault(
                "mismatch", "lead", f"slot is f{int(lead):02d} ({int(lead)} h), message says {header.lead_text()}"
            )
    if grid is not None:
        want_points = grid.nx * grid.ny
        if header.grid_template != 30 or (header.nx, header.ny) != (grid.nx, grid.ny):
            raise SlotFault(
                "mismatch",
                "grid",
                f"store grid {grid.name} is {grid.nx} x {grid.ny} (template 3.30), message "
                f"is {header.nx} x {header.ny} (template 3.{header.grid_template})",
            )
        if header.n_values != want_points:
            raise SlotFault(
                "mismatch", "grid", f"store grid has {want_points} points, message packs {header.n_values} values"
            )
        if header.total_length > _max_message_bytes(want_points):
            raise SlotFault(
                "oversize",
                "message size",
                f"message is {header.total_length} bytes, more than a {want_points}-point REFC field can need",
            )


def decode_refc(data: bytes, grid: Grid | None = None, *, init_time: np.datetime64 | None = None,
                lead: int | None = None) -> tuple[np.ndarray, Grid]:
    """Decode one REFC GRIB2 message held in memory, after checking it belongs to its slot.

    Parameters
    ----------
    data : bytes
        One whole message (see :func:`check_message`).
    grid : Grid, optional
        The grid the message must be on.
    init_time, lead : optional
        The slot the message must belong to (see :func:`check_slot`).

    Returns
    -------
    values : numpy.ndarray
        ``(ny, nx)`` int16 in 1/16 dBZ, row 0 south (HRRR's scanning mode 64).
    grid : Grid
        The message's grid.

    Raises
    ------
    SlotFault
        ``mismatch`` (another parameter, run, lead or grid), ``oversize``
        (absurd claimed sizes, refused before decoding), ``off_lattice``
        (values that are not whole sixteenths of a dB).
    CorruptMessageError
        If the message cannot be read or holds values that REFC cannot have.
    """
    import eccodes

    header = read_header(data)
    check_slot(header, init_time, lead, grid)
    try:
        handle = eccodes.codes_new_from_message(data)
    except eccodes.GribInternalError as exc:
        raise CorruptMessageError(f"ecCodes cannot read the message: {exc}") from None
    try:
        if eccodes.codes_get(handle, "scanningMode") != 64:
            raise CorruptMessageError("REFC message has scanningMode != 64 (row 0 must be the southern edge)")
        found = grid_from_message(handle)
        if grid is not None and found != grid:
            raise SlotFault("mismatch", "grid", f"store holds grid {grid.name} {grid.shape}, message is on "
                                                f"{found.name} {found.shape} (another projection or origin)")
        values = eccodes.codes_get_values(handle)
    except eccodes.GribInternalError as exc:
        raise CorruptMessageError(f"ecCodes cannot decode the message: {exc}") from None
    finally:
        eccodes.codes_release(handle)
    return _quantise(values, found.shape, check_lattice=not _lattice_by_header(header)), found


def _lattice_by_header(header: MessageHeader) -> bool:
    """Whether the packing alone puts every value on the 1/16 dB lattice (HRRR's own packing).

    Packed values are ``R + X * 2**E / 10**D``; with ``D == 0``, ``E >= -4`` and
    ``16 * R`` whole, every value is an exact multiple of 1/16.
    """
    r = header.reference_value
    return header.decimal_scale == 0 and header.binary_scale >= -4 and (r * 16) == round(r * 16)


#: Largest distance from a whole sixteenth (in sixteenths) still taken as rounding in the decode.
_LATTICE_TOL = 1e-3


def _quantise(values: np.ndarray, shape: tuple[int, int], *, check_lattice: bool = True) -> np.ndarray:
    """Float dBZ to int16 sixteenths, checking the count, the range and (optionally) the lattice.

    Works in place on ``values``. With ``check_lattice``, every value must be a
    whole sixteenth of a dB (to decoding round-off), else the store would not
    be lossless: :class:`SlotFault` ``off_lattice``.
    """
    if values.size != shape[0] * shape[1]:
        raise CorruptMessageError(f"message holds {values.size} values, grid needs {shape[0] * shape[1]}")
    lo, hi = float(values.min()), float(values.max())
    if not (REFC_MIN - 1e-3 <= lo and hi <= REFC_MAX) or not (np.isfinite(lo) and np.isfinite(hi)):
        raise CorruptMessageError(
            f"REFC values span {lo:.2f}..{hi:.2f} dBZ, outside the possible {REFC_MIN}..{REFC_MAX}"
        )
    np.multiply(values, 16.0, out=values)
    rounded = np.rint(values)
    if check_lattice:
        off = np.abs(values - rounded)
        bad = int(np.count_nonzero(off > _LATTICE_TOL))
        if bad:
            raise SlotFault("off_lattice", "lattice",
                            f"{bad} of {values.size} values are not whole sixteenths of a dB (largest miss "
                            f"{float(off.max()) / 16:.4g} dB); int16 sixteenths would change them")
    return rounded.astype(np.int16).reshape(shape)


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
    return any("InvalidRange" in str(e) or "Not Satisfiable" in str(e) or " 416" in str(e) for e in _chain(exc))


def _is_transient(exc: BaseException) -> bool:
    """Whether a read error is worth retrying (5xx, throttling, timeouts, dropped connections)."""
    if isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)) or _is_unsatisfiable(exc):
        return False
    names = {cls.__name__ for cls in type(exc).__mro__}
    transient = {"TimeoutError", "ConnectionError", "ClientError", "BotoCoreError", "ServerDisconnectedError",
                 "ClientPayloadError", "IncompleteReadError", "ReadTimeoutError", "EndpointConnectionError"}
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


def _read(source: Source, fs: Any, path: str, start: int | None = None, end: int | None = None) -> bytes:
    """``fs.cat_file`` (a byte range when ``start`` is given, ``end`` exclusive) with retries."""
    if start is None:
        return _retry(source, f"reading {path!r}", fs.cat_file, path)
    return _retry(source, f"reading {path!r}", fs.cat_file, path, start=start, end=end)


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


@dataclass(frozen=True)
class Fetched:
    """A fetched REFC message and where it came from."""

    data: bytes
    entry: IdxEntry
    nbytes: int
    identity: str
    start: int
    end: int


def fetch_refc(source: Source, init_time: np.datetime64, lead: int, grid: Grid | None = None,
               trace: _Trace | None = None) -> Fetched:
    """Fetch the REFC message of one archive file: the ``.idx``, then one ranged GET.

    Sizes are checked before anything is read: the sidecar (at most
    :data:`MAX_IDX_BYTES`), the object (zero bytes is a placeholder), and the
    REFC range against the object's size and the largest message the grid can
    need. A range past the end is never requested.

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
        trace.idx = _info(source, fs, idx_path)
    except FileNotFoundError:
        try:
            trace.grib = _info(source, fs, grib_path)
        except FileNotFoundError:
            err = SourceNotFoundError(f"no GRIB object: {key} is not in the archive")
            err.reason = "absent"  # type: ignore[attr-defined]
            raise err from None
        err = SourceNotFoundError(f"no .idx: {key} has no .idx sidecar")
        err.reason = "missing_idx"  # type: ignore[attr-defined]
        raise err from None
    idx_size = int(trace.idx.get("size", 0))
    if idx_size == 0:
        raise SlotFault("empty", "zero-byte .idx", f"{key}.idx is an empty placeholder")
    if idx_size > MAX_IDX_BYTES:
        raise SlotFault("oversize", ".idx size", f"{key}.idx is {idx_size} bytes, more than the {MAX_IDX_BYTES} "
                                                 "a sidecar can plausibly be; not read")
    idx = _read(source, fs, idx_path, 0, idx_size)[:MAX_IDX_BYTES]
    try:
        entries = parse_idx(idx.decode("ascii", errors="replace"))
    except CorruptMessageError as exc:
        raise SlotFault("corrupt", ".idx", str(exc)) from None
    try:
        entry = find_refc(entries, init_time, lead)
    except SourceNotFoundError as exc:
        exc.reason = "no_refc"  # type: ignore[attr-defined]
        raise
    except CorruptMessageError as exc:
        raise SlotFault("mismatch", ".idx label", str(exc)) from None
    try:
        trace.grib = _info(source, fs, grib_path)
    except FileNotFoundError:
        err = SourceNotFoundError(f"no GRIB object: {key} has a .idx but no GRIB object")
        err.reason = "absent"  # type: ignore[attr-defined]
        raise err from None
    size = int(trace.grib.get("size", 0))
    if size == 0:
        raise SlotFault("empty", "zero-byte GRIB", f"{key} is an empty placeholder")
    end = entry.end if entry.end is not None else size
    if entry.start >= size or end > size:
        raise SlotFault(
            "corrupt",
            "range past end",
            f".idx puts REFC at bytes {entry.start}-{end}, the object is {size} bytes (truncated or stale .idx)",
        )
    cap = _max_message_bytes(grid.nx * grid.ny if grid is not None else MAX_POINTS)
    if end - entry.start > cap:
        raise SlotFault("oversize", "message size", f".idx gives REFC {end - entry.start} bytes, more than the {cap} "
                                                    "a REFC field on this grid can need; not fetched")
    trace.start, trace.end = entry.start, end
    try:
        data = _read(source, fs, grib_path, entry.start, end)
    except FileNotFoundError:
        err = SourceNotFoundError(f"no GRIB object: {key} vanished while read")
        err.reason = "absent"  # type: ignore[attr-defined]
        raise err from None
    except SourceError as exc:
        if getattr(exc, "unsatisfiable", False):
            raise SlotFault(
                "corrupt", "range past end", f"the server cannot serve bytes {entry.start}-{end} of {key}"
            ) from None
        raise
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


def ingest_slot(source: Source, store_cfg: StoreConfig, grid: Grid, init_time: np.datetime64, lead: int,
                index: tuple[int, int], clear: bool = False) -> SlotResult:
    """Fetch, check, decode and write one slot; runs as one Dask task.

    The image is written before ``status``, so a slot interrupted half-way is
    retried by the next run.
    """
    result, values, _ = fetch_slot(source, grid, init_time, lead)
    return write_slot(store_cfg, index, result, values, clear=clear, shape=grid.shape)


def ingest_group(source: Source, store_cfg: StoreConfig, grid: Grid,
                 items: list[tuple[np.datetime64, int, tuple[int, int], bool]]) -> list[SlotResult]:
    """Ingest the slots of one shard of the per-slot arrays, in order; runs as one Dask task.

    One task owns a shard, so its writes never race another's. Images are
    written as they come; the small per-slot arrays every :data:`FLUSH_SLOTS`
    slots (status last), so a task killed half-way leaves its unflushed slots
    to the next run. Stops early
    (the rest left ``not_tried``) when consecutive slots find the source
    unreachable.
    """
    results: list[SlotResult] = []
    flushed = 0
    dead = _DeadSource(source)

    def flush() -> None:
        # the small per-slot values, one write per array, status last (the commit mark)
        nonlocal flushed
        done, batch = items[flushed:len(results)], results[flushed:]
        if not done:
            return
        points = (
            np.array([it[2][0] for it in done], dtype=np.intp),
            np.array([it[2][1] for it in done], dtype=np.intp),
        )
        store.write_points(
            store_cfg,
            {
                "grib_bytes": np.array([r.message_bytes for r in batch], dtype=np.int32),
                "source_identity": np.array([r.identity for r in batch], dtype=np.dtypes.StringDType()),
                "grib_start": np.array([r.start for r in batch], dtype=np.int64),
                "grib_end": np.array([r.end for r in batch], dtype=np.int64),
                "reason": np.array([r.detail for r in batch], dtype=np.dtypes.StringDType()),
                "status": np.array([STATUS[r.status] for r in batch], dtype=np.int8),
            },
            points,
        )
        flushed = len(results)

    for t, lead, index, clear in items:
        result, values, _ = fetch_slot(source, grid, t, lead)
        if result.status == "ok":
            store.write_region(store_cfg, {"refc": values}, index)
        else:
            _log_slot(result)
            if clear:
                store.write_region(store_cfg, {"refc": np.full(grid.shape, _REFC_FILL, dtype=np.int16)}, index)
        results.append(result)
        if len(results) - flushed >= FLUSH_SLOTS:
            flush()
        try:
            dead.see(result)
        except SourceError:
            break
    flush()
    return results


# --------------------------------------------------------------------------
# Lazy wrapper: the store's layout and the graph of slot tasks
# --------------------------------------------------------------------------


def refc_template(times: np.ndarray, leads: tuple[int, ...], grid: Grid, source: str = "") -> xr.Dataset:
    """The ingest stage's variables, coordinates and attributes, lazily filled.

    Returns
    -------
    xarray.Dataset
        ``refc(time, lead_time, y, x)`` (NaN), ``grib_bytes``, ``status``
        (``not_tried``), ``reason``, ``source_identity``, ``grib_start``,
        ``grib_end``, with ``x``, ``y``, ``latitude``, ``longitude`` and the
        CF grid mapping ``lambert_conformal``. Chunks: one image per chunk.
    """
    import dask.array as da

    nt, nl = len(times), len(leads)
    ny, nx = grid.shape
    x, y = projection_xy(grid)
    lat, lon = latlon(grid)
    text = np.dtypes.StringDType()

    def slots(dtype: Any, fill: Any = 0) -> Any:
        return da.full((nt, nl), fill, dtype=dtype, chunks=(min(SHARD_TIMES, nt), 1))

    ds = xr.Dataset(
        {
            "refc": (
                ("time", "lead_time", "y", "x"),
                da.full((nt, nl, ny, nx), np.nan, dtype=np.float32, chunks=(1, 1, ny, nx)),
                {
                    "long_name": "composite reflectivity (entire atmosphere)",
                    "units": "dBZ",
                    "grid_mapping": "lambert_conformal",
                    "grid": grid.name,
                    "orientation": "row 0 (y index 0) is the southern edge, as HRRR stores it (scanningMode 64)",
                    "encoding_note": "stored losslessly as int16 sixteenths of a dB "
                    "(the GRIB message's 1/16 dB steps, -10 floor kept)",
                    "grib_parameter": "discipline 0, category 16, number 196 (REFC), surface type 10",
                },
            ),
            "grib_bytes": (
                ("time", "lead_time"),
                slots(np.int32),
                {"long_name": "size of the REFC GRIB2 message", "units": "bytes"},
            ),
            "status": (
                ("time", "lead_time"),
                slots(np.int8),
                {
                    "long_name": "why each slot is or is not filled",
                    "flag_values": list(STATUS.values()),
                    "flag_meanings": " ".join(STATUS),
                },
            ),
            "reason": (
                ("time", "lead_time"),
                slots(text, ""),
                {
                    "long_name": "why a slot is not ok: "
                    "'<kind>: <what the slot expected and what was found>' ('' when ok)"
                },
            ),
            "source_identity": (
                ("time", "lead_time"),
                slots(text, ""),
                {
                    "long_name": "identity of the slot's GRIB object and .idx when read: "
                    "'grib=<etag>/<size>;idx=<etag>/<size>' "
                    "('-' when absent); a rerun refetches a slot only when this changed"
                },
            ),
            "grib_start": (
                ("time", "lead_time"),
                slots(np.int64),
                {"long_name": "first byte of the GRIB object read for the slot", "units": "bytes"},
            ),
            "grib_end": (
                ("time", "lead_time"),
                slots(np.int64),
                {"long_name": "end (exclusive) of the byte range read; 0 when nothing was read", "units": "bytes"},
            ),
            "lambert_conformal": ((), np.int32(0), grid_mapping_attrs(grid)),
        },
        coords={
            "time": (
                "time",
                np.asarray(times, dtype="datetime64[ns]"),
                {"long_name": "model initialisation time (UTC)"},
            ),
            "lead_time": (
                "lead_time",
                np.asarray(leads, dtype=np.int16),
                {"long_name": "forecast lead", "units": "hours"},
            ),
            "y": ("y", y, {"standard_name": "projection_y_coordinate", "units": "m"}),
            "x": ("x", x, {"standard_name": "projection_x_coordinate", "units": "m"}),
            "latitude": (("y", "x"), lat.astype(np.float32), {"standard_name": "latitude", "units": "degrees_north"}),
            "longitude": (("y", "x"), lon.astype(np.float32), {"standard_name": "longitude", "units": "degrees_east"}),
        },
        attrs={"title": "HRRR composite reflectivity", "source": source, "wxdask_grid": dataclasses.asdict(grid)},
    )
    return ds


#: Slots along ``time`` in one shard of the small per-slot arrays (a run day of hourly runs), and in one task.
SHARD_TIMES = 24
# inner chunks of a quarter shard: (1, 1) inner chunks made reading the arrays back ~15x slower
_SLOT_SHARDS = {"chunks": (SHARD_TIMES // 4, 1), "shards": (SHARD_TIMES, 1)}
#: Slots a task ingests between two writes of the small per-slot arrays.
FLUSH_SLOTS = 6

#: Zarr encoding of the ingest stage's variables. The small per-slot arrays are sharded
#: (``SHARD_TIMES`` x 1 slots per object); one task writes every slot of a shard.
ENCODING: dict[str, dict[str, Any]] = {
    "refc": {"dtype": "int16", "scale_factor": 1 / 16, "_FillValue": np.int16(-32768), "fill_value": -32768},
    "grib_bytes": {"fill_value": 0, **_SLOT_SHARDS},
    "status": {"fill_value": 0, **_SLOT_SHARDS},
    "grib_start": {"fill_value": 0, **_SLOT_SHARDS},
    "grib_end": {"fill_value": 0, **_SLOT_SHARDS},
    "reason": dict(_SLOT_SHARDS),
    "source_identity": dict(_SLOT_SHARDS),
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


class _DeadSource:
    """Stops the run when consecutive slots find the source unreachable."""

    def __init__(self, source: Source, limit: int = 3) -> None:
        self.source = source
        self.limit = limit
        self.streak = 0
        self.written = 0

    def see(self, result: SlotResult) -> None:
        if result.status != "failed" or not result.unreachable:
            self.streak = 0
            self.written += result.status == "ok"
            return
        self.streak += 1
        if self.streak >= self.limit:
            raise SourceError(
                f"source endpoint {self.source.where()} is unreachable: {self.streak} consecutive slots could not "
                f"connect (last {np.datetime_as_string(result.time, unit='h')} f{result.lead:02d}); the slots "
                "written so far stay in the store; rerun to resume"
            )


def _probe_grid(source: Source, slots: list[tuple[np.datetime64, int]], limit: int = 48, grid: Grid | None = None
                ) -> tuple[Grid | None, list[tuple[SlotResult, np.ndarray | None]]]:
    """Fetch slots in order until one decodes, to learn the source's grid.

    Runs in the client, before the grid is known: the same size bounds apply
    (:data:`MAX_POINTS`, :data:`MAX_IDX_BYTES`), so a hostile message is a
    recorded slot, not a crash. Returns the grid (``None`` if none of the first
    ``limit`` slots decodes) and the results of the slots tried, which the
    caller writes like any other. With ``grid`` (the store's), messages are
    checked against it like in any task.

    Raises
    ------
    SourceError
        When consecutive slots find the source unreachable.
    """
    tried = []
    dead = _DeadSource(source)
    for t, lead in slots[:limit]:
        result, values, found = fetch_slot(source, grid, t, lead, loose=True)
        dead.see(result)
        tried.append((result, values))
        if found is not None:
            return found, tried
    return None, tried


@dataclass(frozen=True)
class _Held:
    status: str
    identity: str


def _held_slots(store_cfg: StoreConfig) -> dict[tuple[np.datetime64, int], _Held]:
    """Status and recorded identity of every slot the store has; empty for a new store."""
    if not store.exists(store_cfg):
        return {}
    ds = store.open_store(store_cfg)
    if "status" not in ds:
        raise StoreLayoutError(f"store {store_cfg.url!r} has no 'status'; it was not made by wxdask ingest")
    whole = (slice(None), slice(None))  # read through zarr, a shard at a time (dask would make a task per slot)
    status = store.read_region(store_cfg, "status", whole)
    ident = (
        store.read_region(store_cfg, "source_identity", whole)
        if "source_identity" in ds
        else np.full(status.shape, "", dtype=object)
    )
    times = ds["time"].values.astype("datetime64[h]")
    leads = ds["lead_time"].values
    return {(times[i], int(leads[j])): _Held(STATUS_NAMES.get(int(status[i, j]), "not_tried"), str(ident[i, j]))
            for i in range(len(times)) for j in range(len(leads))}


def _ok_slots(store_cfg: StoreConfig) -> set[tuple[np.datetime64, int]]:
    """Slots the store already holds (status ok); empty for a new store."""
    return {slot for slot, held in _held_slots(store_cfg).items() if held.status == "ok"}


def _list_days(source: Source, days: list[str]) -> dict[str, dict]:
    """Name -> listing entry of every object under ``hrrr.YYYYMMDD/conus/`` of ``days`` (one LIST per day)."""
    from concurrent.futures import ThreadPoolExecutor

    fs = source.filesystem()

    def one(day: str) -> dict[str, dict]:
        path = source.path(f"hrrr.{day}/conus")
        try:
            try:
                entries = _retry(source, f"listing {path!r}", fs.ls, path, detail=True, refresh=True)
            except TypeError:
                entries = _retry(source, f"listing {path!r}", fs.ls, path, detail=True)
        except FileNotFoundError:
            return {}
        return {f"hrrr.{day}/conus/{e['name'].rstrip('/').rsplit('/', 1)[-1]}": e for e in entries}

    out: dict[str, dict] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        for listing in pool.map(one, days):
            out.update(listing)
    return out


def parse_retry(value: Any) -> frozenset[str]:
    """Statuses to refetch whatever their objects' identity: ``"absent,corrupt"``, ``"all"`` or a sequence.

    Raises
    ------
    ConfigError
        Naming the unknown status and the valid ones.
    """
    if value is None or value == "" or value == ():
        return frozenset()
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip()]
    if names == ["all"]:
        return frozenset(RETRYABLE)
    bad = [n for n in names if n not in RETRYABLE]
    if bad:
        raise ConfigError(f"--retry: unknown status {bad[0]!r}; valid: {', '.join(RETRYABLE)} or all")
    return frozenset(names)


def _plan(source: Source, wanted: list[tuple[np.datetime64, int]], held: dict, retry: frozenset[str]
          ) -> tuple[list[tuple[np.datetime64, int]], set[tuple[np.datetime64, int]]]:
    """Which slots to fetch, and which of them held an image (to clear if it goes bad).

    ``not_tried`` and ``failed`` slots are fetched, and those whose status is
    in ``retry``. Any other slot is fetched only when its objects changed:
    one listing per run day gives every object's identity, compared with the
    one recorded; no GRIB byte is read to decide. Slots of stores written
    before identities were recorded keep their old rule (ok kept, others fetched).
    """
    pending, check = [], []
    for slot in wanted:
        h = held.get(slot)
        if h is None or h.status in ("not_tried", "failed") or h.status in retry:
            pending.append(slot)
        elif not h.identity:
            if h.status != "ok":
                pending.append(slot)
        else:
            check.append(slot)
    if check:
        days = sorted({f"{np.datetime64(t, 'h').item():%Y%m%d}" for t, _ in check})  # type: ignore[call-overload]  # numpy stubs lack datetime64(datetime64, unit)
        listing = _list_days(source, days)
        for t, lead in check:
            key = hrrr_key(t, lead)
            now = slot_identity(listing.get(key), listing.get(key + ".idx"))
            if now != held[(t, lead)].identity:
                logger.info("%s changed in the archive (%s -> %s): fetching again", key, held[(t, lead)].identity, now)
                pending.append((t, lead))
    order = {slot: i for i, slot in enumerate(wanted)}
    pending.sort(key=order.__getitem__)
    was_ok = {slot for slot in pending if slot in held and held[slot].status == "ok"}
    return pending, was_ok


def group_slots(todo: list[tuple[np.datetime64, int, tuple[int, int], bool]], shard_times: int = SHARD_TIMES
                ) -> list[list[tuple[np.datetime64, int, tuple[int, int], bool]]]:
    """Slots grouped by the shard of the per-slot arrays they fall in (``time_index // shard_times``, lead).

    Examples
    --------
    >>> t = np.datetime64("2020-01-01T00", "h")
    >>> [len(g) for g in group_slots([(t, 0, (i, 0), False) for i in range(30)], 24)]
    [24, 6]
    """
    groups: dict[tuple[int, int], list] = {}
    for item in todo:
        ti, li = item[2]
        groups.setdefault((ti // shard_times, li), []).append(item)
    return list(groups.values())


def _run_slots(client: Client | None, todo: list[tuple[np.datetime64, int, tuple[int, int], bool]], source: Source,
               store_cfg: StoreConfig, grid: Grid, dead: _DeadSource, window: int | None = None,
               bar: bool = False) -> list[SlotResult]:
    """Run one task per shard of slots, at most ``window`` in flight (the whole graph is never built).

    Logs progress (and draws a bar on stderr when ``bar``); stops (cancelling
    what is queued) when :class:`_DeadSource` says the source is gone.
    """
    import sys

    results: list[SlotResult] = []
    groups = group_slots(todo)
    step = max(1, len(groups) // 20)
    done = [0]

    def progress(batch: list[SlotResult]) -> None:
        for r in batch:
            results.append(r)
            dead.see(r)
        done[0] += 1
        if bar:  # drawn on stderr, as distributed's bar is, so stdout holds only the result
            frac = done[0] / len(groups)
            sys.stderr.write(f"\r[{'#' * int(40 * frac):<40}] | {100 * frac:3.0f}% Completed | "
                             f"{len(results)}/{len(todo)} slots" + ("\n" if done[0] == len(groups) else ""))
            sys.stderr.flush()
        if done[0] % step == 0 or done[0] == len(groups):
            logger.info("ingest: %d/%d slot(s) done (%d/%d tasks)", len(results), len(todo), done[0], len(groups))

    if client is None:
        for group in groups:
            progress(ingest_group(source, store_cfg, grid, group))
        return results
    import uuid

    from distributed import as_completed

    window = window or max(16, 4 * sum(client.nthreads().values()))
    queue = iter(groups)

    def submit(group: list) -> Any:
        t, lead = group[0][0], group[0][1]
        key = f"ingest-{np.datetime_as_string(t, unit='h')}-f{lead:02d}-{uuid.uuid4().hex[:8]}"
        return client.submit(ingest_group, source, store_cfg, grid, group, key=key, pure=False)

    submitted = [submit(group) for group, _ in zip(queue, range(window))]
    pool = as_completed(submitted)
    try:
        for future in pool:
            progress(future.result())
            item = next(queue, None)
            if item is not None:
                submitted.append(submit(item))
                pool.add(submitted[-1])
    except SourceError:
        # the source is gone: tasks already sent stop within a few slots (they see it too); let them
        # finish writing, so nothing writes to the store after this returns, then drop the rest
        from distributed import wait

        try:
            wait([f for f in submitted if not f.done()], timeout=60)
        except Exception:  # noqa: BLE001 - a timeout: cancel what is left
            pass
        client.cancel([f for f in submitted if not f.done()])
        pool.clear()
        raise
    except BaseException:
        client.cancel([f for f in submitted if not f.done()])
        pool.clear()
        raise
    return results


def _store_grid(ds: xr.Dataset) -> Grid | None:
    params = ds.attrs.get("wxdask_grid")
    return Grid(**params) if params else None


def summarize(results: list[SlotResult], limit: int = 20) -> str:
    """A bounded human summary: counts by status and by reason, the first ``limit`` slots of each status.

    ``wxdask status --store S`` lists every slot that is not ok.
    """
    counts: dict[str, int] = {}
    kinds: dict[str, dict[str, int]] = {}
    shown: dict[str, list[SlotResult]] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
        if r.status != "ok":
            by = kinds.setdefault(r.status, {})
            by[r.kind] = by.get(r.kind, 0) + 1
            if len(shown.setdefault(r.status, [])) < limit:
                shown[r.status].append(r)
    lines = [f"{len(results)} slot(s) attempted: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    for status in sorted(kinds):
        lines.append(
            f"{status}: {counts[status]} (" + ", ".join(f"{k}: {n}" for k, n in sorted(kinds[status].items())) + ")"
        )
        for r in shown[status]:
            lines.append(f"  {np.datetime_as_string(r.time, unit='h')} f{r.lead:02d}: {r.status}: {r.detail}")
        if counts[status] > limit:
            lines.append(f"  ... and {counts[status] - limit} more (wxdask status --store STORE --status {status})")
    return "\n".join(lines)


def status_report(store_cfg: StoreConfig, status: str | None = None, fmt: str = "table") -> tuple[str, str]:
    """Every slot of the store that is not ok (or of one ``status``), with its reason, and the totals.

    Parameters
    ----------
    store_cfg : StoreConfig
        The store.
    status : str, optional
        Only this status (``ok`` lists the filled slots).
    fmt : {"table", "csv", "json"}
        Output format.

    Returns
    -------
    listing : str
        The slots (and, for table and json, the totals).
    totals : str
        One line of counts per status.

    Raises
    ------
    ConfigError
        For an unknown status or format.
    StoreLayoutError
        If the store was not made by ingest.
    """
    import json

    if fmt not in ("table", "csv", "json"):
        raise ConfigError(f"--format must be table, csv or json, got {fmt!r}")
    if status is not None and status not in STATUS:
        raise ConfigError(f"--status: unknown status {status!r}; valid: {', '.join(STATUS)}")
    ds = store.open_store(store_cfg)
    if "status" not in ds:
        raise StoreLayoutError(f"store {store_cfg.url!r} has no 'status'; it was not made by wxdask ingest")
    whole = (slice(None), slice(None))
    codes = store.read_region(store_cfg, "status", whole)
    reasons = (
        store.read_region(store_cfg, "reason", whole) if "reason" in ds else np.full(codes.shape, "", dtype=object)
    )
    times = np.datetime_as_string(ds["time"].values, unit="h")
    leads = ds["lead_time"].values
    totals = {name: int(np.count_nonzero(codes == code)) for name, code in STATUS.items()}
    totals = {k: v for k, v in totals.items() if v}
    select = codes == STATUS[status] if status is not None else codes != STATUS["ok"]
    rows = [(str(times[i]), int(leads[j]), STATUS_NAMES.get(int(codes[i, j]), str(codes[i, j])), str(reasons[i, j]))
            for i, j in zip(*np.nonzero(select))]
    total_line = f"{codes.size} slot(s): " + ", ".join(f"{n} {s}" for s, n in totals.items())
    if fmt == "json":
        return json.dumps({"totals": totals, "slots": [dict(zip(("time", "lead_time", "status", "reason"), r))
                                                        for r in rows]}, indent=1), total_line
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["time", "lead_time", "status", "reason"])
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n"), total_line
    width = max([len(r[2]) for r in rows] + [6])
    lines = [f"{'time':13}  lead  {'status':{width}}  reason"]
    lines += [f"{t:13}  f{lead:02d}   {s:{width}}  {reason}" for t, lead, s, reason in rows]
    lines.append(total_line)
    return "\n".join(lines), total_line


def run(cfg: Config, client: Client | None) -> str:
    """Ingest ``cfg.ingest``'s times and leads into ``cfg.store``; return a summary.

    A rerun fetches ``not_tried`` and ``failed`` slots, the slots whose status
    is in ``ingest.retry``, and any slot whose objects changed in the archive
    (one listing per run day decides; an unchanged archive costs no GRIB byte).

    Raises
    ------
    ConfigError
        If start/end are missing or invalid, or ``retry`` names an unknown status.
    SourceNotFoundError, SourceError
        If the source cannot be read at all, or becomes unreachable mid-run
        (the slots written so far stay; a rerun resumes).
    StoreLayoutError
        If the store holds a different grid or variable (it is left intact).
    """
    icfg = cfg.ingest
    retry = parse_retry(getattr(icfg, "retry", ()))
    times = icfg.times()
    source = Source(icfg.source, icfg.endpoint_url, icfg.anon, icfg.retries, icfg.backoff)
    _check_source(source)
    wanted = [(t, lead) for t in times for lead in icfg.leads]
    held = _held_slots(cfg.store)
    pending, was_ok = _plan(source, wanted, held, retry)
    logger.info(
        "%d of %d slot(s) to fetch (%d kept from the store)", len(pending), len(wanted), len(wanted) - len(pending)
    )
    results: list[SlotResult] = []
    if pending:
        held_grid = _store_grid(store.open_store(cfg.store)) if store.exists(cfg.store) else None
        grid, probed = _probe_grid(source, pending, grid=held_grid)
        if held_grid is not None and grid is None:
            read = [r for r, _ in probed if r.status not in ("absent", "missing_idx", "no_refc", "failed", "empty")]
            if read and all(r.status == "mismatch" and r.kind == "grid" for r in read):
                raise StoreLayoutError(
                    f"store {cfg.store.url!r} holds grid {held_grid.name} {held_grid.shape}, the source does not "
                    f"({read[0].detail}): a different grid; use another --store"
                )
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

        # probed slots were decoded before the grid was known: check them against it now
        for r, values in probed:
            if r.status == "ok" and values is not None and values.shape != grid.shape:
                r = dataclasses.replace(
                    r, status="mismatch", detail=f"grid: store grid is {grid.shape}, message {values.shape}"
                )
                values = None
            results.append(write_slot(cfg.store, index(r.time, r.lead), r, values,
                                      clear=(r.time, r.lead) in was_ok, shape=grid.shape))
        todo = [(t, lead, index(t, lead), (t, lead) in was_ok) for t, lead in pending[len(probed):]]
        import sys

        bar = client is not None and cfg.dask.progress and sys.stderr.isatty()
        results += _run_slots(client, todo, source, cfg.store, grid, _DeadSource(source), bar=bar)
    store.set_attrs(cfg.store, {"wxdask_config": cfg.to_dict(), "wxdask_version": _version()})
    store.consolidate(cfg.store)
    pending_set = set(pending)
    kept = [held[slot].status for slot in wanted if slot not in pending_set]
    n_ok = kept.count("ok")
    other = (
        f", {len(kept) - n_ok} kept as recorded (objects unchanged; --retry STATUS refetches)"
        if len(kept) > n_ok
        else ""
    )
    summary = summarize(results) if results else "nothing to fetch"
    return f"{summary}\n{n_ok} slot(s) were already ok{other}; store: {cfg.store.url}"


def _version() -> str:
    from importlib.metadata import version

    return version("wxdask")
