"""A synthetic HRRR archive: REFC weather that behaves like weather, encoded as HRRR encodes it.

Core (pure): :func:`regime_of`, :func:`refc_field`, :func:`encode_refc`,
:func:`archive_file`. I/O: :func:`write_archive`, which writes an archive in the
exact ``noaa-hrrr-bdp-pds`` layout (keys, GRIB2 files, ``.idx`` sidecars) to a
directory or an S3 bucket.

The weather is a pure function of ``(seed, valid time, lead)``:

- A sequence of weather *regimes* (:data:`REGIME_NAMES`), each lasting 2-6 days,
  never the same twice in a row. Each regime has its own storm sources (Great
  Plains squall lines and cells, Gulf coast and Florida convection, a frontal band
  over the Northeast, monsoon showers, Pacific stratiform rain) and its own
  steering motion; each episode of a regime shifts them a little.
- Storms are born at a rate that follows the local solar time of their source
  (afternoon peak over land, nocturnal squall lines, early-morning convection
  over the Gulf), move with the steering flow of their birth hour, and grow and
  decay smoothly over their lifetime. Cells are elliptical Gaussian cores with
  anvils; lines are chains of cells with trailing stratiform rain; shields are
  broad stratiform areas with embedded cores; frontal bands last an episode.
- An advected noise texture roughens echoes; values are floored at -10 dBZ,
  capped softly below 75 and quantised to 1/16 dB, as HRRR stores them.
- The forecast for lead ``L`` is the truth at the valid time with errors that
  belong to that forecast run and grow with ``L``: displaced storms and biased
  intensities. Lead 0 is the truth.

Everything is vectorised numpy: a coarse field takes a few milliseconds, a full
HRRR field a fraction of a second.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Mapping, Sequence

import numpy as np

from wxdask.config import parse_leads, parse_time
from wxdask.errors import ConfigError
from wxdask.grid import Grid, get_grid, grib_grid_keys, latlon, lonlat_to_xy, projection_xy
from wxdask.ingest import hrrr_key
from wxdask.s3local import ARCHIVE_BUCKET

__all__ = [
    "REGIME_NAMES",
    "BUCKET",
    "CORRUPT_KINDS",
    "regime_of",
    "refc_field",
    "encode_refc",
    "archive_file",
    "parse_slots",
    "write_archive",
]

logger = logging.getLogger(__name__)

#: Bucket name of the public HRRR archive; local archives live under ``DIR/BUCKET``.
BUCKET = ARCHIVE_BUCKET
#: Names of the weather regimes, indexed by the values :func:`regime_of` returns.
REGIME_NAMES = ("plains_mcs", "gulf_convection", "northeast_front", "quiet", "west_coast_stratiform")
#: Ways :func:`archive_file` can damage a REFC message.
CORRUPT_KINDS = ("garbage", "truncated")

REFC_FLOOR = -10.0
_REFC_BITS = 11
_REFC_CAP = 75.0
_LEVEL_LABEL = "entire atmosphere"
_OLD_LEVEL_LABEL = "entire atmosphere (considered as a single layer)"

# ---------------------------------------------------------------------------
# Counter-based random numbers: a uniform in [0, 1) for any tuple of integers.
# ---------------------------------------------------------------------------

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_PROP_STEP = _U64(0xD1B54A32D192ED03)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _u64(key: Any) -> np.ndarray:
    a = np.atleast_1d(np.asarray(key))
    return a.astype(_U64) if a.dtype.kind == "u" else a.astype(np.int64).astype(_U64)


def _chain(h: np.ndarray, *keys: Any) -> np.ndarray:
    """Hash ``h`` combined with integer keys (broadcast)."""
    with np.errstate(over="ignore"):
        for key in keys:
            h = _mix(h ^ (_u64(key) + _GOLDEN + (h << _U64(6)) + (h >> _U64(2))))
    return h


def _hash(seed: int, tag: int, *keys: Any) -> np.ndarray:
    """A uint64 hash of the seed, a stream tag and integer keys (broadcast)."""
    with np.errstate(over="ignore"):
        h = _mix(_u64(seed) ^ (_U64(tag) * _GOLDEN))
    return _chain(h, *keys)


def _draw(h: np.ndarray, n: int) -> np.ndarray:
    """``n`` independent uniforms in [0, 1) per hash: shape ``h.shape + (n,)``."""
    with np.errstate(over="ignore"):
        x = _mix(h[..., np.newaxis] ^ (np.arange(1, n + 1, dtype=_U64) * _PROP_STEP))
    return (x >> _U64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _uniform(seed: int, tag: int, *keys: Any) -> np.ndarray:
    """Uniforms in [0, 1), a pure function of the seed, a tag and integer keys (broadcast)."""
    return _draw(_hash(seed, tag, *keys), 1)[..., 0]


# Tags keep the random streams of different quantities apart.
_T_BOUND, _T_REGIME, _T_REGIME0, _T_EPISODE, _T_BIRTH, _T_BAND, _T_ERR, _T_TEXTURE, _T_OTHER = range(9)

# ---------------------------------------------------------------------------
# Regimes: a renewal sequence of 2-6 day episodes.
# ---------------------------------------------------------------------------

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


def _hours(times: Any) -> np.ndarray:
    """Hours since 1970-01-01T00 (int64) of datetime64 values or ISO strings."""
    t = np.asarray(times)
    if t.dtype.kind in "US":
        t = t.astype("datetime64[h]")
    return np.asarray(t.astype("datetime64[h]").astype(np.int64))


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
    band: _Band | None = None


_REGIMES = (
    _Regime(
        "plains_mcs",
        (13.0, -1.0),
        (
            _Source(_LINE, -98.5, 39.5, 450, 300, 0.3, 20.0, 0.85, (9, 18), (62, 76), (12, 18)),
            _Source(_CELL, -101.5, 38.0, 250, 400, 1.5, 17.0, 0.9, (2, 6), (55, 74), (10, 16)),
            _Source(_CELL, -94.0, 36.0, 400, 300, 0.7, 17.0, 0.8, (2, 5), (52, 70), (9, 14)),
            _Source(_SHIELD, -94.0, 41.0, 300, 200, 0.06, 6.0, 0.5, (10, 20), (26, 36), (120, 200)),
            _Source(_SHIELD, -97.0, 40.0, 600, 350, 1.2, 18.0, 0.4, (12, 30), (8, 22), (250, 400)),
            _Source(_SHIELD, -92.0, 46.0, 700, 250, 0.6, 12.0, 0.0, (12, 30), (5, 25), (150, 300)),
        ),
    ),
    _Regime(
        "gulf_convection",
        (3.0, 2.0),
        (
            _Source(_CELL, -90.0, 31.0, 650, 130, 3.5, 15.0, 0.95, (2, 5), (52, 72), (8, 13)),
            _Source(_CELL, -81.5, 28.0, 130, 250, 2.5, 15.0, 0.95, (2, 5), (52, 72), (8, 13)),
            _Source(_CELL, -89.0, 27.0, 500, 150, 1.0, 6.0, 0.7, (3, 7), (42, 60), (9, 15)),
            _Source(_SHIELD, -92.0, 26.5, 350, 150, 0.1, 12.0, 0.0, (18, 30), (28, 40), (120, 200)),
            _Source(_SHIELD, -88.0, 30.0, 700, 300, 0.7, 16.0, 0.5, (12, 24), (5, 18), (250, 380)),
            _Source(_SHIELD, -84.0, 33.0, 700, 350, 1.1, 16.0, 0.5, (10, 24), (5, 22), (200, 350)),
        ),
    ),
    _Regime(
        "northeast_front",
        (11.0, 6.0),
        (
            _Source(_CELL, -84.0, 37.0, 500, 250, 1.0, 16.0, 0.6, (2, 6), (50, 68), (9, 14)),
            _Source(_SHIELD, -77.0, 43.0, 350, 250, 0.12, 12.0, 0.0, (12, 24), (20, 34), (150, 250)),
            _Source(_SHIELD, -80.0, 42.0, 500, 300, 0.5, 12.0, 0.0, (12, 30), (5, 20), (250, 420)),
            _Source(_SHIELD, -88.0, 38.0, 600, 300, 0.5, 12.0, 0.0, (12, 30), (10, 30), (150, 300)),
        ),
        _Band(-84.0, 39.0, 35.0, (1500, 2000), (70, 120), (28, 40), 0.3),
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
        ),
    ),
    _Regime(
        "west_coast_stratiform",
        (13.0, 2.0),
        (
            _Source(_SHIELD, -122.5, 44.0, 250, 350, 0.2, 12.0, 0.0, (18, 36), (22, 38), (150, 260)),
            _Source(_CELL, -121.0, 40.0, 250, 300, 0.6, 15.0, 0.3, (1, 3), (35, 50), (6, 10)),
            _Source(_SHIELD, -112.0, 43.0, 250, 200, 0.05, 15.0, 0.3, (10, 20), (20, 30), (80, 140)),
            _Source(_SHIELD, -118.0, 45.0, 400, 400, 0.5, 12.0, 0.0, (12, 30), (5, 20), (250, 420)),
            _Source(_SHIELD, -110.0, 42.0, 500, 400, 0.45, 12.0, 0.0, (12, 30), (5, 22), (150, 300)),
        ),
        _Band(-127.0, 41.0, 80.0, (1200, 1600), (70, 120), (26, 38), 0.35),
    ),
)
assert tuple(r.name for r in _REGIMES) == REGIME_NAMES

_MAX_LIFE = int(max(s.life[1] for r in _REGIMES for s in r.sources))
_SLOTS = 4  # birth slots per (hour, source): births are Bernoulli per slot, rate / _SLOTS each
_EPISODE_JITTER_M = 150e3
_STEERING_JITTER = 3.0  # m/s per episode
_STORM_JITTER = 2.5  # m/s per storm
_POSITION_ERROR = 2.0  # m/s: a forecast's storms drift off by up to this much per hour of lead
_BAND_FADE_H = 12.0
_EDGE_DB = 8.0  # a blob's profile reaches -10 - _EDGE_DB far away: echoes have clean edges
_TEXTURE_DB = 3.0
_TEXTURE_WIND = (8.0, 2.0)  # m/s, the texture's constant drift
_LINE_CELLS = 16
_SHIELD_CORES = 5
_BAND_BLOBS = 16
_BAND_CORES = 6


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
    assert np.all(cols["rate"] < _SLOTS)
    return cols


def _diurnal(hours: np.ndarray, lon: np.ndarray, peak_lst: np.ndarray, strength: np.ndarray) -> np.ndarray:
    """Birth-rate factor in (0, 1]: a von Mises bump in local solar time."""
    lst = (hours % 24) + lon / 15.0
    bump = np.exp(2.0 * (np.cos(2 * np.pi * (lst - peak_lst) / 24.0) - 1.0))
    return (1.0 - strength) + strength * bump


def _envelope(a: np.ndarray) -> np.ndarray:
    """Life cycle in [0, 1] of age fraction ``a``: 0 at birth and death, quick growth, slow decay."""
    a = np.clip(a, 0.0, 1.0)
    return np.sin(np.pi * a**0.6)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


# ---------------------------------------------------------------------------
# Storms -> blobs
# ---------------------------------------------------------------------------


@dataclass
class _Blobs:
    """Elliptical Gaussian blobs: centre (m), sigmas along/across ``theta`` (m), peak dBZ, life envelope."""

    x: np.ndarray
    y: np.ndarray
    sa: np.ndarray
    sb: np.ndarray
    theta: np.ndarray
    peak: np.ndarray
    env: np.ndarray

    @staticmethod
    def make(x: Any, y: Any, sa: Any, sb: Any, theta: Any, peak: Any, env: Any) -> _Blobs:
        """Blobs from broadcastable arrays, flattened."""
        arrays = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (x, y, sa, sb, theta, peak, env)))
        return _Blobs(*(a.ravel() for a in arrays))

    @staticmethod
    def concat(parts: Sequence[_Blobs]) -> _Blobs:
        return _Blobs(*(np.concatenate([getattr(p, f) for p in parts]) for f in _BLOB_FIELDS))

    def select(self, mask: np.ndarray) -> _Blobs:
        return _Blobs(*(getattr(self, f)[mask] for f in _BLOB_FIELDS))


_BLOB_FIELDS = ("x", "y", "sa", "sb", "theta", "peak", "env")


def _steering(seed: int, episode: Any) -> tuple[np.ndarray, np.ndarray]:
    """This episode's steering motion (m/s): its regime's, jittered."""
    _, regimes = _episodes(seed)
    base = np.array([r.steering for r in _REGIMES])[regimes[episode]]
    jitter = (2 * _draw(_hash(seed, _T_EPISODE, episode), 2) - 1) * _STEERING_JITTER
    return base[..., 0] + jitter[..., 0], base[..., 1] + jitter[..., 1]


def _storms(seed: int, t: int, lead: int) -> dict[str, np.ndarray]:
    """Storms alive at valid hour ``t`` as forecast ``lead`` hours ahead (0: truth)."""
    src = _source_table()
    births = t - np.arange(0, _MAX_LIFE + 1, dtype=np.int64)
    episode = _episode_of(seed, births)
    _, regimes = _episodes(seed)
    # Sources of the regime of each birth hour; a Bernoulli draw per birth slot.
    ih, isrc = np.nonzero(src["regime"][np.newaxis, :] == regimes[episode][:, np.newaxis])
    rate = src["rate"][isrc] * _diurnal(births[ih], src["lon"][isrc], src["peak_lst"][isrc], src["diurnal"][isrc])
    slot_hash = _hash(seed, _T_BIRTH, births[ih][:, None], isrc[:, None], np.arange(_SLOTS)[None, :])
    born = _draw(slot_hash, 1)[..., 0] < (rate / _SLOTS)[:, None]
    row = np.nonzero(born)[0]
    ident, hb, ep, isrc = slot_hash[born], births[ih[row]], episode[ih[row]], isrc[row]
    p = _draw(ident, 7)
    life = src["life_lo"][isrc] + (src["life_hi"][isrc] - src["life_lo"][isrc]) * p[:, 0]
    age = (t - hb).astype(np.float64)
    alive = age < life
    ident, hb, ep, isrc, life, age, p = ident[alive], hb[alive], ep[alive], isrc[alive], life[alive], age[alive], p[alive]
    # Birth position: the source's region, shifted for this episode.
    shift = (2 * _draw(_hash(seed, _T_EPISODE, ep, isrc), 2) - 1) * _EPISODE_JITTER_M
    r, phi = np.sqrt(p[:, 1]), 2 * np.pi * p[:, 2]
    x0 = src["x"][isrc] + shift[:, 0] + src["rx"][isrc] * r * np.cos(phi)
    y0 = src["y"][isrc] + shift[:, 1] + src["ry"][isrc] * r * np.sin(phi)
    # Motion: the steering of the birth hour's episode, plus the storm's own.
    vx, vy = _steering(seed, ep)
    vx = vx + (2 * p[:, 3] - 1) * _STORM_JITTER
    vy = vy + (2 * p[:, 4] - 1) * _STORM_JITTER
    x = x0 + vx * age * 3600.0
    y = y0 + vy * age * 3600.0
    peak = src["dbz_lo"][isrc] + (src["dbz_hi"][isrc] - src["dbz_lo"][isrc]) * p[:, 5]
    size = 1e3 * (src["size_km_lo"][isrc] + (src["size_km_hi"][isrc] - src["size_km_lo"][isrc]) * p[:, 6])
    if lead > 0:
        # This forecast run's errors: displacement and intensity bias growing with lead.
        err = 2 * _draw(_chain(ident, t - lead), 3) - 1
        x = x + err[:, 0] * _POSITION_ERROR * lead * 3600.0
        y = y + err[:, 1] * _POSITION_ERROR * lead * 3600.0
        peak = peak + err[:, 2] * 0.5 * min(lead, 12)
    return {
        "ident": ident,
        "kind": src["kind"][isrc],
        "x": x,
        "y": y,
        "heading": np.arctan2(vy, vx),
        "peak": peak,
        "size": size,
        "env": _envelope(age / life),
        "age": age,
    }


def _cell_blobs(st: dict[str, np.ndarray]) -> _Blobs:
    """A core and its anvil, downstream."""
    x, y, heading, peak, size, env = (st[k] for k in ("x", "y", "heading", "peak", "size", "env"))
    u = _draw(_chain(st["ident"], 1), 5)
    core = _Blobs.make(x, y, size, size * (0.65 + 0.3 * u[:, 1]), heading + (2 * u[:, 0] - 1) * 0.6, peak, env)
    anvil_size = size * (3.0 + 1.5 * u[:, 2])
    anvil = _Blobs.make(
        x + np.cos(heading) * size * 1.2,
        y + np.sin(heading) * size * 1.2,
        anvil_size,
        anvil_size * (0.5 + 0.3 * u[:, 3]),
        heading,
        8.0 + 0.25 * (peak - 8.0) + 6.0 * u[:, 4],
        env,
    )
    return _Blobs.concat([core, anvil])


def _line_blobs(st: dict[str, np.ndarray]) -> _Blobs:
    """A bowed chain of cells across the motion, with trailing stratiform rain."""
    x, y, heading, peak, size, env = (st[k][:, None] for k in ("x", "y", "heading", "peak", "size", "env"))
    u = _draw(_chain(st["ident"], 2), 6)[:, None, :]
    j = np.arange(_LINE_CELLS)[None, :]
    uc = _draw(_chain(st["ident"][:, None], 3, j), 4)
    length = 250e3 + 300e3 * u[..., 0]
    n_cells = _LINE_CELLS // 2 + np.floor(u[..., 1] * (_LINE_CELLS // 2 + 1))
    spacing = length / n_cells
    axis = heading + np.pi / 2 + (2 * u[..., 2] - 1) * 0.5
    bow = (0.1 + 0.2 * u[..., 3]) * length
    frac = (j + 0.5) / n_cells - 0.5  # -0.5 .. 0.5 along the line
    along = frac * length + (2 * uc[..., 0] - 1) * 0.15 * length / n_cells
    ahead = bow * (1 - 4 * frac**2)
    cells = _Blobs.make(
        x + along * np.cos(axis) + ahead * np.cos(heading),
        y + along * np.sin(axis) + ahead * np.sin(heading),
        np.maximum(size * (1.2 + 0.6 * uc[..., 1]), spacing * (0.7 + 0.3 * uc[..., 1])),
        size * (0.7 + 0.3 * uc[..., 2]),
        axis,
        peak - 12.0 * uc[..., 3] * (0.5 + np.abs(frac)),
        env,
    ).select(np.broadcast_to(j < n_cells, (x.shape[0], _LINE_CELLS)).ravel())
    behind = 60e3 + 40e3 * u[..., 4]
    strat = _Blobs.make(
        x - behind * np.cos(heading),
        y - behind * np.sin(heading),
        0.45 * length,
        70e3 + 60e3 * u[..., 5],
        axis,
        30.0 + 8.0 * u[..., 5],
        env,
    )
    return _Blobs.concat([cells, strat])


def _shield_blobs(st: dict[str, np.ndarray]) -> _Blobs:
    """A broad stratiform area with embedded cores that pulse over a few hours."""
    x, y, peak, size, env, age = (st[k][:, None] for k in ("x", "y", "peak", "size", "env", "age"))
    u = _draw(_chain(st["ident"], 4), 2)[:, None, :]
    j = np.arange(_SHIELD_CORES)[None, :]
    uc = _draw(_chain(st["ident"][:, None], 5, j), 7)
    theta = 2 * np.pi * u[..., 0]
    main = _Blobs.make(x, y, size, size * (0.45 + 0.3 * u[..., 1]), theta, peak, env)
    phase = 2 * np.pi * (uc[..., 0] + age / (5.0 + 5.0 * uc[..., 1]))
    ox = size * 0.8 * (2 * uc[..., 2] - 1) + size * 0.15 * np.cos(phase)
    oy = size * 0.5 * (2 * uc[..., 3] - 1) + size * 0.15 * np.sin(phase)
    cs = size * (0.15 + 0.15 * uc[..., 4])
    cores = _Blobs.make(
        x + ox * np.cos(theta) - oy * np.sin(theta),
        y + ox * np.sin(theta) + oy * np.cos(theta),
        cs,
        cs * (0.6 + 0.4 * uc[..., 5]),
        theta,
        peak + 4.0 + 8.0 * uc[..., 6] * (0.6 + 0.4 * np.sin(phase)),
        env,
    )
    return _Blobs.concat([main, cores])


def _band_blobs(seed: int, t: int, lead: int) -> _Blobs:
    """Frontal bands of the current and the previous episode (which fades out)."""
    starts, regimes = _episodes(seed)
    k_now = int(_episode_of(seed, np.array([t]))[0])
    parts = []
    for k in (k_now - 1, k_now):
        reg = _REGIMES[int(regimes[k])]
        band = reg.band
        if band is None:
            continue
        start, end = int(starts[k]), int(starts[k + 1])
        fade = _smoothstep((t - start) / _BAND_FADE_H) * _smoothstep((end + _BAND_FADE_H - t) / _BAND_FADE_H)
        if fade <= 0:
            continue
        hours = t - start
        ident = _hash(seed, _T_BAND, k)
        u = _draw(ident, 8)[0]
        bx, by = lonlat_to_xy(get_grid("hrrr"), band.lon, band.lat)
        vx, vy = (band.speed * v[0] for v in _steering(seed, np.array([k])))
        cx = bx + (2 * u[0] - 1) * _EPISODE_JITTER_M + vx * hours * 3600.0
        cy = by + (2 * u[1] - 1) * _EPISODE_JITTER_M + vy * hours * 3600.0
        if lead > 0:
            err = 2 * _draw(_chain(ident, t - lead), 2)[0] - 1
            cx += err[0] * _POSITION_ERROR * 0.75 * lead * 3600.0
            cy += err[1] * _POSITION_ERROR * 0.75 * lead * 3600.0
        axis = np.radians(band.angle_deg) + (2 * u[2] - 1) * 0.25
        length = 1e3 * (band.length_km[0] + (band.length_km[1] - band.length_km[0]) * u[3])
        width = 1e3 * (band.width_km[0] + (band.width_km[1] - band.width_km[0]) * u[4])
        bend = (2 * u[5] - 1) * 0.15 * length
        ca, sa = np.cos(axis), np.sin(axis)
        # Segments along a bent axis that wobble and pulse.
        j = np.arange(_BAND_BLOBS)
        uj = _draw(_chain(ident, 1, j), 6)
        frac = (j + 0.5) / _BAND_BLOBS - 0.5
        across = bend * (1 - 4 * frac**2) + width * 0.6 * np.sin(2 * np.pi * (uj[:, 0] + hours / (8.0 + 8.0 * uj[:, 1])))
        px = cx + frac * length * ca - across * sa
        py = cy + frac * length * sa + across * ca
        peak = band.dbz[0] + (band.dbz[1] - band.dbz[0]) * uj[:, 2]
        peak = peak + 4.0 * np.sin(2 * np.pi * (uj[:, 3] + hours / (6.0 + 6.0 * uj[:, 4])))
        spacing = length / _BAND_BLOBS
        parts.append(_Blobs.make(px, py, 1.2 * spacing, width, axis, peak, fade))
        # A broad shield of light echo around it.
        parts.append(_Blobs.make(px[::2], py[::2], 2.0 * spacing, 3.5 * width, axis, 5.0 + 10.0 * uj[::2, 5], fade))
        # Embedded convection near its leading edge.
        c = np.arange(_BAND_CORES)
        uc = _draw(_chain(ident, 2, c), 5)
        cf = uc[:, 0] - 0.5
        cacross = bend * (1 - 4 * cf**2) + width * (0.5 + 0.6 * np.sin(2 * np.pi * (uc[:, 1] + hours / 9.0)))
        csize = 1e3 * (8.0 + 6.0 * uc[:, 2])
        parts.append(
            _Blobs.make(
                cx + cf * length * ca - cacross * sa,
                cy + cf * length * sa + cacross * ca,
                2.0 * csize,
                csize,
                axis,
                45.0 + 15.0 * uc[:, 3] * (0.5 + 0.5 * np.sin(2 * np.pi * (uc[:, 4] + hours / 7.0))),
                fade,
            )
        )
    return _Blobs.concat(parts) if parts else _Blobs.make(*([np.zeros(0)] * 7))


def _blobs(seed: int, t: int, lead: int) -> _Blobs:
    """Every blob of the weather at valid hour ``t`` (forecast ``lead``)."""
    st = _storms(seed, t, lead)

    def of_kind(kind: int) -> dict[str, np.ndarray]:
        return {k: v[st["kind"] == kind] for k, v in st.items()}

    blobs = _Blobs.concat(
        [
            _cell_blobs(of_kind(_CELL)),
            _line_blobs(of_kind(_LINE)),
            _shield_blobs(of_kind(_SHIELD)),
            _band_blobs(seed, t, lead),
        ]
    )
    return blobs.select(blobs.env > 1e-3)


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _origin(grid: Grid) -> tuple[float, float]:
    x, y = projection_xy(grid)
    return float(x[0]), float(y[0])


def _render(blobs: _Blobs, grid: Grid) -> np.ndarray:
    """Max over blobs of their dBZ profiles on the grid, float32, not yet floored.

    A blob's profile is ``base + amp * exp(-d^2 / 2)`` (``d`` its Mahalanobis
    distance) with ``base = -10 - _EDGE_DB``: it crosses the -10 floor at a
    finite distance, so each blob only touches a window of the grid.
    """
    ny, nx = grid.shape
    base = REFC_FLOOR - _EDGE_DB
    field = np.zeros((ny, nx), dtype=np.float32)  # amplitude above base
    if blobs.x.size:
        x0, y0 = _origin(grid)
        dx = grid.dx
        # Storms intensify quickly and shrink as they decay. A blob narrower than a
        # grid cell is widened (in quadrature) so that it never falls between points.
        amp = (blobs.peak - base) * blobs.env**0.4
        grow = 0.4 + 0.6 * blobs.env
        widen = (0.6 * dx) ** 2
        sa = np.sqrt((blobs.sa * grow) ** 2 + widen) / dx
        sb = np.sqrt((blobs.sb * grow) ** 2 + widen) / dx
        px = (blobs.x - x0) / dx
        py = (blobs.y - y0) / dx
        # Only the part above the floor matters: d^2 < 2 ln(amp / _EDGE_DB).
        reach = np.sqrt(2 * np.log(np.maximum(amp, _EDGE_DB) / _EDGE_DB)) + 0.5
        r = reach * np.maximum(sa, sb)
        i0 = np.maximum(np.floor(py - r), 0).astype(np.int64)
        i1 = np.minimum(np.ceil(py + r) + 1, ny).astype(np.int64)
        j0 = np.maximum(np.floor(px - r), 0).astype(np.int64)
        j1 = np.minimum(np.ceil(px + r) + 1, nx).astype(np.int64)
        # -d^2/2 = qa x^2 + qb x y + qc y^2 (pixel offsets x east, y north).
        c, s = np.cos(blobs.theta), np.sin(blobs.theta)
        ia, ib = 1 / sa**2, 1 / sb**2
        qa = -0.5 * (c * c * ia + s * s * ib)
        qb = -c * s * (ia - ib)
        qc = -0.5 * (s * s * ia + c * c * ib)
        todo = (i1 > i0) & (j1 > j0) & (amp > _EDGE_DB)
        rows = np.arange(ny, dtype=np.float32)
        cols = np.arange(nx, dtype=np.float32)
        params = zip(*(a[todo].tolist() for a in (i0, i1, j0, j1, px, py, qa, qb, qc, np.log(np.maximum(amp, 1e-9)))))
        for a0, a1, b0, b1, x, y, ka, kb, kc, log_amp in params:
            yy = rows[a0:a1] - y
            xx = cols[b0:b1] - x
            outer = yy[:, None] * (kc * yy[:, None] + kb * xx[None, :])
            outer += ka * xx * xx + log_amp
            win = field[a0:a1, b0:b1]
            np.maximum(win, np.exp(outer, out=outer), out=win)
    field += np.float32(base)
    return field


@lru_cache(maxsize=8)
def _texture_tile(seed: int, cell_m: float, corr_m: float, n: int = 256) -> np.ndarray:
    """Periodic Gaussian-correlated noise tile, unit variance, float32."""
    white = _uniform(seed, _T_TEXTURE, np.arange(n * n)).reshape(n, n) - 0.5
    k = np.fft.fftfreq(n, d=cell_m)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    spec = np.fft.fft2(white) * np.exp(-2 * (np.pi * corr_m) ** 2 * k2)
    tile = np.fft.ifft2(spec).real
    tile = (tile - tile.mean()) / tile.std()
    return tile.astype(np.float32)


def _texture(seed: int, grid: Grid, t: int, lead: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The advected texture at grid points ``(rows, cols)``; bilinear from a periodic tile."""
    corr = max(15e3, 1.0 * grid.dx)
    cell = corr / 3.0
    tile = _texture_tile(int(seed), cell, corr)
    n = tile.shape[0]
    x0, y0 = _origin(grid)
    sx = _TEXTURE_WIND[0] * 3600.0 * t
    sy = _TEXTURE_WIND[1] * 3600.0 * t
    if lead > 0:
        err = 2 * _draw(_hash(seed, _T_ERR, t - lead), 2)[0] - 1
        sx += err[0] * _POSITION_ERROR * lead * 3600.0
        sy += err[1] * _POSITION_ERROR * lead * 3600.0
    fx = ((x0 + cols * grid.dx - sx) / cell) % n
    fy = ((y0 + rows * grid.dx - sy) / cell) % n
    ix, iy = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
    wx, wy = (fx - ix).astype(np.float32), (fy - iy).astype(np.float32)
    jx, jy = (ix + 1) % n, (iy + 1) % n
    top = tile[iy, ix] * (1 - wx) + tile[iy, jx] * wx
    bottom = tile[jy, ix] * (1 - wx) + tile[jy, jx] * wx
    return top * (1 - wy) + bottom * wy


