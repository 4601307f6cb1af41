"""The analog explorer: its numpy query against an oracle, its endpoints over HTTP, the page in Chromium.

One store per module, built by the real stages (ingest of a synthetic archive with a missing hour
and a corrupt message, train for one epoch, evaluate, embed, decode, search, interpolate, cluster),
plus tile embeddings computed from the stored images (per-tile statistics; NaN for clear-sky tiles)
written with ``store.write_variables``, and tile regimes by the real ``cluster --tiles`` stage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from wxdask import explore, store
from wxdask.config import Config, StoreConfig

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PNG = b"\x89PNG\r\n\x1a\n"


def screenshot_path(tmp_path: Path, name: str) -> Path:
    """Where a test's screenshot goes: ``tmp_path``, or ``$WXDASK_SCREENSHOTS`` (``docs``, to remake the README's
    pictures: ``WXDASK_SCREENSHOTS=docs pytest tests/test_explore.py``); tests never write the checkout otherwise."""
    return Path(os.environ.get("WXDASK_SCREENSHOTS") or tmp_path) / name
START, END = "2019-06-01T00", "2019-06-05T00"
MISSING = "2019-06-02T05"
CORRUPT = "2019-06-03T07"
WINDOW = "6h"
TILE_SIZE = 16  # 4 x 7 tiles of the 66 x 112 coarse grid (one margin row at the top and the bottom)
TILE_ECHO = 0.25  # tiles with less echo than this have no embedding (clear sky)
CHROMIUM = os.environ.get("WXDASK_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def stores(tmp_path_factory, client):
    """``full``: every stage's output; ``bare``: ingest only; ``no_model``: full, model dir gone."""
    from wxdask import pipeline
    from wxdask.testing import file_digests, make_refc_store

    base = tmp_path_factory.mktemp("explore")
    full = base / "full.zarr"
    make_refc_store(full, START, END, leads=(0, 1), missing=[MISSING], corrupt=[(CORRUPT, 0, "garbage")])
    shutil.copytree(full, base / "bare.zarr")
    cfg = Config.from_dict({
        "store": {"url": str(full)}, "dask": {"progress": False},
        "train": {"model_dir": str(base / "model"), "epochs": 1, "batch_size": 16},
        "evaluate": {"n_examples": 1, "pca_max_train": 200},
        "embed": {"images_per_task": 64}, "search": {"k": 5, "exclude_window": WINDOW},
        "interpolate": {"n_decode": 1}, "kmeans": {"k": 3, "plot": str(base / "centroids.png")},
    })
    pipeline.run(cfg, client, ["train", "evaluate", "embed", "decode", "search", "interpolate", "cluster"])
    add_tiles(cfg, client)
    shutil.copytree(full, base / "no_model.zarr")
    store.set_attrs(StoreConfig(url=str(base / "no_model.zarr")), {"model_dir": str(base / "gone")},
                    variable="embedding")
    paths = {"full": full, "bare": base / "bare.zarr", "no_model": base / "no_model.zarr"}
    digests = {name: file_digests(p) for name, p in paths.items()}
    yield paths
    for name, p in paths.items():  # no view ever writes to a store
        assert file_digests(p) == digests[name], f"the explorer changed the {name} store"


def tile_features(refc: np.ndarray, tiling) -> np.ndarray:
    """A stand-in tile embedding: per tile mean, max, std (dBZ / 10) and echo share; NaN for clear sky."""
    from wxdask.tiles import echo_fraction_block, tiles_block

    tiles = tiles_block(refc, tiling).astype(np.float64)  # (..., ty, tx, s, s)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN tiles of slots without an image
        clipped = np.clip(tiles, 0, 60)
        feats = np.stack([np.nanmean(clipped, axis=(-2, -1)) / 10, np.nanmax(clipped, axis=(-2, -1)) / 10,
                          np.nanstd(clipped, axis=(-2, -1)) / 10, echo_fraction_block(refc, tiling) * 4], axis=-1)
    frac = echo_fraction_block(refc, tiling)
    feats[~(frac >= TILE_ECHO)] = np.nan
    return feats.astype(np.float32)


