"""Damaged packing of the real HRRR message: refused by wxdask's checks, never an abort inside ecCodes.

A corrupted octet among section 5's complex-packing descriptors makes ecCodes fail
a C assertion and abort the process (a worker, the client), so
:func:`wxdask.ingest.packing.check_packing` must refuse such messages first.
The fuzz case at the end runs random damage through the whole decode path.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from wxdask.errors import CorruptMessageError
from wxdask.ingest import decode_refc, read_header
from wxdask.ingest.packing import _bits, check_packing
from wxdask.testing.messages import patch_message, section_offsets

pytest.importorskip("eccodes")

REAL = Path(__file__).parent / "data" / "hrrr.20221014.t01z.wrfsubhf00.refc.grib2"


@pytest.fixture(scope="module")
def raw() -> bytes:
    return REAL.read_bytes()


@pytest.fixture(scope="module")
def good(raw) -> np.ndarray:
    return decode_refc(raw)[0]


def test_bits_reads_big_endian_fields_at_any_bit_offset():
    # 0b101_0011_1000_0000: three 3-bit fields from bit 0 are 5, 1, 6; two 4-bit fields from bit 3: 9, 12
    buf = bytes([0b10100111, 0b00000000])
    np.testing.assert_array_equal(_bits(buf, 0, 3, 3), [5, 1, 6])
    np.testing.assert_array_equal(_bits(buf, 3, 4, 2), [0b0011, 0b1000])
    np.testing.assert_array_equal(_bits(buf, 5, 0, 4), [0, 0, 0, 0])


def test_real_message_packing_adds_up_exactly(raw):
    h = read_header(raw)
    assert (h.data_template, h.bits) == (3, 11)
    off = section_offsets(raw)
    check_packing(raw[off[5]:off[6]], raw[off[7]:len(raw) - 4], h.n_values)


@pytest.mark.parametrize(
    ("octet", "value", "width", "match"),
    [
        (47, 200, 1, "200 bits per group length"),  # ecCodes aborts on this one (grib_bits_any_endian.cc)
        (37, 60, 1, "60 bits per group width"),
        (36, 250, 1, r"a group of \d+-bit values"),  # the group widths' reference
        (20, 40, 1, "40 bits per value"),
        (48, 3, 1, "spatial differencing of order 3"),
        (49, 9, 1, "9-byte descriptors"),
        (42, 2, 1, "group lengths add up to"),  # the group lengths' increment
        (32, 0, 4, "0 groups"),
        (32, 2**30, 4, "1073741824 groups"),
        (38, 2**20, 4, "group lengths add up to"),  # the group lengths' reference
    ],
)
def test_damaged_descriptors_are_corrupt_not_an_abort(raw, octet, value, width, match):
    with pytest.raises(CorruptMessageError, match=match):
        decode_refc(patch_message(raw, 5, octet, value, width))


def test_simple_packing_needs_room_for_every_value():
    s5 = bytearray(21)
    s5[9:11] = (0).to_bytes(2, "big")
    s5[19] = 12
    check_packing(bytes(s5), bytes(5 + 15), 10)  # 10 x 12 bits = 15 bytes
    with pytest.raises(CorruptMessageError, match="need 15 bytes, section 7 holds 14"):
        check_packing(bytes(s5), bytes(5 + 14), 10)
    s5[9:11] = (40).to_bytes(2, "big")  # JPEG 2000: left to ecCodes
    check_packing(bytes(s5), bytes(5), 10)


def _damage(msg: bytes, rng: random.Random) -> tuple[bytes, bool]:
    """Random damage; also whether it may leave a valid message with other values (scale octets)."""
    m = bytearray(msg)
    kind = rng.choice(["flip", "header", "span", "truncate", "insert", "delete"])
    at = rng.randrange(len(m) if kind != "header" else section_offsets(msg)[7] + 5)
    if kind == "flip":
        m[at] ^= 1 << rng.randrange(8)
    elif kind == "header":
        m[at] = rng.randrange(256)
    elif kind == "span":
        n = len(m[at:at + rng.randrange(1, 4000)])
        m[at:at + n] = bytes(rng.randrange(256) for _ in range(n))
    elif kind == "truncate":
        del m[at:]
    elif kind == "insert":
        m[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    else:
        del m[at:at + rng.randrange(1, 40)]
    s5 = section_offsets(msg)[5]
    # section 5's reference value and scales (octets 12-19): another field, equally valid
    rescaled = kind in ("flip", "header") and s5 + 11 <= at < s5 + 19
    return bytes(m), rescaled


@pytest.mark.parametrize("seed", [0, 1])
def test_random_damage_is_refused_or_harmless(raw, good, seed):
    rng = random.Random(seed)
    refused = 0
    for _ in range(120):
        msg, rescaled = _damage(raw, rng)
        try:
            values = decode_refc(msg)[0]
        except CorruptMessageError:
            refused += 1
            continue
        if not rescaled:
            np.testing.assert_array_equal(values, good)
    assert refused > 60


@pytest.mark.parametrize(("octet", "value"), [(15, 13), (16, 31), (17, 24), (18, 200), (18, 60)])
def test_impossible_reference_time_is_corrupt(raw, octet, value):
    # section 1: octet 15 month, 16 day (October 31st exists: 2022-10-31 is fine), 17 hour, 18 minute
    msg = patch_message(raw, 1, octet, value)
    if (octet, value) == (16, 31):
        assert str(read_header(msg).reference_time) == "2022-10-31T01:00"
        return
    with pytest.raises(CorruptMessageError, match="is not a date"):
        read_header(msg)


def test_bits_reads_long_runs_in_chunks(monkeypatch):
    from wxdask.ingest import packing

    rng = np.random.default_rng(0)
    buf = rng.integers(0, 256, 4000, dtype=np.uint8).tobytes()
    whole = _bits(buf, 5, 13, 2400)
    monkeypatch.setattr(packing, "_CHUNK", 7)
    np.testing.assert_array_equal(_bits(buf, 5, 13, 2400), whole)
    text = "".join(f"{b:08b}" for b in buf)
    assert [int(text[5 + 13 * i: 18 + 13 * i], 2) for i in (0, 1, 2399)] == [whole[0], whole[1], whole[2399]]