def refc_field(seed: int, init_time: Any, lead: int, grid: Grid | str = "coarse") -> np.ndarray:
    """Composite reflectivity of one synthetic HRRR forecast.

    A pure function of ``seed``, the valid time ``init_time + lead`` and ``lead``.

    Parameters
    ----------
    seed : int
        Archive seed.
    init_time : datetime64 or str
        Initialisation time (UTC), on the hour.
    lead : int
        Forecast hour, 0 for the analysis.
    grid : Grid or str
        ``"coarse"``, ``"hrrr"`` or a :class:`~wxdask.grid.Grid`.

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` float32 dBZ, row 0 south: -10 where there is no echo, values in
        1/16 dB steps, never above 75.

    Examples
    --------
    >>> f = refc_field(0, "2019-09-20T05", 1, "coarse")
    >>> f.shape, f.dtype, bool(f.min() >= -10), bool(np.all(f * 16 == np.round(f * 16)))
    ((66, 112), dtype('float32'), True, True)
    """
    grid = get_grid(grid)
    seed, lead = int(seed), int(lead)
    t = int(_hours(init_time)) + lead
    field = _render(_blobs(seed, t, lead), grid)
    # Texture roughens echoes and their edges, fading out away from them.
    base = REFC_FLOOR - _EDGE_DB
    rows, cols = np.nonzero(field > base + 0.5)
    if rows.size:
        weight = np.minimum((field[rows, cols] - base) / np.float32(_EDGE_DB), 1)
        field[rows, cols] += np.float32(_TEXTURE_DB) * weight * _texture(seed, grid, t, lead, rows, cols)
    # Soft cap: strong echoes saturate below _REFC_CAP.
    hot = field > 55.0
    if np.any(hot):
        knee = _REFC_CAP - 55.0
        field[hot] = 55.0 + knee * np.tanh((field[hot] - 55.0) / knee)
    np.maximum(field, np.float32(REFC_FLOOR), out=field)
    return np.round(field * 16) / np.float32(16)


