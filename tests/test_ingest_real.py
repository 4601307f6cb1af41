"""Ingest on the real HRRR message: a message proves it belongs to its slot; faults and hostile sizes.

Fixtures are built from ``tests/data/hrrr.20221014.t01z.wrfsubhf00.refc.grib2`` (one real REFC message
of the sub-hourly file, lead 15 minutes) by re-setting header keys with ecCodes, repacking values, or
editing the bytes of its sections, written into a local archive in the bucket's layout.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from wxdask import ingest
from wxdask.config import Config
from wxdask.errors import CorruptMessageError
from wxdask.grid import HRRR
from wxdask.ingest import (
    STATUS,
    SlotFault,
    check_slot,
    decode_refc,
    hrrr_key,
    read_header,
)
from wxdask.s3local import ARCHIVE_BUCKET
from wxdask.testing.messages import patch_message

eccodes = pytest.importorskip("eccodes")

REAL = Path(__file__).parent / "data" / "hrrr.20221014.t01z.wrfsubhf00.refc.grib2"
T = np.datetime64
DAY = "2022-10-14"


def t(hour: int) -> np.datetime64:
    return T(f"{DAY}T{hour:02d}", "h")


@pytest.fixture(scope="module")
def raw() -> bytes:
    return REAL.read_bytes()


def restamp(raw: bytes, init: np.datetime64 | None = None, step: int | None = None, unit: int = 1, **keys) -> bytes:
    """The real message with its run, lead (``step`` in ``unit``) and other keys re-set (values untouched)."""
    h = eccodes.codes_new_from_message(raw)
    try:
        if init is not None:
            d = init.item()
            eccodes.codes_set(h, "dataDate", int(f"{d:%Y%m%d}"))
            eccodes.codes_set(h, "dataTime", int(f"{d:%H}00"))
        if step is not None:
            eccodes.codes_set(h, "indicatorOfUnitOfTimeRange", unit)
            eccodes.codes_set(h, "forecastTime", step)
        for k, v in keys.items():
            eccodes.codes_set(h, k, v)
        return eccodes.codes_get_message(h)
    finally:
        eccodes.codes_release(h)


def repack(raw: bytes, values: np.ndarray, **keys) -> bytes:
    """The real message with ``values`` packed under other packing keys (e.g. bitsPerValue)."""
    h = eccodes.codes_new_from_message(raw)
    try:
        for k, v in keys.items():
            eccodes.codes_set(h, k, v)
        eccodes.codes_set_values(h, values.ravel().astype(np.float64))
        return eccodes.codes_get_message(h)
    finally:
        eccodes.codes_release(h)


def cfgrib_values(path: Path) -> np.ndarray:
    with xr.open_dataset(
        path, engine="cfgrib", backend_kwargs={"indexpath": "", "filter_by_keys": {"shortName": "refc"}}
    ) as g:
        return g.refc.values


# ----------------------------------------------------------------------------- the real message itself


def test_real_message_decodes_as_cfgrib(raw):
    values, grid = decode_refc(raw)
    assert grid == HRRR
    np.testing.assert_array_equal(values / 16.0, cfgrib_values(REAL))
    assert float((values == -160).mean()) == pytest.approx(0.838, abs=1e-3)


def test_header_is_read_as_ecCodes_reads_it(raw):
    h = read_header(raw)
    handle = eccodes.codes_new_from_message(raw)
    try:
        keys = {k: eccodes.codes_get(handle, k) for k in (
            "discipline", "parameterCategory", "parameterNumber", "forecastTime", "indicatorOfUnitOfTimeRange",
            "numberOfDataPoints", "numberOfValues", "Nx", "Ny", "binaryScaleFactor", "decimalScaleFactor",
            "bitsPerValue", "referenceValue", "dataDate", "dataTime", "productDefinitionTemplateNumber")}
    finally:
        eccodes.codes_release(handle)
    assert (h.discipline, h.category, h.number) == (
        keys["discipline"],
        keys["parameterCategory"],
        keys["parameterNumber"],
    )
    assert (h.forecast_time, h.time_unit) == (keys["forecastTime"], keys["indicatorOfUnitOfTimeRange"]) == (15, 0)
    assert (h.n_points, h.n_values, h.nx, h.ny) == (
        keys["numberOfDataPoints"],
        keys["numberOfValues"],
        keys["Nx"],
        keys["Ny"],
    )
    assert (h.binary_scale, h.decimal_scale, h.bits, h.reference_value) == (
        keys["binaryScaleFactor"], keys["decimalScaleFactor"], keys["bitsPerValue"], keys["referenceValue"])
    assert h.reference_time == T("2022-10-14T01:00") and (keys["dataDate"], keys["dataTime"]) == (20221014, 100)
    assert h.product_template == keys["productDefinitionTemplateNumber"] == 0


def test_fifteen_minute_lead_is_a_quarter_hour_and_matches_no_hourly_slot(raw):
    h = read_header(raw)
    assert h.lead_hours == Fraction(1, 4)
    with pytest.raises(SlotFault, match=r"lead: slot is f00 \(0 h\), message says 15 minutes \(0.25 h\)") as info:
        check_slot(h, t(1), 0, HRRR)
    assert info.value.status == "mismatch"
    check_slot(h, t(1), None, HRRR)  # run and grid are right


@pytest.mark.parametrize(("unit", "step", "lead"), [(1, 0, 0), (1, 7, 7), (0, 60, 1), (13, 7200, 2), (2, 1, 24),
                                                    (10, 1, 3), (11, 2, 12), (12, 1, 12)])
def test_lead_is_converted_from_its_unit(raw, unit, step, lead):
    msg = restamp(raw, t(3), step, unit)
    check_slot(read_header(msg), t(3), lead, HRRR)
    with pytest.raises(SlotFault, match="lead: slot is"):
        check_slot(read_header(msg), t(3), lead + 1, HRRR)


def test_restamping_keeps_values_and_packing(raw):
    msg = restamp(raw, t(5), 0, 1)
    a, b = read_header(raw), read_header(msg)
    assert (b.binary_scale, b.decimal_scale, b.bits, b.reference_value) == (
        a.binary_scale,
        a.decimal_scale,
        a.bits,
        a.reference_value,
    )
    np.testing.assert_array_equal(decode_refc(msg)[0], decode_refc(raw)[0])


# ----------------------------------------------------------------------------- a faulty archive, ingested


def _write(root: Path, init: np.datetime64, lead: int, grib: bytes | None, idx: str | bytes | None) -> None:
    path = root / ARCHIVE_BUCKET / hrrr_key(init, lead)
    path.parent.mkdir(parents=True, exist_ok=True)
    if grib is not None:
        path.write_bytes(grib)
    if idx is not None:
        Path(str(path) + ".idx").write_bytes(idx.encode() if isinstance(idx, str) else idx)


def _idx(init: np.datetime64, lead: int, *starts: int) -> str:
    d = f"{init.item():%Y%m%d%H}"
    fcst = "anl" if lead == 0 else f"{lead} hour fcst"
    names = ["REFC:entire atmosphere", "RETOP:cloud top", "TMP:2 m above ground"]
    return "".join(f"{i + 1}:{s}:d={d}:{names[i]}:{fcst}:\n" for i, s in enumerate(starts))


TRAILER = b"GRIB\x00\x00\x00\x02" + (24).to_bytes(8, "big") + b"\x00\x00\x00\x00" + b"7777"


def _good(raw: bytes, init: np.datetime64, lead: int) -> tuple[bytes, str]:
    msg = restamp(raw, init, lead, 1)
    return msg + TRAILER, _idx(init, lead, 0, len(msg))


#: slot -> (status, reason kind) that the faulty archive must produce
EXPECTED = {
    (1, 0): ("mismatch", "lead"),
    (2, 0): ("mismatch", "date"),
    (3, 0): ("mismatch", "parameter"),
    (4, 0): ("mismatch", "grid"),
    (5, 0): ("empty", "zero-byte GRIB"),
    (6, 0): ("empty", "zero-byte .idx"),
    (7, 0): ("corrupt", "range past end"),
    (8, 0): ("corrupt", "truncated"),
    (9, 0): ("oversize", "message size"),
    (10, 0): ("oversize", "points"),
    (11, 0): ("oversize", "points"),
    (12, 0): ("oversize", ".idx size"),
    (13, 0): ("absent", "no GRIB object"),
    (16, 0): ("off_lattice", "lattice"),
    (0, 1): ("ok", ""),
    (1, 1): ("ok", ""),
    (2, 1): ("mismatch", "lead"),
}
HOURS, LEADS = 17, (0, 1)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory, raw):
    """A local archive of real messages: good ones and one fault per slot (EXPECTED); the rest absent."""
    from wxdask import synth

    root = tmp_path_factory.mktemp("real-archive")
    values = decode_refc(raw)[0] / 16.0
    for h in (0, 14):
        _write(root, t(h), 0, *_good(raw, t(h), 0))
    _write(root, t(1), 0, raw + TRAILER, _idx(t(1), 0, 0, len(raw)))                       # its own 15-minute lead
    wrong = restamp(raw, t(3), 0, 1)
    _write(root, t(2), 0, wrong + TRAILER, _idx(t(2), 0, 0, len(wrong)))                   # another run's message
    other = restamp(raw, t(3), 0, 1, parameterNumber=195)
    _write(root, t(3), 0, other + TRAILER, _idx(t(3), 0, 0, len(other)))                   # another parameter
    synth.write_archive(str(root), f"{DAY}T04", f"{DAY}T05", (0,), grid="coarse", seed=1)  # another grid
    _write(root, t(5), 0, b"", _good(raw, t(5), 0)[1])                                       # zero-byte GRIB
    _write(root, t(6), 0, _good(raw, t(6), 0)[0], b"")                                       # zero-byte .idx
    grib, _ = _good(raw, t(7), 0)
    _write(root, t(7), 0, grib, _idx(t(7), 0, 0, len(grib) + 10**9))                         # range past the end
    grib = restamp(raw, t(8), 0, 1)
    _write(root, t(8), 0, grib[: len(grib) // 2], _idx(t(8), 0, 0))                          # truncated object
    huge = patch_message(restamp(raw, t(9), 0, 1), 0, 9, 10 * 2**30, 8)
    _write(root, t(9), 0, huge, _idx(t(9), 0, 0))                                            # claims 10 GB
    msg = restamp(raw, t(10), 0, 1)
    for octet, value in ((7, 4_000_000_000), (31, 80_000), (35, 50_000)):
        msg = patch_message(msg, 3, octet, value, 4)
    _write(root, t(10), 0, msg, _idx(t(10), 0, 0))                                           # 4e9-point grid
    msg = patch_message(restamp(raw, t(11), 0, 1), 5, 6, 3_000_000_000, 4)
    _write(root, t(11), 0, msg, _idx(t(11), 0, 0))                                           # 3e9 packed values
    grib, idx = _good(raw, t(12), 0)
    _write(root, t(12), 0, grib, idx)
    with open(str(root / ARCHIVE_BUCKET / hrrr_key(t(12), 0)) + ".idx", "r+b") as f:
        f.truncate(2**30)                                                                   # a 1 GB sidecar (sparse)
    on = repack(restamp(raw, t(15), 0, 1), values, bitsPerValue=16)                          # another binary scale
    _write(root, t(15), 0, on, _idx(t(15), 0, 0))
    off = values.copy()
    off[off > 0] += 0.01
    _write(root, t(16), 0, (m := repack(restamp(raw, t(16), 0, 1), off, bitsPerValue=16)), _idx(t(16), 0, 0, len(m)))
    _write(root, t(0), 1, restamp(raw, t(0), 60, 0), _idx(t(0), 1, 0))  # 60 minutes = f01
    _write(root, t(1), 1, restamp(raw, t(1), 3600, 13), _idx(t(1), 1, 0))  # 3600 seconds = f01
    _write(root, t(2), 1, restamp(raw, t(2), 1, 10), _idx(t(2), 1, 0))  # 1 x 3 hours: f03, not f01
    return root


def _cfg(store, source, end=HOURS, **kw):
    return Config.from_dict({
        "store": {"url": str(store)},
        "ingest": {"start": f"{DAY}T00", "end": f"{DAY}T{end:02d}", "leads": list(LEADS), "source": str(source),
                   "backoff": 0.01, **kw},
        "dask": {"progress": False},
    })


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, faulty):
    path = tmp_path_factory.mktemp("real-store") / "s.zarr"
    summary = ingest.run(_cfg(path, faulty), None)
    return path, summary


def _load(path):
    return xr.open_zarr(str(path), consolidated=False).load()


def _expected(h, lead):
    if (h, lead) in EXPECTED:
        return EXPECTED[(h, lead)]
    if lead == 0 and h in (0, 14, 15):
        return ("ok", "")
    return ("absent", "no GRIB object")


def test_every_slot_has_its_status_and_reason(ingested):
    path, summary = ingested
    ds = _load(path)
    names = ingest.STATUS_NAMES
    for h in range(HOURS):
        for j, lead in enumerate(LEADS):
            status, kind = _expected(h, lead)
            got = names[int(ds.status.values[h, j])]
            reason = str(ds.reason.values[h, j])
            assert (got, reason.split(": ", 1)[0] if reason else "") == (status, kind), (h, lead, reason)
            filled = bool(np.isfinite(ds.refc.values[h, j]).all())
            assert filled == (status == "ok"), (h, lead)
            assert not np.isfinite(ds.refc.values[h, j]).any() or filled
    # the reason names what the slot expected and what the message says
    assert "slot is f00 (0 h), message says 15 minutes (0.25 h)" in str(ds.reason.values[1, 0])
    assert "slot is run 2022-10-14T02, message says run 2022-10-14T03:00" in str(ds.reason.values[2, 0])
    assert "0/16/196" in str(ds.reason.values[3, 0]) and "0/16/195" in str(ds.reason.values[3, 0])
    assert "1799 x 1059" in str(ds.reason.values[4, 0]) and "112 x 66" in str(ds.reason.values[4, 0])
    assert "1 3-hour period (3 h)" in str(ds.reason.values[2, 1])
    assert "mismatch: 5 (date: 1, grid: 1, lead: 2, parameter: 1)" in summary, summary
    assert "2022-10-14T05 f00: empty: zero-byte GRIB" in summary


def test_ok_slots_equal_the_real_message(ingested, raw):
    ds = _load(ingested[0])
    want = cfgrib_values(REAL)
    for h, lead in [(0, 0), (14, 0), (15, 0), (0, 1), (1, 1)]:
        np.testing.assert_array_equal(ds.refc.sel(time=t(h), lead_time=lead).values, want)
    assert int(ds.grib_bytes.sel(time=t(0), lead_time=0)) == len(restamp(raw, t(0), 0, 1))
    assert (int(ds.grib_start.sel(time=t(0), lead_time=0)), int(ds.grib_end.sel(time=t(0), lead_time=0))) == \
        (0, len(restamp(raw, t(0), 0, 1)))
    assert str(ds.source_identity.sel(time=t(0), lead_time=0).values).startswith("grib=")


def test_plain_xarray_reads_the_real_message_as_float32_dbz_losslessly(ingested, raw):
    """float32 dBZ equal to ecCodes' decode of the message, NaN where not filled, int16 + zstd on disk as before."""
    import numcodecs
    import zarr

    from wxdask import store
    from wxdask.config import StoreConfig

    path = ingested[0]
    ds = xr.open_zarr(str(path), consolidated=False)  # plain xarray: no wxdask code on the read path
    assert ds.refc.dtype == np.float32
    handle = eccodes.codes_new_from_message(raw)
    try:
        want = eccodes.codes_get_values(handle).reshape(HRRR.shape)  # float64 dBZ, as ecCodes decodes it
    finally:
        eccodes.codes_release(handle)
    for h, lead in [(0, 0), (14, 0), (1, 1)]:
        got = ds.refc.sel(time=t(h), lead_time=lead).values
        assert np.array_equal(got.astype(np.float64), want), (h, lead)  # exact: the 1/16 dB lattice
    assert np.isnan(ds.refc.sel(time=t(1), lead_time=0).values).all()  # a mismatch: not filled
    assert np.isnan(ds.refc.sel(time=t(5), lead_time=0).values).all()  # empty
    assert zarr.open_array(str(path / "refc"), mode="r").dtype == np.float32
    # on disk: the int16 sixteenths, zstd-compressed, byte for byte what the int16 layout stored
    cfg = StoreConfig(url=str(path))
    sixteenths = store.read_region(cfg, "refc", (0, 0))
    assert sixteenths.dtype == np.int16 and np.array_equal(sixteenths, want * 16)
    stored = int(store.chunk_nbytes(cfg, "refc")[0, 0].sum())
    assert stored == len(numcodecs.Zstd(level=0).encode(sixteenths.astype("<i2").tobytes()))
    message = int(ds.grib_bytes.sel(time=t(0), lead_time=0))
    assert 0.5 < stored / message < 1.5, (stored, message)


