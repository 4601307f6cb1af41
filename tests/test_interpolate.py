"""Interpolation residuals: hand-computed values, gaps in the time axis, the store, dBZ scores with a fake decoder."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from wxdask import interpolate, store
from wxdask.config import Config
from wxdask.interpolate import neighbour_mask, ratio_summary, residual_block
from wxdask.testing import make_store as make_test_store
from wxdask.testing import raise_if_dask_computes

T0 = np.datetime64("2019-09-20T00", "h")


def hand_residuals(e: np.ndarray, hours: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Loops over slots: neighbours found by time value, never by position."""
    nt, nl, _ = e.shape
    resid = np.full((nt, nl), np.nan)
    step = np.full((nt, nl), np.nan)
    where = {int(h): i for i, h in enumerate(hours)}
    for i, h in enumerate(hours):
        p, n = where.get(int(h) - 1), where.get(int(h) + 1)
        if p is None or n is None:
            continue
        for j in range(nl):
            a, b, c = e[p, j].astype(np.float64), e[i, j].astype(np.float64), e[n, j].astype(np.float64)
            if np.isnan(a).any() or np.isnan(b).any() or np.isnan(c).any():
                continue
            resid[i, j] = sum((b[q] - (a[q] + c[q]) / 2) ** 2 for q in range(len(b)))
            step[i, j] = sum((b[q] - a[q]) ** 2 for q in range(len(b)))
    return resid, step


def embedding_array(e: np.ndarray, hours: np.ndarray, chunked: bool) -> xr.DataArray:
    data = da.from_array(e, chunks=(7, e.shape[1], e.shape[2])) if chunked else e
    times = (T0 + hours.astype("timedelta64[h]")).astype("M8[ns]")
    return xr.DataArray(data, dims=("time", "lead_time", "latent"),
                        coords={"time": times, "lead_time": np.arange(e.shape[1])})


def test_residual_block_hand_computed():
    prev = np.array([1.0, 2.0, 3.0])
    obs = np.array([2.0, 2.0, 5.0])
    nxt = np.array([5.0, 4.0, 3.0])
    r, s = residual_block(prev, obs, nxt)
    # mean of neighbours (3, 3, 3): (2-3)^2 + (2-3)^2 + (5-3)^2 = 6; step (1, 0, 2) -> 1 + 0 + 4 = 5
    assert float(r) == 6.0 and float(s) == 5.0


def test_neighbour_mask_needs_exactly_one_hour():
    t = (T0 + np.array([0, 1, 2, 4, 5, 7]).astype("timedelta64[h]")).astype("M8[ns]")
    has_prev, has_next = neighbour_mask(t)
    assert has_prev.tolist() == [False, True, True, False, True, False]
    assert has_next.tolist() == [True, True, False, True, False, False]


