"""The other fields of a synthetic surface file: TMP, DPT, PRES, UGRD/VGRD, HGT.

Smooth plausible maps (a diurnal cycle, a season, a travelling wave), simple
packing at 16 bits; UGRD and VGRD share one message as sub-messages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from wxdask.grid import Grid, latlon
from wxdask.synth._rng import _T_OTHER, _hours, _uniform
from wxdask.synth.grib import _join_submessages, _new_message, _set_time


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