def test_another_packing_on_the_lattice_is_stored_losslessly(raw):
    values = decode_refc(raw)[0]
    on = repack(raw, values / 16.0, bitsPerValue=16)
    h = read_header(on)
    assert (h.binary_scale, h.bits) != (-4, 11)  # really another scale than HRRR's
    np.testing.assert_array_equal(decode_refc(on)[0], values)
    # a decimal scale: pack ten times the values, then say D = 1 (section 5, octets 18-19)
    tenfold = repack(raw, values * 10 / 16.0, bitsPerValue=16)
    dec = patch_message(tenfold, 5, 18, 1, 2)
    assert read_header(dec).decimal_scale == 1
    np.testing.assert_array_equal(decode_refc(dec)[0], values)
    off = values / 16.0
    off[off > 30] += 0.01
    with pytest.raises(SlotFault, match="not whole sixteenths") as info:
        decode_refc(repack(raw, off, bitsPerValue=16))
    assert info.value.status == "off_lattice"


def test_hostile_sizes_are_refused_before_decoding(raw):
    msg = patch_message(raw, 3, 7, 4_000_000_000, 4)
    with pytest.raises(SlotFault, match="numberOfDataPoints is 4000000000") as info:
        read_header(msg)
    assert info.value.status == "oversize"
    with pytest.raises(SlotFault, match="section 0 says the message is"):
        read_header(patch_message(raw, 0, 9, 10 * 2**30, 8))
    with pytest.raises(SlotFault, match="past the end"):
        read_header(patch_message(raw, 5, 1, 2**31, 4))
    with pytest.raises(CorruptMessageError, match="not a GRIB2"):
        read_header(b"<Error>oops</Error>")


