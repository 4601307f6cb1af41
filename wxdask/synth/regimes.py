"""Regimes, their episodes and their climatology: storm sources, diurnal cycle, life cycle.

A renewal sequence of 2-6 day episodes, each of one regime (:data:`REGIME_NAMES`),
never the same twice in a row. Each regime has its own storm sources and steering
motion (the :data:`_REGIMES` table); sources give birth at a rate that follows
local solar time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, overload

import numpy as np

from wxdask.grid import get_grid, lonlat_to_xy
from wxdask.synth._rng import _T_BOUND, _T_REGIME, _T_REGIME0, _hours, _uniform

__all__ = ["REGIME_NAMES", "regime_of"]

#: Names of the weather regimes, indexed by the values :func:`regime_of` returns.
REGIME_NAMES = ("plains_mcs", "gulf_convection", "northeast_front", "quiet", "west_coast_stratiform")

_BLOCK_H = 96  # one episode boundary per 4-day block, at 24..72 h into it: episodes last 48..144 h
_N_BLOCKS = 16384  # 1970 .. 2149


@lru_cache(maxsize=32)
def _episodes(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Episode starts (hours since 1970, ``_N_BLOCKS + 1``) and their regimes (``_N_BLOCKS``)."""
    b = np.arange(_N_BLOCKS + 1, dtype=np.int64)
    starts = b * _BLOCK_H + 24 + np.floor(48 * _uniform(seed, _T_BOUND, b)).astype(np.int64)
    n = len(REGIME_NAMES)
    steps = 1 + np.floor((n - 1) * _uniform(seed, _T_REGIME, b[:-1])).astype(np.int64)
    steps[0] = int(n * _uniform(seed, _T_REGIME0, 0)[0])
    regimes = (np.cumsum(steps) % n).astype(np.int64)
    return starts, regimes


def _episode_of(seed: int, hours: np.ndarray) -> np.ndarray:
    starts, _ = _episodes(seed)
    k = np.searchsorted(starts, hours, side="right") - 1
    if np.any(k < 0) or np.any(k >= _N_BLOCKS):
        raise ValueError("synthetic weather is defined for 1970-01-04 .. 2149 only")
    return k


def regime_of(seed: int, times: Any) -> np.ndarray:
    """The true weather regime of each time.

    Regimes last 2-6 days (48-144 h) and never repeat back to back; there are
    ``len(REGIME_NAMES)`` of them.

    Parameters
    ----------
    seed : int
        Archive seed.
    times : array_like of datetime64 or str
        Times (initialisation times for the archive), any shape.

    Returns
    -------
    numpy.ndarray
        int64 regime indices into :data:`REGIME_NAMES`, the shape of ``times``.

    Examples
    --------
    >>> t = np.arange("2019-09-20T00", "2019-09-22T00", dtype="datetime64[h]")
    >>> r = regime_of(0, t)
    >>> r.shape, bool(r.min() >= 0 and r.max() < len(REGIME_NAMES))
    ((48,), True)
    """
    _, regimes = _episodes(int(seed))
    return regimes[_episode_of(int(seed), _hours(times))]


# ---------------------------------------------------------------------------
# The climate: storm sources of each regime.
# ---------------------------------------------------------------------------

_CELL, _LINE, _SHIELD = 0, 1, 2


@dataclass(frozen=True)
class _Source:
    kind: int
    lon: float
    lat: float
    rx_km: float  # half-axes of the birth region
    ry_km: float
    rate: float  # births per hour at the diurnal peak
    peak_lst: float  # local solar hour of the peak birth rate
    diurnal: float  # 0: no diurnal cycle, 1: none at the opposite hour
    life: tuple[float, float]  # hours
    dbz: tuple[float, float]  # peak reflectivity
    size_km: tuple[float, float]  # core (or shield) sigma
    season: float = 0.0  # birth-rate seasonality: > 0 peaks in July, < 0 in January (see _seasonal)


@dataclass(frozen=True)
class _Band:
    lon: float
    lat: float
    angle_deg: float  # direction of the band's axis, counter-clockwise from east
    length_km: tuple[float, float]
    width_km: tuple[float, float]
    dbz: tuple[float, float]
    speed: float  # fraction of the steering motion


@dataclass(frozen=True)
class _Regime:
    name: str
    steering: tuple[float, float]  # m/s, east and north
    sources: tuple[_Source, ...]
    bands: tuple[_Band, ...] = ()


