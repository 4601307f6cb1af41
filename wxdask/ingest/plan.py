"""What a (re)run fetches: the slots the store holds, ``--retry`` and the archive's listing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from wxdask import store
from wxdask.config import StoreConfig
from wxdask.errors import ConfigError, StoreLayoutError
from wxdask.ingest.header import RETRYABLE, STATUS, STATUS_NAMES
from wxdask.ingest.idx import hrrr_key
from wxdask.ingest.source import Source, _retry, slot_identity

#: One logger for the whole stage, named as before the split.
logger = logging.getLogger("wxdask.ingest")


#: Code of a slot the store does not hold (not a :data:`STATUS` code).
_NOT_HELD = -1


@dataclass(frozen=True)
class _Held:
    """Status codes and recorded identities of the store's slots, as arrays over its ``(time, lead_time)``.

    Arrays, not one object per slot, so a rerun over years of slots stays small in the client.
    """

    times: np.ndarray
    leads: np.ndarray
    status: np.ndarray
    identity: np.ndarray

    def at(self, times: np.ndarray, leads: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Status codes (:data:`_NOT_HELD` where the store has no such slot) and identities of ``times x leads``.

        Returns
        -------
        status : numpy.ndarray
            ``(len(times), len(leads))`` int8 codes.
        identity : numpy.ndarray
            ``(len(times), len(leads))`` strings (empty where not held or not recorded).
        """
        codes = np.full((len(times), len(leads)), _NOT_HELD, dtype=np.int8)
        ident = np.full(codes.shape, "", dtype=np.dtypes.StringDType())
        if not len(self.times):
            return codes, ident
        ti = np.searchsorted(self.times, times).clip(max=len(self.times) - 1)
        rows = np.flatnonzero(self.times[ti] == times)
        lead_index = {int(v): j for j, v in enumerate(self.leads)}
        for j, lead in enumerate(leads):
            if int(lead) in lead_index:
                codes[rows, j] = self.status[ti[rows], lead_index[int(lead)]]
                ident[rows, j] = self.identity[ti[rows], lead_index[int(lead)]]
        return codes, ident


def _held_slots(store_cfg: StoreConfig) -> _Held:
    """Status and recorded identity of every slot the store has; empty for a new store."""
    none = np.zeros((0, 0), dtype=np.int8)
    if not store.exists(store_cfg):
        return _Held(np.array([], dtype="datetime64[h]"), np.array([], dtype=int), none, none.astype(str))
    ds = store.open_store(store_cfg, dask=False)  # coordinates only: no chunk grid of one chunk per slot
    if "status" not in ds:
        raise StoreLayoutError(f"store {store_cfg.url!r} has no 'status'; it was not made by wxdask ingest")
    whole = (slice(None), slice(None))  # read through zarr, a shard at a time (dask would make a task per slot)
    status = store.read_region(store_cfg, "status", whole).astype(np.int8)
    ident = (
        store.read_region(store_cfg, "source_identity", whole)
        if "source_identity" in ds
        else np.full(status.shape, "", dtype=object)
    )
    # str() of each, as recorded (an object array's None reads as "None", as it always has)
    if ident.dtype != np.dtypes.StringDType():
        ident = np.array([str(v) for v in ident.ravel()], dtype=np.dtypes.StringDType()).reshape(status.shape)
    return _Held(ds["time"].values.astype("datetime64[h]"), ds["lead_time"].values, status, ident)


def _list_days(source: Source, days: list[str]) -> dict[str, dict]:
    """Name -> listing entry of every object under ``hrrr.YYYYMMDD/conus/`` of ``days`` (one LIST per day)."""
    from concurrent.futures import ThreadPoolExecutor

    fs = source.filesystem()

    def one(day: str) -> dict[str, dict]:
        path = source.path(f"hrrr.{day}/conus")
        try:
            try:
                entries = _retry(source, f"listing {path!r}", fs.ls, path, detail=True, refresh=True)
            except TypeError:
                entries = _retry(source, f"listing {path!r}", fs.ls, path, detail=True)
        except FileNotFoundError:
            return {}
        return {f"hrrr.{day}/conus/{e['name'].rstrip('/').rsplit('/', 1)[-1]}": e for e in entries}

    out: dict[str, dict] = {}
    with ThreadPoolExecutor(max_workers=8) as pool:
        for listing in pool.map(one, days):
            out.update(listing)
    return out


def parse_retry(value: Any) -> frozenset[str]:
    """Statuses to refetch whatever their objects' identity: ``"absent,corrupt"``, ``"all"`` or a sequence.

    Raises
    ------
    ConfigError
        Naming the unknown status and the valid ones.
    """
    if value is None or value == "" or value == ():
        return frozenset()
    names = [v.strip() for v in (value.split(",") if isinstance(value, str) else value) if str(v).strip()]
    if names == ["all"]:
        return frozenset(RETRYABLE)
    bad = [n for n in names if n not in RETRYABLE]
    if bad:
        raise ConfigError(f"--retry: unknown status {bad[0]!r}; valid: {', '.join(RETRYABLE)} or all")
    return frozenset(names)


#: Run days listed at once when checking identities (the listings of a batch are dropped before the next).
_LIST_BATCH_DAYS = 32


def _plan(source: Source, times: np.ndarray, leads: tuple[int, ...], held: _Held, retry: frozenset[str]
          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which of the ``times x leads`` slots to fetch, and which of them held an image (to clear if it goes bad).

    ``not_tried`` and ``failed`` slots are fetched, and those whose status is
    in ``retry``. Any other slot is fetched only when its objects changed:
    one listing per run day gives every object's identity, compared with the
    one recorded; no GRIB byte is read to decide. Slots of stores written
    before identities were recorded keep their old rule (ok kept, others fetched).

    Returns
    -------
    pending, was_ok : numpy.ndarray
        ``(len(times), len(leads))`` bool masks.
    codes : numpy.ndarray
        ``(len(times), len(leads))`` the held status codes (:data:`_NOT_HELD` for new slots).
    """
    codes, ident = held.at(times, leads)
    fetch = [STATUS[s] for s in ("not_tried", "failed", *retry)]
    known = list(STATUS_NAMES)
    pending = (codes == _NOT_HELD) | np.isin(codes, fetch) | ~np.isin(codes, known)
    unrecorded = ident == ""
    pending |= unrecorded & (codes != STATUS["ok"])
    check = ~pending & ~unrecorded
    rows = np.flatnonzero(check.any(axis=1))
    if len(rows):
        days = np.unique(times[rows].astype("datetime64[D]"))
        for b in range(0, len(days), _LIST_BATCH_DAYS):
            batch = days[b:b + _LIST_BATCH_DAYS]
            listing = _list_days(source, [str(d).replace("-", "") for d in batch])
            in_batch = rows[np.isin(times[rows].astype("datetime64[D]"), batch)]
            for k in in_batch:
                for j in np.flatnonzero(check[k]):
                    t, lead = times[k], int(leads[j])
                    key = hrrr_key(t, lead)
                    now = slot_identity(listing.get(key), listing.get(key + ".idx"))
                    if now != ident[k, j]:
                        logger.info("%s changed in the archive (%s -> %s): fetching again", key, ident[k, j], now)
                        pending[k, j] = True
    was_ok = pending & (codes == STATUS["ok"])
    return pending, was_ok, codes


def _pending_slots(pending: np.ndarray) -> Iterator[tuple[int, int]]:
    """Row and column of each pending slot, time-major (the order slots are fetched in), one at a time."""
    for k in np.flatnonzero(pending.any(axis=1)):
        for j in np.flatnonzero(pending[k]):
            yield int(k), int(j)