# ---------------------------------------------------------------------------
# GRIB2 encoding
# ---------------------------------------------------------------------------

#: Section 1 keys of an NCEP HRRR message.
_SECTION1 = {
    "centre": 7,
    "subCentre": 0,
    "tablesVersion": 2,
    "localTablesVersion": 1,
    "significanceOfReferenceTime": 1,
    "productionStatusOfProcessedData": 0,
    "typeOfProcessedData": 1,
}


def _new_message(grid: Grid, product: Mapping[str, Any]) -> int:
    import eccodes

    h = eccodes.codes_grib_new_from_samples("GRIB2")
    for key, value in {**_SECTION1, **grib_grid_keys(grid)}.items():
        eccodes.codes_set(h, key, value)
    for key, value in {
        "discipline": 0,
        "productDefinitionTemplateNumber": 0,
        "typeOfGeneratingProcess": 2,
        "generatingProcessIdentifier": 83,
        **product,
    }.items():
        eccodes.codes_set(h, key, value)
    return h


def _set_time(h: int, init_time: Any, lead: int) -> None:
    import eccodes

    t = np.datetime64(init_time, "h").item()
    eccodes.codes_set(h, "dataDate", int(f"{t:%Y%m%d}"))
    eccodes.codes_set(h, "dataTime", int(f"{t:%H}00"))
    eccodes.codes_set(h, "stepUnits", 1)
    eccodes.codes_set(h, "indicatorOfUnitOfTimeRange", 1)
    eccodes.codes_set(h, "forecastTime", int(lead))