_REGIMES = (
    _Regime(
        "plains_mcs",
        (13.0, -1.0),
        (
            _Source(_LINE, -98.5, 39.5, 450, 300, 0.3, 20.0, 0.85, (9, 18), (62, 76), (12, 18)),
            _Source(_CELL, -101.5, 38.0, 250, 400, 1.5, 17.0, 0.9, (2, 6), (55, 74), (10, 16)),
            _Source(_CELL, -94.0, 36.0, 400, 300, 0.7, 17.0, 0.8, (2, 5), (52, 70), (9, 14)),
            _Source(_SHIELD, -94.0, 41.0, 300, 200, 0.06, 6.0, 0.5, (10, 20), (26, 36), (120, 200)),
            _Source(_SHIELD, -97.0, 40.0, 600, 350, 1.56, 18.0, 0.4, (12, 30), (18, 34), (250, 400)),
            _Source(_SHIELD, -92.0, 46.0, 700, 250, 0.78, 12.0, 0.0, (12, 30), (16, 36), (150, 300)),
            _Source(_CELL, -97.0, 37.0, 900, 600, 28.0, 17.0, 0.8, (1.5, 4), (44, 62), (6, 11), 0.4),
        ),
    ),
    _Regime(
        "gulf_convection",
        (3.0, 2.0),
        (
            _Source(_CELL, -90.0, 31.0, 650, 130, 3.5, 15.0, 0.95, (2, 5), (52, 72), (8, 13)),
            _Source(_CELL, -81.5, 28.0, 130, 250, 2.5, 15.0, 0.95, (2, 5), (52, 72), (8, 13)),
            _Source(_CELL, -89.0, 27.0, 500, 150, 1.0, 6.0, 0.7, (3, 7), (42, 60), (9, 15)),
            _Source(_SHIELD, -92.0, 26.5, 350, 150, 0.1, 16.0, 0.6, (18, 30), (28, 40), (120, 200)),
            _Source(_SHIELD, -88.0, 30.0, 700, 300, 0.91, 16.0, 0.7, (12, 24), (16, 32), (250, 380)),
            _Source(_SHIELD, -84.0, 33.0, 700, 350, 1.43, 16.0, 0.7, (10, 24), (16, 34), (200, 350)),
            _Source(_LINE, -92.0, 31.5, 400, 150, 0.15, 18.0, 0.6, (6, 12), (52, 66), (8, 12)),
            _Source(_CELL, -86.0, 31.0, 1000, 350, 33.0, 15.0, 0.97, (1.5, 4), (44, 62), (6, 11), 0.3),
        ),
    ),
    _Regime(
        "northeast_front",
        (11.0, 6.0),
        (
            _Source(_CELL, -84.0, 37.0, 500, 250, 1.0, 16.0, 0.6, (2, 6), (50, 68), (9, 14)),
            _Source(_SHIELD, -77.0, 43.0, 350, 250, 0.12, 12.0, 0.0, (12, 24), (20, 34), (150, 250)),
            _Source(_SHIELD, -80.0, 42.0, 500, 300, 0.65, 12.0, 0.0, (12, 30), (16, 34), (250, 420)),
            _Source(_SHIELD, -88.0, 38.0, 600, 300, 0.65, 12.0, 0.0, (12, 30), (20, 38), (150, 300)),
            _Source(_LINE, -86.0, 37.0, 400, 250, 0.2, 18.0, 0.5, (6, 12), (50, 64), (8, 12)),
            _Source(_CELL, -82.0, 40.0, 800, 500, 19.0, 15.0, 0.5, (1.5, 4), (42, 59), (6, 10), 0.3),
        ),
        (
            _Band(-84.0, 39.0, 35.0, (1500, 2000), (40, 80), (32, 46), 0.3),
            _Band(-93.0, 33.5, 50.0, (900, 1300), (35, 65), (32, 46), 0.3),
        ),
    ),
    _Regime(
        "quiet",
        (6.0, 0.0),
        (
            _Source(_CELL, -109.0, 33.5, 300, 250, 0.7, 16.0, 1.0, (1, 4), (35, 55), (6, 10)),
            _Source(_CELL, -81.0, 27.5, 150, 200, 0.3, 15.0, 1.0, (1, 3), (38, 55), (5, 9)),
            _Source(_SHIELD, -107.0, 40.0, 300, 300, 0.05, 16.0, 0.8, (6, 12), (0, 12), (80, 150)),
            _Source(_SHIELD, -98.0, 47.0, 600, 200, 0.08, 16.0, 0.9, (6, 12), (0, 15), (120, 220)),
            _Source(_SHIELD, -88.0, 44.0, 900, 300, 0.1, 12.0, 0.0, (6, 15), (0, 15), (150, 300)),
            _Source(_CELL, -106.0, 36.0, 500, 400, 1.5, 16.0, 1.0, (1, 3), (32, 48), (4, 8), 0.8),
        ),
    ),
    _Regime(
        "west_coast_stratiform",
        (13.0, 2.0),
        (
            _Source(_SHIELD, -122.5, 44.0, 250, 350, 0.2, 12.0, 0.0, (18, 36), (22, 38), (150, 260)),
            _Source(_CELL, -121.0, 40.0, 250, 300, 0.6, 15.0, 0.3, (1, 3), (35, 50), (6, 10)),
            _Source(_SHIELD, -112.0, 43.0, 250, 200, 0.05, 15.0, 0.3, (10, 20), (20, 30), (80, 140)),
            _Source(_SHIELD, -118.0, 45.0, 400, 400, 0.65, 12.0, 0.0, (12, 30), (16, 34), (250, 420)),
            _Source(_SHIELD, -110.0, 42.0, 500, 400, 0.59, 12.0, 0.0, (12, 30), (16, 34), (150, 300)),
            _Source(_CELL, -118.0, 43.0, 600, 500, 14.0, 14.0, 0.3, (1.5, 4), (38, 54), (6, 10), -0.5),
        ),
        (
            _Band(-127.0, 41.0, 80.0, (1200, 1600), (40, 80), (30, 44), 0.35),
            _Band(-111.0, 46.0, 20.0, (700, 1100), (35, 65), (24, 34), 0.4),
        ),
    ),
)
assert tuple(r.name for r in _REGIMES) == REGIME_NAMES


