"""The explorer's core: the exact analog query and the mosaic (numpy in, numpy out), request errors, limits."""

from __future__ import annotations

import re
import threading
from typing import Any

import numpy as np

from wxdask.errors import WxdaskError

#: Largest number of analogs one rerun query may ask for.
MAX_K = 50
#: Images per row of the analogs' mosaic.
ANALOG_COLUMNS = 4
#: Pictures kept once drawn (least recently used out first); the store is read-only, so they stay right.
PNG_CACHE = 64
#: Tile queries kept once answered (least recently used out first).
TILE_CACHE = 32
#: Tile search modes the page offers (``query_tile``'s ``same-place`` and ``anywhere``).
TILE_MODES = ("same_place", "anywhere")
#: matplotlib's pyplot and a Keras model are not thread-safe: every render holds this lock.
_RENDER_LOCK = threading.Lock()


#: Parameters of a tile query: the slot, the point, the search.
TILE_PARAMS = ("time", "lead", "lat", "lon", "mode", "k", "window")


class ExploreRequestError(WxdaskError, ValueError):
    """A bad request to the explorer; ``status`` is the HTTP status (4xx) it answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = int(status)


# ----------------------------------------------------------------------------- core (numpy)


def brute_force_query(emb: np.ndarray, hours: np.ndarray, ti: int, li: int, k: int,
                      window_hours: int) -> list[tuple[int, int, float]]:
    """Exact k nearest other slots of slot ``(ti, li)``, as ``wxdask search`` defines them.

    Squared Euclidean distance (float64); slots whose initialisation time is less
    than ``window_hours`` from the query's are excluded (``0``: only the slot
    itself); slots with a NaN embedding are never neighbours; ties go to the
    earlier slot (lower time, then lower lead).

    Parameters
    ----------
    emb : numpy.ndarray
        ``(time, lead_time, latent)`` embeddings.
    hours : numpy.ndarray
        ``(time,)`` int hours of each initialisation time.
    ti, li : int
        Index of the query slot.
    k : int
        Neighbours wanted.
    window_hours : int
        Exclusion window in hours.

    Returns
    -------
    list of (int, int, float)
        ``(time index, lead index, squared distance)``, nearest first; fewer
        than ``k`` where fewer qualify; empty if the query has no embedding.

    Examples
    --------
    >>> e = np.array([[[0.0]], [[1.0]], [[3.0]], [[1.0]]], dtype=np.float32)
    >>> brute_force_query(e, np.arange(4), 0, 0, 2, 0)
    [(1, 0, 1.0), (3, 0, 1.0)]
    >>> brute_force_query(e, np.arange(4), 0, 0, 2, 2)
    [(3, 0, 1.0), (2, 0, 9.0)]
    """
    nt, nl, d = emb.shape
    flat = emb.reshape(nt * nl, d).astype(np.float64)
    q = flat[ti * nl + li]
    if not np.isfinite(q).all():
        return []
    sq = ((flat - q) ** 2).sum(axis=1)
    ok = np.asarray(np.isfinite(flat).all(axis=1))
    ok[ti * nl + li] = False
    if window_hours > 0:
        slot_hours = np.repeat(np.asarray(hours, dtype=np.int64), nl)
        ok &= np.abs(slot_hours - int(hours[ti])) >= window_hours
    cand = np.flatnonzero(ok)
    order = cand[np.lexsort((cand, sq[cand]))[:k]]
    return [(int(i // nl), int(i % nl), float(sq[i])) for i in order]


def mosaic(images: list[np.ndarray | None], ncols: int, gap: int = 2) -> np.ndarray:
    """Images ``(y, x)`` side by side in rows of ``ncols``, first at the top left.

    NaN (drawn grey) between images and for ``None``; -10 dBZ (blank) in unused cells. Row 0 is
    south in the store, so the blocks are placed for drawing with ``origin="lower"``.

    Examples
    --------
    >>> m = mosaic([np.zeros((2, 3)), None, np.ones((2, 3))], ncols=2, gap=1)
    >>> m.shape, int(np.isnan(m).sum()), int((m == -10).sum()), float(m[:2, :3].sum())
    ((5, 7), 17, 6, 6.0)
    """
    shape = next((im.shape for im in images if im is not None), (1, 1))
    ny, nx = shape
    nrows = -(-len(images) // ncols)
    out = np.full((nrows * ny + (nrows - 1) * gap, ncols * nx + (ncols - 1) * gap), np.nan, dtype=np.float32)
    for k in range(nrows * ncols):
        row = nrows - 1 - k // ncols  # drawn with origin="lower": the last block row is at the top
        r0, c0 = row * (ny + gap), (k % ncols) * (nx + gap)
        if k >= len(images):
            out[r0:r0 + ny, c0:c0 + nx] = -10.0
        elif images[k] is not None:
            out[r0:r0 + ny, c0:c0 + nx] = images[k]
    return out


def parse_window(text: str) -> int:
    """Exclusion window in whole hours from ``"24h"``, ``"2d"``, ``"6"`` or ``"0"``.

    Examples
    --------
    >>> parse_window("24h"), parse_window("2d"), parse_window("0")
    (24, 48, 0)
    """
    m = re.fullmatch(r"\s*(\d{1,6})\s*([hd]?)\s*", str(text))
    if not m:
        raise ExploreRequestError(f"window must be whole hours like '24h', '2d' or '0', got {text!r}")
    return int(m.group(1)) * (24 if m.group(2) == "d" else 1)


def _finite(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _jsonable(value: Any) -> Any:
    """Attributes (numpy scalars, arrays, NaN) to plain JSON values."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)

