"""K-means regimes: the numpy core, both engines against scikit-learn, the inertia, the store, the CLI."""

from __future__ import annotations

import logging

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner
from sklearn.cluster import KMeans as SKMeans
from sklearn.metrics import adjusted_rand_score

from wxdask import kmeans, store
from wxdask.config import Config, KMeansConfig
from wxdask.errors import ConfigError
from wxdask.kmeans import assign_block, count_by_month, inertia_block, lloyd_block
from wxdask.testing import make_store as make_test_store
from wxdask.testing import raise_if_dask_computes

T0 = np.datetime64("2019-01-01T00", "h")


def blobs(n: int, k: int = 4, d: int = 6, seed: int = 0, spread: float = 8.0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian regimes of unequal sizes."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, spread, (k, d))
    p = np.arange(1, k + 1) / np.arange(1, k + 1).sum()
    truth = rng.choice(k, n, p=p)
    return (centers[truth] + rng.normal(size=(n, d))).astype(np.float32), truth


def brute_assign(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    d = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(axis=2)
    return d.argmin(axis=1), d.min(axis=1)


def test_assign_and_inertia_blocks_against_brute_force():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 5)).astype(np.float32)
    x[[3, 77]] = np.nan
    c = rng.normal(size=(4, 5))
    labels, sqdist = assign_block(x, c)
    ok = np.isfinite(x).all(axis=1)
    want_l, want_d = brute_assign(x[ok], c)
    np.testing.assert_array_equal(labels[ok], want_l)
    np.testing.assert_allclose(sqdist[ok], want_d, rtol=1e-12)
    assert (labels[~ok] == -1).all() and np.isnan(sqdist[~ok]).all()
    assert inertia_block(x, c, labels) == pytest.approx(want_d.sum(), rel=1e-12)


def test_inertia_is_sum_of_squared_distances_like_sklearn():
    x, _ = blobs(3000, seed=2)
    sk = SKMeans(4, n_init=1, random_state=0).fit(x)
    ours = inertia_block(x, sk.cluster_centers_, sk.labels_)
    assert ours == pytest.approx(sk.inertia_, rel=1e-4)
    # not the sum of unsquared distances (dask-ml's inertia_ when max_iter stops its loop)
    unsquared = np.sqrt(brute_assign(x, sk.cluster_centers_)[1]).sum()
    assert abs(ours - unsquared) > 0.5 * ours


def test_lloyd_block_sums_and_counts():
    x = np.array([[0.0, 0.0], [2.0, 0.0], [10.0, 10.0], [np.nan, 1.0], [12.0, 10.0]], dtype=np.float32)
    sums, counts, inertia = lloyd_block(x, np.array([[1.0, 0.0], [11.0, 10.0]]))
    np.testing.assert_allclose(sums, [[2.0, 0.0], [22.0, 20.0]])
    assert counts.tolist() == [2, 2] and inertia == pytest.approx(4.0)


def test_count_by_month():
    months = np.array([[1, 1], [2, 2], [12, 12]])
    labels = np.array([[0, 1], [1, -1], [2, 2]])
    got = count_by_month(months, labels, 3)
    assert got.shape == (12, 3) and got.sum() == 5
    assert got[0].tolist() == [1, 1, 0] and got[1].tolist() == [0, 1, 0] and got[11].tolist() == [0, 0, 2]


def _lazy_embedding(nt: int = 40, nl: int = 2, d: int = 3) -> xr.DataArray:
    x, _ = blobs(nt * nl, k=2, d=d, seed=7)
    return xr.DataArray(da.from_array(x.reshape(nt, nl, d), chunks=(10, nl, d)), dims=("time", "lead_time", "latent"),
                        coords={"time": (T0 + np.arange(nt).astype("timedelta64[h]")).astype("M8[ns]"),
                                "lead_time": np.arange(nl)})


@pytest.mark.parametrize("lead", [None, 1])
def test_slot_matrix_and_regimes_are_lazy(lead):
    emb = _lazy_embedding()
    cfg = KMeansConfig(k=2, lead=lead, block_size=16)
    with raise_if_dask_computes():
        x = kmeans.slot_matrix(emb, cfg)
        out = kmeans.regimes(emb, np.zeros((2, 3)), cfg)
    assert isinstance(x, da.Array) and x.shape == (40 * (2 if lead is None else 1), 3)
    assert out["cluster"].chunks is not None and out["cluster"].shape == (40, 2)


