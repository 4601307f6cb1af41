"""How real a reflectivity field looks: value histogram, echo objects and spatial spectrum.

Pure numpy/scipy statistics of one dBZ field on a regular grid of spacing ``dx``
metres, used to compare the synthetic archive with real HRRR REFC
(``scripts/synth_realism.py``):

- :func:`bin_shares`: share of grid points in dBZ bins (the -10 floor, then
  ``(-10, 0]``, ``(0, 20]``, ``(20, 35]``, ``(35, 50]``, ``> 50``);
- :func:`echo_objects`: connected areas of at least 20 dBZ (8-connectivity)
  larger than 100 km2, their areas and elongation;
- :func:`spectrum_slope`: the log-log slope of the radially averaged power
  spectrum over wavelengths 6-300 km;
- :func:`field_stats`: all of them as one flat ``{name: value}`` mapping, and
  :func:`compare`, which says which statistics of one field are within a factor
  of another's.

:func:`decode_message` turns one GRIB2 message into a field (ecCodes, imported lazily).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "BINS",
    "STAT_NAMES",
    "bin_shares",
    "object_moments",
    "echo_objects",
    "radial_spectrum",
    "spectrum_slope",
    "field_stats",
    "compare",
    "decode_message",
]

FLOOR = -10.0
#: Names of the dBZ bins of :func:`bin_shares`, in order; ``(a, b]`` bins are open below.
BINS = ("=-10", "(-10,0]", "(0,20]", "(20,35]", "(35,50]", ">50")
_EDGES = (FLOOR, 0.0, 20.0, 35.0, 50.0)
#: Default wavelength range (m) of the spectral fit: 2 HRRR cells (its Nyquist) to 300 km.
WAVELENGTHS = (6e3, 300e3)
#: Names of the statistics :func:`field_stats` returns, in order.
STAT_NAMES = (
    *(f"share {b}" for b in BINS),
    "objects",
    "object area median km2",
    "object area p90 km2",
    "elongated share",
    "spectrum slope",
)


def bin_shares(field: np.ndarray) -> dict[str, float]:
    """Share of points in each dBZ bin of :data:`BINS`.

    Parameters
    ----------
    field : numpy.ndarray
        dBZ, any shape, floored at -10 (values below -10 count as the floor).

    Returns
    -------
    dict of str to float
        ``{bin name: share}``; the shares sum to 1.

    Examples
    --------
    >>> s = bin_shares(np.array([-10.0, -10.0, -5.0, 10.0, 25.0, 40.0, 55.0, 60.0]))
    >>> [s[b] for b in BINS]
    [0.25, 0.125, 0.125, 0.125, 0.125, 0.25]
    """
    x = np.asarray(field, dtype=np.float64).ravel()
    n = max(x.size, 1)
    shares = {BINS[0]: float(np.count_nonzero(x <= FLOOR)) / n}
    for name, lo, hi in zip(BINS[1:], _EDGES, (*_EDGES[1:], np.inf)):
        shares[name] = float(np.count_nonzero((x > lo) & (x <= hi))) / n
    return shares


def object_moments(field: np.ndarray, threshold: float = 20.0) -> tuple[np.ndarray, np.ndarray]:
    """Pixel count and axis ratio of each connected area ``field >= threshold``.

    Parameters
    ----------
    field : numpy.ndarray
        ``(y, x)`` dBZ.
    threshold : float
        Echo threshold, dBZ.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Pixels per object (int64, ``(n,)``) and major/minor axis ratio (float64,
        ``(n,)``): the square root of the ratio of the eigenvalues of the
        covariance of the object's pixel coordinates, each eigenvalue plus 1/12
        (a pixel's own variance), so a one-pixel line has a finite ratio (about
        ``length`` for a long one) and one pixel has ratio 1. Objects are
        8-connected (:func:`scipy.ndimage.label`).

    Examples
    --------
    >>> f = np.full((5, 12), -10.0)
    >>> f[2, 1:11] = 30.0
    >>> n, ratio = object_moments(f)
    >>> n.tolist(), bool(ratio[0] > 9)
    ([10], True)
    """
    from scipy import ndimage

    labels, n = ndimage.label(np.asarray(field) >= threshold, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    index = np.arange(1, n + 1)
    rows, cols = np.indices(labels.shape, dtype=np.float64)
    count = ndimage.sum_labels(np.ones(labels.shape), labels, index)
    moments = [
        ndimage.sum_labels(a, labels, index) / count for a in (rows, cols, rows * rows, cols * cols, rows * cols)
    ]
    my, mx, myy, mxx, mxy = moments
    vyy, vxx, vxy = myy - my * my + 1 / 12, mxx - mx * mx + 1 / 12, mxy - mx * my
    half_trace, det = (vyy + vxx) / 2, vyy * vxx - vxy * vxy
    root = np.sqrt(np.maximum(half_trace**2 - det, 0.0))
    major, minor = half_trace + root, np.maximum(half_trace - root, 1 / 12)
    return count.astype(np.int64), np.sqrt(major / minor)


def echo_objects(
    field: np.ndarray, dx: float, *, threshold: float = 20.0, min_area_km2: float = 100.0, elongated: float = 3.0
) -> dict[str, float]:
    """Statistics of the echo objects of a field: connected areas ``>= threshold`` larger than ``min_area_km2``.

    Parameters
    ----------
    field : numpy.ndarray
        ``(y, x)`` dBZ.
    dx : float
        Grid spacing, metres (a pixel is ``dx**2``).
    threshold : float
        Echo threshold, dBZ.
    min_area_km2 : float
        Objects of this area or less are left out.
    elongated : float
        Axis ratio (see :func:`object_moments`) above which an object is elongated.

    Returns
    -------
    dict of str to float
        ``objects`` (count), ``object area median km2``, ``object area p90 km2``
        and ``elongated share`` (of the objects); the last three are NaN without objects.

    Examples
    --------
    >>> yy, xx = np.mgrid[:100, :100]
    >>> disc = np.where((yy - 50) ** 2 + (xx - 50) ** 2 <= 20**2, 40.0, -10.0)
    >>> s = echo_objects(disc, 3000.0)
    >>> s["objects"], round(s["object area median km2"] / (np.pi * 60**2), 2), s["elongated share"]
    (1.0, 1.0, 0.0)
    """
    count, ratio = object_moments(field, threshold)
    area = count * (float(dx) / 1e3) ** 2
    keep = area > min_area_km2
    area, ratio = area[keep], ratio[keep]
    if area.size == 0:
        return {"objects": 0.0, "object area median km2": math.nan, "object area p90 km2": math.nan,
                "elongated share": math.nan}
    return {
        "objects": float(area.size),
        "object area median km2": float(np.median(area)),
        "object area p90 km2": float(np.percentile(area, 90)),
        "elongated share": float(np.mean(ratio > elongated)),
    }


def radial_spectrum(field: np.ndarray, dx: float) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of a field, mean removed (no window, no taper).

    Parameters
    ----------
    field : numpy.ndarray
        ``(y, x)`` values (dBZ with the -10 floor taken as it is).
    dx : float
        Grid spacing, metres.

    Returns
    -------
    (numpy.ndarray, numpy.ndarray)
        Wavenumbers (cycles per metre, ``(m,)``, bin centres) and the mean of
        ``|FFT|**2`` over the wavenumbers of each annulus (``(m,)``). Annuli are
        ``1 / (max(ny, nx) * dx)`` wide; empty annuli are left out.
    """
    x = np.asarray(field, dtype=np.float64)
    ny, nx = x.shape
    power = np.abs(np.fft.rfft2(x - x.mean())) ** 2
    ky = np.fft.fftfreq(ny, d=dx)[:, None]
    kx = np.fft.rfftfreq(nx, d=dx)[None, :]
    k = np.sqrt(kx**2 + ky**2)
    dk = 1.0 / (max(ny, nx) * dx)
    ring = np.rint(k / dk).astype(np.int64).ravel()
    # rfft2 holds each kx > 0 column once for its conjugate pair: weight those twice.
    weight = np.where(np.broadcast_to(kx > 0, k.shape), 2.0, 1.0).ravel()
    total = np.bincount(ring, weights=power.ravel() * weight)
    n = np.bincount(ring, weights=weight)
    ok = n > 0
    ok[0] = False  # the mean
    rings = np.nonzero(ok)[0]
    return rings * dk, total[ok] / n[ok]


