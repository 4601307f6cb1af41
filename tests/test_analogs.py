"""Analog forecast scoring against a hand-computed case."""

from __future__ import annotations

import numpy as np
import pytest

from wxdask import analogs


def _sequence():
    """24 hourly 1x4 images: a 40 dBZ echo stepping east each hour, the same cycle every 4 hours."""
    times = np.arange(np.datetime64("2020-01-01T00", "h"), np.datetime64("2020-01-02T00", "h"))
    imgs = np.zeros((24, 1, 4))
    for i in range(24):
        imgs[i, 0, i % 4] = 40.0
    return times, imgs


def test_a_perfect_analog_forecasts_perfectly_and_persistence_does_not():
    times, imgs = _sequence()
    vec = imgs.reshape(24, -1)
    have = np.ones(24, bool)
    cand = analogs.eligible(times, have, 3)
    assert cand[:21].all() and not cand[21:].any()
    q = np.array([0, 5])
    # window 6 h: query 0's nearest identical image is at 8 (4 is inside the window), query 5's at 13 (or -3: none)
    src = analogs.nearest_analogs(vec, times, q, cand, 6)
    assert src.tolist() == [8, 13]
    scores = analogs.forecast_scores(lambda p: imgs[p], times, q, src, 3)
    assert [s["rmse"] for s in scores] == [0.0, 0.0, 0.0] and [s["csi_20"] for s in scores] == [1.0] * 3
    pers = analogs.forecast_scores(lambda p: imgs[p], times, q, None, 3, persistence=True)
    # persistence: the echo moved one pixel -> 2 of 4 points wrong by 40 dBZ: RMSE sqrt(2 * 1600 / 4), CSI 0
    assert pers[0]["rmse"] == pytest.approx(np.sqrt(800.0)) and pers[0]["csi_20"] == 0.0
    # 4 hours ahead the cycle comes back: not asked; 2 hours ahead still 2 wrong points
    assert pers[1]["rmse"] == pytest.approx(np.sqrt(800.0))


def test_a_gap_makes_times_ineligible_and_no_analog_is_counted():
    times, imgs = _sequence()
    have = np.ones(24, bool)
    have[10] = False
    cand = analogs.eligible(times, have, 2)
    assert not cand[[8, 9, 10]].any() and cand[[7, 11]].all()
    src = analogs.nearest_analogs(imgs.reshape(24, -1), times, np.array([0]), cand, 48)
    assert src.tolist() == [-1]
    assert analogs.forecast_scores(lambda p: imgs[p], times, np.array([0]), src, 1)[0]["n_queries"] == 0


def test_score_methods_orders_a_perfect_space_ahead_of_random():
    times, imgs = _sequence()
    cand = analogs.eligible(times, np.ones(24, bool), 3)
    q = np.flatnonzero(cand)[::3]
    rng = np.random.default_rng(0)
    spaces = {"pixel": imgs.reshape(24, -1), "noise": rng.normal(size=(24, 3))}
    out = analogs.score_methods(lambda p: imgs[p], times, q, cand, spaces, 6, 3, seed=0)
    assert set(out) == {"pixel", "noise", "random", "persistence"}
    assert all(s["rmse"] == 0.0 for s in out["pixel"])
    assert np.mean([s["rmse"] for s in out["random"]]) > 0
    again = analogs.score_methods(lambda p: imgs[p], times, q, cand, spaces, 6, 3, seed=0)
    assert again == out  # reproducible