def add_tiles(cfg: Config, client) -> None:
    """tile_embedding (and its coordinates and tiling attributes) from the stored images, then tile regimes."""
    import dataclasses

    from wxdask import tile_regimes, tile_search
    from wxdask.grid import COARSE
    from wxdask.tiles import Tiling, tile_coords

    ds = xr.open_zarr(cfg.store.url, consolidated=False)
    tiling = Tiling(COARSE.shape, TILE_SIZE, TILE_SIZE)
    feats = tile_features(ds["refc"].values, tiling)
    # as wide as the store's latent dim (shared with the whole-image embedding): a fixed mix of the features
    mix = np.random.default_rng(7).normal(size=(feats.shape[-1], ds.sizes["latent"])).astype(np.float32)
    e = (feats @ mix).astype(np.float32)
    coords = {name: xr.Variable(dims, values) for name, (dims, values) in tile_coords(COARSE, tiling).items()}
    attrs = {"model_hash": "stand-in", "model_dir": "/nonexistent", "tile_size": tiling.size,
             "tile_stride": tiling.stride, "tile_offset": list(tiling.offset), "echo_threshold": TILE_ECHO,
             "grid_name": COARSE.name}
    tiles = xr.Dataset({"tile_embedding": (tile_search.TILE_DIMS + ("latent",), e, attrs)},
                       coords={"time": ds["time"].values, "lead_time": ds["lead_time"].values, **coords})
    tiles = tiles.reset_coords()  # write_variables writes variables (and dim coordinates): bounds and centres too
    store.write_variables(cfg.store, tiles.chunk({"time": 24}), attrs={"tile_search_k": 5,
                                                                       "tile_search_exclude_window": WINDOW})
    tcfg = dataclasses.replace(cfg, tiles=dataclasses.replace(cfg.tiles, n_clusters=3))
    tile_regimes.run(tcfg, client, plot=str(Path(cfg.store.url).with_name("tile-centroids.png")))
    store.consolidate(cfg.store)


