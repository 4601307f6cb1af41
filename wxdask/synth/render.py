"""Rendering: blobs to a REFC field on a grid, with texture, soft cap, floor and 1/16 dB steps."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np

from wxdask.grid import Grid, get_grid, projection_xy
from wxdask.synth._rng import _T_ERR, _T_TEXTURE, _draw, _hash, _hours, _uniform
from wxdask.synth.storms import _POSITION_ERROR, _Blobs, _blobs

__all__ = ["REFC_FLOOR", "refc_field"]

REFC_FLOOR = -10.0
_REFC_CAP = 75.0
_EDGE_DB = 8.0  # a blob's profile reaches -10 - _EDGE_DB far away: echoes have clean edges
_TEXTURE_DB = 10.0  # standard deviation of the texture (all octaves) inside echoes
_TEXTURE_WIND = (8.0, 2.0)  # m/s, the texture's mean drift
_TEXTURE_CELL_M = 3e3  # the finest octave's cell
_TEXTURE_OCTAVES = 7  # cells 3 .. 192 km
_TEXTURE_H = 0.0  # octave amplitude ~ cell**H: a 2-D power spectrum ~ k**-(2 + 2H)
_TEXTURE_TILE = 256


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


@lru_cache(maxsize=32)
def _texture_tile(seed: int, octave: int, n: int = _TEXTURE_TILE) -> np.ndarray:
    """One octave's periodic noise tile (``n`` x ``n`` cells, correlated over about a cell), unit variance, float32."""
    white = _uniform(seed, _T_TEXTURE, octave, np.arange(n * n)).reshape(n, n) - 0.5
    k = np.fft.fftfreq(n)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    tile = np.fft.ifft2(np.fft.fft2(white) * np.exp(-2 * (np.pi * 0.7) ** 2 * k2)).real
    tile = (tile - tile.mean()) / tile.std()
    return tile.astype(np.float32)


def _octaves(grid: Grid) -> list[tuple[int, float, float]]:
    """``(octave, cell_m, amplitude)`` of the texture octaves a grid resolves (cells of at least half its spacing).

    Amplitudes grow as ``cell**_TEXTURE_H`` and are scaled so that all octaves
    together have a standard deviation of one: the coarse grid sees the large
    octaves of the same texture as the full grid.
    """
    cells = _TEXTURE_CELL_M * 2.0 ** np.arange(_TEXTURE_OCTAVES)
    amps = (cells / cells[-1]) ** _TEXTURE_H
    amps = amps / np.sqrt(np.sum(amps**2))
    return [(o, float(c), float(a)) for o, (c, a) in enumerate(zip(cells, amps)) if c >= grid.dx / 2]


def _texture(seed: int, grid: Grid, t: int, lead: int, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The advected multi-scale texture at grid points ``(rows, cols)``; bilinear from periodic tiles.

    Each octave drifts with its own wind (small scales faster and more across
    the mean drift), so the pattern evolves smoothly from hour to hour.
    """
    x0, y0 = _origin(grid)
    r0, c0 = int(rows.min()), int(cols.min())
    # Bilinear interpolation is separable and the grid is regular: interpolate the
    # tile along y for the window's rows, then along x for its columns.
    px = x0 + np.arange(c0, int(cols.max()) + 1) * grid.dx
    py = y0 + np.arange(r0, int(rows.max()) + 1) * grid.dx
    ex = ey = 0.0
    if lead > 0:
        err = 2 * _draw(_hash(seed, _T_ERR, t - lead), 2)[0] - 1
        ex, ey = err * _POSITION_ERROR * lead * 3600.0
    window = np.zeros((py.size, px.size), dtype=np.float32)
    for octave, cell, amp in _octaves(grid):
        tile = _texture_tile(int(seed), octave)
        n = tile.shape[0]
        turn = 0.35 * (octave % 3 - 1)
        speed = 1.0 + 0.6 * (_TEXTURE_OCTAVES - 1 - octave) / (_TEXTURE_OCTAVES - 1)
        u, v = _TEXTURE_WIND
        sx = speed * (u * np.cos(turn) - v * np.sin(turn)) * 3600.0 * t + ex
        sy = speed * (u * np.sin(turn) + v * np.cos(turn)) * 3600.0 * t + ey
        fx = ((px - sx) / cell) % n
        fy = ((py - sy) / cell) % n
        ix, iy = np.floor(fx).astype(np.int64), np.floor(fy).astype(np.int64)
        wx, wy = (fx - ix).astype(np.float32), (fy - iy).astype(np.float32)[:, None]
        along_y = tile[iy] * (1 - wy) + tile[(iy + 1) % n] * wy
        window += np.float32(amp) * (along_y[:, ix] * (1 - wx) + along_y[:, (ix + 1) % n] * wx)
    return window[rows - r0, cols - c0]


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
