"""The HRRR grid and its coarse variant: Lambert conformal projection, pure numpy.

HRRR's CONUS grid (GRIB2 template 3.30) is a spherical Lambert conformal conic
projection tangent at 38.5N with central meridian 262.5E, on a sphere of radius
6371229 m. Its first point is the south-west corner and rows run south to north
(scanning mode 64), so row 0 is the southern edge. :data:`COARSE` covers the
same domain from the same first point at 48 km, for fast tests and the demo.

Functions here compute projection coordinates, latitudes and longitudes, the CF
grid-mapping attributes and the ecCodes keys of template 3.30 for a
:class:`Grid`, and recognise the grid of a decoded GRIB2 message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from wxdask.errors import ConfigError, CorruptMessageError

__all__ = [
    "Grid",
    "HRRR",
    "MEDIUM",
    "COARSE",
    "GRIDS",
    "get_grid",
    "projection_xy",
    "latlon",
    "lonlat_to_xy",
    "xy_to_lonlat",
    "grid_mapping_attrs",
    "grib_grid_keys",
    "grid_from_message",
]


@dataclass(frozen=True)
class Grid:
    """A Lambert conformal grid as GRIB2 template 3.30 describes it.

    Parameters
    ----------
    name : str
        ``"hrrr"``, ``"coarse"`` or ``"custom"``.
    nx, ny : int
        Points along x (west to east) and y (south to north).
    dx : float
        Grid spacing in metres, the same along y.
    lat1, lon1 : float
        First grid point (south-west corner), degrees; ``lon1`` east in 0..360 as in GRIB.
    lov : float
        Central meridian (LoV), degrees east.
    lad : float
        Latitude where ``dx`` is true (LaD), the projection's origin latitude here.
    latin1, latin2 : float
        Standard parallels (equal: a tangent cone).
    radius : float
        Radius of the spherical earth, metres.
    """

    name: str
    nx: int
    ny: int
    dx: float
    lat1: float
    lon1: float
    lov: float = 262.5
    lad: float = 38.5
    latin1: float = 38.5
    latin2: float = 38.5
    radius: float = 6371229.0

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``: the shape of a field, row 0 south."""
        return (self.ny, self.nx)


#: HRRR's CONUS grid, 1059 x 1799 at 3 km (verified on real files, see DESIGN.md).
HRRR = Grid(name="hrrr", nx=1799, ny=1059, dx=3000.0, lat1=21.138123, lon1=237.280472)
#: The same domain at 12 km (every 4th HRRR point), for experiments between the two.
MEDIUM = Grid(name="12km", nx=450, ny=265, dx=12000.0, lat1=21.138123, lon1=237.280472)
#: The same domain at 48 km (every 16th HRRR point), for fast tests and the demo.
COARSE = Grid(name="coarse", nx=112, ny=66, dx=48000.0, lat1=21.138123, lon1=237.280472)
#: Named grids, by name.
GRIDS: dict[str, Grid] = {g.name: g for g in (HRRR, COARSE, MEDIUM)}


def get_grid(name: str | Grid) -> Grid:
    """The named grid.

    Parameters
    ----------
    name : str or Grid
        ``"hrrr"`` or ``"coarse"`` (a :class:`Grid` is returned as is).

    Raises
    ------
    ConfigError
        If the name is not a known grid.

    Examples
    --------
    >>> get_grid("coarse").shape
    (66, 112)
    """
    if isinstance(name, Grid):
        return name
    try:
        return GRIDS[str(name).lower()]
    except KeyError:
        raise ConfigError(f"unknown grid {name!r}; valid: {', '.join(GRIDS)}") from None


def _cone(grid: Grid) -> tuple[float, float, float]:
    """Cone constant ``n``, ``R F`` and ``rho0`` of the spherical Lambert projection."""
    phi1, phi2, phi0 = (math.radians(v) for v in (grid.latin1, grid.latin2, grid.lad))
    if abs(phi1 - phi2) < 1e-12:
        n = math.sin(phi1)
    else:
        n = math.log(math.cos(phi1) / math.cos(phi2)) / math.log(
            math.tan(math.pi / 4 + phi2 / 2) / math.tan(math.pi / 4 + phi1 / 2)
        )
    rf = grid.radius * math.cos(phi1) * math.tan(math.pi / 4 + phi1 / 2) ** n / n
    rho0 = rf / math.tan(math.pi / 4 + phi0 / 2) ** n
    return n, rf, rho0


