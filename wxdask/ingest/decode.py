"""Decoding one REFC message: :func:`decode_refc`, to int16 sixteenths of a dB on the 1/16 dB lattice."""

from __future__ import annotations

import numpy as np

from wxdask.errors import CorruptMessageError
from wxdask.grid import Grid, grid_from_message
from wxdask.ingest.header import MessageHeader, SlotFault, check_slot, read_header

#: Physically possible composite reflectivity, dBZ (HRRR floors at -10; ~75 is extreme).
REFC_MIN, REFC_MAX = -10.0, 100.0


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
    if not check_lattice:
        return np.rint(values, out=values).astype(np.int16).reshape(shape)
    rounded = np.rint(values)
    off = np.abs(np.subtract(values, rounded, out=values), out=values)  # no more full-size temporaries
    bad = int(np.count_nonzero(off > _LATTICE_TOL))
    if bad:
        raise SlotFault("off_lattice", "lattice",
                        f"{bad} of {values.size} values are not whole sixteenths of a dB (largest miss "
                        f"{float(off.max()) / 16:.4g} dB); int16 sixteenths would change them")
    return rounded.astype(np.int16).reshape(shape)


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
