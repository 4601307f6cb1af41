"""Whole synthetic files and archives: :func:`archive_file`, :func:`parse_slots`, :func:`write_archive`."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from wxdask.config import parse_leads, parse_time
from wxdask.errors import ConfigError
from wxdask.grid import Grid, get_grid
from wxdask.ingest import fcst_label, hrrr_key
from wxdask.s3local import ARCHIVE_BUCKET
from wxdask.synth.fields import _OTHERS, _encode_other
from wxdask.synth.grib import _section_offsets, encode_refc
from wxdask.synth.render import refc_field

__all__ = ["BUCKET", "CORRUPT_KINDS", "archive_file", "parse_slots", "write_archive"]

logger = logging.getLogger(__name__)

#: Bucket name of the public HRRR archive; local archives live under ``DIR/BUCKET``.
BUCKET = ARCHIVE_BUCKET
#: Ways :func:`archive_file` can damage a REFC message.
CORRUPT_KINDS = ("garbage", "truncated")
_LEVEL_LABEL = "entire atmosphere"
_OLD_LEVEL_LABEL = "entire atmosphere (considered as a single layer)"


def _corrupt(message: bytes, kind: str, seed: int) -> bytes:
    """Damage a REFC message: garbage in the middle of its data, or cut short."""
    if kind == "truncated":
        return message[: max(16, len(message) // 2)]
    if kind != "garbage":
        raise ConfigError(f"corruption kind must be one of {', '.join(CORRUPT_KINDS)}, got {kind!r}")
    off = _section_offsets(message)
    rng = np.random.default_rng([int(seed), len(message)])
    out = bytearray(message)
    payload = int.from_bytes(message[off[7] : off[7] + 4], "big") - 5
    constant = payload < 64
    if constant:
        # A constant field has (almost) no data section: garble section 5 from its reference value on.
        n = off[6] - off[5] - 11
        start = off[5] + 11
    else:
        # A few hundred bytes of garbage in the middle of section 7.
        n = min(300, payload // 2)
        start = off[7] + 5 + (payload - n) // 2
    out[start : start + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    if constant:
        out[start] = 0x7F  # an exponent that makes the reference value absurd (or NaN)
    return bytes(out)


def archive_file(
    seed: int,
    init_time: Any,
    lead: int,
    grid: Grid | str = "coarse",
    *,
    old_label: bool = False,
    corrupt: bool | str = False,
) -> tuple[bytes, str]:
    """A whole synthetic ``wrfsfcfFF.grib2`` file and its wgrib2-style ``.idx``.

    REFC is message 1 at byte 0, followed by TMP and DPT at 2 m, PRES, a
    UGRD/VGRD pair at 10 m in one message (``.idx`` numbers ``5.1`` and ``5.2``,
    same start byte) and HGT.

    Parameters
    ----------
    seed, init_time, lead, grid
        As for :func:`refc_field`.
    old_label : bool
        Write REFC's level as ``entire atmosphere (considered as a single layer)``
        in the ``.idx``, as older files do.
    corrupt : bool or str
        ``True`` or ``"garbage"``: overwrite a few hundred bytes in the middle of
        the REFC data section (length and ``7777`` kept). ``"truncated"``: cut the
        REFC message to half its length (the ``.idx`` lists the bytes as they are).

    Returns
    -------
    (bytes, str)
        The file and its ``.idx`` text.

    Examples
    --------
    >>> data, idx = archive_file(0, "2019-09-20T05", 1, "coarse")
    >>> idx.splitlines()[0]
    '1:0:d=2019092005:REFC:entire atmosphere:1 hour fcst:'
    >>> data[:4]
    b'GRIB'
    """
    grid = get_grid(grid)
    lead = int(lead)
    refc = encode_refc(refc_field(seed, init_time, lead, grid), grid, init_time, lead)
    if corrupt:
        refc = _corrupt(refc, "garbage" if corrupt is True else str(corrupt), seed)
    date = f"{np.datetime64(init_time, 'h').item():%Y%m%d%H}"
    fcst = fcst_label(lead)
    level = _OLD_LEVEL_LABEL if old_label else _LEVEL_LABEL
    lines = [f"1:0:d={date}:REFC:{level}:{fcst}:"]
    parts, offset = [refc], len(refc)
    for number, fields in enumerate(_OTHERS, start=2):
        message = _encode_other(fields, seed, grid, init_time, lead)
        for sub, f in enumerate(fields, start=1):
            n = str(number) if len(fields) == 1 else f"{number}.{sub}"
            lines.append(f"{n}:{offset}:d={date}:{f.var}:{f.level}:{fcst}:")
        parts.append(message)
        offset += len(message)
    return b"".join(parts), "\n".join(lines) + "\n"


def parse_slots(
    items: Any, leads: Sequence[int], *, kinds: Sequence[str] | None = None, name: str = "slot"
) -> dict[tuple[np.datetime64, int], str]:
    """Parse slot specifications into ``{(init_time, lead): kind}``.

    Parameters
    ----------
    items : iterable, mapping or str
        Each item is an init time (all ``leads``), a ``(time, lead)`` or
        ``(time, lead, kind)`` tuple, or a string ``T``, ``T/L`` or ``T/L=kind``
        (``T=kind`` too); a string may list several, comma-separated. A mapping
        maps ``(time, lead)`` (or a time) to a kind.
    leads : sequence of int
        The leads an init time alone stands for.
    kinds : sequence of str, optional
        Valid kinds; the first is the default. ``None``: kinds are not allowed.
    name : str
        What the slots are, for error messages.

    Raises
    ------
    ConfigError
        If a time or lead is malformed, or a kind is unknown.

    Examples
    --------
    >>> s = parse_slots("2019-09-20T05/1,2019-09-20T06", [0, 1])
    >>> sorted((str(t), lead) for t, lead in s)
    [('2019-09-20T05', 1), ('2019-09-20T06', 0), ('2019-09-20T06', 1)]
    """
    default = kinds[0] if kinds else ""
    entries: list[tuple[Any, Any, str]] = []
    if isinstance(items, str):
        items = [p for p in items.split(",") if p.strip()]
    if isinstance(items, Mapping):
        items = [(*(k if isinstance(k, tuple) else (k,)), v) for k, v in items.items()]
    for item in items or ():
        if isinstance(item, str):
            text, _, kind = item.strip().partition("=")
            when, _, lead = text.partition("/")
            entries.append((when, lead or None, kind or default))
        elif isinstance(item, (tuple, list)):
            if not 1 <= len(item) <= 3:
                raise ConfigError(f"{name} must be a time, (time, lead) or (time, lead, kind), got {item!r}")
            when, lead, kind = (*item, None, None)[:3]
            entries.append((when, lead, kind or default))
        else:
            entries.append((item, None, default))
    out: dict[tuple[np.datetime64, int], str] = {}
    for when, lead, kind in entries:
        t = parse_time(when, name)
        if kind and (kinds is None or kind not in kinds):
            valid = f"one of {', '.join(kinds)}" if kinds else "no kind"
            raise ConfigError(f"{name} {when!r}: kind must be {valid}, got {kind!r}")
        slot_leads = leads if lead is None else parse_leads([lead])
        for one in slot_leads:
            out[(t, int(one))] = kind
    return out


def _archive_root(out: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    import fsspec

    if "://" in out and not out.startswith("file://"):
        fs, path = fsspec.core.url_to_fs(out, **dict(storage_options or {}))
        root = path.strip("/")
        bucket = root.split("/", 1)[0]
        if not bucket:
            raise ConfigError(f"archive URL must name a bucket, got {out!r}")
        if not fs.exists(bucket):
            acl = (storage_options or {}).get("s3_additional_kwargs", {}).get("ACL")
            logger.info("creating bucket %s", bucket)
            fs.mkdir(bucket, **({"acl": acl} if acl else {}))
        return fs, root
    local = out[len("file://") :] if out.startswith("file://") else out
    fs = fsspec.filesystem("file", auto_mkdir=True)
    return fs, os.path.join(os.path.abspath(local), BUCKET)


def write_archive(
    out: str,
    start: Any,
    end: Any,
    leads: Any = (0,),
    *,
    grid: Grid | str = "coarse",
    seed: int = 0,
    missing: Any = (),
    missing_idx: Any = (),
    corrupt: Any = (),
    old_label: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Write a synthetic archive in the ``noaa-hrrr-bdp-pds`` layout.

    Parameters
    ----------
    out : str
        A local directory (files go to ``out/noaa-hrrr-bdp-pds/<key>``) or
        ``s3://bucket[/prefix]`` (files go to ``bucket/prefix/<key>``; the bucket
        is created when missing).
    start, end : str or datetime64
        Hourly initialisation times, ``end`` exclusive.
    leads : str or sequence of int
        Forecast hours of every run (``"0,1"``).
    grid : Grid or str
        ``"coarse"`` or ``"hrrr"``.
    seed : int
        Archive seed.
    missing : iterable
        Slots (see :func:`parse_slots`) whose GRIB file and ``.idx`` are not written.
    missing_idx : iterable
        Slots whose GRIB file is written without its ``.idx``.
    corrupt : iterable or mapping
        Slots whose REFC message is damaged, with kind ``"garbage"`` (default) or
        ``"truncated"``: ``[(t, lead, "truncated")]``, ``["T/L=truncated"]`` or
        ``{(t, lead): "garbage"}``.
    old_label : bool
        Write REFC's older level label in every ``.idx``.
    storage_options : mapping, optional
        fsspec options for S3 (``{"client_kwargs": {"endpoint_url": ...}, "key": ...,
        "secret": ..., "s3_additional_kwargs": {"ACL": "public-read"}}``).

    Returns
    -------
    list of str
        Keys written, relative to the bucket, in time and lead order (each GRIB
        key followed by its ``.idx`` key when written).

    Raises
    ------
    ConfigError
        If times or leads are invalid, end is not after start, or a listed slot
        is not in the archive.
    """
    t0, t1 = parse_time(start, "start"), parse_time(end, "end")
    if t1 <= t0:
        raise ConfigError(f"end ({end}) must be after start ({start}); end is exclusive")
    leads = parse_leads(leads)
    grid = get_grid(grid)
    times = np.arange(t0, t1, dtype="datetime64[h]")
    skip = parse_slots(missing, leads, name="missing")
    no_idx = parse_slots(missing_idx, leads, name="missing_idx")
    broken = parse_slots(corrupt, leads, kinds=CORRUPT_KINDS, name="corrupt")
    slots = {(t, lead) for t in times for lead in leads}
    for label, chosen in (("missing", skip), ("missing_idx", no_idx), ("corrupt", broken)):
        outside = sorted(set(chosen) - slots)
        if outside:
            t, lead = outside[0]
            raise ConfigError(f"{label} slot {t}/{lead} is not in the archive ({t0} .. {t1} exclusive, leads "
                              f"{list(leads)})")
    fs, root = _archive_root(out, storage_options)
    written: list[str] = []
    total = len(slots) - len(skip)
    done = 0
    for t in times:
        for lead in leads:
            if (t, lead) in skip:
                continue
            key = hrrr_key(t, lead)
            data, idx = archive_file(seed, t, lead, grid, old_label=old_label, corrupt=broken.get((t, lead), False))
            fs.pipe_file(f"{root}/{key}", data)
            written.append(key)
            if (t, lead) not in no_idx:
                fs.pipe_file(f"{root}/{key}.idx", idx.encode())
                written.append(key + ".idx")
            done += 1
            if done % 100 == 0 or done == total:
                logger.info("synthetic archive: %d/%d files written under %s", done, total, root)
    return written
