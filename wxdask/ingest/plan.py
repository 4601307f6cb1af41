"""What a (re)run fetches: the slots the store holds, ``--retry`` and the archive's listing."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from wxdask import store
from wxdask.config import StoreConfig
from wxdask.errors import ConfigError, StoreLayoutError
from wxdask.ingest.header import RETRYABLE, STATUS_NAMES
from wxdask.ingest.idx import hrrr_key
from wxdask.ingest.source import Source, _retry, slot_identity

#: One logger for the whole stage, named as before the split.
logger = logging.getLogger("wxdask.ingest")


@dataclass(frozen=True)
class _Held:
    status: str
    identity: str


def _held_slots(store_cfg: StoreConfig) -> dict[tuple[np.datetime64, int], _Held]:
    """Status and recorded identity of every slot the store has; empty for a new store."""
    if not store.exists(store_cfg):
        return {}
    ds = store.open_store(store_cfg)
    if "status" not in ds:
        raise StoreLayoutError(f"store {store_cfg.url!r} has no 'status'; it was not made by wxdask ingest")
    whole = (slice(None), slice(None))  # read through zarr, a shard at a time (dask would make a task per slot)
    status = store.read_region(store_cfg, "status", whole)
    ident = (
        store.read_region(store_cfg, "source_identity", whole)
        if "source_identity" in ds
        else np.full(status.shape, "", dtype=object)
    )
    times = ds["time"].values.astype("datetime64[h]")
    leads = ds["lead_time"].values
    return {(times[i], int(leads[j])): _Held(STATUS_NAMES.get(int(status[i, j]), "not_tried"), str(ident[i, j]))
            for i in range(len(times)) for j in range(len(leads))}


def _ok_slots(store_cfg: StoreConfig) -> set[tuple[np.datetime64, int]]:
    """Slots the store already holds (status ok); empty for a new store."""
    return {slot for slot, held in _held_slots(store_cfg).items() if held.status == "ok"}


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


def _plan(source: Source, wanted: list[tuple[np.datetime64, int]], held: dict, retry: frozenset[str]
          ) -> tuple[list[tuple[np.datetime64, int]], set[tuple[np.datetime64, int]]]:
    """Which slots to fetch, and which of them held an image (to clear if it goes bad).

    ``not_tried`` and ``failed`` slots are fetched, and those whose status is
    in ``retry``. Any other slot is fetched only when its objects changed:
    one listing per run day gives every object's identity, compared with the
    one recorded; no GRIB byte is read to decide. Slots of stores written
    before identities were recorded keep their old rule (ok kept, others fetched).
    """
    pending, check = [], []
    for slot in wanted:
        h = held.get(slot)
        if h is None or h.status in ("not_tried", "failed") or h.status in retry:
            pending.append(slot)
        elif not h.identity:
            if h.status != "ok":
                pending.append(slot)
        else:
            check.append(slot)
    if check:
        days = sorted({f"{np.datetime64(t, 'h').item():%Y%m%d}" for t, _ in check})  # type: ignore[call-overload]  # numpy stubs lack datetime64(datetime64, unit)
        listing = _list_days(source, days)
        for t, lead in check:
            key = hrrr_key(t, lead)
            now = slot_identity(listing.get(key), listing.get(key + ".idx"))
            if now != held[(t, lead)].identity:
                logger.info("%s changed in the archive (%s -> %s): fetching again", key, held[(t, lead)].identity, now)
                pending.append((t, lead))
    order = {slot: i for i, slot in enumerate(wanted)}
    pending.sort(key=order.__getitem__)
    was_ok = {slot for slot in pending if slot in held and held[slot].status == "ok"}
    return pending, was_ok
