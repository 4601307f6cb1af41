"""A synthetic HRRR archive: REFC weather that behaves like weather, encoded as HRRR encodes it.

Core (pure): :func:`regime_of`, :func:`refc_field`, :func:`encode_refc`,
:func:`archive_file`. I/O: :func:`write_archive`, which writes an archive in the
exact ``noaa-hrrr-bdp-pds`` layout (keys, GRIB2 files, ``.idx`` sidecars) to a
directory or an S3 bucket.

Modules: ``_rng`` (counter-based random streams), ``regimes`` (episodes, regimes
and their storm sources), ``storms`` (storms and their blobs), ``render`` (blobs
to a field: :func:`refc_field`), ``grib`` (:func:`encode_refc`), ``fields`` (the
other fields of a surface file), ``archive`` (files, ``.idx`` and archives) and
``realism`` (statistics that compare a field with real HRRR reflectivity; not
imported here).

The weather is a pure function of ``(seed, valid time, lead)``:

- A sequence of weather *regimes* (:data:`REGIME_NAMES`), each lasting 2-6 days,
  never the same twice in a row. Each regime has its own storm sources (Great
  Plains squall lines and cells, Gulf coast and Florida convection, frontal bands
  and squall lines over the East, monsoon showers, Pacific stratiform rain and
  inland bands), widespread scattered cells and its own steering motion; each
  episode of a regime shifts them a little. Several systems of several kinds are
  alive at once.
- Storms are born at a rate that follows the local solar time of their source
  (afternoon peak over land, nocturnal squall lines, early-morning convection
  over the Gulf) and the time of year (warm-season convection, cold-season
  showers in the West), move with the steering flow of their birth hour, and
  grow and decay smoothly over their lifetime. Cells are elliptical Gaussian
  cores with anvils; lines are chains of cells with trailing stratiform rain;
  shields are broad stratiform areas with embedded cores; frontal bands (up to
  two per regime) last an episode.
- A multi-scale texture (octaves of 3-192 km, drifting at slightly different
  speeds) roughens and fragments echoes, which gives real radar's value
  histogram, echo-object sizes and power-spectrum slope (see
  ``scripts/synth_realism.py``); values are floored at -10 dBZ, capped softly
  below 75 and quantised to 1/16 dB, as HRRR stores them.
- The forecast for lead ``L`` is the truth at the valid time with errors that
  belong to that forecast run and grow with ``L``: displaced storms and biased
  intensities. Lead 0 is the truth.

Everything is vectorised numpy: a coarse field takes a few milliseconds, a full
HRRR field about half a second.
"""

from __future__ import annotations

from wxdask.synth.archive import (
    BUCKET,
    CORRUPT_KINDS,
    archive_file,
    parse_slots,
    write_archive,
)
from wxdask.synth.grib import encode_refc
from wxdask.synth.regimes import REGIME_NAMES, regime_of
from wxdask.synth.render import REFC_FLOOR, refc_field

__all__ = [
    "REGIME_NAMES",
    "BUCKET",
    "CORRUPT_KINDS",
    "REFC_FLOOR",
    "regime_of",
    "refc_field",
    "encode_refc",
    "archive_file",
    "parse_slots",
    "write_archive",
]