@pytest.mark.parametrize("chunked", [False, True])
def test_interpolate_matches_hand_values_and_never_crosses_a_gap(chunked):
    rng = np.random.default_rng(0)
    hours = np.array([0, 1, 2, 3, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 22])
    e = np.cumsum(rng.normal(size=(len(hours), 2, 4)), axis=0).astype(np.float32)
    e[7, 1] = np.nan  # a missing slot
    out = interpolate.interpolate(embedding_array(e, hours, chunked)).compute()
    want_r, want_s = hand_residuals(e, hours)
    np.testing.assert_allclose(out["interp_residual"].values, want_r, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(out["step_sqdist"].values, want_s, rtol=1e-5, equal_nan=True)
    # across the gaps 3->5, 9->11, 20->22: the slots on either side have no residual
    for i in (3, 4, 8, 9, 18, 19):
        assert np.isnan(out["interp_residual"].values[i]).all(), i
    # the missing slot and its two neighbours (same lead) have none; the other lead does
    assert np.isnan(out["interp_residual"].values[6:9, 1]).all()
    assert np.isfinite(out["interp_residual"].values[6:8, 0]).all()
    assert out["interp_residual"].dtype == np.float32


def test_interpolate_is_lazy():
    hours = np.arange(30)
    e = np.zeros((30, 1, 3), np.float32)

    with raise_if_dask_computes():
        out = interpolate.interpolate(embedding_array(e, hours, chunked=True))
    assert out["interp_residual"].chunks is not None


def test_ratio_summary_median():
    r = np.array([0.1, 0.2, 0.4, np.nan, 1.0])
    s = np.array([1.0, 1.0, 1.0, 1.0, 0.0])  # zero step: left out of the ratio only
    got = ratio_summary(r, s)
    assert got["median_ratio"] == pytest.approx(0.2)
    assert got["n_triples"] == 4 and got["n_ratio"] == 3
    assert got["median_residual"] == pytest.approx(0.3)


class LinearDecoder:
    """A numpy decoder: image = (z @ w) reshaped, in scaled units."""

    def __init__(self, d: int, ny: int, nx: int, seed: int = 0):
        self.w = np.random.default_rng(seed).uniform(0, 1, (d, ny * nx)).astype(np.float32) / d
        self.shape = (ny, nx)
        self.calls = 0

    def predict(self, z: np.ndarray) -> np.ndarray:
        self.calls += 1
        return (np.asarray(z) @ self.w).reshape(len(z), *self.shape, 1)


def make_store(path, e: np.ndarray, hours: np.ndarray, refc: np.ndarray | None) -> Config:
    """``embedding`` (and ``refc`` when given) with the real layout (``wxdask.testing.make_store``).

    ``refc`` is stored as float32 rather than ingest's 1/16 dB int16: the dBZ oracle below
    compares decoded embeddings with the stored images to 1e-3 dBZ, finer than that step.
    """
    times = (T0 + hours.astype("timedelta64[h]")).astype("M8[ns]")
    grid = refc.shape[-2:] if refc is not None else (4, 5)
    cfg = make_test_store(path, times, np.arange(e.shape[1]), grid=grid, refc=refc, embedding=e,
                          embedding_chunk=8, refc_encoding={"dtype": "float32"} if refc is not None else None)
    return Config.from_dict({"store": {"url": cfg.url}, "dask": {"progress": False},
                             "interpolate": {"n_decode": 3}})


def test_run_writes_residuals_summary_and_dbz_scores(tmp_path, client):
    rng = np.random.default_rng(1)
    hours = np.r_[np.arange(0, 20), np.arange(23, 40)]
    d, ny, nx = 5, 6, 7
    e = np.cumsum(rng.normal(size=(len(hours), 2, d)), axis=0).astype(np.float32)
    e[10, 0] = np.nan
    dec = LinearDecoder(d, ny, nx)
    refc = np.clip(dec.predict(e.reshape(-1, d)).reshape(len(hours), 2, ny, nx) * 60, -10, 70).astype(np.float32)
    cfg = make_store(tmp_path / "s.zarr", e, hours, refc)
    png = tmp_path / "resid.png"
    cfg = cfg.replace(interpolate={"plot": str(png)})
    assert cfg.store.url in interpolate.run(cfg, client, decoder=dec)
    ds = store.open_store(cfg.store)
    want_r, want_s = hand_residuals(e, hours)
    np.testing.assert_allclose(ds["interp_residual"].values, want_r, rtol=1e-5, equal_nan=True)
    np.testing.assert_allclose(ds["step_sqdist"].values, want_s, rtol=1e-5, equal_nan=True)
    ok = np.isfinite(want_r) & (want_s > 0)
    assert ds.attrs["interp_median_ratio"] == pytest.approx(np.median(want_r[ok] / want_s[ok]), rel=1e-5)
    assert interpolate.median_ratio(cfg) == pytest.approx(ds.attrs["interp_median_ratio"])
    scores = ds.attrs["interp_dbz_scores"]
    assert len(scores) == 3 and dec.calls >= 1
    for s in scores:
        t = np.datetime64(s["time"])
        ti = int(np.flatnonzero(ds["time"].values.astype("M8[h]") == t)[0])
        li = s["lead_time"]
        # the fake decoder is linear: decoding the mean embedding = the mean of the decoded images
        truth = np.clip(refc[ti, li], 0, 60)
        avg = (np.clip(refc[ti - 1, li], 0, 60) + np.clip(refc[ti + 1, li], 0, 60)) / 2
        interp = np.clip(dec.predict(((e[ti - 1, li] + e[ti + 1, li]) / 2)[None])[0, ..., 0] * 60, 0, 60)
        assert s["rmse_interp"] == pytest.approx(np.sqrt(np.mean((interp - truth) ** 2)), abs=1e-3)
        assert s["rmse_average"] == pytest.approx(np.sqrt(np.mean((avg - truth) ** 2)), abs=1e-3)
        assert s["rmse_reconstruction"] == pytest.approx(0.0, abs=1e-3)  # the truth is the decoded e(t)
    assert png.read_bytes()[:4] == b"\x89PNG"
    text = interpolate.summary(cfg)
    assert text.startswith("median interp_residual / step_sqdist = ") and text.count("dBZ RMSE") == 3


def test_run_without_refc_or_model_skips_scores(tmp_path, client, caplog):
    hours = np.arange(12)
    e = np.random.default_rng(2).normal(size=(12, 1, 3)).astype(np.float32)
    cfg = make_store(tmp_path / "s.zarr", e, hours, None)
    interpolate.run(cfg, client)
    ds = store.open_store(cfg.store)
    assert "interp_dbz_scores" not in ds.attrs and np.isfinite(ds.attrs["interp_median_ratio"])
    assert "not scored in dBZ" in caplog.text


def test_cli_interpolate(tmp_path, client):
    from wxdask.cli import main

    hours = np.arange(24)
    e = np.random.default_rng(3).normal(size=(24, 1, 3)).astype(np.float32)
    cfg = make_store(tmp_path / "s.zarr", e, hours, None)
    png = tmp_path / "p.png"
    res = CliRunner().invoke(main, ["interpolate", "--store", cfg.store.url, "--plot", str(png),
                                    "--scheduler", client.scheduler.address, "-q"])
    assert res.exit_code == 0, res.output
    assert "median interp_residual / step_sqdist" in res.output and png.exists()


@pytest.mark.parametrize("where", ["config", "recorded"])
def test_run_refuses_a_model_of_another_hash(tmp_path, client, caplog, where):
    from wxdask import models
    from wxdask.testing import save_model_dir_stub

    hours = np.arange(12)
    e = np.random.default_rng(3).normal(size=(12, 1, 3)).astype(np.float32)
    refc = np.zeros((12, 1, 6, 7), dtype=np.float32)
    cfg = make_store(tmp_path / "s.zarr", e, hours, refc)
    other = save_model_dir_stub(tmp_path / "other", (6, 7), n_latent=3)
    if where == "config":
        cfg = cfg.replace(interpolate={"model_dir": other})
    else:
        store.set_attrs(cfg.store, {"model_dir": other}, variable="embedding")
    before = dict(models.LOAD_COUNTS)
    interpolate.run(cfg, client)
    ds = store.open_store(cfg.store)
    assert "interp_dbz_scores" not in ds.attrs and np.isfinite(ds.attrs["interp_median_ratio"])
    assert "made by model fake" in caplog.text and "not scored in dBZ" in caplog.text
    assert dict(models.LOAD_COUNTS) == before
