"""GRIB2 encoding of REFC exactly as HRRR encodes it, and the section surgery it needs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np

from wxdask.grid import Grid, get_grid, grib_grid_keys
from wxdask.synth.render import REFC_FLOOR

__all__ = ["encode_refc"]

_REFC_BITS = 11

#: Section 1 keys of an NCEP HRRR message.
_SECTION1 = {
    "centre": 7,
    "subCentre": 0,
    "tablesVersion": 2,
    "localTablesVersion": 1,
    "significanceOfReferenceTime": 1,
    "productionStatusOfProcessedData": 0,
    "typeOfProcessedData": 1,
}


def _new_message(grid: Grid, product: Mapping[str, Any]) -> int:
    import eccodes

    h = eccodes.codes_grib_new_from_samples("GRIB2")
    for key, value in {**_SECTION1, **grib_grid_keys(grid)}.items():
        eccodes.codes_set(h, key, value)
    for key, value in {
        "discipline": 0,
        "productDefinitionTemplateNumber": 0,
        "typeOfGeneratingProcess": 2,
        "generatingProcessIdentifier": 83,
        **product,
    }.items():
        eccodes.codes_set(h, key, value)
    return h


def _set_time(h: int, init_time: Any, lead: int) -> None:
    import eccodes

    t = np.datetime64(init_time, "h").item()
    eccodes.codes_set(h, "dataDate", int(f"{t:%Y%m%d}"))
    eccodes.codes_set(h, "dataTime", int(f"{t:%H}00"))
    eccodes.codes_set(h, "stepUnits", 1)
    eccodes.codes_set(h, "indicatorOfUnitOfTimeRange", 1)
    eccodes.codes_set(h, "forecastTime", int(lead))


_REFC_PRODUCT = {
    "parameterCategory": 16,
    "parameterNumber": 196,
    "typeOfFirstFixedSurface": 10,
    "scaleFactorOfFirstFixedSurface": 0,
    "scaledValueOfFirstFixedSurface": 0,
    "typeOfSecondFixedSurface": 255,
}


@lru_cache(maxsize=4)
def _refc_template(grid: Grid) -> bytes:
    """A REFC message for ``grid`` (all -10) whose section 5 already holds binary scale -4.

    ecCodes' ``binaryScaleFactor`` is read-only; with ``optimizeScaleFactor=1`` the
    packer keeps the message's current binary scale (raising it only if the
    range does not fit the bits). Packing a -10..70 dB ramp once sets it to -4.
    """
    import eccodes

    h = _new_message(grid, _REFC_PRODUCT)
    try:
        eccodes.codes_set(h, "packingType", "grid_complex_spatial_differencing")
        eccodes.codes_set(h, "orderOfSpatialDifferencing", 2)
        eccodes.codes_set(h, "bitsPerValue", _REFC_BITS)
        eccodes.codes_set_values(h, np.linspace(REFC_FLOOR, 70.0, grid.nx * grid.ny))
        if eccodes.codes_get_long(h, "binaryScaleFactor") != -4:  # pragma: no cover - ecCodes behaviour
            raise RuntimeError("ecCodes did not choose binary scale -4 for a -10..70 dB ramp")
        eccodes.codes_set(h, "optimizeScaleFactor", 1)
        eccodes.codes_set(h, "decimalScaleFactor", 0)
        eccodes.codes_set_values(h, np.full(grid.nx * grid.ny, REFC_FLOOR))
        return eccodes.codes_get_message(h)
    finally:
        eccodes.codes_release(h)


def encode_refc(field: np.ndarray, grid: Grid | str, init_time: Any, lead: int, *, old_label: bool = False) -> bytes:
    """Encode a REFC field as one GRIB2 message, exactly as HRRR encodes it.

    Template 3.30 (the grid's Lambert conformal keys, scanning mode 64); product
    template 4.0, discipline 0, category 16, number 196, surface 10 (entire
    atmosphere); data representation 5.3 (complex packing with 2nd-order spatial
    differencing), reference value the field's minimum, binary scale -4 (1/16 dB),
    decimal scale 0, group references in 11 bits (``bitsPerValue``; more only for
    fields far rougher than HRRR's, 0 for a constant field); no bitmap.

    Parameters
    ----------
    field : numpy.ndarray
        ``(ny, nx)`` dBZ, row 0 south, in 1/16 dB steps (other values are packed
        to the nearest step). The range must fit 11 bits at 1/16 dB (< 128 dB).
    grid : Grid or str
        The field's grid.
    init_time : datetime64 or str
        Initialisation time, written as ``dataDate``/``dataTime``.
    lead : int
        Forecast hour, written as ``forecastTime`` (hours).
    old_label : bool
        Accepted for symmetry with :func:`archive_file`. The level label lives in
        the ``.idx`` sidecar, not in the message: both labels describe surface type 10,
        so the bytes are the same.

    Returns
    -------
    bytes
        One whole GRIB2 message (``GRIB`` ... ``7777``). A field that is -10
        everywhere packs to a constant field of about 219 bytes.

    Examples
    --------
    >>> msg = encode_refc(np.full((66, 112), -10.0), "coarse", "2019-09-20T05", 0)
    >>> msg[:4], msg[-4:], len(msg)
    (b'GRIB', b'7777', 219)
    """
    import eccodes

    grid = get_grid(grid)
    values = np.asarray(field, dtype=np.float64)
    if values.shape != grid.shape:
        raise ValueError(f"field shape {values.shape} does not match grid {grid.name!r} {grid.shape}")
    h = eccodes.codes_new_from_message(_refc_template(grid))
    try:
        _set_time(h, init_time, lead)
        eccodes.codes_set(h, "optimizeScaleFactor", 1)
        eccodes.codes_set(h, "decimalScaleFactor", 0)
        eccodes.codes_set(h, "bitsPerValue", _REFC_BITS)
        eccodes.codes_set_values(h, values.ravel())
        scale = eccodes.codes_get_long(h, "binaryScaleFactor")
        if scale != -4:
            raise ValueError(f"REFC range {values.min()}..{values.max()} does not fit {_REFC_BITS} bits at 1/16 dB")
        return _widen_group_references(eccodes.codes_get_message(h), _REFC_BITS)
    finally:
        eccodes.codes_release(h)


def _section_offsets(message: bytes) -> dict[int, int]:
    """Byte offset of each section 1..7 of a one-field GRIB2 message."""
    offsets, i = {}, 16
    while message[i : i + 4] != b"7777":
        offsets[message[i + 4]] = i
        i += int.from_bytes(message[i : i + 4], "big")
    return offsets


def _widen_group_references(message: bytes, bits: int) -> bytes:
    """Repack the group reference values of a 5.3 message with ``bits`` bits each.

    In template 5.3, ``bitsPerValue`` (section 5, octet 20) is the width of the
    group reference values in section 7. ecCodes uses the fewest bits that hold
    them (8-11 for smooth fields); HRRR writes 11. Widening them changes no
    decoded value. Constant fields (0 bits) and wider references are left alone.
    """
    off = _section_offsets(message)
    s5, s7 = off[5], off[7]
    old = message[s5 + 19]
    if old == 0 or old >= bits:
        return message
    n_groups = int.from_bytes(message[s5 + 31 : s5 + 35], "big")
    order, n_extra = message[s5 + 47], message[s5 + 48]
    len7 = int.from_bytes(message[s7 : s7 + 4], "big")
    data = message[s7 + 5 : s7 + len7]
    head = n_extra * (order + 1)  # first values and the minimum of the differences
    n_old = (n_groups * old + 7) // 8
    raw = np.unpackbits(np.frombuffer(data[head : head + n_old], dtype=np.uint8))[: n_groups * old]
    refs = raw.reshape(n_groups, old).astype(np.int64) @ (1 << np.arange(old - 1, -1, -1))
    wide = (refs[:, None] >> np.arange(bits - 1, -1, -1)) & 1
    packed = np.packbits(wide.astype(np.uint8).ravel()).tobytes()
    new7 = data[:head] + packed + data[head + n_old :]
    section5 = bytearray(message[s5 : off[6]])
    section5[19] = bits
    section7 = (len(new7) + 5).to_bytes(4, "big") + b"\x07" + new7
    body = message[16:s5] + bytes(section5) + message[off[6] : s7] + section7
    return message[:8] + (16 + len(body) + 4).to_bytes(8, "big") + body + b"7777"



def _sections(message: bytes) -> list[tuple[int, bytes]]:
    """``(number, bytes)`` of each section 1..7 of a one-field GRIB2 message."""
    bounds = sorted(_section_offsets(message).values()) + [len(message) - 4]
    return [(message[a + 4], message[a:b]) for a, b in zip(bounds, bounds[1:])]


def _join_submessages(messages: Sequence[bytes]) -> bytes:
    """One GRIB2 message holding several fields on the same grid (sections 4-7 repeated)."""
    body = b"".join(s for _, s in _sections(messages[0]))
    for m in messages[1:]:
        body += b"".join(s for n, s in _sections(m) if n >= 4)
    total = 16 + len(body) + 4
    return messages[0][:8] + total.to_bytes(8, "big") + body + b"7777"