def test_probe_survives_hostile_messages(faulty):
    source = ingest.Source(str(faulty))
    grid, tried = ingest._probe_grid(source, [(t(10), 0), (t(11), 0), (t(12), 0), (t(9), 0), (t(0), 0)])
    assert grid == HRRR
    assert [r.status for r, _ in tried] == ["oversize"] * 4 + ["ok"]


def test_rerun_of_unchanged_archive_fetches_nothing_and_a_changed_object_is_refetched(tmp_path, faulty, raw):
    import shutil

    src = tmp_path / "archive"
    shutil.copytree(faulty, src, symlinks=False, ignore=shutil.ignore_patterns("*t12z*"))
    path = tmp_path / "s.zarr"
    ingest.run(_cfg(path, src, end=6), None)
    before = _load(path)
    again = ingest.run(_cfg(path, src, end=6), None)
    assert again.startswith("nothing to fetch"), again
    xr.testing.assert_identical(_load(path).drop_attrs(), before.drop_attrs())
    # a mismatched slot fixed in the archive, and an ok slot replaced by a placeholder
    _write(src, t(1), 0, *_good(raw, t(1), 0))
    _write(src, t(0), 0, b"", None)
    summary = ingest.run(_cfg(path, src, end=6), None)
    assert "2 slot(s) attempted" in summary, summary
    after = _load(path)
    assert int(after.status.sel(time=t(1), lead_time=0)) == STATUS["ok"]
    assert int(after.status.sel(time=t(0), lead_time=0)) == STATUS["empty"]
    assert np.isnan(after.refc.sel(time=t(0), lead_time=0)).all()
    np.testing.assert_array_equal(after.refc.sel(time=t(1), lead_time=0).values, cfgrib_values(REAL))
    rest = {"time": [t(h) for h in range(2, 6)]}
    xr.testing.assert_identical(after.sel(**rest).drop_attrs(), before.sel(**rest).drop_attrs())
    # --retry refetches unchanged slots of the named statuses
    summary = ingest.run(_cfg(path, src, end=6, retry="mismatch"), None)
    assert "4 slot(s) attempted: 4 mismatch" in summary, summary


