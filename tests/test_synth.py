"""The synthetic HRRR archive: weather statistics and behaviour, GRIB2 encoding, files, .idx, archive layout."""

from __future__ import annotations

import re

import numpy as np
import pytest
from click.testing import CliRunner

from wxdask import synth
from wxdask.cli import main
from wxdask.errors import ConfigError, CorruptMessageError
from wxdask.grid import COARSE, HRRR, grid_from_message
from wxdask.ingest import check_message, decode_refc, find_refc, hrrr_key, parse_idx

eccodes = pytest.importorskip("eccodes")

T = np.datetime64
SEED = 0
STORMY = (T("2019-06-12T02", "h"), 3)  # plains squall lines, 3 h forecast (seed 0)


def _hours(start: str, hours: int, step: int = 1) -> np.ndarray:
    return np.arange(T(start, "h"), T(start, "h") + np.timedelta64(hours, "h"), step, dtype="datetime64[h]")


def _fields(times, seed=SEED, lead=0, grid="coarse") -> np.ndarray:
    return np.stack([synth.refc_field(seed, t, lead, grid) for t in times])


@pytest.fixture(scope="module")
def sample():
    """Coarse analyses every 5 h over 60 days, with their true regimes."""
    times = _hours("2019-05-01T00", 60 * 24, 5)
    return times, _fields(times), synth.regime_of(SEED, times)


def _decode(message: bytes) -> tuple[np.ndarray, dict]:
    keys = ("gridDefinitionTemplateNumber", "dataRepresentationTemplateNumber", "packingType", "bitsPerValue",
            "binaryScaleFactor", "decimalScaleFactor", "referenceValue", "orderOfSpatialDifferencing",
            "bitmapPresent", "scanningMode", "discipline", "parameterCategory", "parameterNumber",
            "typeOfFirstFixedSurface", "shortName", "typeOfLevel", "productDefinitionTemplateNumber",
            "dataDate", "dataTime", "forecastTime", "stepUnits", "centre", "Nx", "Ny")
    h = eccodes.codes_new_from_message(message)
    try:
        values = eccodes.codes_get_values(h)
        strings = {"packingType", "shortName", "typeOfLevel"}
        got = {k: eccodes.codes_get_string(h, k) if k in strings
               else eccodes.codes_get_double(h, k) if k == "referenceValue"
               else eccodes.codes_get_long(h, k) for k in keys}
    finally:
        eccodes.codes_release(h)
    return values.reshape(got["Ny"], got["Nx"]), got


# --------------------------------------------------------------------------
# The weather
# --------------------------------------------------------------------------


def test_field_is_deterministic_and_depends_on_the_seed():
    t, lead = STORMY
    a = synth.refc_field(SEED, t, lead, "coarse")
    assert a.shape == COARSE.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, synth.refc_field(SEED, str(t), lead, COARSE))
    assert not np.array_equal(a, synth.refc_field(SEED + 1, t, lead, "coarse"))


def test_hrrr_statistics(sample):
    times, fields, _ = sample
    assert fields.min() == -10.0  # the floor, never below
    np.testing.assert_array_equal(fields * 16, np.round(fields * 16))  # 1/16 dB steps
    at_floor = (fields == -10).mean(axis=(1, 2))
    assert 0.80 <= at_floor.mean() <= 0.92  # HRRR: about 84% of points at -10
    stormy = fields.max(axis=(1, 2))
    assert stormy.max() <= 75.0
    assert np.percentile(stormy, 90) >= 55.0 and stormy.max() >= 62.0
    assert (at_floor == 1.0).any()  # clear-sky hours happen
    assert (at_floor < 0.8).any()  # and widespread rain


def test_hrrr_grid_field():
    f = synth.refc_field(SEED, *STORMY, grid="hrrr")
    assert f.shape == HRRR.shape and f.dtype == np.float32
    assert f.min() == -10.0 and 60.0 <= f.max() <= 75.0
    assert 0.7 <= (f == -10).mean() <= 0.97
    np.testing.assert_array_equal(f * 16, np.round(f * 16))
    # The same weather as on the coarse grid: echo where the coarse grid has echo.
    coarse = synth.refc_field(SEED, *STORMY, grid="coarse")
    sub = f[::16, ::16][: COARSE.ny, : COARSE.nx]
    echo = (sub > 10) | (coarse > 10)
    assert ((sub > 10) == (coarse > 10))[echo].mean() > 0.6


