"""The search, its database: the neighbour record, the prepared database and time helpers (pure numpy).

Part of :mod:`wxdask.search`, which re-exports every name: :data:`NEIGHBOR_DTYPE`,
:class:`PreparedBase`, :func:`prepare_base` and :func:`window_hours`, with the
constants every search task uses.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from wxdask.config import parse_duration

#: One neighbour: database row, squared distance, its slot's time and lead.
NEIGHBOR_DTYPE = np.dtype([("index", "i8"), ("sqdist", "f4"), ("time", "M8[ns]"), ("lead", "i8")])
_NAT = np.datetime64("NaT", "ns")
_FMAX = np.float32(np.finfo(np.float32).max)
#: Database columns sampled to set a first threshold for a row with no k-th best yet.
_SAMPLE = 1024
#: Queries per GEMM within a task (keeps the distance matrix in cache-friendly pieces).
_QSUB = 1024
#: Database rows per device GEMM at least (the device path's chunks are larger than the host's).
DEVICE_CHUNK = 65536
#: Key of a missing neighbour (sorts last).
_MISSING = np.iinfo(np.int64).max


class PreparedBase(NamedTuple):
    """The database in the form every search task uses (one graph key).

    Attributes
    ----------
    aug : numpy.ndarray
        ``(n, d + 1)`` float32 rows ``[-2 b, |b|^2]``; a missing row is ``[0, ..., 0, inf]``.
    time : numpy.ndarray or None
        ``(n,)`` int64 hours of each row's initialisation time (for the exclusion window).
    lead : numpy.ndarray or None
        ``(n,)`` int64 lead of each row.
    """

    aug: np.ndarray
    time: np.ndarray | None
    lead: np.ndarray | None

    @property
    def n(self) -> int:
        return self.aug.shape[0]

    @property
    def d(self) -> int:
        return self.aug.shape[1] - 1

    def rows(self, index: np.ndarray) -> np.ndarray:
        """The original float32 rows at ``index`` (exact: ``-2`` is a power of two)."""
        return self.aug[index, :-1] * np.float32(-0.5)


# ----------------------------------------------------------------------------- core (numpy)


def prepare_base(base: np.ndarray, time: np.ndarray | None = None, lead: np.ndarray | None = None) -> PreparedBase:
    """Prepare a database for :func:`knn_block`: augmented rows, validity, times.

    Parameters
    ----------
    base : numpy.ndarray
        ``(n, d)`` embeddings; a row with any NaN or inf is missing.
    time : numpy.ndarray, optional
        ``(n,)`` initialisation times (datetime64 or int64 hours).
    lead : numpy.ndarray, optional
        ``(n,)`` leads in hours.

    Returns
    -------
    PreparedBase

    Examples
    --------
    >>> p = prepare_base(np.array([[1.0, 2.0], [np.nan, 0.0]]))
    >>> p.aug
    array([[-2., -4.,  5.],
           [ 0.,  0., inf]], dtype=float32)
    >>> p.rows(np.array([0]))
    array([[1., 2.]], dtype=float32)
    """
    b = np.asarray(base, dtype=np.float32)
    if b.ndim != 2:
        raise ValueError(f"base must be 2-D (n, d), got shape {b.shape}")
    if b.shape[0] >= 2**32:
        raise ValueError(f"a database of {b.shape[0]} rows is too large (at most 2**32 - 1)")
    aug = np.empty((b.shape[0], b.shape[1] + 1), dtype=np.float32)
    for r0 in range(0, b.shape[0], 65536):  # float64 norms without a float64 copy of the database
        rows = b[r0:r0 + 65536]
        valid = np.isfinite(rows).all(axis=1)
        np.multiply(rows, np.float32(-2.0), out=aug[r0:r0 + 65536, :-1])
        sq = np.einsum("ij,ij->i", rows.astype(np.float64), rows.astype(np.float64))
        aug[r0:r0 + 65536, -1] = np.where(valid, sq, np.inf).astype(np.float32)
        aug[r0:r0 + 65536, :-1][~valid] = 0.0
    return PreparedBase(aug, _hours(time), None if lead is None else np.asarray(lead, dtype=np.int64))


def _hours(time: np.ndarray | None) -> np.ndarray | None:
    if time is None:
        return None
    t = np.asarray(time)
    if np.issubdtype(t.dtype, np.datetime64):
        return t.astype("datetime64[h]").astype(np.int64)
    return t.astype(np.int64)


def window_hours(window: Any) -> int:
    """An exclusion window (hours, ``"1d"``-style text, or a timedelta64) as whole hours.

    Examples
    --------
    >>> window_hours("1d"), window_hours(np.timedelta64(3, "h")), window_hours(None)
    (24, 3, 0)
    """
    if isinstance(window, np.timedelta64):
        return int(window.astype("timedelta64[h]").astype(np.int64))
    if isinstance(window, str):
        return int(parse_duration(window, "exclude_window").astype(np.int64))
    return int(window or 0)
