"""The HRRR Lambert conformal grid: projection, coordinates, GRIB keys, recognising a message's grid."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from wxdask.errors import ConfigError, CorruptMessageError
from wxdask.grid import (
    COARSE,
    HRRR,
    get_grid,
    grib_grid_keys,
    grid_from_message,
    grid_mapping_attrs,
    latlon,
    lonlat_to_xy,
    projection_xy,
)

eccodes = pytest.importorskip("eccodes")


def _message(grid, values=None) -> bytes:
    """A plain GRIB2 message on ``grid`` written with :func:`grib_grid_keys`."""
    h = eccodes.codes_grib_new_from_samples("GRIB2")
    try:
        for key, value in grib_grid_keys(grid).items():
            eccodes.codes_set(h, key, value)
        eccodes.codes_set_values(h, np.zeros(grid.nx * grid.ny) if values is None else values)
        return eccodes.codes_get_message(h)
    finally:
        eccodes.codes_release(h)


def _eccodes_latlon(message: bytes, shape) -> tuple[np.ndarray, np.ndarray]:
    h = eccodes.codes_new_from_message(message)
    try:
        lat = eccodes.codes_get_array(h, "latitudes").reshape(shape)
        lon = eccodes.codes_get_array(h, "longitudes").reshape(shape)
    finally:
        eccodes.codes_release(h)
    return lat, (lon + 180.0) % 360.0 - 180.0


def test_named_grids():
    assert HRRR.shape == (1059, 1799) and HRRR.dx == 3000.0
    assert (HRRR.lat1, HRRR.lon1, HRRR.lov, HRRR.lad, HRRR.latin1, HRRR.latin2) == (
        21.138123,
        237.280472,
        262.5,
        38.5,
        38.5,
        38.5,
    )
    assert HRRR.radius == 6371229.0
    assert COARSE.shape == (66, 112) and COARSE.dx == 48000.0
    assert (COARSE.lat1, COARSE.lon1) == (HRRR.lat1, HRRR.lon1)
    # The coarse grid covers the HRRR domain (every 16th point, to within one coarse cell).
    assert abs(COARSE.nx * COARSE.dx - HRRR.nx * HRRR.dx) < COARSE.dx
    assert abs(COARSE.ny * COARSE.dx - HRRR.ny * HRRR.dx) < COARSE.dx
    assert get_grid("hrrr") is HRRR and get_grid("COARSE") is COARSE and get_grid(HRRR) is HRRR
    with pytest.raises(ConfigError, match="unknown grid 'fine'.*hrrr, coarse"):
        get_grid("fine")


@pytest.mark.parametrize("grid", [HRRR, COARSE], ids=["hrrr", "coarse"])
def test_projection_xy_spacing_and_first_point(grid):
    x, y = projection_xy(grid)
    assert x.shape == (grid.nx,) and y.shape == (grid.ny,)
    np.testing.assert_allclose(np.diff(x), grid.dx, rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.diff(y), grid.dx, rtol=0, atol=1e-6)
    lat, lon = latlon(grid)
    assert lat.shape == lon.shape == grid.shape
    assert lat[0, 0] == pytest.approx(grid.lat1, abs=1e-9)
    assert lon[0, 0] == pytest.approx(grid.lon1 - 360.0, abs=1e-9)
    assert np.all((lon >= -180) & (lon <= 180))
    # Row 0 is the southern edge: latitude grows along y in every column.
    assert np.all(np.diff(lat, axis=0) > 0)
    # Projecting the grid's own latitudes and longitudes gives back its x, y.
    px, py = lonlat_to_xy(grid, lon, lat)
    np.testing.assert_allclose(px, np.broadcast_to(x, grid.shape), atol=1e-4)
    np.testing.assert_allclose(py, np.broadcast_to(y[:, None], grid.shape), atol=1e-4)


def test_projection_origin_is_lad_lov():
    x, y = lonlat_to_xy(HRRR, 262.5, 38.5)
    assert abs(float(x)) < 1e-6 and abs(float(y)) < 1e-6
    x, _ = lonlat_to_xy(HRRR, -97.5, 45.0)  # on the central meridian
    assert abs(float(x)) < 1e-6


def test_hrrr_corners_match_the_published_grid():
    lat, lon = latlon(HRRR)
    assert (lat[-1, -1], lon[-1, -1]) == pytest.approx((47.842195, -60.917194), abs=1e-5)
    assert (lat[-1, 0], lon[-1, 0]) == pytest.approx((47.838623, -134.095480), abs=1e-5)


def test_coarse_latlon_agrees_with_eccodes():
    lat, lon = latlon(COARSE)
    elat, elon = _eccodes_latlon(_message(COARSE), COARSE.shape)
    np.testing.assert_allclose(lat, elat, atol=1e-4)
    np.testing.assert_allclose(lon, elon, atol=1e-4)


def test_hrrr_corners_agree_with_eccodes():
    lat, lon = latlon(HRRR)
    elat, elon = _eccodes_latlon(_message(HRRR), HRRR.shape)
    for i, j in [(0, 0), (0, -1), (-1, 0), (-1, -1), (529, 899)]:
        assert lat[i, j] == pytest.approx(elat[i, j], abs=1e-4)
        assert lon[i, j] == pytest.approx(elon[i, j], abs=1e-4)


def test_grib_grid_keys_are_template_3_30():
    keys = grib_grid_keys(HRRR)
    assert next(iter(keys)) == "gridDefinitionTemplateNumber"
    h = eccodes.codes_new_from_message(_message(COARSE))
    try:
        got = {k: eccodes.codes_get(h, k) for k in (
            "gridDefinitionTemplateNumber", "gridType", "Nx", "Ny", "DxInMetres", "DyInMetres", "scanningMode",
            "shapeOfTheEarth", "LoVInDegrees", "LaDInDegrees", "Latin1InDegrees", "Latin2InDegrees",
            "latitudeOfFirstGridPointInDegrees", "longitudeOfFirstGridPointInDegrees", "jScansPositively")}
    finally:
        eccodes.codes_release(h)
    assert got == {
        "gridDefinitionTemplateNumber": 30, "gridType": "lambert", "Nx": 112, "Ny": 66, "DxInMetres": 48000.0,
        "DyInMetres": 48000.0, "scanningMode": 64, "shapeOfTheEarth": 6, "LoVInDegrees": 262.5,
        "LaDInDegrees": 38.5, "Latin1InDegrees": 38.5, "Latin2InDegrees": 38.5,
        "latitudeOfFirstGridPointInDegrees": 21.138123, "longitudeOfFirstGridPointInDegrees": 237.280472,
        "jScansPositively": 1,
    }
    with pytest.raises(ConfigError, match="6371229"):
        grib_grid_keys(dataclasses.replace(COARSE, radius=6378137.0))


def test_grid_mapping_attrs():
    attrs = grid_mapping_attrs(HRRR)
    assert attrs["grid_mapping_name"] == "lambert_conformal_conic"
    assert attrs["standard_parallel"] == 38.5
    assert attrs["longitude_of_central_meridian"] == -97.5
    assert attrs["latitude_of_projection_origin"] == 38.5
    assert attrs["earth_radius"] == 6371229.0
    assert "+proj=lcc" in attrs["proj4"] and "+R=6371229" in attrs["proj4"] and "+lon_0=-97.5" in attrs["proj4"]
    assert "Lambert_Conformal_Conic" in attrs["crs_wkt"]
    secant = grid_mapping_attrs(dataclasses.replace(HRRR, latin1=33.0, latin2=45.0))
    assert secant["standard_parallel"] == [33.0, 45.0]


def test_grid_from_message_recognises_named_grids():
    coarse = _message(COARSE)
    assert grid_from_message(coarse) is COARSE
    h = eccodes.codes_new_from_message(coarse)
    try:
        assert grid_from_message(h) is COARSE  # a handle is read, not released
        assert eccodes.codes_get(h, "Nx") == 112
    finally:
        eccodes.codes_release(h)
    small = dataclasses.replace(COARSE, name="x", nx=10, ny=8, dx=96000.0)
    found = grid_from_message(_message(small))
    assert found.name == "custom" and found.shape == (8, 10) and found.dx == 96000.0
    assert found == dataclasses.replace(small, name="custom")


def test_grid_from_message_rejects_other_grids():
    h = eccodes.codes_grib_new_from_samples("GRIB2")  # a regular lat-lon grid
    try:
        latlon_message = eccodes.codes_get_message(h)
    finally:
        eccodes.codes_release(h)
    with pytest.raises(CorruptMessageError, match="3.30"):
        grid_from_message(latlon_message)
    h = eccodes.codes_new_from_message(_message(COARSE))
    try:
        eccodes.codes_set(h, "scanningMode", 0)
        north_first = eccodes.codes_get_message(h)
    finally:
        eccodes.codes_release(h)
    with pytest.raises(CorruptMessageError, match="scanning mode is 0"):
        grid_from_message(north_first)
    with pytest.raises(CorruptMessageError):
        grid_from_message(b"GRIB" + b"\0" * 40)
