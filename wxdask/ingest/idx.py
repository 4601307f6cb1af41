"""The ``.idx`` sidecar and the archive's keys (pure).

:func:`hrrr_key` names a file, :func:`fcst_label` / :func:`fcst_lead` the
sidecar's forecast labels, :func:`parse_idx` reads a sidecar, :func:`find_refc`
picks its REFC entry and :func:`check_message` checks a fetched message's framing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from wxdask.errors import CorruptMessageError, SourceNotFoundError

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
