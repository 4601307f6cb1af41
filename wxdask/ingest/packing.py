"""What a GRIB2 message's packing claims, checked against its data section (pure, no decoding).

ecCodes trusts section 5: a bit width it cannot read (a corrupted octet of the
complex-packing descriptors) ends in a failed C assertion, and so an abort of
the whole worker process, not an exception. :func:`check_packing` reads the
descriptors of the simple (5.0) and complex (5.2, 5.3) packings, with the
group widths and lengths that section 7 holds, and refuses any message whose
claimed sizes do not add up to its data section, before ecCodes sees it.
Other packings (JPEG 2000, PNG, ...) are left to ecCodes' own checks.
"""

from __future__ import annotations

import numpy as np

from wxdask.errors import CorruptMessageError

#: Widest field ecCodes decodes into a machine integer (values, group widths, group lengths).
MAX_BITS = 32

_CHUNK = 1 << 18  # fields read at once by _bits


def _bits(buf: bytes | memoryview, bit: int, nbits: int, count: int) -> np.ndarray:
    """``count`` unsigned ``nbits``-bit big-endian integers of ``buf`` from bit offset ``bit`` (``nbits <= 32``).

    The bits as a ``(count, nbits)`` table times the powers of two, in floating
    point (a BLAS product, exact: float32 holds 24-bit integers, float64 53-bit).
    """
    if nbits == 0 or count == 0:
        return np.zeros(count, dtype=np.int64)
    if count > _CHUNK:  # a hostile group count: the bit table stays ~100 MB at most
        return np.concatenate([_bits(buf, bit + i * nbits, nbits, min(_CHUNK, count - i))
                               for i in range(0, count, _CHUNK)])
    first, last = bit // 8, (bit + nbits * count + 7) // 8
    flat = np.unpackbits(np.frombuffer(buf, dtype=np.uint8, count=last - first, offset=first))
    skip = bit - 8 * first
    dtype = np.float32 if nbits <= 24 else np.float64
    table = flat[skip : skip + nbits * count].reshape(count, nbits).astype(dtype)
    return (table @ (2.0 ** np.arange(nbits - 1, -1, -1)).astype(dtype)).astype(np.int64)


def _octets(nbits: int, count: int) -> int:
    return (nbits * count + 7) // 8


def _fail(detail: str) -> CorruptMessageError:
    return CorruptMessageError(f"section 5 packing does not fit section 7: {detail}")


def check_packing(s5: bytes | memoryview, s7: bytes | memoryview, n_values: int) -> None:
    """Check that section 7 holds what section 5 says it packs (templates 5.0, 5.2 and 5.3).

    Parameters
    ----------
    s5, s7 : bytes or memoryview
        The whole data representation and data sections.
    n_values : int
        Section 5's number of packed values.

    Raises
    ------
    CorruptMessageError
        A bit width wider than :data:`MAX_BITS`, spatial differencing of
        another order than 1 or 2, group lengths that do not add up to
        ``n_values``, or packed bits that run past the end of section 7.
    """
    template = int.from_bytes(s5[9:11], "big")
    if template not in (0, 2, 3):
        return
    nbits = s5[19]
    if nbits > MAX_BITS:
        raise _fail(f"{nbits} bits per value, more than {MAX_BITS}")
    data = s7[5:]
    if template == 0:
        need = _octets(nbits, n_values)
    else:
        need = _complex_octets(s5, data, template, nbits, n_values)
    if need > len(data):
        raise _fail(f"the packed values need {need} bytes, section 7 holds {len(data)}")


def _complex_octets(s5: bytes | memoryview, data: bytes | memoryview, template: int, nbits: int, n_values: int) -> int:
    """Bytes of section 7's data that complex packing (5.2, 5.3) claims; checks every size it reads."""
    need = 49 if template == 3 else 47
    if len(s5) < need:
        raise _fail(f"section 5 is {len(s5)} bytes, template 5.{template} needs {need}")
    n_groups = int.from_bytes(s5[31:35], "big")
    width_ref, width_bits = s5[35], s5[36]
    length_ref, length_inc = int.from_bytes(s5[37:41], "big"), s5[41]
    last_length, length_bits = int.from_bytes(s5[42:46], "big"), s5[46]
    if n_groups == 0 or n_groups > max(n_values, 1):
        raise _fail(f"{n_groups} groups for {n_values} values")
    for what, b in (("group width", width_bits), ("group length", length_bits)):
        if b > MAX_BITS:
            raise _fail(f"{b} bits per {what}, more than {MAX_BITS}")
    pos = 0
    if template == 3:
        order, extra = s5[47], s5[48]
        if order not in (1, 2) or not 1 <= extra <= 4:
            raise _fail(f"spatial differencing of order {order} with {extra}-byte descriptors")
        pos = (order + 1) * extra
    pos += _octets(nbits, n_groups)  # the group references (ecCodes reads them; only their room is checked)
    widths_at = pos
    pos += _octets(width_bits, n_groups)
    lengths_at = pos
    pos += _octets(length_bits, n_groups)
    if pos > len(data):
        raise _fail(f"the group descriptors need {pos} bytes, section 7 holds {len(data)}")
    widths = width_ref + _bits(data, 8 * widths_at, width_bits, n_groups)
    if int(widths.max()) > MAX_BITS:
        raise _fail(f"a group of {int(widths.max())}-bit values, more than {MAX_BITS}")
    lengths = length_ref + length_inc * _bits(data, 8 * lengths_at, length_bits, n_groups)
    lengths[-1] = last_length
    if int(lengths.sum()) != n_values:
        raise _fail(f"group lengths add up to {int(lengths.sum())} values, section 5 packs {n_values}")
    return pos + _octets(1, int(np.dot(widths, lengths)))
