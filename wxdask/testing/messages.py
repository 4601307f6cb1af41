"""Byte surgery on GRIB2 messages, for tests that damage a real message: find a section, set an octet."""

from __future__ import annotations

__all__ = ["patch_message", "section_offsets"]


def section_offsets(msg: bytes) -> dict[int, int]:
    """Byte offset of each section of a GRIB2 message (the first of each number), from its length fields."""
    out: dict[int, int] = {}
    pos, total = 16, int.from_bytes(msg[8:16], "big")
    while pos < total - 4:
        out.setdefault(msg[pos + 4], pos)
        pos += int.from_bytes(msg[pos:pos + 4], "big")
    return out


def patch_message(msg: bytes, section: int, octet: int, value: int, width: int = 1) -> bytes:
    """A copy of ``msg`` with ``width`` bytes at 1-based ``octet`` of ``section`` (0: section 0) set to ``value``."""
    base = 0 if section == 0 else section_offsets(msg)[section]
    at = base + octet - 1
    return msg[:at] + value.to_bytes(width, "big") + msg[at + width:]
