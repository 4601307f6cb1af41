"""Dask tasks over slots: one per shard of the per-slot arrays, a bounded window in flight."""

from __future__ import annotations

import itertools
import logging
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import numpy as np

from wxdask import store
from wxdask.config import StoreConfig
from wxdask.errors import SourceError
from wxdask.grid import Grid
from wxdask.ingest.header import STATUS
from wxdask.ingest.report import Tally
from wxdask.ingest.slots import _REFC_FILL, SlotResult, _log_slot, fetch_slot, write_slot
from wxdask.ingest.source import Source
from wxdask.ingest.template import SHARD_TIMES

if TYPE_CHECKING:
    from dask.delayed import Delayed
    from distributed import Client

#: One logger for the whole stage, named as before the split.
logger = logging.getLogger("wxdask.ingest")


#: Slots a task ingests between two writes of the small per-slot arrays: a whole task's (one shard), since
#: each write reads and rewrites the shard; a task killed half-way leaves its slots to the next run.
FLUSH_SLOTS = SHARD_TIMES


class _DeadSource:
    """Stops the run when consecutive slots find the source unreachable."""

    def __init__(self, source: Source, limit: int = 3) -> None:
        self.source = source
        self.limit = limit
        self.streak = 0
        self.written = 0

    def see(self, result: SlotResult) -> None:
        if result.status != "failed" or not result.unreachable:
            self.streak = 0
            self.written += result.status == "ok"
            return
        self.streak += 1
        if self.streak >= self.limit:
            raise SourceError(
                f"source endpoint {self.source.where()} is unreachable: {self.streak} consecutive slots could not "
                f"connect (last {np.datetime_as_string(result.time, unit='h')} f{result.lead:02d}); the slots "
                "written so far stay in the store; rerun to resume"
            )


def ingest_slot(source: Source, store_cfg: StoreConfig, grid: Grid, init_time: np.datetime64, lead: int,
                index: tuple[int, int], clear: bool = False) -> SlotResult:
    """Fetch, check, decode and write one slot; runs as one Dask task.

    The image is written before ``status``, so a slot interrupted half-way is
    retried by the next run.
    """
    result, values, _ = fetch_slot(source, grid, init_time, lead)
    return write_slot(store_cfg, index, result, values, clear=clear, shape=grid.shape)


def ingest_group(source: Source, store_cfg: StoreConfig, grid: Grid,
                 items: list[tuple[np.datetime64, int, tuple[int, int], bool]]) -> list[SlotResult]:
    """Ingest the slots of one shard of the per-slot arrays, in order; runs as one Dask task.

    One task owns a shard, so its writes never race another's. Images are
    written as they come; the small per-slot arrays every :data:`FLUSH_SLOTS`
    slots (status last), so a task killed half-way leaves its unflushed slots
    to the next run. Stops early
    (the rest left ``not_tried``) when consecutive slots find the source
    unreachable.
    """
    results: list[SlotResult] = []
    flushed = 0
    dead = _DeadSource(source)
    writer = store.open_writer(store_cfg)  # the arrays opened once per task, not once per slot

    def flush() -> None:
        # the small per-slot values, one write per array, status last (the commit mark)
        nonlocal flushed
        done, batch = items[flushed:len(results)], results[flushed:]
        if not done:
            return
        points = (
            np.array([it[2][0] for it in done], dtype=np.intp),
            np.array([it[2][1] for it in done], dtype=np.intp),
        )
        writer.points(
            {
                "grib_bytes": np.array([r.message_bytes for r in batch], dtype=np.int32),
                "source_identity": np.array([r.identity for r in batch], dtype=np.dtypes.StringDType()),
                "grib_start": np.array([r.start for r in batch], dtype=np.int64),
                "grib_end": np.array([r.end for r in batch], dtype=np.int64),
                "reason": np.array([r.detail for r in batch], dtype=np.dtypes.StringDType()),
                "status": np.array([STATUS[r.status] for r in batch], dtype=np.int8),
            },
            points,
        )
        flushed = len(results)

    for t, lead, index, clear in items:
        result, values, _ = fetch_slot(source, grid, t, lead)
        if result.status == "ok":
            writer.region({"refc": values}, index)
        else:
            _log_slot(result)
            if clear:
                writer.region({"refc": np.full(grid.shape, _REFC_FILL, dtype=np.int16)}, index)
        results.append(result)
        if len(results) - flushed >= FLUSH_SLOTS:
            flush()
        try:
            dead.see(result)
        except SourceError:
            break
    flush()
    return results


