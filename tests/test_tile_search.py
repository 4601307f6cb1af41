"""Tile search and tile regimes: a numpy brute-force oracle, the graph, the store, the GPU placement."""

from __future__ import annotations

import pickle

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from wxdask import search, store, tile_query, tile_regimes, tile_search
from wxdask.config import Config
from wxdask.errors import ConfigError
from wxdask.grid import COARSE, latlon
from wxdask.kmeans import assign_block
from wxdask.testing import task_result_shapes
from wxdask.tiles import Tiling, tile_coords

T0 = np.datetime64("2019-09-20T00", "h")
TILING = Tiling(COARSE.shape, 16, 16)  # 4 x 7 tiles of the 66 x 112 coarse grid
NT, NL, D = 12, 2, 4


def tile_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings (time, lead, tile_y, tile_x, latent) with NaN tiles and exact ties, and gapped times."""
    rng = np.random.default_rng(seed)
    ny, nx = TILING.shape
    e = rng.normal(size=(NT, NL, ny, nx, D)).astype(np.float32)
    e = np.round(e * 4) / 4  # coarse values: many exact ties
    e[rng.random((NT, NL, ny, nx)) < 0.3] = np.nan  # clear-sky tiles
    e[3] = np.nan  # a slot with no image
    times = T0 + np.cumsum(rng.integers(1, 3, NT)).astype("timedelta64[h]")
    return e, times


def make_store(path, e: np.ndarray, times: np.ndarray) -> Config:
    """A store with refc on the coarse grid, then tile_embedding written with store.write_variables."""
    lat, lon = latlon(COARSE)
    rng = np.random.default_rng(1)
    refc = np.round(rng.uniform(-10, 60, (NT, NL, *COARSE.shape)) * 16) / 16
    base = xr.Dataset({"refc": (("time", "lead_time", "y", "x"), refc.astype(np.float32))},
                      coords={"time": times.astype("M8[ns]"), "lead_time": np.arange(NL),
                              "latitude": (("y", "x"), lat), "longitude": (("y", "x"), lon)})
    base.to_zarr(str(path), zarr_format=3, consolidated=False)
    cfg = Config.from_dict({"store": {"url": str(path)}, "dask": {"progress": False}})
    coords = {name: xr.Variable(dims, values) for name, (dims, values) in tile_coords(COARSE, TILING).items()}
    attrs = {"model_hash": "fake", "model_dir": "/nonexistent", "tile_size": TILING.size,
             "tile_stride": TILING.stride, "tile_offset": list(TILING.offset), "echo_threshold": 0.05,
             "grid_name": COARSE.name}
    tiles = xr.Dataset(
        {"tile_embedding": (tile_search.TILE_DIMS + ("latent",), e, attrs),
         "tile_echo_fraction": (tile_search.TILE_DIMS, np.where(np.isnan(e[..., 0]), 0.0, 0.5).astype(np.float32))},
        coords={"time": times.astype("M8[ns]"), "lead_time": np.arange(NL), **coords},
    )
    store.write_variables(cfg.store, tiles.chunk({"time": 4}))
    return cfg


def oracle(e: np.ndarray, times: np.ndarray, k: int, window: int, anywhere: bool):
    """Brute force in float64 over all tiles flattened time-major: (row, sqdist) per query row."""
    nt, nl, ny, nx, d = e.shape
    x = e.reshape(-1, d).astype(np.float64)
    n = len(x)
    t_idx, _, ty, tx = np.unravel_index(np.arange(n), (nt, nl, ny, nx))
    hours = times.astype(np.int64)[t_idx]
    place = ty * nx + tx
    valid = np.isfinite(x).all(axis=1)
    out_i = np.full((n, k), -1)
    out_d = np.full((n, k), np.nan)
    for qi in np.flatnonzero(valid):
        dist = ((x - x[qi]) ** 2).sum(axis=1)
        ok = valid & (np.arange(n) != qi)
        if not anywhere:
            ok &= place == place[qi]
        if window > 0:
            ok &= np.abs(hours - hours[qi]) >= window
        cand = np.flatnonzero(ok)
        order = np.lexsort((cand, dist[cand]))[:k]
        out_i[qi, :len(order)] = cand[order]
        out_d[qi, :len(order)] = dist[cand[order]]
    return out_i, out_d


def check_against_oracle(ds: xr.Dataset, e: np.ndarray, times: np.ndarray, k: int, window: int, anywhere: bool):
    want_i, want_d = oracle(e, times, k, window, anywhere)
    shape = e.shape[:4]
    have = want_i >= 0
    safe = np.clip(want_i, 0, None)
    t_i, l_i, y_i, x_i = np.unravel_index(safe, shape)
    got = {name: ds[name].values.reshape(-1, k) for name in ds.data_vars}
    np.testing.assert_array_equal(got["tile_neighbor_tile_y"], np.where(have, y_i, -1))
    np.testing.assert_array_equal(got["tile_neighbor_tile_x"], np.where(have, x_i, -1))
    np.testing.assert_array_equal(got["tile_neighbor_lead"], np.where(have, l_i, -1))
    want_t = np.where(have, times.astype("M8[ns]")[t_i], np.datetime64("NaT", "ns"))
    np.testing.assert_array_equal(got["tile_neighbor_time"].astype("M8[ns]"), want_t)
    np.testing.assert_allclose(got["tile_neighbor_sqdist"], want_d, rtol=1e-6, equal_nan=True)
    return want_i


@pytest.fixture(scope="module")
def tile_store(tmp_path_factory):
    e, times = tile_data()
    return make_store(tmp_path_factory.mktemp("tiles") / "s.zarr", e, times), e, times


# ----------------------------------------------------------------------------- oracle


@pytest.mark.parametrize("anywhere", [False, True])
@pytest.mark.parametrize("window", [0, 3])
def test_tile_neighbours_match_the_oracle(anywhere, window):
    e, times = tile_data(seed=window)
    emb = xr.DataArray(da.from_array(e, chunks=(5, NL, 2, 3, D)), dims=tile_search.TILE_DIMS + ("latent",),
                       coords={"time": times.astype("M8[ns]"), "lead_time": np.arange(NL)})
    out = tile_search.tile_neighbours(emb, 5, exclude_window=window, anywhere=anywhere, block_size=60,
                                      chunk_size=37)
    assert out["tile_neighbor_sqdist"].dims == ("time", "lead_time", "tile_y", "tile_x", "tile_rank")
    with dask.config.set(scheduler="sync"):
        ds = out.compute()
    want_i = check_against_oracle(ds, e, times, 5, window, anywhere)
    # the query itself is never returned, NaN tiles have no neighbours and are never neighbours
    rows = np.arange(want_i.shape[0])
    assert not (want_i == rows[:, None]).any()
    flat_nan = ~np.isfinite(e.reshape(-1, D)).all(axis=1)
    assert (ds["tile_neighbor_tile_y"].values.reshape(-1, 5)[flat_nan] == -1).all()
    assert not np.isin(want_i[want_i >= 0], np.flatnonzero(flat_nan)).any()


@pytest.mark.parametrize("anywhere", [False, True])
def test_graph_holds_no_n_by_n_block(anywhere):
    e, times = tile_data()
    emb = xr.DataArray(da.from_array(e, chunks=(4, NL, 4, 7, D)), dims=tile_search.TILE_DIMS + ("latent",),
                       coords={"time": times.astype("M8[ns]"), "lead_time": np.arange(NL)})
    block = 2 * NL * 28 if anywhere else 4
    out = tile_search.tile_neighbours(emb, 3, exclude_window=0, anywhere=anywhere, block_size=block, chunk_size=50)
    graph = dict(out["tile_neighbor_sqdist"].data.__dask_graph__())
    knn_keys = [key for key in graph if isinstance(key, tuple) and str(key[0]).startswith("knn-")]
    prep_keys = [key for key in graph if str(key).startswith("prepare-base")]
    n_tiles = 28
    assert len(prep_keys) == (1 if anywhere else n_tiles)  # one database key per search
    n_rows = NT * NL * (n_tiles if anywhere else 1)
    assert len(knn_keys) == int(np.ceil(n_rows / block)) * (1 if anywhere else n_tiles)
    for key in knn_keys:
        deps = graph[key].dependencies
        assert sum(str(p) in {str(d) for d in deps} for p in prep_keys) == 1
        assert len(pickle.dumps(graph[key])) < e.nbytes / 4
    with task_result_shapes() as sizes:
        out["tile_neighbor_sqdist"].compute()

    def name(key):
        return str(key[0] if isinstance(key, tuple) else key)

    knn_shapes = [s for key, s in sizes.items() if name(key).startswith("knn-")]
    assert knn_shapes and all(s[0] <= block and s[1] == 3 for s in knn_shapes)
    n_all = NT * NL * n_tiles
    assert not [key for key, s in sizes.items() if np.prod(s) >= n_all * n_all // 4]  # nothing near N x N


def test_tile_neighbours_is_lazy():
    e, times = tile_data()
    emb = xr.DataArray(da.from_array(e, chunks=(4, NL, 4, 7, D)), dims=tile_search.TILE_DIMS + ("latent",),
                       coords={"time": times.astype("M8[ns]"), "lead_time": np.arange(NL)})

    def boom(*args, **kwargs):
        raise AssertionError("tile_neighbours computed something")

    with dask.config.set(scheduler=boom):
        tile_search.tile_neighbours(emb, 3, anywhere=True)
        tile_search.tile_neighbours(emb, 3, anywhere=False)


# ----------------------------------------------------------------------------- store, queries, plots


def test_run_writes_replaces_and_counts(tile_store, client):
    cfg, e, times = tile_store
    c1 = cfg.replace(tiles={"k": 4, "exclude_window": "3h", "anywhere": False})
    text = tile_search.run(c1, client)
    n = int(np.prod(e.shape[:4]))
    searched = int(np.isfinite(e).all(axis=-1).sum())
    assert f"of {searched} tiles searched, {n - searched} skipped" in text
    ds = store.open_store(cfg.store)
    attrs = ds["tile_neighbor_time"].attrs
    assert (attrs["k"], attrs["mode"], attrs["exclude_window"], attrs["model_hash"]) == (4, "same-place", "3h", "fake")
    check_against_oracle(ds[list(tile_search._NAMES)], e, times, 4, 3, False)
    want_i, _ = oracle(e, times, 4, 3, False)
    fewer = int(((want_i[:, -1] < 0) & np.isfinite(e.reshape(-1, D)).all(axis=1)).sum())
    assert f", {fewer} with fewer than 4 neighbours" in text
    assert ds["tile_neighbor_lead"].dtype == np.int32 and ds["tile_neighbor_sqdist"].dtype == np.float32
    # a rerun with another k and mode replaces the outputs
    c2 = cfg.replace(tiles={"k": 6, "exclude_window": "0h", "anywhere": True})
    tile_search.run(c2, client)
    ds = store.open_store(cfg.store)
    assert ds.sizes["tile_rank"] == 6 and ds["tile_neighbor_sqdist"].attrs["mode"] == "anywhere"
    check_against_oracle(ds[list(tile_search._NAMES)], e, times, 6, 0, True)


@pytest.mark.parametrize("anywhere", [False, True])
def test_single_query_by_point_equals_the_oracle_row(tile_store, client, anywhere, tmp_path):
    cfg, e, times = tile_store
    cfg = cfg.replace(tiles={"k": 5, "exclude_window": "2h", "anywhere": anywhere})
    lat_c = tile_coords(COARSE, TILING)["tile_latitude"][1]
    lon_c = tile_coords(COARSE, TILING)["tile_longitude"][1]
    ny, nx = TILING.shape
    it, il, ty, tx = next((t, ln, y, x) for t in range(NT) for ln in range(NL) for y in range(ny)
                          for x in range(nx) if np.isfinite(e[t, ln, y, x]).all() and (y, x) != (0, 0))
    res = tile_query.query_tile(cfg, client, time=np.datetime_as_string(times[it], unit="h"), lead=il,
                                 lat=float(lat_c[ty, tx]), lon=float(lon_c[ty, tx]))
    assert res.tile == (ty, tx)
    want_i, want_d = oracle(e, times, 5, 2, anywhere)
    row = np.ravel_multi_index((it, il, ty, tx), e.shape[:4])
    have = want_i[row] >= 0
    t_i, l_i, y_i, x_i = np.unravel_index(np.clip(want_i[row], 0, None), e.shape[:4])
    np.testing.assert_array_equal(res.neighbors["tile_y"], np.where(have, y_i, -1))
    np.testing.assert_array_equal(res.neighbors["tile_x"], np.where(have, x_i, -1))
    np.testing.assert_array_equal(res.neighbors["lead"], np.where(have, l_i, -1))
    np.testing.assert_array_equal(res.neighbors["time"][have], times.astype("M8[ns]")[t_i[have]])
    np.testing.assert_allclose(res.neighbors["sqdist"], want_d[row], rtol=1e-6, equal_nan=True)
    table = tile_query.format_tile_table(res)
    first = table.splitlines()[2]
    assert f"({y_i[0]:2d}, {x_i[0]:2d})" in first and f"{want_d[row, 0]:.6f}" in first
    assert f"{lat_c[y_i[0], x_i[0]]:7.2f}" in first
    png = tile_query.plot_tile_query(cfg, res, str(tmp_path / "q.png"))
    assert (tmp_path / "q.png").stat().st_size > 1000 and png.endswith("q.png")


class TileEncoder:
    """Returns a fixed embedding for any tile (checks the tile cut and the raw int16 input)."""

    def __init__(self, vec, size):
        self.vec, self.size = vec, size

    def predict(self, x):
        assert x.dtype == np.int16 and x.shape[1:] == (self.size, self.size)
        return np.repeat(self.vec[None], len(x), axis=0)


def test_image_query_encodes_the_points_tile(tile_store, client, tmp_path):
    cfg, e, _ = tile_store
    cfg = cfg.replace(tiles={"k": 3, "anywhere": True})
    ny, nx = TILING.shape
    it, il, ty, tx = next((t, ln, y, x) for t in range(NT) for ln in range(NL) for y in range(ny)
                          for x in range(nx) if np.isfinite(e[t, ln, y, x]).all())
    lat_c = tile_coords(COARSE, TILING)["tile_latitude"][1]
    lon_c = tile_coords(COARSE, TILING)["tile_longitude"][1]
    img = np.full(COARSE.shape, -10.0, dtype=np.float32)
    np.save(tmp_path / "img.npy", img)
    res = tile_query.query_tile(cfg, client, image=str(tmp_path / "img.npy"), lat=float(lat_c[1, 2]),
                                 lon=float(lon_c[1, 2]), encoder=TileEncoder(e[it, il, ty, tx], TILING.size))
    assert res.tile == (1, 2)
    first = res.neighbors[0]  # the tile whose embedding the encoder returns, at distance 0 (ties: earliest row)
    exact = np.flatnonzero((e.reshape(-1, D) == e[it, il, ty, tx]).all(axis=1))[0]
    assert first["sqdist"] == 0 and int(first["index"]) == exact
    tile_query.plot_tile_query(cfg, res, str(tmp_path / "img.png"))
    assert (tmp_path / "img.png").stat().st_size > 1000


def test_off_grid_and_margin_points_are_one_clear_error(tile_store, client):
    cfg, _, times = tile_store
    t = np.datetime_as_string(times[0], unit="h")
    with pytest.raises(ConfigError, match="off the coarse grid"):
        tile_query.query_tile(cfg, client, time=t, lat=60.0, lon=10.0)
    with pytest.raises(ConfigError, match="margin"):  # the first row of the grid is outside every tile
        lat, lon = latlon(COARSE)
        tile_query.query_tile(cfg, client, time=t, lat=float(lat[0, 50]), lon=float(lon[0, 50]))
    with pytest.raises(ConfigError, match="is not in store"):
        tile_query.query_tile(cfg, client, time="2016-01-01T00", lat=35.0, lon=-97.0)


def test_cli_tile_search_and_single_query(tile_store, client):
    from click.testing import CliRunner

    from wxdask.cli import main

    cfg, _, times = tile_store
    addr = client.scheduler.address
    runner = CliRunner()
    res = runner.invoke(main, ["search", "--store", cfg.store.url, "--tiles", "-k", "3", "--same-place",
                               "--exclude-window", "0", "--scheduler", addr, "-q"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "tiles searched" in res.output
    res = runner.invoke(main, ["search", "--store", cfg.store.url, "--tiles", "--time", "2000-01-01T00",
                               "--lat", "60", "--lon", "10", "--scheduler", addr, "-q"])
    assert res.exit_code == 1 and "off the coarse grid" in res.output
    t = np.datetime_as_string(times[0], unit="h")
    res = runner.invoke(main, ["cluster", "--store", cfg.store.url, "--tiles", "-k", "2", "--plot-map", t,
                               "--scheduler", addr, "-q"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "2 tile regimes" in res.output
    png = tile_regimes.map_path(cfg, t)
    assert png in res.output and __import__("os").path.getsize(png) > 1000


# ----------------------------------------------------------------------------- regimes


class CentroidDecoder:
    """Decodes an embedding to a tile of its first value (scaled 0..1)."""

    def predict(self, z):
        return np.clip(np.repeat(z[:, :1, None], 16 * 16, axis=2).reshape(len(z), 16, 16, 1), 0, 1)


def test_tile_regimes_labels_are_nearest_centroids_and_plots(tile_store, client, tmp_path):
    cfg, e, times = tile_store
    cfg = cfg.replace(tiles={"n_clusters": 3})
    text = tile_regimes.run(cfg, client, decoder=CentroidDecoder(), plot=str(tmp_path / "c.png"))
    ds = store.open_store(cfg.store)
    labels = ds["tile_cluster"].values
    centers = ds["tile_centroid"].values
    assert labels.dtype == np.int32 and ds["tile_centroid"].dims == ("tile_cluster_id", "latent")
    x = e.reshape(-1, D)
    valid = np.isfinite(x).all(axis=1)
    np.testing.assert_array_equal(labels.reshape(-1)[~valid], -1)
    want, _ = assign_block(x, centers.astype(np.float64))
    np.testing.assert_array_equal(labels.reshape(-1), want)  # every tile's label is its nearest centroid
    for c in range(3):  # centroids are the means of their tiles (Lloyd converged)
        np.testing.assert_allclose(centers[c], x[labels.reshape(-1) == c].mean(axis=0), atol=1e-4)
    sizes = ds["tile_cluster_size"].values
    assert sizes.tolist() == np.bincount(labels[labels >= 0], minlength=3).tolist()
    assert list(sizes) == sorted(sizes)[::-1]
    assert "c.png" in text and (tmp_path / "c.png").stat().st_size > 1000
    png = tile_regimes.plot_regime_map(cfg, np.datetime_as_string(times[0], unit="h"), str(tmp_path / "m.png"), lead=1)
    assert (tmp_path / "m.png").stat().st_size > 1000 and png.endswith("m.png")


def test_tile_regimes_without_a_model_warn_and_still_write(tile_store, client, caplog):
    cfg, _, _ = tile_store
    cfg = cfg.replace(tiles={"n_clusters": 2})
    with caplog.at_level("WARNING"):
        tile_regimes.run(cfg, client)
    assert "tile centroid maps not drawn" in caplog.text
    assert store.open_store(cfg.store).sizes["tile_cluster_id"] == 2


# ----------------------------------------------------------------------------- GPU path


def test_device_task_function_equals_numpy():
    pytest.importorskip("keras")
    e, times = tile_data(seed=5)
    x = e.reshape(-1, D)
    t = np.repeat(times.astype(np.int64), NL * 28)
    prep = search.prepare_base(x, t, np.zeros(len(x), dtype=np.int64))
    qi = np.arange(0, len(x), 3)
    for window in (0, 3):
        a = search._knn_task(x[qi], qi, prep, k=6, window=window, chunk_size=128)
        b = search._knn_task(x[qi], qi, prep, k=6, window=window, chunk_size=128, device=True)
        for field in a.dtype.names:  # field by field: NaN distances compare equal there
            np.testing.assert_array_equal(a[field], b[field])
        assert (a["index"] >= 0).sum() > 0.5 * a.size


@pytest.fixture(scope="module")
def gpu_client():
    from distributed import Client, LocalCluster, Worker

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address="127.0.0.1:0") as cl:
        cl.worker_spec["gpu"] = {"cls": Worker, "options": {"nthreads": 1, "resources": {"GPU": 1}}}
        cl.sync(cl._correct_state)
        with Client(cl) as c:
            c.wait_for_workers(2)
            yield c


def test_search_tasks_run_on_the_gpu_worker_with_identical_results(tile_store, gpu_client, client):
    pytest.importorskip("keras")
    from distributed import get_task_stream

    from wxdask.client import gpu_workers

    cfg, _, _ = tile_store
    cfg = cfg.replace(tiles={"k": 4, "exclude_window": "2h", "anywhere": True}, search={"block_size": 100})
    tile_search.run(cfg, client)  # CPU workers only: numpy path
    cpu = store.open_store(cfg.store)[list(tile_search._NAMES)].load()
    (gpu,) = gpu_workers(gpu_client)
    with get_task_stream(gpu_client) as ts:
        tile_search.run(cfg, gpu_client)
    knn_workers = {rec["worker"] for rec in ts.data if "knn-" in str(rec["key"])}
    assert knn_workers == {gpu}
    got = store.open_store(cfg.store)[list(tile_search._NAMES)].load()
    xr.testing.assert_identical(got.drop_attrs(), cpu.drop_attrs())


def test_outline_from_the_coords_bounds_equals_the_tiling():
    c = tile_coords(COARSE, TILING)
    for on_latlon in (False, True):
        for ty, tx in ((0, 0), (3, 6), (2, 1)):
            bounds = (c["tile_x_min"][1][tx], c["tile_x_max"][1][tx], c["tile_y_min"][1][ty], c["tile_y_max"][1][ty])
            a = tile_query.tile_outline(COARSE, TILING, ty, tx, on_latlon=on_latlon)
            b = tile_query.tile_outline(COARSE, TILING, ty, tx, on_latlon=on_latlon, bounds=bounds)
            np.testing.assert_allclose(a, b, atol=1e-9)


def test_whole_image_search_runs_on_the_gpu_worker_too(tmp_path, gpu_client, client):
    pytest.importorskip("keras")
    from distributed import get_task_stream

    from wxdask.client import gpu_workers

    rng = np.random.default_rng(3)
    e = np.round(rng.normal(size=(80, 2, 5)) * 4).astype(np.float32) / 4
    e[7] = np.nan
    times = T0 + np.arange(80).astype("timedelta64[h]")
    xr.Dataset({"embedding": (("time", "lead_time", "latent"), e, {"model_hash": "fake"})},
               coords={"time": times.astype("M8[ns]"), "lead_time": [0, 1]}).chunk({"time": 20}).to_zarr(
        str(tmp_path / "w.zarr"), zarr_format=3, consolidated=False)
    cfg = Config.from_dict({"store": {"url": str(tmp_path / "w.zarr")}, "dask": {"progress": False},
                            "search": {"k": 4, "exclude_window": "3h", "block_size": 40}})
    names = ["neighbor_time", "neighbor_sqdist", "neighbor_lead"]
    search.run(cfg, client)
    cpu = store.open_store(cfg.store)[names].load()
    with get_task_stream(gpu_client) as ts:
        search.run(cfg, gpu_client)
    assert {rec["worker"] for rec in ts.data if "knn-" in str(rec["key"])} == set(gpu_workers(gpu_client))
    xr.testing.assert_identical(store.open_store(cfg.store)[names].load(), cpu)