_REFC_PRODUCT = {
    "parameterCategory": 16,
    "parameterNumber": 196,
    "typeOfFirstFixedSurface": 10,
    "scaleFactorOfFirstFixedSurface": 0,
    "scaledValueOfFirstFixedSurface": 0,
    "typeOfSecondFixedSurface": 255,
}


@lru_cache(maxsize=4)
def _refc_template(grid: Grid) -> bytes:
    """A REFC message for ``grid`` (all -10) whose section 5 already holds binary scale -4.

    ecCodes' ``binaryScaleFactor`` is read-only; with ``optimizeScaleFactor=1`` the
    packer keeps the message's current binary scale (raising it only if the
    range does not fit the bits). Packing a -10..70 dB ramp once sets it to -4.
    """
    import eccodes

    h = _new_message(grid, _REFC_PRODUCT)
    try:
        eccodes.codes_set(h, "packingType", "grid_complex_spatial_differencing")
        eccodes.codes_set(h, "orderOfSpatialDifferencing", 2)
        eccodes.codes_set(h, "bitsPerValue", _REFC_BITS)
        eccodes.codes_set_values(h, np.linspace(REFC_FLOOR, 70.0, grid.nx * grid.ny))
        if eccodes.codes_get_long(h, "binaryScaleFactor") != -4:  # pragma: no cover - ecCodes behaviour
            raise RuntimeError("ecCodes did not choose binary scale -4 for a -10..70 dB ramp")
        eccodes.codes_set(h, "optimizeScaleFactor", 1)
        eccodes.codes_set(h, "decimalScaleFactor", 0)
        eccodes.codes_set_values(h, np.full(grid.nx * grid.ny, REFC_FLOOR))
        return eccodes.codes_get_message(h)
    finally:
        eccodes.codes_release(h)