_MAX_LIFE = int(max(s.life[1] for r in _REGIMES for s in r.sources))
_SLOTS = 48  # birth slots per (hour, source): births are Bernoulli per slot, rate / _SLOTS each


@lru_cache(maxsize=1)
def _source_table() -> dict[str, np.ndarray]:
    """Every regime's sources as flat arrays (projection metres for positions)."""
    rows = [(ri, s) for ri, reg in enumerate(_REGIMES) for s in reg.sources]
    x, y = lonlat_to_xy(get_grid("hrrr"), [s.lon for _, s in rows], [s.lat for _, s in rows])
    cols = {
        "regime": np.array([ri for ri, _ in rows]),
        "kind": np.array([s.kind for _, s in rows]),
        "x": x,
        "y": y,
        "lon": np.array([s.lon for _, s in rows]),
        "rx": np.array([s.rx_km for _, s in rows]) * 1e3,
        "ry": np.array([s.ry_km for _, s in rows]) * 1e3,
        "rate": np.array([s.rate for _, s in rows]),
        "peak_lst": np.array([s.peak_lst for _, s in rows]),
        "diurnal": np.array([s.diurnal for _, s in rows]),
    }
    for name in ("life", "dbz", "size_km"):
        lo_hi = np.array([getattr(s, name) for _, s in rows], dtype=np.float64)
        cols[name + "_lo"], cols[name + "_hi"] = lo_hi[:, 0], lo_hi[:, 1]
    cols["season"] = np.array([s.season for _, s in rows])
    assert np.all(cols["rate"] * (1 + np.abs(cols["season"])) < _SLOTS)
    return cols


def _diurnal(hours: np.ndarray, lon: np.ndarray, peak_lst: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """Birth-rate factor in (0, 1]: a von Mises bump in local solar time."""
    lst = (hours % 24) + lon / 15.0
    bump = np.exp(2.0 * (np.cos(2 * np.pi * (lst - peak_lst) / 24.0) - 1.0))
    return (1.0 - strength) + strength * bump


def _seasonal(hours: np.ndarray, season: np.ndarray) -> np.ndarray:
    """Birth-rate factor of the time of year: ``1 + season * cos(...)``, peaking mid-July for ``season > 0``."""
    return 1.0 + season * np.cos(2 * np.pi * (hours / 24.0 - 195.0) / 365.25)


def _envelope(a: np.ndarray) -> np.ndarray:
    """Life cycle in [0, 1] of age fraction ``a``: 0 at birth and death, quick growth, slow decay."""
    a = np.clip(a, 0.0, 1.0)
    return np.sin(np.pi * a**0.6)


@overload
def _smoothstep(x: float) -> float: ...
@overload
def _smoothstep(x: np.ndarray) -> np.ndarray: ...
def _smoothstep(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)
