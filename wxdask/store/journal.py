"""Whole-variable changes: :func:`write_variables` through staged, journalled commits; attrs, consolidation."""

from __future__ import annotations

import logging
import warnings
from typing import Iterable

import fsspec
import numpy as np
import xarray as xr
import zarr

from wxdask.config import StoreConfig
from wxdask.errors import StoreLayoutError
from wxdask.store.location import _fs_and_path, _group, open_store

#: One logger for all of wxdask.store, named as before the split.
logger = logging.getLogger("wxdask.store")


def drop_variables(cfg: StoreConfig, names: Iterable[str]) -> None:
    """Delete variables (metadata and chunks) from the store, if present."""
    group = _group(cfg)
    for name in names:
        if name in group:
            logger.info("deleting %s from %s", name, cfg.url)
            del group[name]


def write_variables(cfg: StoreConfig, ds: xr.Dataset, *, encoding: dict | None = None,
                    attrs: dict | None = None) -> None:
    """Add or replace whole variables (aligned with the store's dims), computing them, atomically.

    The new variables are computed into a staging store beside the store (each
    chunk written by the worker that computes it), then committed with
    :func:`commit`: a failure or a kill before the commit leaves the store as it
    was; a kill during the commit is finished by the next writer
    (:func:`recover`). Readers never see a mix of old and new variables once
    the commit is done. A dimension used only by the replaced variables (``rank``
    after ``search -k`` changes, ``cluster_id`` after ``cluster -k``) may change
    size; dims shared with other variables must match.

    Parameters
    ----------
    cfg : StoreConfig
        Where the store is.
    ds : xarray.Dataset
        New variables (and the coordinates of their dims).
    encoding : dict, optional
        Per-variable encoding for ``to_zarr``.
    attrs : dict, optional
        Store attributes set in the same commit.

    Raises
    ------
    StoreLayoutError
        If a shared dimension does not match the store's.
    """
    recover(cfg)
    existing = open_store(cfg)
    names = [str(v) for v in ds.data_vars]
    keep = set(existing.data_vars) - set(names)
    moved_coords = []
    for dim in ds.dims:
        if dim not in existing.dims:
            if dim in ds.coords:
                moved_coords.append(dim)
            continue
        same = existing.sizes[dim] == ds.sizes[dim] and (
            dim not in ds.coords or dim not in existing.coords
            or np.array_equal(existing[dim].values, ds[dim].values))
        if same:
            continue
        users = sorted(str(v) for v in keep if dim in existing[v].dims)
        if users or dim in ("time", "lead_time"):
            raise StoreLayoutError(
                f"cannot write {', '.join(names)} to {cfg.url!r}: {dim} does not match the store's"
                + (f" (also used by {', '.join(users)})" if users else "")
            )
        moved_coords.append(dim)
    out = ds.drop_vars([c for c in ds.coords if c not in moved_coords and c not in ds.dims])
    staged = staging(cfg)
    try:
        out.attrs = {}
        out.to_zarr(staged.url, mode="w-", encoding=encoding or {}, zarr_format=3, consolidated=False,
                    storage_options=staged.storage_options or None)
    except BaseException:
        discard(staged)
        raise
    for name in names:
        if name in existing.data_vars:
            logger.info("replacing %s in %s", name, cfg.url)
    commit(cfg, staged, names + [str(c) for c in moved_coords if c in out.variables], attrs=attrs)


# ----------------------------------------------------------------------------- staged commits
# Beside the store (never inside it: zarr warns about foreign objects in a group), one control
# directory ``<store>.wxdask/`` holds staging stores and the commit journal.

_JOURNAL = "commit.json"


def control_url(cfg: StoreConfig) -> str:
    """URL of the store's control directory (staging stores, the commit journal)."""
    return cfg.url.rstrip("/") + ".wxdask"


def staging(cfg: StoreConfig) -> StoreConfig:
    """A fresh, empty staging location for new variables of ``cfg``'s store."""
    import uuid

    return StoreConfig(url=f"{control_url(cfg)}/staging/{uuid.uuid4().hex[:12]}",
                       storage_options=cfg.storage_options)


def _remove(cfg: StoreConfig) -> None:
    fs, path = _fs_and_path(cfg)
    fs.invalidate_cache(path)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def discard(staged: StoreConfig) -> None:
    """Remove a staging store (from :func:`staging`) that will not be committed.

    Never raises: a task of the failed computation may still be writing into it
    (the next writer's :func:`recover` removes what is left).
    """
    try:
        _remove(staged)
    except OSError as exc:
        logger.warning("could not remove the staging store %s yet (%s); the next run removes it", staged.url, exc)


