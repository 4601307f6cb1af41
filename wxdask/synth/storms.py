"""Storms and the Gaussian blobs they are drawn with.

Storms are born by their regime's sources (:mod:`wxdask.synth.regimes`), move with
the steering flow of their birth hour and grow and decay over their lifetime.
Cells are elliptical cores with anvils; lines are chains of cells with trailing
stratiform rain; shields are broad stratiform areas with embedded cores; frontal
bands last an episode. A forecast for lead ``L`` displaces them and biases their
intensity with errors that belong to its run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from wxdask.grid import get_grid, lonlat_to_xy
from wxdask.synth._rng import _T_BAND, _T_BIRTH, _T_EPISODE, _chain, _draw, _hash
from wxdask.synth.regimes import (
    _CELL,
    _LINE,
    _MAX_LIFE,
    _REGIMES,
    _SHIELD,
    _SLOTS,
    _diurnal,
    _envelope,
    _episode_of,
    _episodes,
    _seasonal,
    _smoothstep,
    _source_table,
)

_EPISODE_JITTER_M = 150e3
_STEERING_JITTER = 3.0  # m/s per episode
_STORM_JITTER = 2.5  # m/s per storm
_POSITION_ERROR = 2.0  # m/s: a forecast's storms drift off by up to this much per hour of lead
_BAND_FADE_H = 12.0
_LINE_CELLS = 16
_SHIELD_CORES = 5
_BAND_BLOBS = 24
_BAND_CORES = 6


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
    rate = rate * _seasonal(births[ih], src["season"][isrc])
    slot_hash = _hash(seed, _T_BIRTH, births[ih][:, None], isrc[:, None], np.arange(_SLOTS)[None, :])
    born = _draw(slot_hash, 1)[..., 0] < (rate / _SLOTS)[:, None]
    row = np.nonzero(born)[0]
    ident, hb, ep, isrc = slot_hash[born], births[ih[row]], episode[ih[row]], isrc[row]
    p = _draw(ident, 7)
    life = src["life_lo"][isrc] + (src["life_hi"][isrc] - src["life_lo"][isrc]) * p[:, 0]
    age = (t - hb).astype(np.float64)
    alive = age < life
    ident, hb, ep, isrc, life, age, p = (
        ident[alive],
        hb[alive],
        ep[alive],
        isrc[alive],
        life[alive],
        age[alive],
        p[alive],
    )
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
        peak + 6.0 + 14.0 * uc[..., 6] * (0.6 + 0.4 * np.sin(phase)),
        env,
    )
    return _Blobs.concat([main, cores])


def _band_blobs(seed: int, t: int, lead: int) -> _Blobs:
    """Frontal bands of the current and the previous episode (which fades out)."""
    starts, regimes = _episodes(seed)
    k_now = int(_episode_of(seed, np.array([t]))[0])
    parts = []
    episode_bands = [
        (k, bi, band) for k in (k_now - 1, k_now) for bi, band in enumerate(_REGIMES[int(regimes[k])].bands)
    ]
    for k, bi, band in episode_bands:
        start, end = int(starts[k]), int(starts[k + 1])
        fade = _smoothstep((t - start) / _BAND_FADE_H) * _smoothstep((end + _BAND_FADE_H - t) / _BAND_FADE_H)
        if fade <= 0:
            continue
        hours = t - start
        ident = _hash(seed, _T_BAND, k, bi)
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
        across = bend * (1 - 4 * frac**2) + width * 0.6 * np.sin(
            2 * np.pi * (uj[:, 0] + hours / (8.0 + 8.0 * uj[:, 1]))
        )
        px = cx + frac * length * ca - across * sa
        py = cy + frac * length * sa + across * ca
        peak = band.dbz[0] + (band.dbz[1] - band.dbz[0]) * uj[:, 2]
        peak = peak + 4.0 * np.sin(2 * np.pi * (uj[:, 3] + hours / (6.0 + 6.0 * uj[:, 4])))
        spacing = length / _BAND_BLOBS
        parts.append(_Blobs.make(px, py, 1.5 * spacing, 0.6 * width, axis, peak, fade))
        # A broad shield of light echo around it.
        parts.append(_Blobs.make(px[::2], py[::2], 2.0 * spacing, 3.0 * width, axis, 8.0 + 12.0 * uj[::2, 5], fade))
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
