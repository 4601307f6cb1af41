"""The accelerator search path, run on the CPU device, equals the numpy path."""

from __future__ import annotations

import numpy as np
import pytest

from wxdask import search

pytest.importorskip("keras")
from wxdask.knn_device import knn_prepared_device  # noqa: E402


def _case(seed, n=700, d=7, dup=True):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d)).astype(np.float32)
    if dup:  # exact ties: the lower index must win, as in the numpy path
        base[50:60] = base[40:50]
        base[::97] = np.nan
    t = np.arange(n, dtype=np.int64) // 3
    return base, t


@pytest.mark.parametrize("k, window, chunk, margin", [(5, 0, 256, 16), (10, 24, 100, 4), (3, 5, 4096, 1),
                                                      (1, 0, 64, 1)])
def test_device_path_equals_numpy(k, window, chunk, margin, monkeypatch):
    from wxdask import knn_device

    redone = []
    host = knn_device._knn_prepared

    def counting(q, *args, **kwargs):
        redone.append(q.shape[0])
        return host(q, *args, **kwargs)

    monkeypatch.setattr(knn_device, "_knn_prepared", counting)
    base, t = _case(k + window)
    prep = search.prepare_base(base, t)
    q_index = np.arange(0, base.shape[0], 3)
    q = base[q_index]
    want_i, want_d = search.knn_block(q, prep, k, q_index=q_index, q_time=t[q_index], exclude_window=window)
    got_i, got_d = knn_prepared_device(q, prep, k, q_index=q_index, q_time=t[q_index], window=window,
                                       chunk_size=chunk, margin=margin)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_array_equal(got_d, want_d)
    # the device answered: only near-ties at the candidate list's edge go back to the host
    assert sum(redone) <= 0.05 * len(q_index)


@pytest.mark.parametrize("seed", [0, 1])
def test_the_gpu_rounding_bound_still_gives_the_numpy_answer(seed, monkeypatch):
    """With TF32's coarser bound more rows are re-checked on the host; the answer is the same."""
    from wxdask import knn_device

    monkeypatch.setattr(knn_device, "_device_kind", lambda: "gpu")
    base, t = _case(seed, n=900, d=50)
    prep = search.prepare_base(base, t)
    q_index = np.arange(0, 900, 5)
    want = search.knn_block(base[q_index], prep, 10, q_index=q_index, q_time=t[q_index], exclude_window=6)
    got = knn_prepared_device(base[q_index], prep, 10, q_index=q_index, q_time=t[q_index], window=6)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def test_fewer_rows_than_k_and_empty_queries():
    base, t = _case(3, n=12, dup=False)
    prep = search.prepare_base(base, t)
    q = np.vstack([base[:2], np.full((1, base.shape[1]), np.nan, np.float32)])
    qi = np.array([0, 1, -1])
    got_i, got_d = knn_prepared_device(q, prep, 20, q_index=qi, q_time=np.array([0, 0, 0]), window=2)
    want_i, want_d = search.knn_block(q, prep, 20, q_index=qi, q_time=np.array([0, 0, 0]), exclude_window=2)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_array_equal(got_d, want_d)
    assert (got_i[2] == -1).all() and np.isnan(got_d[2]).all()


def test_uncertified_rows_fall_back_to_the_host(monkeypatch):
    """With a huge rounding bound nothing is certified: every row is searched on the host, same answer."""
    from wxdask import knn_device

    monkeypatch.setitem(knn_device._ROUNDOFF, "cpu", 10.0)
    base, t = _case(7)
    prep = search.prepare_base(base, t)
    q = base[:40]
    want = search.knn_block(q, prep, 4, q_index=np.arange(40))
    got = knn_prepared_device(q, prep, 4, q_index=np.arange(40), margin=2)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