def test_status_command_lists_every_slot_that_is_not_ok(ingested):
    from click.testing import CliRunner

    from wxdask.cli import main

    path = str(ingested[0])
    result = CliRunner().invoke(main, ["status", "--store", path])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    n_ok = sum(1 for h in range(HOURS) for lead in LEADS if _expected(h, lead)[0] == "ok")
    assert len(lines) == 1 + HOURS * len(LEADS) - n_ok + 1
    assert any("2022-10-14T01" in ln and "mismatch" in ln and "15 minutes" in ln for ln in lines)
    assert lines[-1].startswith(f"{HOURS * len(LEADS)} slot(s): {n_ok} ok")
    result = CliRunner().invoke(main, ["status", "--store", path, "--status", "oversize", "--format", "csv"])
    assert result.exit_code == 0
    rows = result.stdout.strip().splitlines()
    assert rows[0] == "time,lead_time,status,reason" and len(rows) == 1 + 4
    import json

    result = CliRunner().invoke(main, ["status", "--store", path, "--format", "json"])
    doc = json.loads(result.output)
    assert doc["totals"]["ok"] == n_ok and len(doc["slots"]) == HOURS * len(LEADS) - n_ok


@pytest.mark.parametrize(("args", "match"), [
    (["status", "--status", "bogus"], "unknown status 'bogus'"),
    (["status", "--format", "xml"], "--format must be"),
    (["ingest", "--start", f"{DAY}T00", "--end", f"{DAY}T02", "--retry", "bogus"], "--retry: unknown status 'bogus'"),
])
def test_bad_new_options_are_one_line_and_exit_1(ingested, tmp_path, args, match):
    from click.testing import CliRunner

    from wxdask.cli import main

    path = tmp_path / "copy.zarr"
    import shutil

    shutil.copytree(ingested[0], path)
    before = _load(path)
    result = CliRunner().invoke(main, [*args, "--store", str(path)])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and match in lines[0], result.output
    xr.testing.assert_identical(_load(path), before)