@dataclass(frozen=True)
class _Other:
    var: str
    level: str
    category: int
    number: int
    surface: int
    height: int


#: Messages 2.. of a synthetic surface file; UGRD and VGRD share one message (wgrib2 numbers them n.1, n.2).
_OTHERS: tuple[tuple[_Other, ...], ...] = (
    (_Other("TMP", "2 m above ground", 0, 0, 103, 2),),
    (_Other("DPT", "2 m above ground", 0, 6, 103, 2),),
    (_Other("PRES", "surface", 3, 0, 1, 0),),
    (_Other("UGRD", "10 m above ground", 2, 2, 103, 10), _Other("VGRD", "10 m above ground", 2, 3, 103, 10)),
    (_Other("HGT", "surface", 3, 5, 1, 0),),
)


@lru_cache(maxsize=32)
def _other_template(grid: Grid, field: _Other) -> bytes:
    """A message for one of the other fields (simple packing, 16 bits), values zero."""
    import eccodes

    h = _new_message(
        grid,
        {
            "parameterCategory": field.category,
            "parameterNumber": field.number,
            "typeOfFirstFixedSurface": field.surface,
            "scaleFactorOfFirstFixedSurface": 0,
            "scaledValueOfFirstFixedSurface": field.height,
            "typeOfSecondFixedSurface": 255,
        },
    )
    try:
        eccodes.codes_set(h, "packingType", "grid_simple")
        eccodes.codes_set(h, "bitsPerValue", 16)
        eccodes.codes_set_values(h, np.zeros(grid.nx * grid.ny))
        return eccodes.codes_get_message(h)
    finally:
        eccodes.codes_release(h)