class Server:
    def __init__(self, path: Path) -> None:
        self.explorer = explore.Explorer(StoreConfig(url=str(path)))
        self.httpd = explore.make_server(self.explorer, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def get(self, target: str) -> tuple[int, str, bytes]:
        try:
            with urllib.request.urlopen(self.url + target, timeout=120) as resp:
                return resp.status, resp.headers["Content-Type"], resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers["Content-Type"], err.read()

    def json(self, target: str, status: int = 200) -> dict:
        code, ctype, body = self.get(target)
        assert code == status, (target, code, body[:300])
        assert ctype == "application/json"
        return json.loads(body)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def servers(stores):
    running = {name: Server(path) for name, path in stores.items()}
    yield running
    for s in running.values():
        s.close()


@pytest.fixture(scope="module")
def ds(stores):
    return xr.open_zarr(str(stores["full"]), consolidated=False)


def oracle(emb: np.ndarray, hours: np.ndarray, ti: int, li: int, k: int, window: int) -> list[tuple[int, int, float]]:
    """Loop-by-loop brute force: squared Euclidean (float64), window on init time, never itself, ties earlier."""
    nt, nl, _ = emb.shape
    q = emb[ti, li].astype(np.float64)
    cand = []
    for t in range(nt):
        for lead in range(nl):
            e = emb[t, lead].astype(np.float64)
            if (t, lead) == (ti, li) or not np.isfinite(e).all():
                continue
            if window > 0 and abs(int(hours[t]) - int(hours[ti])) < window:
                continue
            cand.append((float(((e - q) ** 2).sum()), t * nl + lead, t, lead))
    cand.sort()
    return [(t, lead, d) for d, _, t, lead in cand[:k]]


def ok_slot(ds: xr.Dataset) -> tuple[int, str]:
    """A lead-0 slot with an image, an embedding and k stored neighbours, mid-archive."""
    status = ds["status"].values[:, 0]
    n = len(status)
    for i in list(range(n // 2, n)) + list(range(n // 2)):
        if status[i] == 1 and (ds["neighbor_lead"].values[i, 0] >= 0).all():
            return i, str(ds["time"].values[i].astype("datetime64[h]"))
    raise AssertionError("no ok slot")


# ----------------------------------------------------------------------------- numpy core


def test_brute_force_query_matches_oracle_with_ties_nans_and_windows():
    rng = np.random.default_rng(0)
    emb = rng.integers(0, 3, (40, 2, 3)).astype(np.float32)  # many exact ties
    emb[7] = np.nan
    emb[11, 1] = np.nan
    hours = np.cumsum(rng.integers(1, 3, 40))
    for ti, li in [(0, 0), (20, 1), (39, 0), (8, 1)]:
        for window in (0, 1, 3, 24):
            for k in (1, 5, 100):
                assert explore.brute_force_query(emb, hours, ti, li, k, window) == oracle(emb, hours, ti, li, k, window)
    assert explore.brute_force_query(emb, hours, 7, 0, 5, 0) == []


def test_brute_force_equals_what_wxdask_search_stored(ds):
    emb = ds["embedding"].values
    hours = ds["time"].values.astype("datetime64[h]").astype(np.int64)
    window = explore.parse_window(ds.attrs["search_exclude_window"])
    leads = ds["lead_time"].values.tolist()
    checked = 0
    for ti in range(0, emb.shape[0], 7):
        for li in range(emb.shape[1]):
            found = explore.brute_force_query(emb, hours, ti, li, 5, window)
            stored_t = ds["neighbor_time"].values[ti, li]
            stored_l = ds["neighbor_lead"].values[ti, li]
            stored_d = ds["neighbor_sqdist"].values[ti, li]
            keep = stored_l >= 0
            assert [(int(hours[t]), leads[lead]) for t, lead, _ in found] == \
                [(int(t), int(lead)) for t, lead in zip(stored_t[keep].astype("datetime64[h]").astype(np.int64),
                                                        stored_l[keep])]
            np.testing.assert_allclose([d for *_, d in found], stored_d[keep], rtol=1e-4, atol=1e-7)
            checked += int(keep.any())
    assert checked > 10


@pytest.mark.parametrize("text, hours", [("0", 0), ("24h", 24), ("2d", 48), (" 6 ", 6)])
def test_parse_window(text, hours):
    assert explore.parse_window(text) == hours


@pytest.mark.parametrize("text", ["-1h", "1.5h", "abc", "24m", ""])
def test_parse_window_rejects(text):
    with pytest.raises(explore.ExploreRequestError, match="window"):
        explore.parse_window(text)


# ----------------------------------------------------------------------------- endpoints over HTTP


def test_static_page_and_content_types(servers):
    s = servers["full"]
    for target, ctype in [("/", "text/html"), ("/app.js", "text/javascript"), ("/style.css", "text/css")]:
        code, got, body = s.get(target)
        assert code == 200 and got.startswith(ctype) and body
    code, _, body = s.get("/")
    assert b'id="timeline"' in body and b'id="tiles" hidden' in body


def test_summary_timeline_slot(servers, ds):
    s = servers["full"]
    summ = s.json("/api/summary")
    assert summ["n_times"] == ds.sizes["time"] and summ["leads"] == [0, 1]
    assert summ["has_embedding"] and summ["has_neighbors"] and summ["k"] == 5 and summ["n_clusters"] == 3
    assert summ["exclude_window"] == WINDOW and summ["model_message"] is None and summ["tiles"] is True
    assert summ["has_tile_regimes"] and summ["tile_k"] == 5 and summ["tile_exclude_window"] == WINDOW
    tl = s.json("/api/timeline?lead=0")
    n = ds.sizes["time"]
    assert tl["n"] == n and len(tl["status"]) == n and len(tl["cluster"]) == n and len(tl["residual"]) == n
    times = ds["time"].values.astype("datetime64[h]")
    assert tl["status"][int(np.flatnonzero(times == np.datetime64(MISSING))[0])] == "absent"
    assert tl["status"][int(np.flatnonzero(times == np.datetime64(CORRUPT))[0])] == "corrupt"
    assert tl["cluster"] == ds["cluster"].values[:, 0].tolist()
    resid = ds["interp_residual"].values[:, 0]
    assert [r is None for r in tl["residual"]] == np.isnan(resid).tolist()
    i, t = ok_slot(ds)
    slot = s.json(f"/api/slot?time={t}&lead=0")
    assert slot["status"] == "ok" and slot["cluster"] == int(ds["cluster"].values[i, 0]) and slot["index"] == i
    want = [(str(tt.astype("datetime64[h]")), int(ll), float(dd)) for tt, ll, dd in
            zip(ds["neighbor_time"].values[i, 0], ds["neighbor_lead"].values[i, 0], ds["neighbor_sqdist"].values[i, 0])]
    got = [(n["time"], n["lead"], n["sqdist"]) for n in slot["neighbors"]]
    assert [g[:2] for g in got] == [w[:2] for w in want]
    np.testing.assert_allclose([g[2] for g in got], [w[2] for w in want], rtol=1e-6)
    # other spellings of the same hour
    assert s.json(f"/api/slot?time={t}:00&lead=0")["index"] == i
    assert s.json(f"/api/slot?time={t.replace('T', '%20')}:00:00Z&lead=0")["index"] == i


def test_query_reruns_with_the_window(servers, ds):
    s = servers["full"]
    emb = ds["embedding"].values
    hours = ds["time"].values.astype("datetime64[h]").astype(np.int64)
    i, t = ok_slot(ds)
    for window, w_hours in [("0", 0), ("6h", 6), ("2d", 48)]:
        res = s.json(f"/api/query?time={t}&lead=0&window={window}&k=7")
        assert res["window_hours"] == w_hours
        want = oracle(emb, hours, i, 0, 7, w_hours)
        assert [(n["time"], n["lead"]) for n in res["neighbors"]] == \
            [(str(hours[tt].astype("datetime64[h]")), lead) for tt, lead, _ in want]
        np.testing.assert_allclose([n["sqdist"] for n in res["neighbors"]], [d for *_, d in want], rtol=1e-9)


def test_regimes_and_scores(servers, ds):
    s = servers["full"]
    reg = s.json("/api/regimes")
    assert reg["sizes"] == ds["cluster_size"].values.tolist()
    assert reg["counts"] == ds["cluster_count"].values.tolist() and reg["months"] == list(range(1, 13))
    sc = s.json("/api/scores")
    ev = ds.attrs["wxdask_evaluation"]
    assert sc["evaluation"]["autoencoder"]["rmse"] == pytest.approx(ev["autoencoder"]["rmse"])
    assert sc["evaluation"]["pca"]["csi_20"] == pytest.approx(ev["pca"]["csi_20"])
    assert sc["analog"] is None and sc["interpolation"]["interp_median_ratio"] == pytest.approx(
        ds.attrs["interp_median_ratio"])


def test_pictures(servers, ds):
    s = servers["full"]
    _, t = ok_slot(ds)
    for target in [f"/img/slot.png?time={t}&lead=0", f"/img/error.png?time={t}&lead=0",
                   f"/img/analogs.png?time={t}&lead=0",
                   f"/img/analogs.png?time={t}&lead=1&window=0&k=3", "/img/centroids.png"]:
        code, ctype, body = s.get(target)
        assert (code, ctype) == (200, "image/png"), (target, body[:200])
        assert body[:8] == b"\x89PNG\r\n\x1a\n"
        assert s.get(target)[2] == body  # drawn once, then from the cache


@pytest.mark.parametrize("target, status, message", [
    ("/api/slot?time=1999-01-01T00&lead=0", 404, "not in the store"),
    ("/api/slot?time=2019-06-02T05:30&lead=0", 404, "not in the store"),
    ("/api/slot?time=2019-06-02T05&lead=3", 404, "lead 3 is not in the store; it holds leads [0, 1]"),
    ("/api/slot?time=2019-13-45T00&lead=0", 400, "not a valid date"),
    ("/api/slot?time=yesterday", 400, "time must look like"),
    ("/api/slot?lead=0", 400, "missing parameter 'time'"),
    ("/api/slot?time=2019-06-02T05&lead=x", 400, "lead must be a whole number"),
    ("/api/slot?time=2019-06-02T05&time=2019-06-02T06", 400, "given 2 times"),
    ("/api/slot?file=/etc/passwd", 400, "unknown parameter 'file'"),
    ("/api/query?time=2019-06-02T06&lead=0&window=soon", 400, "window must be"),
    ("/api/query?time=2019-06-02T06&lead=0&k=0", 400, "k must be"),
    ("/api/query?time=2019-06-02T06&lead=0&k=100000", 400, "k must be"),
    (f"/api/query?time={MISSING}&lead=0", 404, "has no embedding"),
    (f"/img/slot.png?time={MISSING}&lead=0", 404, "no image and no embedding"),
    (f"/img/error.png?time={MISSING}&lead=0", 404, "no decoded image"),
    ("/img/error.png?time=2019-06-02T06&lead=9", 404, "lead 9 is not in the store"),
    ("/img/../../etc/passwd", 404, "no such page"),
    ("/explore_static/index.html", 404, "no such page"),
    ("/api/tiles?time=2019-06-02T06&lead=0", 400, "missing parameter 'lat'"),
    ("/api/tiles?time=2019-06-02T06&lead=0&lat=abc&lon=-97", 400, "lat must be a number"),
    ("/api/tiles?time=2019-06-02T06&lead=0&lat=0&lon=0", 400, "is off the coarse grid"),
    ("/api/tiles?time=2019-06-02T06&lead=0&lat=35&lon=-97&mode=everywhere", 400, "mode must be one of"),
    ("/api/tiles?time=2019-06-02T06&lead=0&lat=35&lon=-97&k=0", 400, "k must be"),
    ("/api/tiles?time=2019-06-02T06&lead=0&lat=35&lon=-97&window=soon", 400, "window must be"),
    ("/api/tiles?time=1999-01-01T00&lead=0&lat=35&lon=-97", 404, "not in the store"),
    ("/img/tiles.png?time=2019-06-02T06&lead=0&lat=0&lon=0", 400, "is off the coarse grid"),
    ("/img/tile_regimes.png?time=2019-06-02T06&lead=7", 404, "lead 7 is not in the store"),
])
def test_bad_requests_are_4xx_with_a_message(servers, target, status, message):
    body = servers["full"].json(target, status)
    assert message in body["error"] and "Traceback" not in body["error"]


def test_only_get(servers):
    req = urllib.request.Request(servers["full"].url + "/api/summary", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 405 and "read-only" in json.loads(err.value.read())["error"]


def test_store_without_embeddings(servers, stores):
    s = servers["bare"]
    summ = s.json("/api/summary")
    assert not summ["has_embedding"] and not summ["has_clusters"]
    assert len(s.json("/api/timeline?lead=1")["status"]) == summ["n_times"]
    slot = s.json("/api/slot?time=2019-06-02T06&lead=0")
    assert slot["status"] == "ok" and slot["neighbors"] == [] and not slot["has_embedding"]
    body = s.json("/api/query?time=2019-06-02T06&lead=0", 409)
    assert "no embedding" in body["error"] and "wxdask embed" in body["error"]
    assert "no cluster_size" in s.json("/api/regimes", 409)["error"]
    assert "no centroid" in s.json("/img/centroids.png", 409)["error"]
    assert "no embedding" in s.json("/img/error.png?time=2019-06-02T06&lead=0", 409)["error"]
    code, ctype, _ = s.get("/img/slot.png?time=2019-06-02T06&lead=0")  # the stored image alone
    assert (code, ctype) == (200, "image/png")


def test_missing_model_degrades_with_a_message(servers, ds):
    s = servers["no_model"]
    assert "is missing: decoded views are off" in s.json("/api/summary")["model_message"]
    _, t = ok_slot(ds)
    code, ctype, _ = s.get(f"/img/slot.png?time={t}&lead=0")
    assert (code, ctype) == (200, "image/png")
    assert "is missing" in s.json("/img/centroids.png", 409)["error"]
    assert "is missing" in s.json(f"/img/error.png?time={t}&lead=0", 409)["error"]
    assert s.json(f"/api/query?time={t}&lead=0&window=0")["neighbors"]  # search needs no model


def test_cli_serves_on_loopback_and_prints_its_url(stores):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "wxdask.cli", "explore", "--store", str(stores["bare"]),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("wxdask explorer at http://127.0.0.1:"), line
        url = line.split()[3]
        with urllib.request.urlopen(url + "api/summary", timeout=60) as resp:
            assert json.loads(resp.read())["n_times"] == 96
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_cli_no_store_is_one_line(tmp_path):
    from click.testing import CliRunner

    from wxdask.cli import main

    res = CliRunner().invoke(main, ["explore", "--store", str(tmp_path / "nothing.zarr"), "--port", "0"])
    assert res.exit_code == 1 and "no wxdask store" in res.output


# ----------------------------------------------------------------------------- tiles


def tile_oracle(e: np.ndarray, hours: np.ndarray, ti: int, li: int, ty: int, tx: int, k: int, window: int,
                anywhere: bool) -> list[tuple[int, int, int, int, float]]:
    """Loop-by-loop brute force over tiles: ``(t, lead, tile_y, tile_x, sqdist)``, ties to the earlier tile."""
    nt, nl, ny, nx, _ = e.shape
    q = e[ti, li, ty, tx].astype(np.float64)
    cand = []
    for t in range(nt):
        if window > 0 and abs(int(hours[t]) - int(hours[ti])) < window:
            continue
        for lead in range(nl):
            for y in range(ny):
                for x in range(nx):
                    if (t, lead, y, x) == (ti, li, ty, tx) or (not anywhere and (y, x) != (ty, tx)):
                        continue
                    v = e[t, lead, y, x].astype(np.float64)
                    if np.isfinite(v).all():
                        cand.append((float(((v - q) ** 2).sum()), ((t * nl + lead) * ny + y) * nx + x, t, lead, y, x))
    cand.sort()
    return [(t, lead, y, x, d) for d, _, t, lead, y, x in cand[:k]]


def tile_centre(ds: xr.Dataset, ty: int, tx: int) -> tuple[float, float]:
    lon = float(ds["tile_longitude"].values[ty, tx])
    return float(ds["tile_latitude"].values[ty, tx]), lon - 360 if lon > 180 else lon


def tile_slots(ds: xr.Dataset, n: int) -> list[tuple[int, int, int, int]]:
    """``n`` tiles with an embedding, spread over the archive: ``(time index, lead index, tile_y, tile_x)``."""
    have = np.argwhere(np.isfinite(ds["tile_embedding"].values).all(axis=-1))
    return [tuple(int(v) for v in have[j]) for j in np.linspace(0, len(have) - 1, n).astype(int)]


def assert_tiles_equal(got: list[dict], want: list[tuple], times: np.ndarray, leads: list[int]) -> None:
    assert [(n["time"], n["lead"], n["tile_y"], n["tile_x"]) for n in got] == \
        [(str(times[t]), leads[lead], y, x) for t, lead, y, x, _ in want]
    np.testing.assert_allclose([n["sqdist"] for n in got], [d for *_, d in want], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("mode", ["same_place", "anywhere"])
def test_tile_query_matches_the_oracle(servers, ds, mode):
    from wxdask.grid import COARSE
    from wxdask.tiles import Tiling, tile_of_point

    s = servers["full"]
    e = ds["tile_embedding"].values
    times = ds["time"].values.astype("datetime64[h]")
    hours = times.astype(np.int64)
    leads = ds["lead_time"].values.tolist()
    tiling = Tiling(COARSE.shape, TILE_SIZE, TILE_SIZE)
    checked = 0
    for ti, li, ty, tx in tile_slots(ds, 4):
        lat, lon = tile_centre(ds, ty, tx)
        assert tile_of_point(COARSE, tiling, lat, lon) == (ty, tx)
        for window, w_hours in [("0", 0), (WINDOW, 6), ("2d", 48)]:
            res = s.json(f"/api/tiles?time={times[ti]}&lead={leads[li]}&lat={lat}&lon={lon}&mode={mode}"
                         f"&k=5&window={window}")
            assert res["tile"]["tile_y"] == ty and res["tile"]["tile_x"] == tx and res["mode"] == mode
            assert res["tile"]["latitude"] == pytest.approx(lat) and res["window_hours"] == w_hours
            b = res["tile"]["bounds_latlon"]
            assert b["lat_min"] < lat < b["lat_max"] and b["lon_min"] < lon < b["lon_max"]
            want = tile_oracle(e, hours, ti, li, ty, tx, 5, w_hours, mode == "anywhere")
            assert_tiles_equal(res["neighbors"], want, times, leads)
            checked += len(want)
            if mode == "same_place":
                assert all((n["tile_y"], n["tile_x"]) == (ty, tx) for n in res["neighbors"])
    assert checked > 20
    # the default is the store's tile search settings (same place, its window, its k)
    ti, li, ty, tx = tile_slots(ds, 4)[1]
    lat, lon = tile_centre(ds, ty, tx)
    res = s.json(f"/api/tiles?time={times[ti]}&lead={leads[li]}&lat={lat}&lon={lon}")
    assert res["mode"] == "same_place" and res["k"] == 5 and res["window_hours"] == 6


def test_tile_pictures_and_bad_points(servers, ds):
    s = servers["full"]
    times = ds["time"].values.astype("datetime64[h]")
    ti, li, ty, tx = tile_slots(ds, 3)[1]
    lat, lon = tile_centre(ds, ty, tx)
    slot = f"time={times[ti]}&lead={li}"
    for target in [f"/img/tiles.png?{slot}&lat={lat}&lon={lon}&mode=anywhere&k=3",
                   f"/img/tile_regimes.png?{slot}"]:
        code, ctype, body = s.get(target)
        assert (code, ctype) == (200, "image/png"), (target, body[:300])
        assert body[:8] == b"\x89PNG\r\n\x1a\n"
    # the margin: the coarse grid's first row lies outside every 16-px tile
    m_lat, m_lon = float(ds["latitude"].values[0, 56]), float(ds["longitude"].values[0, 56])
    assert "in the grid's margin" in s.json(f"/api/tiles?{slot}&lat={m_lat}&lon={m_lon}", 400)["error"]
    # a clear-sky tile has no embedding
    e = ds["tile_embedding"].values
    cy, cx = (int(v) for v in np.argwhere(~np.isfinite(e[ti, li]).all(axis=-1))[0])
    c_lat, c_lon = tile_centre(ds, cy, cx)
    body = s.json(f"/api/tiles?{slot}&lat={c_lat}&lon={c_lon}", 404)
    assert "has no embedding" in body["error"] and "clear sky" in body["error"]
    # where the map is: the stored panel's axes in the PNG, on latitude/longitude
    smap = s.json(f"/api/slot_map?{slot}")
    p = smap["panels"][0]
    assert p["on_latlon"] and 0 < p["left"] < p["right"] < 1 and 0 < p["top"] < p["bottom"] < 1
    assert p["x_min"] < float(np.nanmin(ds["longitude"].values - 360 * (ds["longitude"].values > 180))) + 1
    assert p["y_min"] <= float(ds["latitude"].values.min()) and p["y_max"] >= float(ds["latitude"].values.max())
    # a store without tile embeddings
    bare = servers["bare"]
    body = bare.json(f"/api/tiles?time=2019-06-02T06&lead=0&lat={lat}&lon={lon}", 409)
    assert "no tile_embedding" in body["error"] and "wxdask embed --tiles" in body["error"]
    assert "wxdask cluster --tiles" in bare.json("/img/tile_regimes.png?time=2019-06-02T06&lead=0", 409)["error"]
    assert bare.json("/api/summary")["tiles"] is False


# ----------------------------------------------------------------------------- the page in Chromium


@pytest.fixture(scope="module")
def browser():
    in_ci = os.environ.get("CI") == "true"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if in_ci:
            pytest.fail("playwright is not installed (pip install -e '.[test]')")
        pytest.skip("playwright is not installed")
    if not os.path.exists(CHROMIUM):
        if in_ci:
            pytest.fail(f"no Chromium at {CHROMIUM} (.ci/run installs it with apt-get)")
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        yield b
        b.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=120_000)
    return page, errors


def click_slot(page, i: int) -> None:
    box = page.locator("#timeline").bounding_box()
    x = page.evaluate(f"window.explorer.slotX({i})")
    page.mouse.click(box["x"] + x, box["y"] + 10)


def analogs_on_page(page) -> list[tuple[str, int, float]]:
    return [(b.get_attribute("data-time"), int(b.get_attribute("data-lead")), float(b.get_attribute("data-sqdist")))
            for b in page.locator("#analogs button.analog").all()]


def test_page_timeline_slot_analogs_rerun(browser, servers, ds, tmp_path):
    s = servers["full"]
    page, errors = open_page(browser, s.url + "/")
    assert int(page.locator("#timeline").get_attribute("data-n-slots")) == ds.sizes["time"]
    assert int(page.locator("#cluster-counts").get_attribute("data-k")) == 3
    assert "autoencoder" in page.locator("#evaluation").inner_text()
    page.wait_for_function("document.getElementById('centroids').naturalWidth > 0")

    i, t = ok_slot(ds)
    click_slot(page, i)
    page.wait_for_selector(f"#slot-title[data-time='{t}'][data-lead='0']", timeout=60_000)
    page.wait_for_function("document.getElementById('slot-img').naturalWidth > 0")
    page.wait_for_function("document.getElementById('error-img').naturalWidth > 0")
    page.wait_for_function("document.getElementById('analogs-img').naturalWidth > 0")
    got = analogs_on_page(page)
    want_t = [str(v.astype("datetime64[h]")) for v in ds["neighbor_time"].values[i, 0]]
    assert [g[0] for g in got] == want_t
    assert [g[1] for g in got] == ds["neighbor_lead"].values[i, 0].tolist()
    np.testing.assert_allclose([g[2] for g in got], ds["neighbor_sqdist"].values[i, 0], rtol=1e-6)
    shot = screenshot_path(tmp_path, "explorer.png")
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == PNG

    # clicking an analog moves there
    first_t, first_lead, _ = got[0]
    page.locator("#analogs button.analog").first.click()
    page.wait_for_selector(f"#slot-title[data-time='{first_t}'][data-lead='{first_lead}']", timeout=60_000)
    assert page.locator("#lead").input_value() == str(first_lead)

    # the exclusion window reruns one query; the page shows what the oracle says
    emb = ds["embedding"].values
    hours = ds["time"].values.astype("datetime64[h]").astype(np.int64)
    ti = int(np.flatnonzero(ds["time"].values.astype("datetime64[h]") == np.datetime64(first_t))[0])
    for window, w_hours, k in [("0", 0, 4), ("36h", 36, 6)]:
        page.fill("#window", window)
        page.fill("#k", str(k))
        page.click("#rerun")
        page.wait_for_selector(f"#analogs[data-caption='rerun: window {w_hours} h, k {k}']", timeout=60_000)
        want = oracle(emb, hours, ti, first_lead, k, w_hours)
        got = analogs_on_page(page)
        assert [(g[0], g[1]) for g in got] == [(str(hours[tt].astype("datetime64[h]")), lead) for tt, lead, _ in want]
        np.testing.assert_allclose([g[2] for g in got], [d for *_, d in want], rtol=1e-9)
    assert page.locator("#error").is_hidden()
    assert errors == []
    page.close()


def test_page_shows_bad_requests(browser, servers):
    page, errors = open_page(browser, servers["full"].url + "/")
    for text, message in [("1999-01-01T00", "not in the store"), ("tomorrow", "time must look like")]:
        page.fill("#time-input", text)
        page.click("#go")
        page.wait_for_selector("#error:not([hidden])", timeout=30_000)
        assert message in page.locator("#error").inner_text()
    page.fill("#time-input", "2019-06-02T06")
    page.click("#go")
    page.wait_for_selector("#slot-title[data-time='2019-06-02T06']", timeout=60_000)
    page.fill("#window", "soon")
    page.click("#rerun")
    page.wait_for_selector("#error:not([hidden])", timeout=30_000)
    assert "window must be" in page.locator("#error").inner_text()
    assert all("status of 4" in e for e in errors), errors  # only the browser's own note on each 4xx
    page.close()


def test_page_without_model_or_embeddings(browser, servers):
    page, errors = open_page(browser, servers["no_model"].url + "/")
    assert "is missing" in page.locator("#model-message").inner_text()
    assert "is missing" in page.locator("#regimes-message").inner_text()
    page.fill("#time-input", "2019-06-02T06")
    page.click("#go")
    page.wait_for_selector("#slot-title[data-time='2019-06-02T06']", timeout=60_000)
    assert "is missing" in page.locator("#slot-note").inner_text()
    page.wait_for_function("document.getElementById('slot-img').naturalWidth > 0")  # the stored image still
    assert all("status of 409" in e for e in errors), errors  # the centroids' 409; no script error
    page.close()
    page, errors = open_page(browser, servers["bare"].url + "/")
    assert "no embedding" in page.locator("#error").inner_text()
    assert "no clusters" in page.locator("#regimes-message").inner_text()
    assert errors == []
    page.close()


def click_map_at(page, s: Server, time: str, lead: int, lat: float, lon: float) -> None:
    """Click the stored map of the slot's PNG at ``(lat, lon)``, placed with the server's axes (as a user would)."""
    p = s.json(f"/api/slot_map?time={time}&lead={lead}")["panels"][0]
    fx = p["left"] + (lon - p["x_min"]) / (p["x_max"] - p["x_min"]) * (p["right"] - p["left"])
    fy = p["bottom"] - (lat - p["y_min"]) / (p["y_max"] - p["y_min"]) * (p["bottom"] - p["top"])
    page.locator("#slot-img").scroll_into_view_if_needed()  # filling the tile controls scrolled down
    box = page.locator("#slot-img").bounding_box()
    page.evaluate("document.getElementById('tile-query').dataset.query = ''")
    page.mouse.click(box["x"] + fx * box["width"], box["y"] + fy * box["height"])
    page.wait_for_function("document.getElementById('tile-query').dataset.query !== ''", timeout=60_000)


def tiles_on_page(page) -> list[dict]:
    return [{"time": b.get_attribute("data-time"), "lead": int(b.get_attribute("data-lead")),
             "tile_y": int(b.get_attribute("data-tile-y")), "tile_x": int(b.get_attribute("data-tile-x")),
             "sqdist": float(b.get_attribute("data-sqdist"))}
            for b in page.locator("#tile-analogs button.tile-analog").all()]


def test_page_map_click_queries_the_tile(browser, servers, ds, tmp_path):
    s = servers["full"]
    e = ds["tile_embedding"].values
    times = ds["time"].values.astype("datetime64[h]")
    hours = times.astype(np.int64)
    leads = ds["lead_time"].values.tolist()
    ti, li, ty, tx = tile_slots(ds, 5)[2]
    t, lead = str(times[ti]), leads[li]
    page, errors = open_page(browser, s.url + f"/#time={t}&lead={lead}")
    page.wait_for_selector(f"#slot-title[data-time='{t}'][data-lead='{lead}']", timeout=60_000)
    assert page.locator("#tiles").is_visible()
    page.wait_for_function("document.getElementById('tile-regimes-img').naturalWidth > 0", timeout=60_000)
    lat, lon = tile_centre(ds, ty, tx)
    for mode, window, w_hours, k in [("same_place", WINDOW, 6, 5), ("anywhere", "0", 0, 4)]:
        page.select_option("#tile-mode", mode)
        page.fill("#tile-window", window)
        page.fill("#tile-k", str(k))
        click_map_at(page, s, t, lead, lat, lon)
        state = page.locator("#tile-query").get_attribute("data-state")
        assert state == "ok", page.locator("#tile-message").inner_text()
        assert (int(page.locator("#tile-query").get_attribute("data-tile-y")),
                int(page.locator("#tile-query").get_attribute("data-tile-x"))) == (ty, tx)
        assert f"tile ({ty}, {tx})" in page.locator("#tile-query").inner_text()
        page.wait_for_function("document.getElementById('tiles-img').naturalWidth > 0", timeout=60_000)
        want = tile_oracle(e, hours, ti, li, ty, tx, k, w_hours, mode == "anywhere")
        assert want
        assert_tiles_equal(tiles_on_page(page), want, times, leads)
    shot = screenshot_path(tmp_path, "explorer-tiles.png")
    page.locator("#tiles").screenshot(path=str(shot))
    assert shot.read_bytes()[:8] == PNG

    # bad points: the message on the page, nothing else shown
    cy, cx = (int(v) for v in np.argwhere(~np.isfinite(e[ti, li]).all(axis=-1))[0])
    m_lat, m_lon = float(ds["latitude"].values[0, 56]), float(ds["longitude"].values[0, 56])
    for p_lat, p_lon, message in [(*tile_centre(ds, cy, cx), "has no embedding"), (m_lat, m_lon, "margin")]:
        click_map_at(page, s, t, lead, p_lat, p_lon)
        assert page.locator("#tile-query").get_attribute("data-state") == "error"
        assert message in page.locator("#tile-message").inner_text()
        assert page.locator("#tile-analogs button.tile-analog").count() == 0
    page.locator("#slot-img").scroll_into_view_if_needed()
    box = page.locator("#slot-img").bounding_box()  # the title above the maps is no map
    page.evaluate("document.getElementById('tile-query').dataset.query = ''")
    page.mouse.click(box["x"] + box["width"] * 0.25, box["y"] + 3)
    page.wait_for_function("document.getElementById('tile-query').dataset.query === 'outside'", timeout=30_000)
    assert "click inside a map" in page.locator("#tile-message").inner_text()
    assert page.locator("#error").is_hidden()
    assert all("status of 4" in e for e in errors), errors  # only the browser's own note on each 4xx
    page.close()


def test_page_hides_tiles_without_tile_embeddings(browser, servers):
    page, errors = open_page(browser, servers["bare"].url + "/#time=2019-06-02T06&lead=0")
    page.wait_for_selector("#slot-title[data-time='2019-06-02T06']", timeout=60_000)
    assert page.locator("#tiles").is_hidden()
    page.close()