def spectrum_slope(field: np.ndarray, dx: float, wavelengths: Sequence[float] = WAVELENGTHS) -> float:
    """The slope of ``log P(k)`` against ``log k`` of :func:`radial_spectrum`, least squares.

    Parameters
    ----------
    field : numpy.ndarray
        ``(y, x)`` values.
    dx : float
        Grid spacing, metres.
    wavelengths : (float, float)
        Shortest and longest wavelength (m) of the fit: annuli with
        ``1 / longest <= k <= 1 / shortest``. The default, 6-300 km, runs from
        the Nyquist wavelength of a 3 km grid to about a sixth of the HRRR domain.

    Returns
    -------
    float
        The slope (negative for red spectra; white noise gives 0); NaN for a
        constant field or fewer than 3 annuli in range.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> round(spectrum_slope(rng.normal(size=(256, 256)), 3000.0, (6e3, 200e3)), 1) + 0.0
    0.0
    """
    k, p = radial_spectrum(field, dx)
    lo, hi = 1.0 / max(wavelengths), 1.0 / min(wavelengths)
    sel = (k >= lo * (1 - 1e-9)) & (k <= hi * (1 + 1e-9)) & (p > 0)
    if np.count_nonzero(sel) < 3:
        return math.nan
    slope = np.polyfit(np.log(k[sel]), np.log(p[sel]), 1)[0]
    return float(slope)


