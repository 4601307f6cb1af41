"""Reporting: the run's :func:`summarize` and the store's :func:`status_report`."""

from __future__ import annotations

from typing import Iterable

import numpy as np

from wxdask import store
from wxdask.config import StoreConfig
from wxdask.errors import ConfigError, StoreLayoutError
from wxdask.ingest.header import STATUS, STATUS_NAMES
from wxdask.ingest.slots import SlotResult


class Tally:
    """What :func:`summarize` reports, accumulated one slot at a time: the client keeps no per-slot object.

    Counts by status and by reason kind, and the first ``limit`` slots of each
    status that is not ok (their time, lead and reason only).

    Parameters
    ----------
    limit : int
        Slots listed per status.

    Examples
    --------
    >>> tally = Tally(limit=1)
    >>> for lead in (0, 1):
    ...     tally.add(SlotResult(np.datetime64("2020-01-01T00", "h"), lead, "absent", "no GRIB object: gone"))
    >>> print(tally.summary())
    2 slot(s) attempted: 2 absent
    absent: 2 (no GRIB object: 2)
      2020-01-01T00 f00: absent: no GRIB object: gone
      ... and 1 more (wxdask status --store STORE --status absent)
    """

    def __init__(self, limit: int = 20) -> None:
        self.limit = limit
        self.total = 0
        self.counts: dict[str, int] = {}
        self.kinds: dict[str, dict[str, int]] = {}
        self.shown: dict[str, list[tuple[np.datetime64, int, str]]] = {}

    def add(self, result: SlotResult) -> None:
        """Count one slot (and keep it for the listing while its status has fewer than ``limit``)."""
        status = result.status
        self.total += 1
        self.counts[status] = self.counts.get(status, 0) + 1
        if status != "ok":
            by = self.kinds.setdefault(status, {})
            by[result.kind] = by.get(result.kind, 0) + 1
            shown = self.shown.setdefault(status, [])
            if len(shown) < self.limit:
                shown.append((result.time, result.lead, result.detail))

    def summary(self) -> str:
        """The text :func:`summarize` returns."""
        counts = self.counts
        lines = [f"{self.total} slot(s) attempted: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
        for status in sorted(self.kinds):
            lines.append(
                f"{status}: {counts[status]} ("
                + ", ".join(f"{k}: {n}" for k, n in sorted(self.kinds[status].items())) + ")"
            )
            for t, lead, detail in self.shown[status]:
                lines.append(f"  {np.datetime_as_string(t, unit='h')} f{lead:02d}: {status}: {detail}")
            if counts[status] > self.limit:
                lines.append(
                    f"  ... and {counts[status] - self.limit} more (wxdask status --store STORE --status {status})"
                )
        return "\n".join(lines)


def summarize(results: Iterable[SlotResult], limit: int = 20) -> str:
    """A bounded human summary: counts by status and by reason, the first ``limit`` slots of each status.

    ``results`` may be a generator: each is counted (:class:`Tally`) and dropped.
    ``wxdask status --store S`` lists every slot that is not ok.
    """
    tally = Tally(limit)
    for r in results:
        tally.add(r)
    return tally.summary()


def status_report(store_cfg: StoreConfig, status: str | None = None, fmt: str = "table") -> tuple[str, str]:
    """Every slot of the store that is not ok (or of one ``status``), with its reason, and the totals.

    Parameters
    ----------
    store_cfg : StoreConfig
        The store.
    status : str, optional
        Only this status (``ok`` lists the filled slots).
    fmt : {"table", "csv", "json"}
        Output format.

    Returns
    -------
    listing : str
        The slots (and, for table and json, the totals).
    totals : str
        One line of counts per status.

    Raises
    ------
    ConfigError
        For an unknown status or format.
    StoreLayoutError
        If the store was not made by ingest.
    """
    import json

    if fmt not in ("table", "csv", "json"):
        raise ConfigError(f"--format must be table, csv or json, got {fmt!r}")
    if status is not None and status not in STATUS:
        raise ConfigError(f"--status: unknown status {status!r}; valid: {', '.join(STATUS)}")
    ds = store.open_store(store_cfg)
    if "status" not in ds:
        raise StoreLayoutError(f"store {store_cfg.url!r} has no 'status'; it was not made by wxdask ingest")
    whole = (slice(None), slice(None))
    codes = store.read_region(store_cfg, "status", whole)
    reasons = (
        store.read_region(store_cfg, "reason", whole) if "reason" in ds else np.full(codes.shape, "", dtype=object)
    )
    times = np.datetime_as_string(ds["time"].values, unit="h")
    leads = ds["lead_time"].values
    totals = {name: int(np.count_nonzero(codes == code)) for name, code in STATUS.items()}
    totals = {k: v for k, v in totals.items() if v}
    select = codes == STATUS[status] if status is not None else codes != STATUS["ok"]
    rows = [(str(times[i]), int(leads[j]), STATUS_NAMES.get(int(codes[i, j]), str(codes[i, j])), str(reasons[i, j]))
            for i, j in zip(*np.nonzero(select))]
    total_line = f"{codes.size} slot(s): " + ", ".join(f"{n} {s}" for s, n in totals.items())
    if fmt == "json":
        return json.dumps({"totals": totals, "slots": [dict(zip(("time", "lead_time", "status", "reason"), r))
                                                        for r in rows]}, indent=1), total_line
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["time", "lead_time", "status", "reason"])
        writer.writerows(rows)
        return buf.getvalue().rstrip("\n"), total_line
    width = max([len(r[2]) for r in rows] + [6])
    lines = [f"{'time':13}  lead  {'status':{width}}  reason"]
    lines += [f"{t:13}  f{lead:02d}   {s:{width}}  {reason}" for t, lead, s, reason in rows]
    lines.append(total_line)
    return "\n".join(lines), total_line