def test_summary_is_bounded():
    results = [ingest.SlotResult(T("2020-01-01T00", "h") + np.timedelta64(i, "h"), 0, "absent", "no GRIB object: x")
               for i in range(500)] + [ingest.SlotResult(T("2020-01-01T00", "h"), 1, "ok")]
    text = ingest.summarize(results)
    assert len(text.splitlines()) == 1 + 1 + 20 + 1
    assert "absent: 500 (no GRIB object: 500)" in text and "... and 480 more" in text


def test_sidecar_is_never_read_whole(faulty):
    path = Path(str(faulty / ARCHIVE_BUCKET / hrrr_key(t(12), 0)) + ".idx")
    assert os.path.getsize(path) == 2**30
    result, _, _ = ingest.fetch_slot(ingest.Source(str(faulty)), HRRR, t(12), 0)
    assert result.status == "oversize" and "not read" in result.detail


def test_concurrent_workers_each_own_whole_shards(tmp_path, process_client):
    """Three shards of runs x two leads on two worker processes: every slot lands, as in one process."""
    from wxdask import synth

    start, end = "2019-09-20T00", "2019-09-22T06"  # 54 runs: shards of 24, 24 and 6
    synth.write_archive(str(tmp_path / "a"), start, end, (0, 1), grid="coarse", seed=5,
                        missing=[T("2019-09-21T03", "h")], corrupt=[(T("2019-09-20T23", "h"), 1, "truncated")])

    def cfg(name):
        return Config.from_dict(
            {
                "store": {"url": str(tmp_path / name)},
                "dask": {"progress": False},
                "ingest": {"start": start, "end": end, "leads": [0, 1], "source": str(tmp_path / "a")},
            }
        )

    ingest.run(cfg("one.zarr"), None)
    ingest.run(cfg("two.zarr"), process_client)
    one, two = _load(tmp_path / "one.zarr"), _load(tmp_path / "two.zarr")
    assert two.status.encoding["shards"] == (ingest.SHARD_TIMES, 1)
    assert (
        sum(p.is_file() for p in (tmp_path / "two.zarr" / "status" / "c").rglob("*")) == 3 * 2
    )  # one object per shard
    for ds in (one, two):
        ds.attrs.pop("wxdask_config")
    xr.testing.assert_identical(one, two)
    assert int((two.status == STATUS["ok"]).sum()) == 54 * 2 - 2 - 1


