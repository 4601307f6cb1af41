"""All-pairs analog search: numpy core against a brute-force oracle, the Dask graph, the store, the CLI."""

from __future__ import annotations

import pickle
import tracemalloc

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from click.testing import CliRunner

from wxdask import query, search, store
from wxdask.config import Config, SearchConfig
from wxdask.errors import ConfigError
from wxdask.search import NEIGHBOR_DTYPE, knn_block, merge_knn, nearest_neighbours
from wxdask.testing import HostScaledEncoder, raise_if_dask_computes, task_result_shapes
from wxdask.testing import make_store as make_test_store

T0 = np.datetime64("2019-09-20T00", "h")


def oracle(x: np.ndarray, hours: np.ndarray, k: int, window: int, queries: np.ndarray | None = None):
    """Brute force in float64: exclusions, NaN rows, ties to the lower index."""
    x64 = x.astype(np.float64)
    n = len(x)
    valid = np.isfinite(x64).all(axis=1)
    queries = np.arange(n) if queries is None else queries
    out_i = np.full((len(queries), k), -1)
    out_d = np.full((len(queries), k), np.nan)
    for row, qi in enumerate(queries):
        if not valid[qi]:
            continue
        d = ((x64 - x64[qi]) ** 2).sum(axis=1)
        ok = valid & (np.arange(n) != qi)
        if window > 0:
            ok &= np.abs(hours - hours[qi]) >= window
        cand = np.flatnonzero(ok)
        order = np.lexsort((cand, d[cand]))[:k]
        out_i[row, :len(order)] = cand[order]
        out_d[row, :len(order)] = d[cand[order]]
    return out_i, out_d


