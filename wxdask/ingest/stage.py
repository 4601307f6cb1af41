"""I/O: :func:`run`, the ingest stage (check the source, learn the grid, lay out the store, run the tasks)."""

from __future__ import annotations

import dataclasses
import itertools
import logging
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from wxdask import store
from wxdask.config import Config
from wxdask.errors import SourceError, SourceNotFoundError, StoreLayoutError
from wxdask.grid import Grid
from wxdask.ingest.header import STATUS
from wxdask.ingest.plan import _NOT_HELD, _held_slots, _pending_slots, _plan, parse_retry
from wxdask.ingest.report import Tally
from wxdask.ingest.slots import SlotResult, fetch_slot, write_slot
from wxdask.ingest.source import Source
from wxdask.ingest.tasks import _DeadSource, _run_slots
from wxdask.ingest.template import ENCODING, refc_template

if TYPE_CHECKING:
    from distributed import Client

#: One logger for the whole stage, named as before the split.
logger = logging.getLogger("wxdask.ingest")


def _check_source(source: Source) -> None:
    """Fail early, with one clear line, when the archive root cannot be read."""
    fs = source.filesystem()
    root = source.root.rstrip("/")
    target = root[5:].split("/")[0] if root.startswith("s3://") else root
    try:
        ok = fs.exists(target)
    except Exception as exc:  # noqa: BLE001 - any failure here means unreadable
        raise SourceError(f"cannot read source {source.root!r} ({type(exc).__name__}: {exc})") from None
    if not ok:
        where = f" at {source.endpoint_url}" if source.endpoint_url else ""
        raise SourceNotFoundError(f"source {source.root!r}{where} does not exist or cannot be read")


def _probe_grid(source: Source, slots: list[tuple[np.datetime64, int]], limit: int = 48, grid: Grid | None = None
                ) -> tuple[Grid | None, list[tuple[SlotResult, np.ndarray | None]]]:
    """Fetch slots in order until one decodes, to learn the source's grid.

    Runs in the client, before the grid is known: the same size bounds apply
    (:data:`MAX_POINTS`, :data:`MAX_IDX_BYTES`), so a hostile message is a
    recorded slot, not a crash. Returns the grid (``None`` if none of the first
    ``limit`` slots decodes) and the results of the slots tried, which the
    caller writes like any other. With ``grid`` (the store's), messages are
    checked against it like in any task.

    Raises
    ------
    SourceError
        When consecutive slots find the source unreachable.
    """
    tried = []
    dead = _DeadSource(source)
    for t, lead in slots[:limit]:
        result, values, found = fetch_slot(source, grid, t, lead, loose=True)
        dead.see(result)
        tried.append((result, values))
        if found is not None:
            return found, tried
    return None, tried


def _store_grid(ds: xr.Dataset) -> Grid | None:
    params = ds.attrs.get("wxdask_grid")
    return Grid(**params) if params else None


def run(cfg: Config, client: Client | None) -> str:
    """Ingest ``cfg.ingest``'s times and leads into ``cfg.store``; return a summary.

    A rerun fetches ``not_tried`` and ``failed`` slots, the slots whose status
    is in ``ingest.retry``, and any slot whose objects changed in the archive
    (one listing per run day decides; an unchanged archive costs no GRIB byte).

    Raises
    ------
    ConfigError
        If start/end are missing or invalid, or ``retry`` names an unknown status.
    SourceNotFoundError, SourceError
        If the source cannot be read at all, or becomes unreachable mid-run
        (the slots written so far stay; a rerun resumes).
    StoreLayoutError
        If the store holds a different grid or variable (it is left intact).
    """
    icfg = cfg.ingest
    retry = parse_retry(getattr(icfg, "retry", ()))
    times = icfg.times()
    source = Source(icfg.source, icfg.endpoint_url, icfg.anon, icfg.retries, icfg.backoff)
    _check_source(source)
    leads = tuple(icfg.leads)
    pending, was_ok, codes = _plan(source, times, leads, _held_slots(cfg.store), retry)
    n_wanted, n_pending = pending.size, int(np.count_nonzero(pending))
    logger.info("%d of %d slot(s) to fetch (%d kept from the store)", n_pending, n_wanted, n_wanted - n_pending)
    kept = ~pending & (codes != _NOT_HELD)
    n_ok = int(np.count_nonzero(kept & (codes == STATUS["ok"])))
    n_other = int(np.count_nonzero(kept)) - n_ok
    tally = Tally()
    if n_pending:
        held_grid = _store_grid(store.open_store(cfg.store, dask=False)) if store.exists(cfg.store) else None
        first = [(times[k], int(leads[j])) for k, j in itertools.islice(_pending_slots(pending), 48)]
        grid, probed = _probe_grid(source, first, grid=held_grid)
        if held_grid is not None and grid is None:
            read = [r for r, _ in probed if r.status not in ("absent", "missing_idx", "no_refc", "failed", "empty")]
            if read and all(r.status == "mismatch" and r.kind == "grid" for r in read):
                raise StoreLayoutError(
                    f"store {cfg.store.url!r} holds grid {held_grid.name} {held_grid.shape}, the source does not "
                    f"({read[0].detail}): a different grid; use another --store"
                )
        grid = grid or held_grid
        if grid is None:
            raise SourceNotFoundError(
                f"none of the first {min(48, n_pending)} requested files in {source.root!r} holds a readable "
                "REFC message, so the grid is unknown; check --start/--end and --source"
            )
        if held_grid is not None and held_grid != grid:
            raise StoreLayoutError(
                f"store {cfg.store.url!r} holds grid {held_grid.name} {held_grid.shape}, the source has "
                f"{grid.name} {grid.shape}: a different grid; use another --store"
            )
        template = refc_template(times, icfg.leads, grid, source=icfg.source)
        ds = store.init_output(cfg.store, template, ENCODING, check_equal=["x", "y", "refc.attrs"])
        time_index = np.searchsorted(ds["time"].values.astype("datetime64[h]"), times)
        lead_index = {int(v): i for i, v in enumerate(ds["lead_time"].values)}
        lead_col = [lead_index[int(lead)] for lead in leads]

        # probed slots were decoded before the grid was known: check them against it now
        todo_mask = pending.copy()
        for (k, j), (r, values) in zip(_pending_slots(pending), probed):
            if r.status == "ok" and values is not None and values.shape != grid.shape:
                r = dataclasses.replace(
                    r, status="mismatch", detail=f"grid: store grid is {grid.shape}, message {values.shape}"
                )
                values = None
            tally.add(write_slot(cfg.store, (int(time_index[k]), lead_col[j]), r, values,
                                 clear=bool(was_ok[k, j]), shape=grid.shape))
            todo_mask[k, j] = False
        todo = ((times[k], int(leads[j]), (int(time_index[k]), lead_col[j]), bool(was_ok[k, j]))
                for k, j in _pending_slots(todo_mask))
        import sys

        bar = client is not None and cfg.dask.progress and sys.stderr.isatty()
        _run_slots(client, todo, source, cfg.store, grid, _DeadSource(source), tally,
                   int(np.count_nonzero(todo_mask)), bar=bar)
    store.set_attrs(cfg.store, {"wxdask_config": cfg.to_dict(), "wxdask_version": _version()})
    store.consolidate(cfg.store)
    other = f", {n_other} kept as recorded (objects unchanged; --retry STATUS refetches)" if n_other else ""
    summary = tally.summary() if tally.total else "nothing to fetch"
    return f"{summary}\n{n_ok} slot(s) were already ok{other}; store: {cfg.store.url}"


def _version() -> str:
    from importlib.metadata import version

    return version("wxdask")
