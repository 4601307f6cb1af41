"""The test helpers themselves: the compute counter and the tiny stores' layout."""

from __future__ import annotations

import dask
import dask.array as da
import numpy as np
import pytest

from wxdask import store
from wxdask.testing import (
    make_refc_store,
    make_store,
    make_tiny_store,
    raise_if_dask_computes,
)


def test_raise_if_dask_computes_raises_on_compute_not_on_graph():
    with raise_if_dask_computes() as counter:
        x = (da.ones(10, chunks=5) + 1).sum()  # building a graph computes nothing
    assert counter.total_computes == 0
    with pytest.raises(RuntimeError, match="Too many computes"), raise_if_dask_computes():
        x.compute()
    with pytest.raises(RuntimeError, match="Too many computes"), raise_if_dask_computes():
        np.asarray(x)
    with raise_if_dask_computes(max_computes=2) as counter:
        assert x.compute() == 20 and dask.compute(x)[0] == 20
    assert counter.total_computes == 2
    with pytest.raises(RuntimeError, match="3 > max_computes=2"), raise_if_dask_computes(max_computes=2):
        for _ in range(3):
            x.compute()
    assert x.compute() == 20  # the scheduler is restored afterwards


def test_raise_if_dask_computes_under_a_default_client(client):
    x = (da.ones(10, chunks=5) + 1).sum()
    with pytest.raises(RuntimeError, match="Too many computes"), raise_if_dask_computes():
        x.compute()
    assert x.compute() == 20


def test_make_store_has_the_ingested_layout(tmp_path):
    """Same variables, dims, dtypes, encodings and chunking per slot as a store written by ``ingest.run``."""
    real = make_refc_store(tmp_path / "real.zarr", "2022-06-01T00", "2022-06-01T02", leads=(0, 1))
    tiny = make_tiny_store(tmp_path / "tiny.zarr", nt=2, missing=((1, 1),))
    a, b = store.open_store(real), store.open_store(tiny)
    assert set(a.variables) == set(b.variables)
    for name in a.variables:
        assert a[name].dims == b[name].dims, name
        assert a[name].dtype == b[name].dtype, name
    assert b["lead_time"].dtype == np.int16
    assert a["refc"].encoding["chunks"][:2] == b["refc"].encoding["chunks"][:2] == (1, 1)  # one image per chunk
    for name in ("refc", "status", "grib_bytes"):
        assert a[name].encoding["chunks"][:2] == b[name].encoding["chunks"][:2], name
        assert a[name].encoding.get("shards") == b[name].encoding.get("shards"), name
        assert a[name].attrs.get("scale_factor") == b[name].attrs.get("scale_factor"), name
    assert a["status"].attrs["flag_meanings"] == b["status"].attrs["flag_meanings"]
    assert b["status"].values.tolist() == [[1, 1], [1, 2]]  # ok, and absent where the image is missing
    decoded = store.open_store(tiny)
    assert np.isnan(decoded["refc"].values[1, 1]).all() and np.isfinite(decoded["refc"].values[0]).all()


def test_make_store_embedding_only(tmp_path):
    e = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    e[1, 0] = np.nan
    times = np.datetime64("2022-06-01T00", "h") + np.array([0, 1, 3, 4]).astype("timedelta64[h]")
    cfg = make_store(tmp_path / "e.zarr", times, (0, 6), grid=(4, 5), embedding=e, embedding_chunk=2)
    ds = store.open_store(cfg)
    assert "refc" not in ds and ds["lead_time"].dtype == np.int16
    assert ds["embedding"].encoding["chunks"] == (2, 2, 3) and ds["embedding"].attrs["model_hash"] == "fake"
    np.testing.assert_array_equal(ds["embedding"].values, e)
    assert ds["latitude"].shape == (4, 5)
