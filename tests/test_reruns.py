"""Failed runs leave the store as it was; reruns with new parameters replace a stage's outputs.

Through the real CLI in a subprocess: exit status, one line on stderr, no
traceback, and the store's bytes before and after.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

pytest.importorskip("keras")

from wxdask.testing import file_digests, make_tiny_store  # noqa: E402


def _wx(*args, ok=True):
    res = subprocess.run([sys.executable, "-m", "wxdask.cli", *args, "--workers", "1", "-q"],
                         capture_output=True, text=True, timeout=600)
    if ok:
        assert res.returncode == 0, res.stderr[-3000:]
    return res


def _one_line_error(res, *needles):
    assert res.returncode == 1, res.stderr[-3000:]
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory, keras_model_dir):
    """A tiny store with embeddings of a real (untrained) Keras model, searched and clustered."""
    root = tmp_path_factory.mktemp("reruns")
    cfg = make_tiny_store(root / "s.zarr", nt=30, missing=((2, 1),))
    _wx("embed", "--store", cfg.url, "--model", keras_model_dir)
    _wx("search", "--store", cfg.url, "-k", "3", "--exclude-window", "2h")
    _wx("cluster", "--store", cfg.url, "-k", "3")
    return cfg.url, keras_model_dir


@pytest.mark.parametrize("damage", ["garbage", "empty", "truncated"])
def test_embed_with_an_unloadable_model_leaves_the_store_as_it_was(embedded, tmp_path, damage):
    url, model_dir = embedded
    bad = tmp_path / "bad-model"
    shutil.copytree(model_dir, bad)
    path = bad / "model.keras"
    data = path.read_bytes()
    path.write_bytes({"garbage": b"not a zip" * 100, "empty": b"", "truncated": data[: len(data) // 2]}[damage])
    before = file_digests(url)
    res = _wx("embed", "--store", url, "--model", str(bad), ok=False)
    _one_line_error(res, "cannot load model")
    assert file_digests(url) == before


def test_search_and_cluster_reruns_with_another_k_replace_their_outputs(embedded, tmp_path):
    url, _ = embedded
    work = tmp_path / "s.zarr"
    shutil.copytree(url, work)
    _wx("search", "--store", str(work), "-k", "5", "--exclude-window", "2h")
    _wx("cluster", "--store", str(work), "-k", "4")
    ds = xr.open_zarr(work)  # consolidated metadata is current
    assert ds.sizes["rank"] == 5 and ds.sizes["cluster_id"] == 4
    assert ds.attrs["search_k"] == 5 if "search_k" in ds.attrs else True
    assert ds.attrs["kmeans_k"] == 4
    assert np.isfinite(ds["neighbor_sqdist"].values[:, 0]).all(axis=-1).sum() > 0
    # back to the first parameters: the same outputs as the first run
    _wx("search", "--store", str(work), "-k", "3", "--exclude-window", "2h")
    first = xr.open_zarr(url)
    again = xr.open_zarr(work)
    np.testing.assert_array_equal(again["neighbor_time"].values, first["neighbor_time"].values)
    np.testing.assert_array_equal(again["neighbor_sqdist"].values, first["neighbor_sqdist"].values)


@pytest.mark.parametrize("args, needle", [
    (["--exclude-window", "100d"], "no slot"),
])
def test_a_search_where_nothing_qualifies_says_so_and_writes_nothing(embedded, args, needle):
    url, _ = embedded
    before = file_digests(url)
    res = _wx("search", "--store", url, *args, ok=False)
    _one_line_error(res, needle)
    assert file_digests(url) == before


def test_a_search_with_k_above_the_slots_counts_the_slots_left_short(embedded, tmp_path):
    url, _ = embedded
    work = tmp_path / "s.zarr"
    shutil.copytree(url, work)
    res = _wx("search", "--store", str(work), "-k", "70", "--exclude-window", "0")
    assert "fewer than 70 neighbours" in res.stdout + res.stderr
    ds = xr.open_zarr(work)
    assert ds.sizes["rank"] == 70 and np.isnan(ds["neighbor_sqdist"].values[..., -1]).all()
