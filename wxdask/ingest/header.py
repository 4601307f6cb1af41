"""Slot status codes, per-slot faults and the GRIB2 header (pure, no decoding).

:data:`STATUS` (the store's ``status`` codes), :class:`SlotFault`,
:func:`read_header` (a message's header keys, every claimed size checked) and
:func:`check_slot` (run, lead with units, parameter and grid against the slot).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

import numpy as np

from wxdask.errors import CorruptMessageError
from wxdask.grid import Grid
from wxdask.ingest.packing import check_packing

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


def _signed(raw: bytes | memoryview) -> int:
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
    sections: dict[int, memoryview] = {}
    view = memoryview(data)  # sections are views: section 7 (the whole image) is not copied
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
        sections.setdefault(number, view[pos : pos + length])
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
    check_packing(s5, sections[7], n_values)
    year, month, day, hour, minute = int.from_bytes(s1[12:14], "big"), s1[14], s1[15], s1[16], s1[17]
    try:
        ref = np.datetime64(datetime(year, month, day, hour, minute), "m")
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
