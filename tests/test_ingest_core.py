"""Ingest's pure core: keys, .idx parsing, byte ranges, message framing."""

from __future__ import annotations

import numpy as np
import pytest

from wxdask.errors import CorruptMessageError, SourceNotFoundError
from wxdask.ingest import IdxEntry, check_message, find_refc, hrrr_key, parse_idx

V4_IDX = """1:0:d=2022101401:REFC:entire atmosphere:8 hour fcst:
2:412345:d=2022101401:RETOP:cloud top:8 hour fcst:
3:500000:d=2022101401:TMP:2 m above ground:8 hour fcst:
4:900000:d=2022101401:UGRD:10 m above ground:8 hour fcst:
4.1:900000:d=2022101401:VGRD:10 m above ground:8 hour fcst:
5:1300000:d=2022101401:PRATE:surface:8 hour fcst:
"""

OLD_IDX = """1:0:d=2016010100:REFC:entire atmosphere (considered as a single layer):anl:
2:300:d=2016010100:TMP:2 m above ground:anl:
"""


def test_hrrr_key():
    assert hrrr_key(np.datetime64("2019-09-20T05"), 1) == "hrrr.20190920/conus/hrrr.t05z.wrfsfcf01.grib2"
    assert hrrr_key(np.datetime64("2014-09-30T23"), 48).endswith("hrrr.t23z.wrfsfcf48.grib2")


def test_parse_idx_ranges_are_exclusive_and_last_is_open():
    entries = parse_idx(V4_IDX)
    assert [e.number for e in entries] == ["1", "2", "3", "4", "4.1", "5"]
    assert (entries[0].start, entries[0].end) == (0, 412345)
    assert entries[-1].end is None
    # a sub-message shares its parent's range and ends at the next different start
    assert (entries[3].start, entries[3].end) == (900000, 1300000)
    assert (entries[4].start, entries[4].end) == (900000, 1300000)


def test_find_refc_both_level_labels():
    new = find_refc(parse_idx(V4_IDX), np.datetime64("2022-10-14T01"), 8)
    assert (new.start, new.end, new.level) == (0, 412345, "entire atmosphere")
    old = find_refc(parse_idx(OLD_IDX), np.datetime64("2016-01-01T00"), 0)
    assert old.level.startswith("entire atmosphere (considered")
    assert (old.start, old.end) == (0, 300)


def test_find_refc_checks_date_and_lead():
    entries = parse_idx(V4_IDX)
    with pytest.raises(CorruptMessageError, match="d=2022101401, expected d=2022101402"):
        find_refc(entries, np.datetime64("2022-10-14T02"), 8)
    with pytest.raises(CorruptMessageError, match="expected 'anl'"):
        find_refc(entries, np.datetime64("2022-10-14T01"), 0)


def test_refc_only_as_last_message_is_open_ended():
    text = "1:0:d=2022101401:TMP:2 m above ground:anl:\n2:700:d=2022101401:REFC:entire atmosphere:anl:\n"
    entry = find_refc(parse_idx(text))
    assert (entry.start, entry.end) == (700, None)


def test_no_refc_and_malformed_lines():
    with pytest.raises(SourceNotFoundError, match="no REFC"):
        find_refc(parse_idx("1:0:d=2022101401:TMP:2 m above ground:anl:\n"))
    with pytest.raises(CorruptMessageError, match="line 2 is malformed"):
        parse_idx("1:0:d=2022101401:REFC:entire atmosphere:anl:\n<html>oops</html>\n")
    with pytest.raises(CorruptMessageError, match="backwards"):
        parse_idx("1:500:d=2022101401:REFC:a:anl:\n2:100:d=2022101401:TMP:b:anl:\n")


def _message(n: int) -> bytes:
    body = b"\x00" * (n - 20)
    return b"GRIB\x00\x00\x00\x02" + n.to_bytes(8, "big") + body + b"7777"


def test_check_message_accepts_a_whole_message():
    msg = _message(100)
    check_message(msg, IdxEntry("1", 0, 100, "", "REFC", "", ""))
    check_message(msg, IdxEntry("1", 50, None, "", "REFC", "", ""))


@pytest.mark.parametrize(
    ("data", "end", "match"),
    [
        (_message(100)[:-1], 100, "fetched 99 bytes, expected 100"),
        (_message(100)[:-4] + b"XXXX", 100, "7777"),
        (b"<Error>" + _message(100)[7:], 100, "GRIB"),
        (_message(100)[:7] + b"\x01" + _message(100)[8:], 100, "edition 1"),
        (_message(100)[:60], None, "says it is 100 bytes long, got 60"),
    ],
)
def test_check_message_rejects_damage(data, end, match):
    with pytest.raises(CorruptMessageError, match=match):
        check_message(data, IdxEntry("1", 0, end, "", "REFC", "", ""))


def test_ingest_wrapper_and_template_are_lazy(tmp_path):
    from wxdask.config import StoreConfig
    from wxdask.grid import COARSE
    from wxdask.ingest import Source, ingest, refc_template
    from wxdask.testing import raise_if_dask_computes

    times = np.datetime64("2022-06-01T00", "h") + np.arange(3).astype("timedelta64[h]")
    slots = [(t, lead, (i, j)) for i, t in enumerate(times) for j, lead in enumerate((0, 1))]
    with raise_if_dask_computes():
        tasks = ingest(slots, Source(str(tmp_path / "archive")), StoreConfig(url=str(tmp_path / "s.zarr")), COARSE)
        template = refc_template(times, (0, 1), COARSE)
    assert len(tasks) == 6 and template["refc"].chunks is not None
    assert not (tmp_path / "s.zarr").exists()


def test_unsatisfiable_range_is_permanent_not_retried():
    from botocore.exceptions import ClientError

    from wxdask.errors import SourceError
    from wxdask.ingest import Source, _retry

    calls = []

    def read():
        calls.append(1)
        raise ClientError({"Error": {"Code": "InvalidRange", "Message": "The requested range is not satisfiable"},
                           "ResponseMetadata": {"HTTPStatusCode": 416}}, "GetObject")

    with pytest.raises(SourceError) as info:
        _retry(Source("s3://b", retries=5, backoff=0.0), "reading 'b/k'", read)
    assert len(calls) == 1 and info.value.unsatisfiable


def test_unreachable_endpoint_gets_two_attempts():
    from wxdask.errors import SourceError
    from wxdask.ingest import Source, _retry

    calls = []

    def read():
        calls.append(1)
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(SourceError) as info:
        _retry(Source("s3://b", retries=5, backoff=0.0), "reading 'b/k'", read)
    assert len(calls) == 2 and info.value.unreachable