def encode_refc(field: np.ndarray, grid: Grid | str, init_time: Any, lead: int, *, old_label: bool = False) -> bytes:
    """Encode a REFC field as one GRIB2 message, exactly as HRRR encodes it.

    Template 3.30 (the grid's Lambert conformal keys, scanning mode 64); product
    template 4.0, discipline 0, category 16, number 196, surface 10 (entire
    atmosphere); data representation 5.3 (complex packing with 2nd-order spatial
    differencing), reference value the field's minimum, binary scale -4 (1/16 dB),
    decimal scale 0, group references in 11 bits (``bitsPerValue``; more only for
    fields far rougher than HRRR's, 0 for a constant field); no bitmap.

    Parameters
    ----------
    field : numpy.ndarray
        ``(ny, nx)`` dBZ, row 0 south, in 1/16 dB steps (other values are packed
        to the nearest step). The range must fit 11 bits at 1/16 dB (< 128 dB).
    grid : Grid or str
        The field's grid.
    init_time : datetime64 or str
        Initialisation time, written as ``dataDate``/``dataTime``.
    lead : int
        Forecast hour, written as ``forecastTime`` (hours).
    old_label : bool
        Accepted for symmetry with :func:`archive_file`. The level label lives in
        the ``.idx`` sidecar, not in the message: both labels describe surface type 10,
        so the bytes are the same.

    Returns
    -------
    bytes
        One whole GRIB2 message (``GRIB`` ... ``7777``). A field that is -10
        everywhere packs to a constant field of about 219 bytes.

    Examples
    --------
    >>> msg = encode_refc(np.full((66, 112), -10.0), "coarse", "2019-09-20T05", 0)
    >>> msg[:4], msg[-4:], len(msg)
    (b'GRIB', b'7777', 219)
    """
    import eccodes

    grid = get_grid(grid)
    values = np.asarray(field, dtype=np.float64)
    if values.shape != grid.shape:
        raise ValueError(f"field shape {values.shape} does not match grid {grid.name!r} {grid.shape}")
    h = eccodes.codes_new_from_message(_refc_template(grid))
    try:
        _set_time(h, init_time, lead)
        eccodes.codes_set(h, "optimizeScaleFactor", 1)
        eccodes.codes_set(h, "decimalScaleFactor", 0)
        eccodes.codes_set(h, "bitsPerValue", _REFC_BITS)
        eccodes.codes_set_values(h, values.ravel())
        scale = eccodes.codes_get_long(h, "binaryScaleFactor")
        if scale != -4:
            raise ValueError(f"REFC range {values.min()}..{values.max()} does not fit {_REFC_BITS} bits at 1/16 dB")
        return _widen_group_references(eccodes.codes_get_message(h), _REFC_BITS)
    finally:
        eccodes.codes_release(h)


def _section_offsets(message: bytes) -> dict[int, int]:
    """Byte offset of each section 1..7 of a one-field GRIB2 message."""
    offsets, i = {}, 16
    while message[i : i + 4] != b"7777":
        offsets[message[i + 4]] = i
        i += int.from_bytes(message[i : i + 4], "big")
    return offsets


def _widen_group_references(message: bytes, bits: int) -> bytes:
    """Repack the group reference values of a 5.3 message with ``bits`` bits each.

    In template 5.3, ``bitsPerValue`` (section 5, octet 20) is the width of the
    group reference values in section 7. ecCodes uses the fewest bits that hold
    them (8-11 for smooth fields); HRRR writes 11. Widening them changes no
    decoded value. Constant fields (0 bits) and wider references are left alone.
    """
    off = _section_offsets(message)
    s5, s7 = off[5], off[7]
    old = message[s5 + 19]
    if old == 0 or old >= bits:
        return message
    n_groups = int.from_bytes(message[s5 + 31 : s5 + 35], "big")
    order, n_extra = message[s5 + 47], message[s5 + 48]
    len7 = int.from_bytes(message[s7 : s7 + 4], "big")
    data = message[s7 + 5 : s7 + len7]
    head = n_extra * (order + 1)  # first values and the minimum of the differences
    n_old = (n_groups * old + 7) // 8
    raw = np.unpackbits(np.frombuffer(data[head : head + n_old], dtype=np.uint8))[: n_groups * old]
    refs = raw.reshape(n_groups, old).astype(np.int64) @ (1 << np.arange(old - 1, -1, -1))
    wide = (refs[:, None] >> np.arange(bits - 1, -1, -1)) & 1
    packed = np.packbits(wide.astype(np.uint8).ravel()).tobytes()
    new7 = data[:head] + packed + data[head + n_old :]
    section5 = bytearray(message[s5 : off[6]])
    section5[19] = bits
    section7 = (len(new7) + 5).to_bytes(4, "big") + b"\x07" + new7
    body = message[16:s5] + bytes(section5) + message[off[6] : s7] + section7
    return message[:8] + (16 + len(body) + 4).to_bytes(8, "big") + body + b"7777"


# ---------------------------------------------------------------------------
# The other fields of a surface file
# ---------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _geography(grid: Grid) -> dict[str, np.ndarray]:
    """Time-independent maps the other fields are built from (float32)."""
    lat, lon = latlon(grid)
    # A smooth "orography": the Rockies and the Appalachians.
    hgt = 2200.0 * np.exp(-(((lon + 108) / 6.0) ** 2)) * (lat > 30) + 600.0 * np.exp(
        -(((lon + 80) / 3.0) ** 2) - ((lat - 38) / 6.0) ** 2
    )
    solar = 2 * np.pi * (lon / 15.0 - 15.0) / 24.0  # local solar phase, 0 at 15 LST
    wave = np.radians(lon) * 6
    maps = {
        "lat": lat - 20.0,
        "hgt": hgt,
        "cos_solar": np.cos(solar),
        "sin_solar": np.sin(solar),
        "cos_wave": np.cos(wave),
        "sin_wave": np.sin(wave),
        "jet": np.cos(np.radians(lat - 40) * 4),
        "lon3": np.sin(np.radians(lon) * 3),
        "pres": 101325.0 * np.exp(-hgt / 8000.0),
    }
    return {k: v.astype(np.float32) for k, v in maps.items()}