def test_the_faults_read_alike_from_the_s3_endpoint_and_an_ok_slot_costs_two_gets(tmp_path, faulty, ingested,
                                                                                   local_s3):
    """S3 answers a range past the end (and any range of an empty object) with 416 and no size, where a file
    says its size: the statuses and reasons must not depend on which. An ok slot costs two GETs, no HEAD."""
    import shutil

    from wxdask.testing import FlakyProxy

    src = tmp_path / "archive"  # all but the 1 GB sidecar
    shutil.copytree(faulty, src, ignore=shutil.ignore_patterns("*t12z*"))
    local_s3.upload_archive(src)
    path = tmp_path / "s3.zarr"
    with FlakyProxy(local_s3.endpoint_url, fail_every=10**9) as proxy:
        ingest.run(_cfg(path, f"s3://{ARCHIVE_BUCKET}", endpoint_url=proxy.url), None)
    got, want = _load(path), _load(ingested[0])
    keep = [h for h in range(HOURS) if h != 12]
    for name in ("status", "reason", "grib_start", "grib_end", "grib_bytes"):
        np.testing.assert_array_equal(got[name].values[keep], want[name].values[keep], err_msg=name)
    np.testing.assert_array_equal(got.refc.values[keep], want.refc.values[keep])
    for h, lead in [(0, 0), (14, 0), (15, 0)]:
        key = f"/{ARCHIVE_BUCKET}/{hrrr_key(t(h), lead)}"
        asked = sorted((m, p.split("?")[0]) for m, p, _ in proxy.requests if p.split("?")[0] in (key, key + ".idx"))
        assert asked == [("GET", key), ("GET", key + ".idx")], (h, asked)
