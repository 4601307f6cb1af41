"""Realism report: the one real HRRR REFC field against a season of synthetic fields.

Decodes the real message (``tests/data/hrrr.20221014.t01z.wrfsubhf00.refc.grib2``),
renders ``--samples`` synthetic analyses spread evenly over ``--days`` days from
``--start`` (``wxdask.synth.refc_field(seed, time, 0, grid)``; the step is not a
whole number of days, so the samples visit every hour of the day), computes the
statistics of :mod:`wxdask.synth.realism` on each, and prints a side-by-side table:
the real value, the synthetic median (and its 10th-90th percentiles over the
samples), the ratio median/real (for the spectrum slope the difference) and
whether it is within a factor of 2 (slope within 0.3). Optionally writes a PNG
of the real field next to a few synthetic ones.

Usage::

    python scripts/synth_realism.py [--grid hrrr] [--days 90] [--samples 24] [--seed 0] [--png out.png]
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

import numpy as np

from wxdask import synth
from wxdask.grid import get_grid
from wxdask.synth import realism

logger = logging.getLogger("synth_realism")

REAL = Path(__file__).resolve().parents[1] / "tests" / "data" / "hrrr.20221014.t01z.wrfsubhf00.refc.grib2"


def sample_times(start: str, days: float, samples: int) -> np.ndarray:
    """``samples`` hours spread evenly over ``days`` days from ``start`` (datetime64[h])."""
    offsets = np.floor(np.linspace(0, days * 24, samples, endpoint=False)).astype(np.int64)
    return np.datetime64(start, "h") + offsets.astype("timedelta64[h]")


def synthetic_stats(seed: int, times: np.ndarray, grid_name: str) -> tuple[list[dict[str, float]], list[np.ndarray]]:
    """Statistics of the synthetic analysis at each time, and the fields themselves."""
    grid = get_grid(grid_name)
    stats, fields = [], []
    for t in times:
        f = synth.refc_field(seed, t, 0, grid)
        stats.append(realism.field_stats(f, grid.dx))
        fields.append(f)
        logger.info("%s: %.1f%% above 20 dBZ", t, 100 * float(np.mean(f > 20)))
    return stats, fields


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "-"
    if v != 0 and abs(v) < 0.01:
        return f"{v:.2e}"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"


def table(real: dict[str, float], stats: list[dict[str, float]]) -> str:
    """The side-by-side report as text."""
    med = {k: float(np.nanmedian([s[k] for s in stats])) if any(not math.isnan(s[k]) for s in stats) else math.nan
           for k in real}
    cmp = realism.compare(real, med)
    lines = [f"{'statistic':<24}{'real':>10}{'synthetic':>11}{'p10..p90':>20}{'ratio':>13}  ok"]
    for k in realism.STAT_NAMES:
        values = np.array([s[k] for s in stats])
        lo, hi = (np.nanpercentile(values, (10, 90)) if np.any(~np.isnan(values)) else (math.nan, math.nan))
        ratio, ok = cmp[k]
        mark = {True: "yes", False: "NO", None: "?"}[ok]
        label = ("diff " if "slope" in k else "") + _fmt(ratio)
        lines.append(f"{k:<24}{_fmt(real[k]):>10}{_fmt(med[k]):>11}{_fmt(lo) + '..' + _fmt(hi):>20}{label:>13}  {mark}")
    n_ok = sum(1 for r, ok in cmp.values() if ok)
    lines.append(f"within a factor 2 (slope within 0.3): {n_ok} of {len(cmp)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", default="hrrr", help="synthetic grid: hrrr (default) or coarse")
    p.add_argument("--days", type=float, default=90.0, help="days the samples span (default 90)")
    p.add_argument("--samples", type=int, default=24, help="synthetic fields (default 24)")
    p.add_argument("--start", default="2019-09-01T00", help="first sample time (default 2019-09-01T00)")
    p.add_argument("--seed", type=int, default=0, help="archive seed (default 0)")
    p.add_argument("--real", default=str(REAL), help="the real GRIB2 message")
    p.add_argument("--png", help="write the real field and a few synthetic ones to this PNG")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")

    field, dx = realism.decode_message(Path(args.real).read_bytes())
    real = realism.field_stats(field, dx)
    times = sample_times(args.start, args.days, args.samples)
    stats, fields = synthetic_stats(args.seed, times, args.grid)
    print(f"real: {Path(args.real).name} ({field.shape[0]}x{field.shape[1]}, dx {dx / 1e3:g} km)")
    print(f"synthetic: seed {args.seed}, grid {args.grid}, {len(times)} analyses {times[0]} .. {times[-1]} "
          f"(median over them)")
    print(table(real, stats))
    if args.png:
        from wxdask.plots import image_panel

        pick = np.linspace(0, len(fields) - 1, min(5, len(fields))).round().astype(int)
        regimes = synth.regime_of(args.seed, times[pick])
        image_panel([field, *(fields[i] for i in pick)],
                    ["real 2022-10-14 01:15z", *(f"synthetic {times[i]}\n{synth.REGIME_NAMES[r]}"
                                                for i, r in zip(pick, regimes))],
                    args.png, ncols=3, suptitle="composite reflectivity: real HRRR vs synthetic")
        print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