def _other_values(var: str, seed: int, grid: Grid, t: int) -> np.ndarray:
    """Smooth plausible surface fields: a diurnal cycle, a season and a travelling wave."""
    g = _geography(grid)
    hour = 2 * np.pi * (t % 24) / 24.0
    diurnal = g["cos_solar"] * np.float32(math.cos(hour)) - g["sin_solar"] * np.float32(math.sin(hour))
    season = math.cos(2 * np.pi * t / (24.0 * 365.25))
    phase = 2 * np.pi * (t / 120.0 + float(_uniform(seed, _T_OTHER, 0)[0]))
    wave = g["sin_wave"] * np.float32(math.cos(phase)) + g["cos_wave"] * np.float32(math.sin(phase))
    if var == "TMP":
        return 300.0 - 0.75 * g["lat"] - 0.0065 * g["hgt"] + 6.0 * diurnal - 8.0 * season + 2.0 * wave
    if var == "DPT":
        return 290.0 - 0.9 * g["lat"] - 0.008 * g["hgt"] + 1.5 * diurnal - 6.0 * season + 3.0 * wave
    if var == "PRES":
        return g["pres"] + 600.0 * wave
    if var == "UGRD":
        return 4.0 + 5.0 * g["jet"] * (1 + 0.3 * wave)
    if var == "VGRD":
        return 3.0 * wave + 2.0 * g["lon3"]
    if var == "HGT":
        return g["hgt"]
    raise KeyError(var)  # pragma: no cover


def _encode_other(fields: Sequence[_Other], seed: int, grid: Grid, init_time: Any, lead: int) -> bytes:
    """One message (simple packing, 16 bits) holding one field, or several as sub-messages."""
    import eccodes

    t = int(_hours(init_time)) + lead
    messages = []
    for f in fields:
        h = eccodes.codes_new_from_message(_other_template(grid, f))
        try:
            _set_time(h, init_time, lead)
            eccodes.codes_set(h, "bitsPerValue", 16)
            eccodes.codes_set_values(h, _other_values(f.var, seed, grid, t).astype(np.float64).ravel())
            messages.append(eccodes.codes_get_message(h))
        finally:
            eccodes.codes_release(h)
    return messages[0] if len(messages) == 1 else _join_submessages(messages)


def _sections(message: bytes) -> list[tuple[int, bytes]]:
    """``(number, bytes)`` of each section 1..7 of a one-field GRIB2 message."""
    bounds = sorted(_section_offsets(message).values()) + [len(message) - 4]
    return [(message[a + 4], message[a:b]) for a, b in zip(bounds, bounds[1:])]


def _join_submessages(messages: Sequence[bytes]) -> bytes:
    """One GRIB2 message holding several fields on the same grid (sections 4-7 repeated)."""
    body = b"".join(s for _, s in _sections(messages[0]))
    for m in messages[1:]:
        body += b"".join(s for n, s in _sections(m) if n >= 4)
    total = 16 + len(body) + 4
    return messages[0][:8] + total.to_bytes(8, "big") + body + b"7777"


# ---------------------------------------------------------------------------
# Whole files
# ---------------------------------------------------------------------------


def _fcst_label(lead: int) -> str:
    return "anl" if lead == 0 else f"{lead} hour fcst"