def lonlat_to_xy(grid: Grid, lon: Any, lat: Any) -> tuple[np.ndarray, np.ndarray]:
    """Project longitudes and latitudes (degrees) to projection metres.

    The origin is at (LaD, LoV); x grows east, y north.

    Examples
    --------
    >>> x, y = lonlat_to_xy(HRRR, -97.5, 38.5)
    >>> float(x), float(y)
    (0.0, 0.0)
    """
    n, rf, rho0 = _cone(grid)
    lam = np.radians(np.asarray(lon, dtype=np.float64) - grid.lov)
    lam = (lam + np.pi) % (2 * np.pi) - np.pi
    rho = rf / np.tan(np.pi / 4 + np.radians(np.asarray(lat, dtype=np.float64)) / 2) ** n
    theta = n * lam
    return rho * np.sin(theta), rho0 - rho * np.cos(theta)


def xy_to_lonlat(grid: Grid, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Longitudes (-180..180) and latitudes, degrees, of projection coordinates.

    The inverse of :func:`lonlat_to_xy`.
    """
    n, rf, rho0 = _cone(grid)
    dy = rho0 - y
    rho = np.sign(n) * np.hypot(x, dy)
    theta = np.arctan2(np.sign(n) * x, np.sign(n) * dy)
    lat = np.degrees(2 * np.arctan((rf / rho) ** (1 / n)) - np.pi / 2)
    lon = grid.lov + np.degrees(theta / n)
    return (lon + 180.0) % 360.0 - 180.0, lat


def projection_xy(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Projection coordinates of the grid's columns and rows, metres.

    Returns
    -------
    x : numpy.ndarray
        ``(nx,)``, increasing west to east by ``dx``.
    y : numpy.ndarray
        ``(ny,)``, increasing south to north by ``dx`` (row 0 south).

    Examples
    --------
    >>> x, y = projection_xy(COARSE)
    >>> x.shape, y.shape, float(x[1] - x[0])
    ((112,), (66,), 48000.0)
    """
    x0, y0 = lonlat_to_xy(grid, grid.lon1, grid.lat1)
    x = float(x0) + grid.dx * np.arange(grid.nx, dtype=np.float64)
    y = float(y0) + grid.dx * np.arange(grid.ny, dtype=np.float64)
    return x, y


def latlon(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude of every grid point.

    Returns
    -------
    latitude, longitude : numpy.ndarray
        ``(ny, nx)`` degrees, longitude in -180..180, row 0 south.

    Examples
    --------
    >>> lat, lon = latlon(HRRR)
    >>> round(float(lat[0, 0]), 6), round(float(lon[0, 0]), 6)
    (21.138123, -122.719528)
    """
    x, y = projection_xy(grid)
    lon, lat = xy_to_lonlat(grid, x[np.newaxis, :], y[:, np.newaxis])
    return lat, lon


def _lon180(lon: float) -> float:
    return (lon + 180.0) % 360.0 - 180.0


def grid_mapping_attrs(grid: Grid) -> dict[str, Any]:
    """CF attributes of a ``lambert_conformal_conic`` grid-mapping variable.

    Examples
    --------
    >>> a = grid_mapping_attrs(HRRR)
    >>> a["grid_mapping_name"], a["standard_parallel"], a["longitude_of_central_meridian"]
    ('lambert_conformal_conic', 38.5, -97.5)
    """
    lon0 = _lon180(grid.lov)
    if grid.latin1 == grid.latin2:
        parallels: float | list[float] = grid.latin1
    else:
        parallels = [grid.latin1, grid.latin2]
    proj4 = (
        f"+proj=lcc +lat_0={grid.lad} +lon_0={lon0} +lat_1={grid.latin1} +lat_2={grid.latin2} "
        f"+x_0=0 +y_0=0 +R={grid.radius:.10g} +units=m +no_defs"
    )
    wkt = (
        'PROJCS["unnamed",GEOGCS["unnamed",DATUM["unnamed",SPHEROID["Sphere",'
        f'{grid.radius:.10g},0]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],'
        'PROJECTION["Lambert_Conformal_Conic_2SP"],'
        f'PARAMETER["standard_parallel_1",{grid.latin1}],PARAMETER["standard_parallel_2",{grid.latin2}],'
        f'PARAMETER["latitude_of_origin",{grid.lad}],PARAMETER["central_meridian",{lon0}],'
        'PARAMETER["false_easting",0],PARAMETER["false_northing",0],UNIT["metre",1]]'
    )
    return {
        "grid_mapping_name": "lambert_conformal_conic",
        "standard_parallel": parallels,
        "longitude_of_central_meridian": lon0,
        "latitude_of_projection_origin": grid.lad,
        "false_easting": 0.0,
        "false_northing": 0.0,
        "earth_radius": grid.radius,
        "proj4": proj4,
        "crs_wkt": wkt,
        "grid_name": grid.name,
    }


def grib_grid_keys(grid: Grid) -> dict[str, Any]:
    """ecCodes keys that write GRIB2 template 3.30 for this grid, in setting order.

    Set ``gridDefinitionTemplateNumber`` first (it is the first key here).

    Examples
    --------
    >>> k = grib_grid_keys(HRRR)
    >>> k["Nx"], k["Ny"], k["scanningMode"], k["shapeOfTheEarth"]
    (1799, 1059, 64, 6)
    """
    if grid.radius != 6371229.0:
        raise ConfigError(f"only the 6371229 m sphere (shapeOfTheEarth 6) is supported, got radius {grid.radius}")
    return {
        "gridDefinitionTemplateNumber": 30,
        "shapeOfTheEarth": 6,
        "Nx": int(grid.nx),
        "Ny": int(grid.ny),
        "latitudeOfFirstGridPointInDegrees": float(grid.lat1),
        "longitudeOfFirstGridPointInDegrees": float(grid.lon1),
        "resolutionAndComponentFlags": 8,
        "LaDInDegrees": float(grid.lad),
        "LoVInDegrees": float(grid.lov),
        "DxInMetres": float(grid.dx),
        "DyInMetres": float(grid.dx),
        "projectionCentreFlag": 0,
        "scanningMode": 64,
        "Latin1InDegrees": float(grid.latin1),
        "Latin2InDegrees": float(grid.latin2),
        "latitudeOfSouthernPoleInDegrees": 0.0,
        "longitudeOfSouthernPoleInDegrees": 0.0,
    }


#: Tolerances when matching a message's grid to a named one (GRIB stores 1e-6 degrees and mm).
_DEG_TOL = 2e-6
_M_TOL = 1e-3


def grid_from_message(message: int | bytes) -> Grid:
    """The grid of a GRIB2 message: one of :data:`GRIDS` when it is one of them.

    Parameters
    ----------
    message : int or bytes
        An ecCodes handle, or the bytes of one whole message.

    Returns
    -------
    Grid
        The named grid when every key matches it, else a grid named ``"custom"``.

    Raises
    ------
    CorruptMessageError
        If the message is not a Lambert conformal grid (template 3.30) on a
        sphere scanned from the south-west corner (scanning mode 64), or
        cannot be read.
    """
    import eccodes

    own = not isinstance(message, int)
    try:
        handle = eccodes.codes_new_from_message(bytes(message)) if own else message
    except eccodes.GribInternalError as exc:
        raise CorruptMessageError(f"cannot read GRIB message: {exc}") from None
    try:
        template = eccodes.codes_get_long(handle, "gridDefinitionTemplateNumber")
        if template != 30:
            raise CorruptMessageError(f"grid template is 3.{template}, expected 3.30 (Lambert conformal)")
        scanning = eccodes.codes_get_long(handle, "scanningMode")
        if scanning != 64:
            raise CorruptMessageError(f"scanning mode is {scanning}, expected 64 (row 0 south, west to east)")
        shape = eccodes.codes_get_long(handle, "shapeOfTheEarth")
        radii = {0: 6367470.0, 6: 6371229.0}
        if shape == 1:
            radius = eccodes.codes_get_double(handle, "radius")
        elif shape in radii:
            radius = radii[shape]
        else:
            raise CorruptMessageError(f"shapeOfTheEarth is {shape}, expected a sphere (0, 1 or 6)")
        get = lambda key: eccodes.codes_get_double(handle, key)  # noqa: E731
        dx, dy = get("DxInMetres"), get("DyInMetres")
        if abs(dx - dy) > _M_TOL:
            raise CorruptMessageError(f"grid spacing differs along x ({dx} m) and y ({dy} m)")
        found = Grid(
            name="custom",
            nx=int(eccodes.codes_get_long(handle, "Nx")),
            ny=int(eccodes.codes_get_long(handle, "Ny")),
            dx=dx,
            lat1=get("latitudeOfFirstGridPointInDegrees"),
            lon1=get("longitudeOfFirstGridPointInDegrees") % 360.0,
            lov=get("LoVInDegrees") % 360.0,
            lad=get("LaDInDegrees"),
            latin1=get("Latin1InDegrees"),
            latin2=get("Latin2InDegrees"),
            radius=radius,
        )
    except eccodes.GribInternalError as exc:
        raise CorruptMessageError(f"cannot read the grid of a GRIB message: {exc}") from None
    finally:
        if own:
            eccodes.codes_release(handle)
    for known in GRIDS.values():
        if _same_grid(found, known):
            return known
    return found


def _same_grid(a: Grid, b: Grid) -> bool:
    if (a.nx, a.ny) != (b.nx, b.ny):
        return False
    if abs(a.dx - b.dx) > _M_TOL or abs(a.radius - b.radius) > _M_TOL:
        return False
    degrees = [
        (a.lat1, b.lat1),
        (a.lon1, b.lon1),
        (a.lov, b.lov),
        (a.lad, b.lad),
        (a.latin1, b.latin1),
        (a.latin2, b.latin2),
    ]
    return all(abs(p - q) <= _DEG_TOL for p, q in degrees)