def gapped_times(n: int, seed: int = 0) -> np.ndarray:
    """Hourly times with a few gaps of 1-5 hours."""
    rng = np.random.default_rng(seed)
    steps = np.ones(n, dtype=np.int64)
    steps[rng.choice(n, n // 10, replace=False)] = rng.integers(2, 6, n // 10)
    return T0 + np.cumsum(steps).astype("timedelta64[h]")


def structured(nt: int, nl: int, d: int = 6, seed: int = 0) -> np.ndarray:
    """Smooth trajectories plus noise, with missing slots."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(0, 0.3, (nt, 1, d)), axis=0)
    e = (walk + rng.normal(0, 0.5, (nt, nl, d))).astype(np.float32)
    e[rng.choice(nt, max(1, nt // 20), replace=False)] = np.nan  # whole times missing
    e[rng.choice(nt, max(1, nt // 20), replace=False), rng.integers(0, nl)] = np.nan  # single slots
    return e


def make_store(path, e: np.ndarray, times: np.ndarray, leads=None, refc: np.ndarray | None = None,
               chunk: int = 16) -> Config:
    """A store holding ``embedding`` (and ``refc`` when given), with the real layout (``wxdask.testing.make_store``)."""
    leads = list(range(e.shape[1])) if leads is None else leads
    grid = refc.shape[-2:] if refc is not None else (4, 5)
    cfg = make_test_store(path, times, leads, grid=grid, refc=refc, embedding=e, embedding_chunk=chunk,
                          embedding_attrs={"model_hash": "fake", "model_dir": "/nonexistent"})
    return Config.from_dict({"store": {"url": cfg.url}, "dask": {"progress": False}})


# ----------------------------------------------------------------------------- knn_block


@pytest.mark.parametrize("chunk_size", [7, 64, 10_000])
@pytest.mark.parametrize("window", [0, 3])
def test_knn_block_matches_oracle(chunk_size, window):
    rng = np.random.default_rng(3)
    n = 400
    x = rng.normal(size=(n, 5)).astype(np.float32)
    x[rng.choice(n, 20, replace=False)] = np.nan
    hours = np.sort(rng.choice(2000, n, replace=False))  # gaps in time
    idx, d = knn_block(x, x, 6, q_index=np.arange(n), q_time=hours, base_time=hours,
                       exclude_window=window, chunk_size=chunk_size)
    want_i, want_d = oracle(x, hours, 6, window)
    np.testing.assert_array_equal(idx, want_i)
    np.testing.assert_allclose(d, want_d, rtol=1e-5, equal_nan=True)
    assert d.dtype == np.float32 and idx.dtype == np.int64


def test_query_never_its_own_neighbour_and_window_excludes():
    x = np.zeros((10, 2), dtype=np.float32)  # all identical: every distance 0
    hours = np.arange(10)
    idx, d = knn_block(x[[4]], x, 9, q_index=np.array([4]), q_time=hours[[4]], base_time=hours, exclude_window=2)
    got = idx[0][idx[0] >= 0]
    assert 4 not in got
    assert set(got) == {0, 1, 2, 6, 7, 8, 9}  # |dt| < 2 excluded: 3, 4, 5
    assert (idx[0][len(got):] == -1).all() and np.isnan(d[0][len(got):]).all()


def test_ties_broken_by_lower_index_whatever_the_chunking():
    rng = np.random.default_rng(5)
    x = rng.integers(0, 3, size=(300, 3)).astype(np.float32)  # many exact duplicates: exact ties
    want_i, _ = oracle(x, np.arange(300), 8, 0)
    for chunk_size in (1, 5, 33, 300):
        idx, d = knn_block(x, x, 8, q_index=np.arange(300), chunk_size=chunk_size)
        np.testing.assert_array_equal(idx, want_i)
    # split into query blocks: same answer
    parts = [knn_block(x[a:a + 70], x, 8, q_index=np.arange(a, min(a + 70, 300)))[0] for a in range(0, 300, 70)]
    np.testing.assert_array_equal(np.concatenate(parts), want_i)


def test_merge_knn_over_database_halves_equals_whole():
    rng = np.random.default_rng(6)
    x = rng.integers(0, 4, size=(200, 2)).astype(np.float32)
    q = rng.integers(0, 4, size=(15, 2)).astype(np.float32)
    whole = knn_block(q, x, 7)
    a = knn_block(q, x[:120], 7)
    b_i, b_d = knn_block(q, x[120:], 7)
    merged = merge_knn(a[0], a[1], np.where(b_i >= 0, b_i + 120, -1), b_d, 7)
    np.testing.assert_array_equal(merged[0], whole[0])
    np.testing.assert_allclose(merged[1], whole[1])


def test_nan_query_gets_no_neighbours_and_fewer_than_k():
    x = np.array([[0.0], [1.0], [np.nan], [5.0]], dtype=np.float32)
    idx, d = knn_block(x, x, 5, q_index=np.arange(4))
    assert (idx[2] == -1).all() and np.isnan(d[2]).all()
    np.testing.assert_array_equal(idx[0], [1, 3, -1, -1, -1])


def test_memory_per_task_bounded_by_chunk_not_database():
    rng = np.random.default_rng(7)
    n, m, chunk = 40_000, 512, 1024
    base = search.prepare_base(rng.normal(size=(n, 50)).astype(np.float32))
    q = rng.normal(size=(m, 50)).astype(np.float32)
    tracemalloc.start()
    knn_block(q, base, 10, chunk_size=chunk)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    full = m * n * 4  # the (m, n) float32 distance matrix it must not build
    assert peak < full / 4, (peak, full)


# ----------------------------------------------------------------------------- Dask graph


@pytest.mark.parametrize("chunked", [False, True])
@pytest.mark.parametrize("lead", [None, 1])
def test_nearest_neighbours_matches_oracle(chunked, lead):
    nt, nl = 150, 3
    e = structured(nt, nl)
    times = gapped_times(nt)
    data = da.from_array(e, chunks=(17, nl, 6)) if chunked else e
    emb = xr.DataArray(data, dims=("time", "lead_time", "latent"),
                       coords={"time": times.astype("M8[ns]"), "lead_time": [0, 1, 2]})
    cfg = SearchConfig(k=5, exclude_window="4h", lead=lead, block_size=40, chunk_size=50)
    with dask.config.set(scheduler="sync"):
        out = nearest_neighbours(emb, cfg).compute()
    leads = [0, 1, 2] if lead is None else [lead]
    sub = e[:, leads]
    flat = sub.reshape(-1, 6)
    hours = np.repeat(times.astype(np.int64), len(leads))
    want_i, want_d = oracle(flat, hours, 5, 4)
    got_d = out["neighbor_sqdist"].sel(lead_time=leads).values.reshape(-1, 5)
    np.testing.assert_allclose(got_d, want_d, rtol=1e-5, equal_nan=True)
    want_t = np.where(want_i >= 0, times[np.clip(want_i, 0, None) // len(leads)].astype("M8[ns]"),
                      np.datetime64("NaT", "ns"))
    got_t = out["neighbor_time"].sel(lead_time=leads).values.reshape(-1, 5)
    np.testing.assert_array_equal(got_t, want_t)
    want_l = np.where(want_i >= 0, np.array(leads)[np.clip(want_i, 0, None) % len(leads)], -1)
    np.testing.assert_array_equal(out["neighbor_lead"].sel(lead_time=leads).values.reshape(-1, 5), want_l)
    if lead is not None:
        others = out.drop_sel(lead_time=leads)
        assert np.isnat(others["neighbor_time"].values).all() and (others["neighbor_lead"].values == -1).all()


def test_graph_gives_no_task_more_than_a_block():
    nt, nl, d = 400, 2, 8
    block = 64
    e = structured(nt, nl, d)
    emb = xr.DataArray(da.from_array(e, chunks=(25, nl, d)), dims=("time", "lead_time", "latent"),
                       coords={"time": gapped_times(nt).astype("M8[ns]"), "lead_time": [0, 1]})
    out = nearest_neighbours(emb, SearchConfig(k=4, block_size=block, chunk_size=100))
    graph = dict(out["neighbor_sqdist"].data.__dask_graph__())
    knn_keys = [key for key in graph if isinstance(key, tuple) and str(key[0]).startswith("knn-")]
    prep_keys = [key for key in graph if str(key).startswith("prepare-base")]
    assert len(prep_keys) == 1  # the database is prepared once: one key
    assert len(knn_keys) == int(np.ceil(nt * nl / block))
    database_bytes = e.nbytes
    for key in knn_keys:
        deps = graph[key].dependencies
        assert prep_keys[0] in deps  # every task reads the one database key ...
        # ... and its task spec does not carry the database (nor any large array)
        assert len(pickle.dumps(graph[key])) < database_bytes / 10
    # run it, recording the size of every task's result: queries arrive in blocks of at most `block`
    with task_result_shapes() as sizes:
        out["neighbor_sqdist"].compute()
    knn_shapes = [shape for key, shape in sizes.items()
                  if str(key[0] if isinstance(key, tuple) else key).startswith("knn-")]
    assert knn_shapes and all(s[0] <= block and s[1] == 4 for s in knn_shapes)
    big = [key for key, shape in sizes.items() if np.prod(shape) > max(nt * nl * d, block * 4)]
    assert not big  # nothing near N x N anywhere


@pytest.mark.parametrize("lead", [None, 1])
def test_nearest_neighbours_is_lazy(lead):
    e = structured(60, 2)
    emb = xr.DataArray(da.from_array(e, chunks=(10, 2, 6)), dims=("time", "lead_time", "latent"),
                       coords={"time": gapped_times(60).astype("M8[ns]"), "lead_time": [0, 1]})

    with raise_if_dask_computes():
        nearest_neighbours(emb, SearchConfig(k=3, lead=lead))


def test_knn_is_lazy():
    x = da.from_array(structured(40, 1).reshape(40, 6), chunks=(10, 6))
    with raise_if_dask_computes():
        rec = search.knn(x, x, 3, query_index=da.arange(40, chunks=10), block_size=10, chunk_size=8)
    assert rec.shape == (40, 3) and rec.numblocks[0] == 4


def test_lead_not_in_store_is_a_config_error():
    emb = xr.DataArray(np.zeros((4, 1, 2), np.float32), dims=("time", "lead_time", "latent"),
                       coords={"time": gapped_times(4).astype("M8[ns]"), "lead_time": [0]})
    with pytest.raises(ConfigError, match="search.lead 3 is not in"):
        nearest_neighbours(emb, SearchConfig(lead=3))


# ----------------------------------------------------------------------------- store and queries


def test_run_writes_neighbours_and_query_table(tmp_path, client):
    nt, nl = 120, 2
    e = structured(nt, nl)
    times = gapped_times(nt)
    cfg = make_store(tmp_path / "s.zarr", e, times)
    cfg = cfg.replace(search={"k": 4, "exclude_window": "6h", "block_size": 50})
    assert search.run(cfg, client).endswith(f"{cfg.store.url}: neighbor_time, neighbor_sqdist, neighbor_lead")
    ds = store.open_store(cfg.store)
    assert ds.attrs["search_k"] == 4 and ds["neighbor_time"].attrs["model_hash"] == "fake"
    flat = e.reshape(-1, 6)
    want_i, want_d = oracle(flat, np.repeat(times.astype(np.int64), nl), 4, 6)
    np.testing.assert_allclose(ds["neighbor_sqdist"].values.reshape(-1, 4), want_d, rtol=1e-5, equal_nan=True)
    assert ds["neighbor_time"].dims == ("time", "lead_time", "rank")
    assert ds["rank"].values.tolist() == [1, 2, 3, 4]
    # one query from the store, as a table
    qi = next(i for i in range(nt) if np.isfinite(e[i, 0]).all())
    t = np.datetime_as_string(times[qi], unit="h")
    result = query.query(cfg, client, time=t, lead=0)
    row = qi * nl
    np.testing.assert_array_equal(result.neighbors["index"], want_i[row])
    table = query.query_table(cfg, client, t, lead=0)
    first = np.datetime_as_string(times[want_i[row, 0] // nl], unit="m")
    assert table.splitlines()[0] == f"neighbours of {t} lead 0"
    assert first in table.splitlines()[2] and f"{want_d[row, 0]:.6f}" in table.splitlines()[2]


def test_query_errors(tmp_path, client):
    e = structured(30, 1)
    e[3] = np.nan
    times = gapped_times(30)
    cfg = make_store(tmp_path / "s.zarr", e, times)
    with pytest.raises(ConfigError, match="not in store"):
        query.query(cfg, client, time="2015-01-01T00")
    with pytest.raises(ConfigError, match="has no embedding"):
        query.query(cfg, client, time=np.datetime_as_string(times[3], unit="h"))
    with pytest.raises(ConfigError, match="either a query time"):
        query.query(cfg, client)


class LinearEncoder:
    """A numpy encoder: embedding = mean over image columns of the scaled image, per row block."""

    def __init__(self, d: int):
        self.d = d

    def predict(self, x: np.ndarray) -> np.ndarray:
        img = x[..., 0]
        return np.stack([img.reshape(len(img), self.d, -1).mean(axis=2)[i] for i in range(len(img))])


def test_image_query_with_fake_encoder_and_plot(tmp_path, client):
    nt = 40
    times = gapped_times(nt)
    rng = np.random.default_rng(2)
    # on the 1/16 dB lattice of stored images, as a query image is encoded from its stored form
    images = (np.round(rng.uniform(-10, 70, (nt, 1, 4, 5)) * 16) / 16).astype(np.float32)
    enc = LinearEncoder(4)
    scaled = np.clip(images[:, 0], 0, 60)[..., None] / 60.0  # what the model sees
    e = enc.predict(scaled)[:, None, :].astype(np.float32)
    cfg = make_store(tmp_path / "s.zarr", e, times, refc=images)
    cfg = cfg.replace(search={"k": 3})
    result = query.query(cfg, client, image=images[7, 0], encoder=HostScaledEncoder(enc, 60.0))
    assert result.neighbors["index"][0] == 7 and result.neighbors["sqdist"][0] < 1e-10  # found itself
    assert result.time is None
    png = tmp_path / "q.png"
    query.plot_query(cfg, result, str(png))
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"


def test_format_table_multi_lead():
    rec = np.zeros(2, dtype=NEIGHBOR_DTYPE)
    rec["index"] = [5, 9]
    rec["time"] = np.array(["2019-09-21T07", "2019-09-22T01"], dtype="M8[ns]")
    rec["lead"] = [0, 3]
    rec["sqdist"] = [0.5, 1.25]
    text = query.format_table(query.SearchResult("q", None, 0, rec, np.zeros(1), multi_lead=True))
    assert text.splitlines()[3].split() == ["2", "2019-09-22T01:00", "3", "1.250000"]


def test_cli_search_all_pairs_and_one_time(tmp_path, client):
    from wxdask.cli import main

    e = structured(40, 1)
    times = gapped_times(40)
    cfg = make_store(tmp_path / "s.zarr", e, times)
    addr = client.scheduler.address
    runner = CliRunner()
    res = runner.invoke(main, ["search", "--store", cfg.store.url, "-k", "3", "--scheduler", addr, "-q"])
    assert res.exit_code == 0, res.output
    assert "neighbor_time" in store.open_store(cfg.store)
    t = np.datetime_as_string(times[10], unit="h")
    res = runner.invoke(main, ["search", "--store", cfg.store.url, "--time", t, "-k", "2", "--scheduler", addr, "-q"])
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == f"neighbours of {t} lead 0"
    res = runner.invoke(main, ["search", "--store", cfg.store.url, "--time", "2015-01-01T00", "--scheduler", addr])
    assert res.exit_code == 1 and "error:" in res.output


def test_image_query_from_a_grib_file(tmp_path, client):
    from wxdask import synth
    from wxdask.query import _read_image

    synth.write_archive(str(tmp_path / "arch"), "2019-09-20T00", "2019-09-20T03", (0,), grid="coarse", seed=0)
    files = sorted((tmp_path / "arch").rglob("*.grib2"))
    assert len(files) == 3
    images = np.stack([_read_image(str(f))[0] for f in files])  # dBZ, (3, 66, 112)
    assert images.min() >= -10 and images.max() < 80
    enc = LinearEncoder(6)
    e = enc.predict(np.clip(images, 0, 60)[..., None] / 60.0)[:, None, :].astype(np.float32)
    times = T0 + np.arange(3).astype("timedelta64[h]")
    cfg = make_store(tmp_path / "s.zarr", e, times).replace(search={"k": 2})
    result = query.query(cfg, client, image=str(files[1]), encoder=HostScaledEncoder(enc, 60.0))
    assert result.label == files[1].name
    assert result.neighbors["index"][0] == 1 and result.neighbors["sqdist"][0] < 1e-10


def test_image_query_refuses_a_model_of_another_hash(tmp_path, client):
    from wxdask.cli import main
    from wxdask.errors import ModelError
    from wxdask.testing import save_model_dir_stub

    images = np.zeros((6, 1, 4, 5), dtype=np.float32)
    cfg = make_store(tmp_path / "s.zarr", np.zeros((6, 1, 4), np.float32), gapped_times(6), refc=images)
    other = save_model_dir_stub(tmp_path / "other", (4, 5), n_latent=4)
    with pytest.raises(ModelError, match="made by model"):
        query.query(cfg.replace(search={"model_dir": other}), client, image=images[0, 0])
    store.set_attrs(cfg.store, {"model_dir": other}, variable="embedding")  # the recorded model: the same check
    with pytest.raises(ModelError, match="made by model"):
        query.query(cfg, client, image=images[0, 0])
    np.save(tmp_path / "q.npy", images[0, 0])
    res = CliRunner().invoke(main, ["search", "--store", cfg.store.url, "--image", str(tmp_path / "q.npy"),
                                    "--model", other, "--scheduler", client.scheduler.address])
    assert res.exit_code == 1 and "made by model" in res.output


def test_image_query_without_a_model_is_a_model_error(tmp_path, client):
    from wxdask.errors import ModelError

    cfg = make_store(tmp_path / "s.zarr", np.zeros((6, 1, 4), np.float32), gapped_times(6))
    with pytest.raises(ModelError, match="no model at '/nonexistent/"):  # the recorded directory is gone
        query.query(cfg, client, image=np.zeros((4, 5), np.float32))
    store.set_attrs(cfg.store, {"model_dir": "None"}, variable="embedding")  # as an old `embed` wrote a missing one
    with pytest.raises(ModelError, match="no model directory"):
        query.query(cfg, client, image=np.zeros((4, 5), np.float32))


def test_grib_query_image_goes_through_ingests_decoder(tmp_path, monkeypatch):
    from wxdask import ingest, synth
    from wxdask.errors import CorruptMessageError
    from wxdask.query import _read_image

    synth.write_archive(str(tmp_path / "arch"), "2019-09-20T00", "2019-09-20T01", (0,), grid="coarse", seed=0)
    path = sorted((tmp_path / "arch").rglob("*.grib2"))[0]
    calls = {"check": 0, "decode": 0}
    check, decode = ingest.check_message, ingest.decode_refc

    def counted_check(*a, **kw):
        calls["check"] += 1
        return check(*a, **kw)

    def counted_decode(*a, **kw):
        calls["decode"] += 1
        return decode(*a, **kw)

    monkeypatch.setattr(ingest, "check_message", counted_check)
    monkeypatch.setattr(ingest, "decode_refc", counted_decode)
    img, name = _read_image(str(path))
    assert calls["check"] >= 1 and calls["decode"] >= 1 and name == path.name
    want = decode(path.read_bytes()[:int.from_bytes(path.read_bytes()[8:16], "big")])[0] / 16
    assert img.shape == want.shape and np.array_equal(img, want)
    bad = tmp_path / "bad.grib2"
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[8:16], "big")  # REFC is the first message
    data[n - 4:n] = b"XXXX"  # the framing check, not ecCodes, finds it
    bad.write_bytes(bytes(data))
    with pytest.raises(CorruptMessageError, match="7777"):
        _read_image(str(bad))