def _corrupt(message: bytes, kind: str, seed: int) -> bytes:
    """Damage a REFC message: garbage in the middle of its data, or cut short."""
    if kind == "truncated":
        return message[: max(16, len(message) // 2)]
    if kind != "garbage":
        raise ConfigError(f"corruption kind must be one of {', '.join(CORRUPT_KINDS)}, got {kind!r}")
    off = _section_offsets(message)
    rng = np.random.default_rng([int(seed), len(message)])
    out = bytearray(message)
    payload = int.from_bytes(message[off[7] : off[7] + 4], "big") - 5
    constant = payload < 64
    if constant:
        # A constant field has (almost) no data section: garble section 5 from its reference value on.
        n = off[6] - off[5] - 11
        start = off[5] + 11
    else:
        # A few hundred bytes of garbage in the middle of section 7.
        n = min(300, payload // 2)
        start = off[7] + 5 + (payload - n) // 2
    out[start : start + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    if constant:
        out[start] = 0x7F  # an exponent that makes the reference value absurd (or NaN)
    return bytes(out)


def archive_file(
    seed: int,
    init_time: Any,
    lead: int,
    grid: Grid | str = "coarse",
    *,
    old_label: bool = False,
    corrupt: bool | str = False,
) -> tuple[bytes, str]:
    """A whole synthetic ``wrfsfcfFF.grib2`` file and its wgrib2-style ``.idx``.

    REFC is message 1 at byte 0, followed by TMP and DPT at 2 m, PRES, a
    UGRD/VGRD pair at 10 m in one message (``.idx`` numbers ``5.1`` and ``5.2``,
    same start byte) and HGT.

    Parameters
    ----------
    seed, init_time, lead, grid
        As for :func:`refc_field`.
    old_label : bool
        Write REFC's level as ``entire atmosphere (considered as a single layer)``
        in the ``.idx``, as older files do.
    corrupt : bool or str
        ``True`` or ``"garbage"``: overwrite a few hundred bytes in the middle of
        the REFC data section (length and ``7777`` kept). ``"truncated"``: cut the
        REFC message to half its length (the ``.idx`` lists the bytes as they are).

    Returns
    -------
    (bytes, str)
        The file and its ``.idx`` text.

    Examples
    --------
    >>> data, idx = archive_file(0, "2019-09-20T05", 1, "coarse")
    >>> idx.splitlines()[0]
    '1:0:d=2019092005:REFC:entire atmosphere:1 hour fcst:'
    >>> data[:4]
    b'GRIB'
    """
    grid = get_grid(grid)
    lead = int(lead)
    refc = encode_refc(refc_field(seed, init_time, lead, grid), grid, init_time, lead)
    if corrupt:
        refc = _corrupt(refc, "garbage" if corrupt is True else str(corrupt), seed)
    date = f"{np.datetime64(init_time, 'h').item():%Y%m%d%H}"
    fcst = _fcst_label(lead)
    level = _OLD_LEVEL_LABEL if old_label else _LEVEL_LABEL
    lines = [f"1:0:d={date}:REFC:{level}:{fcst}:"]
    parts, offset = [refc], len(refc)
    for number, fields in enumerate(_OTHERS, start=2):
        message = _encode_other(fields, seed, grid, init_time, lead)
        for sub, f in enumerate(fields, start=1):
            n = str(number) if len(fields) == 1 else f"{number}.{sub}"
            lines.append(f"{n}:{offset}:d={date}:{f.var}:{f.level}:{fcst}:")
        parts.append(message)
        offset += len(message)
    return b"".join(parts), "\n".join(lines) + "\n"


def parse_slots(
    items: Any, leads: Sequence[int], *, kinds: Sequence[str] | None = None, name: str = "slot"
) -> dict[tuple[np.datetime64, int], str]:
    """Parse slot specifications into ``{(init_time, lead): kind}``.

    Parameters
    ----------
    items : iterable, mapping or str
        Each item is an init time (all ``leads``), a ``(time, lead)`` or
        ``(time, lead, kind)`` tuple, or a string ``T``, ``T/L`` or ``T/L=kind``
        (``T=kind`` too); a string may list several, comma-separated. A mapping
        maps ``(time, lead)`` (or a time) to a kind.
    leads : sequence of int
        The leads an init time alone stands for.
    kinds : sequence of str, optional
        Valid kinds; the first is the default. ``None``: kinds are not allowed.
    name : str
        What the slots are, for error messages.

    Raises
    ------
    ConfigError
        If a time or lead is malformed, or a kind is unknown.

    Examples
    --------
    >>> s = parse_slots("2019-09-20T05/1,2019-09-20T06", [0, 1])
    >>> sorted((str(t), lead) for t, lead in s)
    [('2019-09-20T05', 1), ('2019-09-20T06', 0), ('2019-09-20T06', 1)]
    """
    default = kinds[0] if kinds else ""
    entries: list[tuple[Any, Any, str]] = []
    if isinstance(items, str):
        items = [p for p in items.split(",") if p.strip()]
    if isinstance(items, Mapping):
        items = [(*(k if isinstance(k, tuple) else (k,)), v) for k, v in items.items()]
    for item in items or ():
        if isinstance(item, str):
            text, _, kind = item.strip().partition("=")
            when, _, lead = text.partition("/")
            entries.append((when, lead or None, kind or default))
        elif isinstance(item, (tuple, list)):
            if not 1 <= len(item) <= 3:
                raise ConfigError(f"{name} must be a time, (time, lead) or (time, lead, kind), got {item!r}")
            when, lead, kind = (*item, None, None)[:3]
            entries.append((when, lead, kind or default))
        else:
            entries.append((item, None, default))
    out: dict[tuple[np.datetime64, int], str] = {}
    for when, lead, kind in entries:
        t = parse_time(when, name)
        if kind and (kinds is None or kind not in kinds):
            valid = f"one of {', '.join(kinds)}" if kinds else "no kind"
            raise ConfigError(f"{name} {when!r}: kind must be {valid}, got {kind!r}")
        slot_leads = leads if lead is None else parse_leads([lead])
        for one in slot_leads:
            out[(t, int(one))] = kind
    return out


def _archive_root(out: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    import fsspec

    if "://" in out and not out.startswith("file://"):
        fs, path = fsspec.core.url_to_fs(out, **dict(storage_options or {}))
        root = path.strip("/")
        bucket = root.split("/", 1)[0]
        if not bucket:
            raise ConfigError(f"archive URL must name a bucket, got {out!r}")
        if not fs.exists(bucket):
            acl = (storage_options or {}).get("s3_additional_kwargs", {}).get("ACL")
            logger.info("creating bucket %s", bucket)
            fs.mkdir(bucket, **({"acl": acl} if acl else {}))
        return fs, root
    local = out[len("file://") :] if out.startswith("file://") else out
    fs = fsspec.filesystem("file", auto_mkdir=True)
    return fs, os.path.join(os.path.abspath(local), BUCKET)


def write_archive(
    out: str,
    start: Any,
    end: Any,
    leads: Any = (0,),
    *,
    grid: Grid | str = "coarse",
    seed: int = 0,
    missing: Any = (),
    missing_idx: Any = (),
    corrupt: Any = (),
    old_label: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> list[str]:
    """Write a synthetic archive in the ``noaa-hrrr-bdp-pds`` layout.

    Parameters
    ----------
    out : str
        A local directory (files go to ``out/noaa-hrrr-bdp-pds/<key>``) or
        ``s3://bucket[/prefix]`` (files go to ``bucket/prefix/<key>``; the bucket
        is created when missing).
    start, end : str or datetime64
        Hourly initialisation times, ``end`` exclusive.
    leads : str or sequence of int
        Forecast hours of every run (``"0,1"``).
    grid : Grid or str
        ``"coarse"`` or ``"hrrr"``.
    seed : int
        Archive seed.
    missing : iterable
        Slots (see :func:`parse_slots`) whose GRIB file and ``.idx`` are not written.
    missing_idx : iterable
        Slots whose GRIB file is written without its ``.idx``.
    corrupt : iterable or mapping
        Slots whose REFC message is damaged, with kind ``"garbage"`` (default) or
        ``"truncated"``: ``[(t, lead, "truncated")]``, ``["T/L=truncated"]`` or
        ``{(t, lead): "garbage"}``.
    old_label : bool
        Write REFC's older level label in every ``.idx``.
    storage_options : mapping, optional
        fsspec options for S3 (``{"client_kwargs": {"endpoint_url": ...}, "key": ...,
        "secret": ..., "s3_additional_kwargs": {"ACL": "public-read"}}``).

    Returns
    -------
    list of str
        Keys written, relative to the bucket, in time and lead order (each GRIB
        key followed by its ``.idx`` key when written).

    Raises
    ------
    ConfigError
        If times or leads are invalid, end is not after start, or a listed slot
        is not in the archive.
    """
    t0, t1 = parse_time(start, "start"), parse_time(end, "end")
    if t1 <= t0:
        raise ConfigError(f"end ({end}) must be after start ({start}); end is exclusive")
    leads = parse_leads(leads)
    grid = get_grid(grid)
    times = np.arange(t0, t1, dtype="datetime64[h]")
    skip = parse_slots(missing, leads, name="missing")
    no_idx = parse_slots(missing_idx, leads, name="missing_idx")
    broken = parse_slots(corrupt, leads, kinds=CORRUPT_KINDS, name="corrupt")
    slots = {(t, lead) for t in times for lead in leads}
    for label, chosen in (("missing", skip), ("missing_idx", no_idx), ("corrupt", broken)):
        outside = sorted(set(chosen) - slots)
        if outside:
            t, lead = outside[0]
            raise ConfigError(f"{label} slot {t}/{lead} is not in the archive ({t0} .. {t1} exclusive, leads {list(leads)})")
    fs, root = _archive_root(out, storage_options)
    written: list[str] = []
    total = len(slots) - len(skip)
    done = 0
    for t in times:
        for lead in leads:
            if (t, lead) in skip:
                continue
            key = hrrr_key(t, lead)
            data, idx = archive_file(seed, t, lead, grid, old_label=old_label, corrupt=broken.get((t, lead), False))
            fs.pipe_file(f"{root}/{key}", data)
            written.append(key)
            if (t, lead) not in no_idx:
                fs.pipe_file(f"{root}/{key}.idx", idx.encode())
                written.append(key + ".idx")
            done += 1
            if done % 100 == 0 or done == total:
                logger.info("synthetic archive: %d/%d files written under %s", done, total, root)
    return written