@pytest.mark.parametrize("engine,init_sample", [("lloyd", None), ("lloyd", 1500), ("dask-ml", None)])
def test_fit_recovers_sklearn_clusters(client, engine, init_sample, monkeypatch):
    if init_sample:  # k-means|| on a per-block subsample, kept on the workers
        from wxdask.kmeans import fitting  # init_scalable reads INIT_SAMPLE of its own module

        monkeypatch.setattr(fitting, "INIT_SAMPLE", init_sample)
    x, truth = blobs(6000, k=4, seed=3)
    xd = client.persist(da.from_array(x, chunks=(1000, 6)))
    result = kmeans.fit(xd, KMeansConfig(k=4, seed=1), client, engine=engine)
    ours, _ = assign_block(x, result.centers)
    sk = SKMeans(4, n_init=3, random_state=0).fit(x)
    assert adjusted_rand_score(sk.labels_, ours) == 1.0  # the same partition, up to label permutation
    assert adjusted_rand_score(truth, ours) == 1.0
    assert result.engine == engine and result.converged
    assert inertia_block(x, result.centers, ours) == pytest.approx(sk.inertia_, rel=1e-4)
    if engine == "lloyd":  # converged exactly: the last step's labels are the final ones
        np.testing.assert_array_equal(client.compute(result.labels).result(), ours)
        assert result.inertia == pytest.approx(sk.inertia_, rel=1e-4)


def test_fit_rejects_too_few_rows_and_bad_engine(client):
    x = da.zeros((3, 2), chunks=3, dtype=np.float32)
    with pytest.raises(ConfigError, match="at least 5"):
        kmeans.fit(x, KMeansConfig(k=5), client)
    with pytest.raises(ConfigError, match="engine"):
        kmeans.fit(da.zeros((30, 2), chunks=10), KMeansConfig(k=2), client, engine="bogus")
    with pytest.raises(ConfigError, match="kmeans.engine"):
        KMeansConfig(engine="bogus")


class LinearDecoder:
    def __init__(self, d: int, ny: int = 4, nx: int = 5):
        self.w = np.random.default_rng(0).uniform(0, 1, (d, ny * nx)).astype(np.float32) / d
        self.shape = (ny, nx)

    def predict(self, z: np.ndarray) -> np.ndarray:
        return (np.abs(np.asarray(z)) @ self.w).reshape(len(z), *self.shape, 1)


def make_store(path, e: np.ndarray, times: np.ndarray, leads) -> Config:
    """``embedding`` on a 4x5 grid (latitude/longitude, no refc).

    With the real layout (``wxdask.testing.make_store``).
    """
    cfg = make_test_store(path, times, leads, grid=(4, 5), embedding=e, embedding_chunk=50)
    return Config.from_dict({"store": {"url": cfg.url}, "dask": {"progress": False}})


@pytest.mark.parametrize("lead", [None, 1])
def test_run_writes_regimes_sizes_counts_inertia_and_png(tmp_path, client, lead):
    nt, nl, d, k = 400, 2, 6, 3
    x, truth = blobs(nt * nl, k=k, d=d, seed=4)
    e = x.reshape(nt, nl, d)
    truth = truth.reshape(nt, nl).astype(float)
    e[[5, 6]] = np.nan
    e[9, 1] = np.nan
    truth[np.isnan(e).any(axis=2)] = np.nan
    times = T0 + (np.arange(nt) * 24).astype("timedelta64[h]")  # daily: covers 13 months
    cfg = make_store(tmp_path / "s.zarr", e, times, [0, 1])
    cfg = cfg.replace(kmeans={"k": k, "lead": lead, "block_size": 128})
    assert cfg.store.url in kmeans.run(cfg, client, decoder=LinearDecoder(d))
    ds = store.open_store(cfg.store)
    labels = ds["cluster"].values
    assert labels.dtype == np.int32 and labels.shape == (nt, nl)
    assert (labels[[5, 6]] == -1).all() and labels[9, 1] == -1
    used = [0, 1] if lead is None else [lead]
    if lead is not None:
        assert (labels[:, 0] == -1).all()
    sub = labels[:, used]
    ok = sub >= 0
    assert adjusted_rand_score(truth[:, used][ok], sub[ok]) == 1.0
    assert kmeans.adjusted_rand(cfg, np.where(np.isnan(truth), -1, truth)) == 1.0
    sizes = ds["cluster_size"].values
    assert sizes.tolist() == sorted(sizes.tolist(), reverse=True) and sizes.sum() == ok.sum()
    assert kmeans.cluster_sizes(cfg) == {i: int(n) for i, n in enumerate(sizes)}
    counts = ds["cluster_count"]
    assert counts.dims == ("month", "cluster_id") and ds["month"].values.tolist() == list(range(1, 13))
    month_of = times.astype("datetime64[M]").astype(int) % 12 + 1
    for m in (1, 6, 12):
        rows = month_of == m
        assert counts.sel(month=m).values.tolist() == [int((sub[rows] == c).sum()) for c in range(k)]
    centers = ds["centroid"].values
    valid = np.isfinite(e[:, used]).all(axis=2)
    xs = e[:, used][valid]
    assert ds.attrs["kmeans_inertia"] == pytest.approx(inertia_block(xs, centers, sub[valid]), rel=1e-5)
    assert ds.attrs["kmeans_engine"] == "lloyd" and ds.attrs["kmeans_converged"]
    png = tmp_path / "s-centroids.png"
    assert ds.attrs["kmeans_centroid_plot"] == str(png) and png.read_bytes()[:4] == b"\x89PNG"
    assert kmeans.format_sizes(cfg).splitlines()[0].split() == ["cluster", "slots", "share"]