def ingest(slots: list[tuple[np.datetime64, int, tuple[int, int]]], source: Source, store_cfg: StoreConfig,
           grid: Grid) -> list[Delayed]:
    """One independent task per slot; nothing is computed here.

    Parameters
    ----------
    slots : list of (init_time, lead, (time_index, lead_index))
        Slots to fetch and where they go in the store.

    Returns
    -------
    list of dask.delayed.Delayed
        Each computes to a :class:`SlotResult` after writing its slot.
    """
    import dask

    task = dask.delayed(ingest_slot, pure=True)
    return [
        task(source, store_cfg, grid, t, lead, index,
             dask_key_name=f"ingest-{np.datetime_as_string(t, unit='h')}-f{lead:02d}")
        for t, lead, index in slots
    ]


def group_slots(todo: Iterable[tuple[np.datetime64, int, tuple[int, int], bool]], shard_times: int = SHARD_TIMES
                ) -> Iterator[list[tuple[np.datetime64, int, tuple[int, int], bool]]]:
    """Slots grouped by the shard of the per-slot arrays they fall in (``time_index // shard_times``, lead).

    Lazy: ``todo`` comes in time order (as planned), and the groups of one
    block of ``shard_times`` times are yielded as soon as the next block starts,
    so only one block of slots is held at a time.

    Raises
    ------
    ValueError
        If ``todo`` goes back to a block already yielded (two tasks would write one shard).

    Examples
    --------
    >>> t = np.datetime64("2020-01-01T00", "h")
    >>> [len(g) for g in group_slots([(t, 0, (i, 0), False) for i in range(30)], 24)]
    [24, 6]
    """
    groups: dict[int, list] = {}
    block = None
    for item in todo:
        ti, li = item[2]
        if ti // shard_times != block:
            if block is not None and ti // shard_times < block:
                raise ValueError(f"slots out of time order: time index {ti} after block {block} of {shard_times}")
            yield from groups.values()
            groups, block = {}, ti // shard_times
        groups.setdefault(li, []).append(item)
    yield from groups.values()


def _run_slots(client: Client | None, todo: Iterable[tuple[np.datetime64, int, tuple[int, int], bool]],
               source: Source, store_cfg: StoreConfig, grid: Grid, dead: _DeadSource, tally: Tally,
               total: int, window: int | None = None, bar: bool = False) -> Tally:
    """Run one task per shard of slots, at most ``window`` in flight (the whole graph is never built).

    ``todo`` (``total`` slots, in time order) is grouped as it is consumed;
    each task's results are counted into ``tally`` and dropped, so the client
    holds a bounded number of slots whatever the run's size. Logs progress
    (and draws a bar on stderr when ``bar``); stops (cancelling what is
    queued) when :class:`_DeadSource` says the source is gone.
    """
    import sys

    step = max(1, total // 20)
    done = [0, 0]  # slots, tasks

    def progress(batch: list[SlotResult]) -> None:
        for r in batch:
            tally.add(r)
            dead.see(r)
        before = done[0]
        done[0] += len(batch)
        done[1] += 1
        if bar:  # drawn on stderr, as distributed's bar is, so stdout holds only the result
            frac = done[0] / max(total, 1)
            sys.stderr.write(f"\r[{'#' * int(40 * frac):<40}] | {100 * frac:3.0f}% Completed | "
                             f"{done[0]}/{total} slots" + ("\n" if done[0] >= total else ""))
            sys.stderr.flush()
        if done[0] // step > before // step or done[0] >= total:
            logger.info("ingest: %d/%d slot(s) done (%d tasks)", done[0], total, done[1])

    groups = group_slots(todo)
    if client is None:
        for group in groups:
            progress(ingest_group(source, store_cfg, grid, group))
        return tally
    import uuid

    from distributed import as_completed

    window = window or max(16, 4 * sum(client.nthreads().values()))

    def submit(group: list) -> Any:
        t, lead = group[0][0], group[0][1]
        key = f"ingest-{np.datetime_as_string(t, unit='h')}-f{lead:02d}-{uuid.uuid4().hex[:8]}"
        return client.submit(ingest_group, source, store_cfg, grid, group, key=key, pure=False)

    # only the futures in flight are held: a finished one is dropped (its result released on the worker)
    running = {submit(group) for group in itertools.islice(groups, window)}  # (zip would drop a group)
    pool = as_completed(running)
    try:
        for future in pool:
            running.discard(future)
            batch = future.result()
            del future
            progress(batch)
            item = next(groups, None)
            if item is not None:
                new = submit(item)
                running.add(new)
                pool.add(new)
    except SourceError:
        # the source is gone: tasks already sent stop within a few slots (they see it too); let them
        # finish writing, so nothing writes to the store after this returns, then drop the rest
        from distributed import wait

        try:
            wait([f for f in running if not f.done()], timeout=60)
        except Exception:  # noqa: BLE001 - a timeout: cancel what is left
            pass
        client.cancel([f for f in running if not f.done()])
        pool.clear()
        raise
    except BaseException:
        client.cancel([f for f in running if not f.done()])
        pool.clear()
        raise
    return tally