def commit(cfg: StoreConfig, staged: StoreConfig, names: Iterable[str], *, attrs: dict | None = None,
           drop: Iterable[str] = ()) -> None:
    """Move the arrays ``names`` of the staging store ``staged`` into the store, replacing any.

    First a journal naming the move is written (one small object: the commit
    point); then the arrays ``drop`` are deleted (those the new ones make
    inconsistent), each array is moved, the store's attributes updated, the
    metadata consolidated, and the journal and staging store removed. A kill
    after the journal is written is finished by :func:`recover`.
    """
    import json

    fs, ctl = fsspec.core.url_to_fs(control_url(cfg), **cfg.storage_options)
    journal = {"staging": staged.url, "names": list(names), "attrs": attrs or {}, "drop": list(drop)}
    tmp = f"{ctl}/{_JOURNAL}.tmp"
    fs.makedirs(ctl, exist_ok=True)
    with fs.open(tmp, "w") as f:
        json.dump(journal, f)
    fs.mv(tmp, f"{ctl}/{_JOURNAL}")
    _apply(cfg, journal)


def recover(cfg: StoreConfig) -> None:
    """Finish a commit that a killed writer left half done (no-op when none is pending)."""
    import json

    fs, ctl = fsspec.core.url_to_fs(control_url(cfg), **cfg.storage_options)
    path = f"{ctl}/{_JOURNAL}"
    if not fs.exists(path):
        if fs.exists(f"{ctl}/staging"):  # a killed writer's staging stores: never committed
            for orphan in fs.ls(f"{ctl}/staging", detail=False):
                logger.info("removing %s, left by a run that did not finish", orphan)
                fs.rm(orphan, recursive=True)
        return
    with fs.open(path) as f:
        journal = json.load(f)
    logger.warning("finishing an interrupted write of %s to %s", ", ".join(journal["names"]), cfg.url)
    _apply(cfg, journal)


def _move_array(fs: fsspec.AbstractFileSystem, src: str, dst: str) -> None:
    """Move one array's objects from ``src`` to ``dst`` (replacing ``dst``); safe to repeat after a kill.

    A local directory is renamed. On an object store every object is copied
    first, then the source's ``zarr.json`` is deleted (from then on the move is
    done: a repeat skips it), then the rest of the source.
    """
    if fs.exists(dst):
        fs.rm(dst, recursive=True)
    if "file" in fs.protocol or "local" in fs.protocol:
        fs.mv(src, dst, recursive=True)
        return
    fs.invalidate_cache()
    keys = sorted(fs.find(src), key=lambda k: k.endswith("/zarr.json"))  # metadata last
    for key in keys:
        fs.copy(key, dst + key[len(src):])
    fs.rm(f"{src}/zarr.json")
    rest = [k for k in keys if not k.endswith(f"{src}/zarr.json")]
    if rest:
        fs.rm(rest)
    fs.invalidate_cache()


def _apply(cfg: StoreConfig, journal: dict) -> None:
    """Carry out a journal's move; safe to repeat after a kill at any point."""
    fs, path = _fs_and_path(cfg)
    fs.invalidate_cache()  # workers wrote the staging store: this process's listings are stale
    staged = StoreConfig(url=journal["staging"], storage_options=cfg.storage_options)
    _, src_root = _fs_and_path(staged)
    for name in journal.get("drop", ()):
        if fs.exists(f"{path.rstrip('/')}/{name}"):
            logger.info("deleting %s from %s", name, cfg.url)
            fs.rm(f"{path.rstrip('/')}/{name}", recursive=True)
    for name in journal["names"]:
        src, dst = f"{src_root}/{name}", f"{path.rstrip('/')}/{name}"
        if not fs.exists(f"{src}/zarr.json"):
            continue  # moved already
        _move_array(fs, src, dst)
    if journal["attrs"]:
        _group(cfg).attrs.update(journal["attrs"])
    consolidate(cfg)
    _, ctl = fsspec.core.url_to_fs(control_url(cfg), **cfg.storage_options)
    fs.rm(f"{ctl}/{_JOURNAL}")
    _remove(staged)


def set_attrs(cfg: StoreConfig, attrs: dict, variable: str | None = None) -> None:
    """Update attributes of the store (``variable=None``) or of one variable."""
    group = _group(cfg)
    node = group if variable is None else group[variable]
    node.attrs.update(attrs)


def consolidate(cfg: StoreConfig) -> None:
    """Consolidate the store's metadata (once, at the end of a stage)."""
    with warnings.catch_warnings():  # "not part of the Zarr format 3 specification": known, and readers cope
        warnings.filterwarnings("ignore", message="Consolidated metadata", category=UserWarning)
        zarr.consolidate_metadata(_group(cfg).store)
