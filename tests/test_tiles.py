"""Tiling arithmetic and coordinates on each grid, against the stored lat/lon and brute force."""

from __future__ import annotations

import numpy as np
import pytest

from wxdask import tiles
from wxdask.errors import ConfigError
from wxdask.grid import COARSE, HRRR, MEDIUM, latlon, lonlat_to_xy, projection_xy


@pytest.mark.parametrize(
    "grid, multiple, size, shape",
    [(HRRR, 8, 168, (6, 10)), (MEDIUM, 8, 40, (6, 11)), (COARSE, 8, 8, (8, 14)), (HRRR, 1, 167, (6, 10))],
)
def test_tile_size_rounds_to_the_models_multiple(grid, multiple, size, shape):
    t = tiles.make_tiling(grid, 500, multiple=multiple)
    assert t.size == size and t.size % multiple == 0
    assert t.shape == shape
    (r0, c0) = t.offset
    # centred: the margins on both sides differ by at most one pixel, and no tile runs off the grid
    for n, start, k in ((grid.ny, r0, 0), (grid.nx, c0, 1)):
        end = start + (t.shape[k] - 1) * t.stride + t.size
        assert end <= n and abs((n - end) - start) <= 1


def test_overlapping_stride():
    t = tiles.make_tiling(HRRR, 500, 250, multiple=8)
    assert t.stride == 83 and t.shape == ((1059 - 168) // 83 + 1, (1799 - 168) // 83 + 1)


@pytest.mark.parametrize("grid", [HRRR, MEDIUM, COARSE])
def test_coordinates_agree_with_the_grid(grid):
    t = tiles.make_tiling(grid, 500, multiple=8)
    c = tiles.tile_coords(grid, t)
    lat, lon = latlon(grid)
    x, y = projection_xy(grid)
    for i in range(t.shape[0]):
        rows = t.rows(i)
        assert c["tile_y_min"][1][i] == pytest.approx(y[rows.start] - grid.dx / 2)
        assert c["tile_y_max"][1][i] == pytest.approx(y[rows.stop - 1] + grid.dx / 2)
    for j in range(t.shape[1]):
        cols = t.cols(j)
        assert c["tile_x_max"][1][j] - c["tile_x_min"][1][j] == pytest.approx(t.size * grid.dx)
        assert c["tile_x_min"][1][j] == pytest.approx(x[cols.start] - grid.dx / 2)
    # the centre lat/lon is the mean of the four middle pixels' (even size) or the middle pixel's
    for i, j in [(0, 0), (t.shape[0] - 1, t.shape[1] - 1), (t.shape[0] // 2, t.shape[1] // 2)]:
        r, q = t.rows(i), t.cols(j)
        mid_r = slice(r.start + (t.size - 1) // 2, r.start + t.size // 2 + 1)
        mid_c = slice(q.start + (t.size - 1) // 2, q.start + t.size // 2 + 1)
        assert c["tile_latitude"][1][i, j] == pytest.approx(lat[mid_r, mid_c].mean(), abs=0.02)
        assert c["tile_longitude"][1][i, j] == pytest.approx(lon[mid_r, mid_c].mean(), abs=0.02)


def test_tiles_and_echo_fraction_against_loops():
    rng = np.random.default_rng(0)
    t = tiles.Tiling((23, 31), size=6, stride=4)
    img = rng.choice([-10.0, -5.0, 0.0, 12.5, 40.0], size=(3, 23, 31))
    img[1] = np.nan
    got = tiles.tiles_block(img, t)
    frac = tiles.echo_fraction_block(img, t)
    assert got.shape == (3, *t.shape, 6, 6) and frac.shape == (3, *t.shape)
    for n in range(3):
        for i in range(t.shape[0]):
            for j in range(t.shape[1]):
                tile = img[n, t.rows(i), t.cols(j)]
                np.testing.assert_array_equal(got[n, i, j], tile)
                want = np.nan if n == 1 else (tile > 0).mean()
                np.testing.assert_allclose(frac[n, i, j], want, rtol=1e-6)


@pytest.mark.parametrize("grid", [HRRR, MEDIUM, COARSE])
def test_tile_of_point_holds_the_point(grid):
    t = tiles.make_tiling(grid, 500, multiple=8)
    x, y = projection_xy(grid)
    c = tiles.tile_coords(grid, t)
    for lat, lon in [(35.2, -97.4), (33.7, -84.4), (41.9, -87.6), (39.7, -105.0)]:
        i, j = tiles.tile_of_point(grid, t, lat, lon)
        px, py = lonlat_to_xy(grid, lon, lat)
        assert c["tile_y_min"][1][i] <= py <= c["tile_y_max"][1][i]
        assert c["tile_x_min"][1][j] <= px <= c["tile_x_max"][1][j]


@pytest.mark.parametrize("lat, lon, match", [(60.0, -20.0, "off the"), (-95.0, 0.0, "no such point"),
                                             ("north", 3, "must be numbers")])
def test_bad_points_are_one_clear_error(lat, lon, match):
    t = tiles.make_tiling(HRRR, 500, multiple=8)
    with pytest.raises(ConfigError, match=match):
        tiles.tile_of_point(HRRR, t, lat, lon)


def test_a_point_in_the_margin_is_refused():
    t = tiles.make_tiling(HRRR, 500, multiple=8)  # 1059 - 6*168 = 51 rows of margin, 25 at the south
    lat, lon = latlon(HRRR)
    with pytest.raises(ConfigError, match="margin"):
        tiles.tile_of_point(HRRR, t, lat[3, 900], lon[3, 900])


@pytest.mark.parametrize("size, stride", [(0, None), (-5, None), (500, 0)])
def test_bad_sizes(size, stride):
    with pytest.raises(ConfigError, match="positive"):
        tiles.make_tiling(COARSE, size, stride)
    with pytest.raises(ConfigError, match="do not fit"):
        tiles.make_tiling(COARSE, 5000)
