"""Tiles of the grid for mesoscale analogs and regimes: pure numpy.

A :class:`Tiling` cuts every image into square tiles of ``size`` pixels,
``stride`` pixels apart, in the projection plane (the grid is regular in
projection metres, so a tile is a square of ``size * dx`` metres). Tiles are
indexed ``(tile_y, tile_x)`` from the south-west, like the grid's rows and
columns; the tiles cover the grid centred, the margin that does not fill a
whole tile split between both sides.

The tile size is asked for in km and rounded to a multiple of what the tile
model needs (``pool ** n_layers``): 500 km is 168 px (504 km) on the 3 km HRRR
grid for a model that halves three times, 6 x 10 = 60 tiles; 40 px (480 km) on
the 12 km grid, 6 x 11 tiles; and on the 48 km coarse grid of the demo, 8 px
(384 km), 8 x 14 tiles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from wxdask.errors import ConfigError
from wxdask.grid import Grid, lonlat_to_xy, projection_xy, xy_to_lonlat

if TYPE_CHECKING:
    from wxdask.config import TilesConfig

__all__ = [
    "Tiling",
    "make_tiling",
    "tile_coords",
    "tiles_block",
    "echo_fraction_block",
    "tile_of_point",
    "tiling_for",
    "ECHO_DBZ",
]

#: A point has echo above this reflectivity (dBZ); the -10 floor is clear sky.
ECHO_DBZ = 0.0


@dataclass(frozen=True)
class Tiling:
    """Square tiles of one grid.

    Parameters
    ----------
    grid_shape : tuple of int
        ``(ny, nx)`` of the images.
    size : int
        Tile side in pixels.
    stride : int
        Pixels between the south-west corners of neighbouring tiles.
    """

    grid_shape: tuple[int, int]
    size: int
    stride: int

    def __post_init__(self) -> None:
        if self.size < 1 or self.stride < 1:
            raise ConfigError(f"tile size and stride must be positive, got {self.size} and {self.stride}")
        if min(self.grid_shape) < self.size:
            raise ConfigError(f"tiles of {self.size} px do not fit a {self.grid_shape[0]}x{self.grid_shape[1]} grid")

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_tile_y, n_tile_x)``: tiles along y (south to north) and x (west to east)."""
        return tuple(int((n - self.size) // self.stride + 1) for n in self.grid_shape)  # type: ignore[return-value]

    @property
    def offset(self) -> tuple[int, int]:
        """Row and column of tile ``(0, 0)``'s south-west pixel: half the margin."""
        return tuple(int((n - self._span(k)) // 2) for k, n in enumerate(self.grid_shape))  # type: ignore[return-value]

    def _span(self, axis: int) -> int:
        return (self.shape[axis] - 1) * self.stride + self.size

    def rows(self, tile_y: int) -> slice:
        """Rows of the image in tile row ``tile_y``."""
        r0 = self.offset[0] + int(tile_y) * self.stride
        return slice(r0, r0 + self.size)

    def cols(self, tile_x: int) -> slice:
        """Columns of the image in tile column ``tile_x``."""
        c0 = self.offset[1] + int(tile_x) * self.stride
        return slice(c0, c0 + self.size)


def make_tiling(grid: Grid, size_km: float = 500.0, stride_km: float | None = None, *, multiple: int = 1) -> Tiling:
    """The tiling of ``grid`` closest to ``size_km`` with a side that is a multiple of ``multiple``.

    Parameters
    ----------
    grid : Grid
        The images' grid.
    size_km : float
        Wanted tile side, km.
    stride_km : float, optional
        Distance between tiles, km (default: the tile size, no overlap); rounded
        to whole pixels, at least one.
    multiple : int
        The tile side in pixels is rounded to a multiple of this (``pool ** n_layers``
        of the tile model), at least one multiple.

    Raises
    ------
    ConfigError
        If the sizes are not positive or a tile does not fit the grid.

    Examples
    --------
    >>> from wxdask.grid import HRRR, COARSE
    >>> t = make_tiling(HRRR, 500, multiple=8)
    >>> t.size, t.shape
    (168, (6, 10))
    >>> make_tiling(COARSE, 500, multiple=8).shape
    (8, 14)
    """
    if not size_km > 0 or (stride_km is not None and not stride_km > 0) or multiple < 1:
        raise ConfigError(f"tile size and stride must be positive km, got {size_km!r} and {stride_km!r}")
    px = size_km * 1000.0 / grid.dx
    size = max(int(multiple), int(round(px / multiple)) * int(multiple))
    stride = size if stride_km is None else max(1, int(round(stride_km * 1000.0 / grid.dx)))
    return Tiling(grid_shape=grid.shape, size=size, stride=stride)


def tiling_for(cfg: "TilesConfig", grid: Grid) -> Tiling:
    """The tiling that ``cfg`` (the ``tiles`` config section) gives on ``grid``: the one place that decides it.

    The tile side is a multiple of the tile model's ``pool ** n_layers``.

    Examples
    --------
    >>> from wxdask.config import TilesConfig
    >>> from wxdask.grid import HRRR
    >>> tiling_for(TilesConfig(), HRRR).size
    168
    """
    return make_tiling(grid, cfg.size_km, cfg.stride_km, multiple=cfg.pool**cfg.n_layers)


def tile_coords(grid: Grid, tiling: Tiling) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """Store coordinates of the tiles: index, bounds in projection metres, centre lat/lon.

    Returns
    -------
    dict
        ``name -> (dims, values)``: ``tile_y``, ``tile_x`` (int32 indices),
        ``tile_y_min``/``tile_y_max`` ``(tile_y,)`` and ``tile_x_min``/``tile_x_max``
        ``(tile_x,)`` (outer edges of the tiles' pixels, metres),
        ``tile_latitude``/``tile_longitude`` ``(tile_y, tile_x)`` of each centre.

    Examples
    --------
    >>> from wxdask.grid import COARSE
    >>> c = tile_coords(COARSE, make_tiling(COARSE, 500, multiple=8))
    >>> c["tile_latitude"][1].shape, float(c["tile_x_max"][1][0] - c["tile_x_min"][1][0])
    ((8, 14), 384000.0)
    """
    x, y = projection_xy(grid)
    half = grid.dx / 2
    ty, tx = tiling.shape
    y0 = np.array([y[tiling.rows(i).start] for i in range(ty)]) - half
    x0 = np.array([x[tiling.cols(j).start] for j in range(tx)]) - half
    span = tiling.size * grid.dx
    cy, cx = y0 + span / 2, x0 + span / 2
    lon, lat = xy_to_lonlat(grid, cx[np.newaxis, :], cy[:, np.newaxis])
    return {
        "tile_y": (("tile_y",), np.arange(ty, dtype=np.int32)),
        "tile_x": (("tile_x",), np.arange(tx, dtype=np.int32)),
        "tile_y_min": (("tile_y",), y0),
        "tile_y_max": (("tile_y",), y0 + span),
        "tile_x_min": (("tile_x",), x0),
        "tile_x_max": (("tile_x",), x0 + span),
        "tile_latitude": (("tile_y", "tile_x"), lat),
        "tile_longitude": (("tile_y", "tile_x"), lon),
    }


def tiles_block(images: np.ndarray, tiling: Tiling) -> np.ndarray:
    """Cut images into tiles (a view where the stride allows, no copy).

    Parameters
    ----------
    images : numpy.ndarray
        ``(..., ny, nx)``.
    tiling : Tiling

    Returns
    -------
    numpy.ndarray
        ``(..., n_tile_y, n_tile_x, size, size)``.

    Examples
    --------
    >>> t = Tiling((4, 6), size=2, stride=2)
    >>> tiles_block(np.arange(24).reshape(4, 6), t)[1, 2].tolist()
    [[16, 17], [22, 23]]
    """
    images = np.asarray(images)
    if images.shape[-2:] != tuple(tiling.grid_shape):
        raise ValueError(f"images of shape {images.shape[-2:]} do not match the tiling's grid {tiling.grid_shape}")
    (r0, c0), s, st = tiling.offset, tiling.size, tiling.stride
    ty, tx = tiling.shape
    inner = images[..., r0 : r0 + (ty - 1) * st + s, c0 : c0 + (tx - 1) * st + s]
    win = np.lib.stride_tricks.sliding_window_view(inner, (s, s), axis=(-2, -1))
    return win[..., ::st, ::st, :, :]


def echo_fraction_block(images: np.ndarray, tiling: Tiling, threshold: float = ECHO_DBZ) -> np.ndarray:
    """Share of each tile's points with echo (``> threshold`` dBZ); NaN where an image is all NaN.

    Parameters
    ----------
    images : numpy.ndarray
        ``(..., ny, nx)`` dBZ (NaN for a slot without an image).

    Returns
    -------
    numpy.ndarray
        ``(..., n_tile_y, n_tile_x)`` float32 in 0..1.

    Examples
    --------
    >>> img = np.full((4, 6), -10.0); img[:2, :2] = 30.0; img[0, 2] = 5.0
    >>> echo_fraction_block(img, Tiling((4, 6), 2, 2)).tolist()
    [[1.0, 0.25, 0.0], [0.0, 0.0, 0.0]]
    """
    tiles = tiles_block(images, tiling)
    with np.errstate(invalid="ignore"):
        frac = (tiles > threshold).mean(axis=(-2, -1), dtype=np.float64)
    missing = np.isnan(tiles).all(axis=(-2, -1))
    return np.where(missing, np.nan, frac).astype(np.float32)


def tile_of_point(grid: Grid, tiling: Tiling, lat: float, lon: float) -> tuple[int, int]:
    """The tile ``(tile_y, tile_x)`` that holds a point (the nearest such tile where tiles overlap).

    Raises
    ------
    ConfigError
        If the point is off the grid or in the margin outside every tile.

    Examples
    --------
    >>> from wxdask.grid import HRRR
    >>> t = make_tiling(HRRR, 500, multiple=8)
    >>> tile_of_point(HRRR, t, 35.2, -97.4)   # Oklahoma
    (2, 5)
    """
    try:
        lat_f, lon_f = float(lat), float(lon)
    except (TypeError, ValueError):
        raise ConfigError(f"latitude and longitude must be numbers, got {lat!r}, {lon!r}") from None
    if not (-90 <= lat_f <= 90 and np.isfinite(lon_f)):
        raise ConfigError(f"no such point: latitude {lat!r}, longitude {lon!r}")
    px, py = lonlat_to_xy(grid, lon_f, lat_f)
    x, y = projection_xy(grid)
    col = (float(px) - x[0]) / grid.dx + 0.5
    row = (float(py) - y[0]) / grid.dx + 0.5
    if not (0 <= row < grid.ny and 0 <= col < grid.nx):
        raise ConfigError(f"point {lat_f:.3f}N {lon_f:.3f}E is off the {grid.name} grid")
    (r0, c0), s, st = tiling.offset, tiling.size, tiling.stride
    out = []
    for pos, start, n in ((row, r0, tiling.shape[0]), (col, c0, tiling.shape[1])):
        centres = start + np.arange(n) * st + s / 2
        i = int(np.argmin(np.abs(centres - pos)))
        if abs(centres[i] - pos) > s / 2:
            raise ConfigError(
                f"point {lat_f:.3f}N {lon_f:.3f}E lies in the grid's margin, outside every {s}-px tile"
            )
        out.append(i)
    return out[0], out[1]