def test_neighbouring_hours_are_nearest_neighbours():
    times = _hours("2019-06-10T00", 4 * 24)
    x = _fields(times).reshape(len(times), -1).astype(np.float64)
    sq = (x**2).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * x @ x.T, 0) / x.shape[1])
    np.fill_diagonal(dist, np.inf)
    adjacent = [min(dist[i, j] for j in (i - 1, i + 1) if 0 <= j < len(times)) <= dist[i].min() + 1e-9
                for i in range(len(times))]
    assert np.mean(adjacent) >= 0.85
    # Weather moves: consecutive hours are close but not identical when it rains.
    wet = x.max(1) > 0
    steps = np.diag(dist, 1)[wet[:-1] & wet[1:]]
    assert (steps > 0).all()
    assert np.median(steps) < np.median(dist[np.isfinite(dist)])


def test_forecasts_resemble_the_analysis_and_differ_by_lead():
    valid = T("2019-06-12T06", "h")
    truth = synth.refc_field(SEED, valid, 0, "coarse")
    rmse = {}
    for lead in (1, 3, 12):
        f = synth.refc_field(SEED, valid - np.timedelta64(lead, "h"), lead, "coarse")
        assert not np.array_equal(f, truth)
        rmse[lead] = float(np.sqrt(((f - truth) ** 2).mean()))
    six_hours_later = synth.refc_field(SEED, valid + np.timedelta64(6, "h"), 0, "coarse")
    assert rmse[1] < rmse[12]
    assert rmse[1] < float(np.sqrt(((six_hours_later - truth) ** 2).mean()))
    # A function of (valid time, lead): the same arguments give the same forecast.
    np.testing.assert_array_equal(
        synth.refc_field(SEED, valid - np.timedelta64(3, "h"), 3, "coarse"),
        synth.refc_field(SEED, str(valid - np.timedelta64(3, "h")), 3, "coarse"),
    )


def test_regimes_persist_for_days():
    times = _hours("2019-01-01T00", 365 * 24)
    r = synth.regime_of(SEED, times)
    assert r.dtype.kind == "i" and set(np.unique(r)) == set(range(len(synth.REGIME_NAMES)))
    change = np.flatnonzero(np.diff(r)) + 1
    runs = np.diff(change)  # whole episodes only
    assert runs.min() >= 48 and runs.max() <= 144
    assert (r[change] != r[change - 1]).all()
    np.testing.assert_array_equal(synth.regime_of(SEED, times.reshape(365, 24)), r.reshape(365, 24))
    assert not np.array_equal(synth.regime_of(SEED + 1, times), r)