def field_stats(field: np.ndarray, dx: float) -> dict[str, float]:
    """Every statistic of this module for one field, keyed by :data:`STAT_NAMES`.

    Parameters
    ----------
    field : numpy.ndarray
        ``(y, x)`` dBZ, floored at -10.
    dx : float
        Grid spacing, metres.

    Returns
    -------
    dict of str to float
        Bin shares (``share <bin>``), echo objects and the spectrum slope.
    """
    out = {f"share {b}": v for b, v in bin_shares(field).items()}
    out.update(echo_objects(field, dx))
    out["spectrum slope"] = spectrum_slope(field, dx)
    return out


def compare(
    real: Mapping[str, float], synthetic: Mapping[str, float], *, factor: float = 2.0, slope_tolerance: float = 0.3
) -> dict[str, tuple[float, bool | None]]:
    """Ratio synthetic/real of each statistic, and whether it is close enough.

    Parameters
    ----------
    real, synthetic : mapping of str to float
        Statistics of :func:`field_stats` (or medians of them).
    factor : float
        A statistic is close when ``1 / factor <= ratio <= factor``.
    slope_tolerance : float
        Spectrum slopes are close when they differ by at most this much (the
        "ratio" reported for a slope is the difference synthetic - real).

    Returns
    -------
    dict of str to (float, bool or None)
        ``{name: (ratio, close)}``; ``close`` is ``None`` where it cannot be
        told (a real value of 0 or NaN, or a NaN synthetic value).

    Examples
    --------
    >>> compare({"objects": 10.0, "spectrum slope": -3.0}, {"objects": 25.0, "spectrum slope": -2.8})
    {'objects': (2.5, False), 'spectrum slope': (0.2, True)}
    """
    out: dict[str, tuple[float, bool | None]] = {}
    for name, r in real.items():
        s = synthetic.get(name, math.nan)
        if "slope" in name:
            d = s - r
            out[name] = (round(d, 12), None if math.isnan(d) else bool(abs(d) <= slope_tolerance))
        elif math.isnan(r) or math.isnan(s) or r == 0:
            out[name] = (math.nan, True if (r == 0 and s == 0) else None)
        else:
            ratio = s / r
            out[name] = (ratio, bool(1 / factor <= ratio <= factor))
    return out


def decode_message(data: bytes) -> tuple[np.ndarray, float]:
    """Decode one GRIB2 message on a regular grid into ``(field, dx)`` with ecCodes.

    Parameters
    ----------
    data : bytes
        One whole message (``GRIB`` ... ``7777``).

    Returns
    -------
    (numpy.ndarray, float)
        Values ``(Nj, Ni)`` float64 in the message's scanning order (row 0 south
        for HRRR, scanning mode 64) and the grid spacing ``DxInMetres`` (m).
    """
    try:
        import eccodes
    except ImportError as err:  # pragma: no cover - eccodes is a dependency
        raise ImportError("decoding GRIB needs eccodes: pip install eccodes") from err
    h: Any = eccodes.codes_new_from_message(data)
    try:
        nj, ni = eccodes.codes_get_long(h, "Nj"), eccodes.codes_get_long(h, "Ni")
        dx = eccodes.codes_get_double(h, "DxInMetres")
        values = eccodes.codes_get_values(h).reshape(nj, ni)
    finally:
        eccodes.codes_release(h)
    return values, float(dx)
