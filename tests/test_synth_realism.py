"""Realism statistics of reflectivity fields (wxdask.synth.realism) on hand-made fields and the real HRRR message."""

from __future__ import annotations

import math
import runpy
from pathlib import Path

import numpy as np
import pytest

from wxdask.synth import realism

DATA = Path(__file__).parent / "data"
REAL = DATA / "hrrr.20221014.t01z.wrfsubhf00.refc.grib2"
DX = 3000.0


def _empty(shape=(200, 300)) -> np.ndarray:
    return np.full(shape, -10.0)


def test_bin_shares_of_a_constructed_field():
    # 100 points: 40 at the floor, then 10/20/15/10/5 in the bins; edges fall in the lower bin ("(a, b]").
    values = [-10.0] * 40 + [-9.9, 0.0] * 5 + [0.1, 20.0] * 10 + [35.0] * 15 + [35.1, 50.0] * 5 + [50.1] * 5
    field = np.array(values).reshape(10, 10)
    shares = realism.bin_shares(field)
    assert list(shares) == list(realism.BINS)
    np.testing.assert_allclose([shares[b] for b in realism.BINS], [0.40, 0.10, 0.20, 0.15, 0.10, 0.05])
    assert realism.bin_shares(np.full((3, 3), -12.0))["=-10"] == 1.0


def test_a_disc_is_one_round_object_of_its_area():
    yy, xx = np.mgrid[:200, :300]
    radius = 25
    field = _empty()
    field[(yy - 100) ** 2 + (xx - 140) ** 2 <= radius**2] = 42.0
    s = realism.echo_objects(field, DX)
    assert s["objects"] == 1
    area = math.pi * (radius * DX / 1e3) ** 2
    assert s["object area median km2"] == pytest.approx(area, rel=0.02)
    assert s["object area p90 km2"] == s["object area median km2"]
    assert s["elongated share"] == 0.0
    _, ratio = realism.object_moments(field)
    assert ratio[0] == pytest.approx(1.0, abs=0.02)


def test_a_long_thin_line_is_elongated_and_small_specks_are_left_out():
    field = _empty()
    field[50, 20:220] = 30.0  # one pixel wide, 200 long
    rr = np.arange(60)
    field[120 + rr // 2, 40 + rr] = 25.0  # a slanted line, 8-connected
    field[180:183, 10:13] = 60.0  # 9 pixels = 81 km2: too small
    field[180:183, 100:104] = 60.0  # 12 pixels = 108 km2: counted, not elongated (4x3)
    counts, ratio = realism.object_moments(field)
    assert sorted(counts.tolist()) == [9, 12, 60, 200]
    s = realism.echo_objects(field, DX)
    assert s["objects"] == 3
    assert s["elongated share"] == pytest.approx(2 / 3)
    assert s["object area median km2"] == pytest.approx(60 * 9.0)
    assert ratio[np.argmax(counts)] > 50
    # Below the threshold there is nothing.
    weak = realism.echo_objects(np.minimum(field, 19.9), DX)
    assert weak["objects"] == 0 and math.isnan(weak["object area median km2"])


def _power_law_noise(shape, beta, seed=0) -> np.ndarray:
    """Gaussian noise whose 2-D power spectrum falls as k**-beta."""
    rng = np.random.default_rng(seed)
    ky = np.fft.fftfreq(shape[0])[:, None]
    kx = np.fft.fftfreq(shape[1])[None, :]
    k = np.hypot(kx, ky)
    k[0, 0] = 1.0
    amp = k ** (-beta / 2)
    amp[0, 0] = 0.0
    spec = np.fft.fft2(rng.normal(size=shape)) * amp
    return np.fft.ifft2(spec).real


@pytest.mark.parametrize("beta", [2.0, 3.0, 4.0])
def test_spectrum_slope_of_power_law_noise(beta):
    field = 10 * _power_law_noise((512, 768), beta) + 5
    assert realism.spectrum_slope(field, DX) == pytest.approx(-beta, abs=0.2)


def test_spectrum_slope_of_white_noise_and_of_a_constant():
    rng = np.random.default_rng(1)
    assert realism.spectrum_slope(rng.normal(size=(300, 400)), DX) == pytest.approx(0.0, abs=0.2)
    assert math.isnan(realism.spectrum_slope(np.full((64, 64), -10.0), DX))
    k, p = realism.radial_spectrum(rng.normal(size=(64, 96)), DX)
    assert k[0] == pytest.approx(1 / (96 * DX)) and np.all(np.diff(k) > 0) and np.all(p > 0)


def test_compare_marks_factor_two_and_slope_tolerance():
    real = {"a": 10.0, "b": 10.0, "c": 0.0, "spectrum slope": -3.0}
    syn = {"a": 19.0, "b": 21.0, "c": 0.0, "spectrum slope": -3.4}
    got = realism.compare(real, syn)
    assert got["a"] == (pytest.approx(1.9), True)
    assert got["b"][1] is False
    assert got["c"][1] is True
    assert got["spectrum slope"] == (pytest.approx(-0.4), False)


def test_the_real_message_has_the_shares_its_readme_states():
    pytest.importorskip("eccodes")
    field, dx = realism.decode_message(REAL.read_bytes())
    assert field.shape == (1059, 1799) and dx == 3000.0
    shares = realism.bin_shares(field)
    assert round(100 * shares["=-10"], 1) == 83.8
    assert round(100 * (field > 0).mean(), 1) == 12.3
    assert round(100 * (field > 20).mean(), 1) == 4.7
    assert round(100 * (field > 35).mean(), 2) == 0.67
    assert float(field.max()) == 73.0
    # Bins above 0 add up to the share above 0.
    assert sum(shares[b] for b in realism.BINS[2:]) == pytest.approx((field > 0).mean())
    s = realism.field_stats(field, dx)
    assert list(s) == list(realism.STAT_NAMES)
    assert s["objects"] > 50 and -4.0 < s["spectrum slope"] < -2.0


def test_the_script_prints_a_table(capsys):
    pytest.importorskip("eccodes")
    script = runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "synth_realism.py"))
    assert script["main"](["--grid", "coarse", "--samples", "3", "--days", "10"]) == 0
    out = capsys.readouterr().out
    for name in realism.STAT_NAMES:
        assert name in out
    assert "within a factor 2" in out