def test_run_without_model_still_clusters(tmp_path, client, caplog):
    x, _ = blobs(200, k=2, d=3, seed=5)
    times = T0 + np.arange(200).astype("timedelta64[h]")
    cfg = make_store(tmp_path / "s.zarr", x[:, None, :], times, [0])
    cfg = cfg.replace(kmeans={"k": 2, "model_dir": str(tmp_path / "no-model")})
    kmeans.run(cfg, client)
    ds = store.open_store(cfg.store)
    assert "cluster" in ds and "kmeans_centroid_plot" not in ds.attrs
    assert "centroid maps not drawn" in caplog.text


def test_cli_cluster(tmp_path, client):
    from wxdask.cli import main

    x, _ = blobs(300, k=3, d=3, seed=6)
    times = T0 + np.arange(300).astype("timedelta64[h]")
    cfg = make_store(tmp_path / "s.zarr", x[:, None, :], times, [0])
    res = CliRunner().invoke(main, ["cluster", "--store", cfg.store.url, "-k", "3", "--model", str(tmp_path / "none"),
                                    "--scheduler", client.scheduler.address, "-q"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[1].split() == ["cluster", "slots", "share"]
    assert len(res.output.splitlines()) == 5


@pytest.mark.parametrize("lead", [None, 1])
def test_run_logs_no_run_spec_warning(tmp_path, client, caplog, lead):
    # the slot matrix used to be built three times (validity, fit, labels), its reshape keys
    # submitted again in differently optimized graphs: distributed's "different run_spec" block
    caplog.set_level(logging.INFO, logger="distributed")
    x, _ = blobs(600, k=3, d=4, seed=7)
    e = x.reshape(300, 2, 4)
    e[[5, 6]] = np.nan
    times = T0 + np.arange(300).astype("timedelta64[h]")
    cfg = make_store(tmp_path / "s.zarr", e, times, [0, 1])
    cfg = cfg.replace(kmeans={"k": 3, "lead": lead, "block_size": 64})
    kmeans.run(cfg, client, decoder=LinearDecoder(4))
    assert "cluster" in store.open_store(cfg.store)
    noisy = [r for r in caplog.records if r.name.startswith("distributed") and "run_spec" in r.getMessage()]
    assert not noisy, noisy[0].getMessage()


@pytest.mark.parametrize("where", ["config", "recorded"])
def test_run_refuses_a_model_of_another_hash(tmp_path, client, caplog, where):
    from wxdask import models
    from wxdask.testing import save_model_dir_stub

    x, _ = blobs(200, k=2, d=3, seed=5)
    times = T0 + np.arange(200).astype("timedelta64[h]")
    cfg = make_store(tmp_path / "s.zarr", x[:, None, :], times, [0])
    other = save_model_dir_stub(tmp_path / "other", (4, 5), n_latent=3)
    if where == "config":
        cfg = cfg.replace(kmeans={"k": 2, "model_dir": other})
    else:
        store.set_attrs(cfg.store, {"model_dir": other}, variable="embedding")
        cfg = cfg.replace(kmeans={"k": 2})
    before = dict(models.LOAD_COUNTS)
    kmeans.run(cfg, client)
    ds = store.open_store(cfg.store)
    assert "cluster" in ds and "kmeans_centroid_plot" not in ds.attrs
    assert "made by model fake" in caplog.text and other in caplog.text
    assert dict(models.LOAD_COUNTS) == before  # refused before loading


def _regime_lag_script() -> dict:
    import runpy
    from pathlib import Path

    return runpy.run_path(str(Path(__file__).parents[1] / "scripts" / "regime_lag.py"))


def test_regime_lag_counts_hours_since_a_change_and_matches_clusters_to_regimes():
    script = _regime_lag_script()
    truth = np.array([2, 2, 2, 4, 4, 4, 4, 2, 2])
    assert script["hours_since_change"](truth).tolist()[3:] == [0, 1, 2, 3, 0, 1]
    assert script["hours_since_change"](truth)[0] > 1000  # before the first change
    # cluster 7 is mostly regime 4 and cluster 1 mostly regime 2; the lagging hour 3 stays with 2
    labels = np.array([1, 1, 1, 1, 7, 7, 7, 7, 1])
    assert script["matched"](truth, labels).tolist() == [2, 2, 2, 2, 4, 4, 4, 4, 2]