def test_regimes_are_separable(sample):
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    times, fields, regime = sample
    x = fields[:, :64, :].reshape(len(times), 16, 4, 28, 4).mean(axis=(2, 4)).reshape(len(times), -1) + 10
    labels = KMeans(len(synth.REGIME_NAMES), n_init=10, random_state=0).fit_predict(x)
    assert adjusted_rand_score(regime, labels) > 0.5  # chance: 0
    # Nearest centroid, learnt on the first half, on the second half.
    half = len(times) // 2
    centroids = np.stack([x[:half][regime[:half] == k].mean(0) for k in range(len(synth.REGIME_NAMES))])
    predicted = np.argmin(((x[half:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (predicted == regime[half:]).mean() > 0.7  # chance: 0.2


def test_diurnal_cycle_of_convection():
    # Gulf-coast convection peaks in the afternoon (about 20-21 UTC) and fades overnight.
    times = _hours("2019-01-01T00", 365 * 24)
    r = synth.regime_of(SEED, times)
    gulf = times[r == synth.REGIME_NAMES.index("gulf_convection")][::3]
    fields = _fields(gulf)
    strong = (fields > 40).mean(axis=(1, 2))
    hour = gulf.astype(int) % 24
    afternoon, night = strong[(hour >= 18) & (hour <= 23)].mean(), strong[(hour >= 6) & (hour <= 12)].mean()
    assert afternoon > 2 * night


# --------------------------------------------------------------------------
# GRIB2
# --------------------------------------------------------------------------


def test_refc_message_is_encoded_as_hrrr_does():
    t, lead = STORMY
    field = synth.refc_field(SEED, t, lead, "coarse")
    message = synth.encode_refc(field, "coarse", t, lead)
    assert message[:4] == b"GRIB" and message[-4:] == b"7777"
    assert int.from_bytes(message[8:16], "big") == len(message) and message[7] == 2
    values, keys = _decode(message)
    np.testing.assert_array_equal(values, field)  # lossless
    assert keys == {
        "gridDefinitionTemplateNumber": 30, "dataRepresentationTemplateNumber": 3,
        "packingType": "grid_complex_spatial_differencing", "bitsPerValue": 11, "binaryScaleFactor": -4,
        "decimalScaleFactor": 0, "referenceValue": -10.0, "orderOfSpatialDifferencing": 2, "bitmapPresent": 0,
        "scanningMode": 64, "discipline": 0, "parameterCategory": 16, "parameterNumber": 196,
        "typeOfFirstFixedSurface": 10, "shortName": "refc", "typeOfLevel": "atmosphere",
        "productDefinitionTemplateNumber": 0, "dataDate": 20190612, "dataTime": 200, "forecastTime": 3,
        "stepUnits": 1, "centre": 7, "Nx": 112, "Ny": 66,
    }
    assert grid_from_message(message) is COARSE
    assert synth.encode_refc(field, COARSE, t, lead, old_label=True) == message


def test_clear_sky_is_a_constant_message():
    message = synth.encode_refc(np.full(COARSE.shape, -10.0), "coarse", "2019-06-12T00", 0)
    assert len(message) == 219
    values, keys = _decode(message)
    assert (values == -10).all() and keys["bitsPerValue"] == 0 and keys["binaryScaleFactor"] == -4


def test_encode_rejects_a_field_that_does_not_fit():
    with pytest.raises(ValueError, match="shape"):
        synth.encode_refc(np.zeros((3, 4)), "coarse", "2019-06-12T00", 0)
    wide = np.full(COARSE.shape, -10.0)
    wide[0, 0] = 200.0
    with pytest.raises(ValueError, match="does not fit"):
        synth.encode_refc(wide, "coarse", "2019-06-12T00", 0)


def test_hrrr_grid_message_round_trip():
    t, lead = STORMY
    field = synth.refc_field(SEED, t, lead, "hrrr")
    message = synth.encode_refc(field, "hrrr", t, lead)
    values, keys = _decode(message)
    np.testing.assert_array_equal(values, field)
    assert (keys["bitsPerValue"], keys["binaryScaleFactor"], keys["referenceValue"]) == (11, -4, -10.0)
    assert grid_from_message(message) is HRRR
    assert 50_000 < len(message) < 700_000  # HRRR's REFC: 0.2-0.65 MB


def test_cfgrib_decodes_the_same_values(tmp_path):
    xr = pytest.importorskip("xarray")
    pytest.importorskip("cfgrib")
    t, lead = STORMY
    field = synth.refc_field(SEED, t, lead, "coarse")
    path = tmp_path / "refc.grib2"
    path.write_bytes(synth.encode_refc(field, "coarse", t, lead))
    with xr.open_dataset(path, engine="cfgrib", backend_kwargs={"indexpath": ""}) as ds:
        np.testing.assert_array_equal(ds["refc"].values, field)
        assert ds["time"].values == t.astype("datetime64[ns]")
        assert ds["step"].values == np.timedelta64(lead, "h")
        np.testing.assert_allclose(ds["latitude"].values[0, 0], COARSE.lat1)


# --------------------------------------------------------------------------
# Files and .idx
# --------------------------------------------------------------------------

_IDX = re.compile(r"^(\d+(?:\.\d+)?):(\d+):d=(\d{10}):([A-Z]+):([^:]+):([^:]+):$")


def test_archive_file_layout_and_idx():
    t, lead = STORMY
    data, idx = synth.archive_file(SEED, t, lead, "coarse")
    assert (data, idx) == synth.archive_file(SEED, t, lead, "coarse")  # same seed, same bytes
    lines = idx.splitlines()
    assert idx.endswith("\n") and len(lines) >= 5
    rows = [_IDX.match(line) for line in lines]
    assert all(rows), lines
    assert lines[0] == "1:0:d=2019061202:REFC:entire atmosphere:3 hour fcst:"
    assert [m[4] for m in rows] == ["REFC", "TMP", "DPT", "PRES", "UGRD", "VGRD", "HGT"]
    assert {m[6] for m in rows} == {"3 hour fcst"} and {m[3] for m in rows} == {"2019061202"}
    starts = [int(m[2]) for m in rows]
    for start in starts:
        assert data[start : start + 4] == b"GRIB"
    # A sub-message pair shares its start byte, as wgrib2 lists U and V of one message.
    numbers = [m[1] for m in rows]
    assert numbers[4:6] == ["5.1", "5.2"] and starts[4] == starts[5]
    # Messages tile the file: each one's length (section 0) reaches the next start.
    bounds = sorted(set(starts)) + [len(data)]
    for a, b in zip(bounds, bounds[1:]):
        assert int.from_bytes(data[a + 8 : a + 16], "big") == b - a and data[b - 4 : b] == b"7777"
    # REFC is message 1, exactly the encoded field; it is a small part of the file.
    entry = find_refc(parse_idx(idx), t, lead)
    refc = data[entry.start : entry.end]
    check_message(refc, entry)
    assert refc == synth.encode_refc(synth.refc_field(SEED, t, lead, "coarse"), "coarse", t, lead)
    assert len(refc) < 0.1 * len(data)


def test_other_messages_decode():
    data, _ = synth.archive_file(SEED, "2019-06-12T00", 0, "coarse")
    path_fields = []
    offset = 0
    while offset < len(data):
        length = int.from_bytes(data[offset + 8 : offset + 16], "big")
        message = data[offset : offset + length]
        h = eccodes.codes_new_from_message(message)
        try:
            path_fields.append((eccodes.codes_get(h, "parameterCategory"), eccodes.codes_get(h, "parameterNumber")))
            values = eccodes.codes_get_values(h)
            assert values.size == COARSE.nx * COARSE.ny and np.isfinite(values).all()
        finally:
            eccodes.codes_release(h)
        offset += length
    assert path_fields == [(16, 196), (0, 0), (0, 6), (3, 0), (2, 2), (3, 5)]


def test_sub_message_holds_both_wind_components(tmp_path):
    data, idx = synth.archive_file(SEED, "2019-06-12T00", 0, "coarse")
    entries = parse_idx(idx)
    pair = [e for e in entries if e.number.startswith("5.")]
    path = tmp_path / "wind.grib2"
    path.write_bytes(data[pair[0].start : pair[0].end])
    eccodes.codes_grib_multi_support_on()
    try:
        names = []
        with open(path, "rb") as f:
            while (h := eccodes.codes_grib_new_from_file(f)) is not None:
                names.append(eccodes.codes_get(h, "shortName"))
                eccodes.codes_release(h)
    finally:
        eccodes.codes_grib_multi_support_off()
    assert names == ["10u", "10v"]


def test_analysis_and_old_label():
    _, idx = synth.archive_file(SEED, "2016-01-01T00", 0, "coarse", old_label=True)
    assert idx.splitlines()[0] == "1:0:d=2016010100:REFC:entire atmosphere (considered as a single layer):anl:"
    assert all(line.endswith(":anl:") for line in idx.splitlines())


def _clear_hour() -> np.datetime64:
    for t in _hours("2019-06-13T00", 4 * 24):
        if (synth.refc_field(SEED, t, 0, "coarse") == -10).all():
            return t
    raise AssertionError("no clear-sky hour found")  # pragma: no cover


@pytest.mark.parametrize("when", ["stormy", "clear"])
def test_garbage_keeps_framing_but_does_not_decode(when):
    t = STORMY[0] if when == "stormy" else _clear_hour()
    clean, _ = synth.archive_file(SEED, t, 0, "coarse")
    data, idx = synth.archive_file(SEED, t, 0, "coarse", corrupt=True)
    assert len(data) == len(clean) and data != clean
    assert synth.archive_file(SEED, t, 0, "coarse", corrupt="garbage")[0] == data
    entry = find_refc(parse_idx(idx))
    refc = data[entry.start : entry.end]
    check_message(refc, entry)  # GRIB ... 7777, right length: framing cannot tell
    diff = np.flatnonzero(np.frombuffer(refc, np.uint8) != np.frombuffer(clean[entry.start : entry.end], np.uint8))
    assert diff.min() > 16 and diff.max() < len(refc) - 4  # damaged in the middle
    assert data[entry.end :] == clean[entry.end :]  # the other messages are intact
    with pytest.raises(CorruptMessageError):
        decode_refc(refc, COARSE)


def test_truncated_message():
    t, lead = STORMY
    clean, _ = synth.archive_file(SEED, t, lead, "coarse")
    data, idx = synth.archive_file(SEED, t, lead, "coarse", corrupt="truncated")
    entries = parse_idx(idx)
    for e in entries:
        assert data[e.start : e.start + 4] == b"GRIB"
    refc = find_refc(entries)
    assert refc.end < len(clean) and refc.end == int.from_bytes(clean[8:16], "big") // 2
    with pytest.raises(CorruptMessageError, match="bytes long"):
        check_message(data[refc.start : refc.end], refc)
    with pytest.raises(ConfigError, match="garbage, truncated"):
        synth.archive_file(SEED, t, lead, "coarse", corrupt="melted")


# --------------------------------------------------------------------------
# Archives
# --------------------------------------------------------------------------


def test_parse_slots():
    leads = (0, 1)
    s = synth.parse_slots(["2019-09-20T05/1", T("2019-09-20T06"), ("2019-09-20T07", 0)], leads)
    assert s == {(T("2019-09-20T05", "h"), 1): "", (T("2019-09-20T06", "h"), 0): "",
                 (T("2019-09-20T06", "h"), 1): "", (T("2019-09-20T07", "h"), 0): ""}
    kinds = synth.CORRUPT_KINDS
    c = synth.parse_slots("2019-09-20T05/1=truncated, 2019-09-20T06", leads, kinds=kinds)
    assert c == {(T("2019-09-20T05", "h"), 1): "truncated", (T("2019-09-20T06", "h"), 0): "garbage",
                 (T("2019-09-20T06", "h"), 1): "garbage"}
    assert synth.parse_slots({("2019-09-20T05", 0): "truncated"}, leads, kinds=kinds) == {
        (T("2019-09-20T05", "h"), 0): "truncated"}
    assert synth.parse_slots([(T("2019-09-20T05"), 1, "truncated")], leads, kinds=kinds) == {
        (T("2019-09-20T05", "h"), 1): "truncated"}
    with pytest.raises(ConfigError, match="on the hour"):
        synth.parse_slots(["2019-09-20T05:30"], leads)
    with pytest.raises(ConfigError, match="0..48"):
        synth.parse_slots(["2019-09-20T05/x"], leads)
    with pytest.raises(ConfigError, match="kind must be no kind"):
        synth.parse_slots(["2019-09-20T05=garbage"], leads, name="missing")


def test_write_archive_to_a_directory(tmp_path):
    t0 = T("2019-09-20T00", "h")
    h = np.timedelta64(1, "h")
    keys = synth.write_archive(
        str(tmp_path), "2019-09-20T00", "2019-09-20T03", "0,1", seed=4,
        missing=[t0 + h, (t0 + 2 * h, 1)], missing_idx=["2019-09-20T00/1"],
        corrupt={(t0 + 2 * h, 0): "truncated"}, old_label=True,
    )
    k = hrrr_key
    assert keys == [k(t0, 0), k(t0, 0) + ".idx", k(t0, 1), k(t0 + 2 * h, 0), k(t0 + 2 * h, 0) + ".idx"]
    root = tmp_path / synth.BUCKET
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == sorted(keys)
    assert keys[0] == "hrrr.20190920/conus/hrrr.t00z.wrfsfcf00.grib2"
    data = (root / k(t0, 1)).read_bytes()
    assert data == synth.archive_file(4, t0, 1, "coarse")[0]
    idx = (root / (k(t0 + 2 * h, 0) + ".idx")).read_text()
    assert "(considered as a single layer)" in idx
    truncated = find_refc(parse_idx(idx))
    with pytest.raises(CorruptMessageError):
        check_message((root / k(t0 + 2 * h, 0)).read_bytes()[truncated.start : truncated.end], truncated)


def test_write_archive_rejects_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="must be after start"):
        synth.write_archive(str(tmp_path), "2019-09-20T03", "2019-09-20T03", "0")
    with pytest.raises(ConfigError, match="before the archive starts"):
        synth.write_archive(str(tmp_path), "2010-01-01T00", "2010-01-01T03", "0")
    with pytest.raises(ConfigError, match="missing slot 2019-09-21T00/0 is not in the archive"):
        synth.write_archive(str(tmp_path), "2019-09-20T00", "2019-09-20T03", "0", missing=["2019-09-21T00"])
    with pytest.raises(ConfigError, match="unknown grid"):
        synth.write_archive(str(tmp_path), "2019-09-20T00", "2019-09-20T03", "0", grid="fine")
    assert not any(tmp_path.iterdir())


def test_write_archive_to_s3(local_s3):
    import s3fs

    bucket = "synth-test"
    keys = synth.write_archive(f"s3://{bucket}/copy", "2019-09-20T00", "2019-09-20T02", (0,),
                               storage_options=local_s3.writer_options(public=True))
    assert len(keys) == 4
    anon = s3fs.S3FileSystem(**local_s3.reader_options(), skip_instance_cache=True)
    key = hrrr_key(T("2019-09-20T01", "h"), 0)
    idx = anon.cat_file(f"{bucket}/copy/{key}.idx").decode()
    entry = find_refc(parse_idx(idx))
    refc = anon.cat_file(f"{bucket}/copy/{key}", start=entry.start, end=entry.end)
    assert refc == synth.archive_file(0, "2019-09-20T01", 0, "coarse")[0][entry.start : entry.end]


def test_cli(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["synth", "--start", "2019-09-20T00", "--end", "2019-09-20T02", "--leads", "0,1",
                                  "--seed", "2", "--missing", "2019-09-20T01/1", "--corrupt",
                                  "2019-09-20T00/1=truncated", "--old-label", "-q", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "wrote 3 GRIB2 files and 3 .idx files" in result.output
    root = tmp_path / synth.BUCKET
    assert len(list(root.rglob("*.grib2"))) == 3
    assert (root / hrrr_key(T("2019-09-20T01", "h"), 0)).read_bytes() == synth.archive_file(2, "2019-09-20T01", 0)[0]
    for bad in (["--end", "2019-09-19T00"], ["--leads", "0,49"], ["--grid", "fine"], ["--corrupt", "2019-09-20T00=x"]):
        args = ["synth", "--start", "2019-09-20T00", "--end", "2019-09-20T02", "--out", str(tmp_path / "bad"), *bad]
        result = runner.invoke(main, args)
        assert result.exit_code == 1, (bad, result.output)
        assert result.output.count("\n") == 1 and result.output.startswith("error: ")
    assert not (tmp_path / "bad").exists()


def test_idx_forecast_labels_come_from_ingest_and_round_trip():
    from wxdask.ingest import fcst_label, fcst_lead

    assert [fcst_label(lead) for lead in (0, 1, 48)] == ["anl", "1 hour fcst", "48 hour fcst"]
    assert all(fcst_lead(fcst_label(lead)) == lead for lead in range(49))
    assert fcst_lead("0 hour fcst") is None and fcst_lead("15 min fcst") is None and fcst_lead("anl ") is None
    _, idx = synth.archive_file(SEED, "2019-06-12T00", 3, "coarse")
    assert {fcst_lead(e.fcst) for e in parse_idx(idx)} == {3}
