"""The one package that opens, creates and writes wxdask's Zarr store.

The store is a Zarr v3 group readable with :func:`xarray.open_zarr`. Its
contract (variables, dims, chunks) is described in ``DESIGN.md``. Stages never
call ``to_zarr`` or ``zarr.open`` themselves: they go through this package.

Writes follow one rule: metadata first (:func:`init_output`, nothing computed),
then disjoint chunk-aligned regions (:func:`write_region` from workers, or
:func:`write_variables` for dask-backed variables whose chunks match the
store's), then :func:`consolidate` once at the end.

Modules, by concern: :mod:`~wxdask.store.location` (where the store is, opening
it, the ``refc`` codec), :mod:`~wxdask.store.layout` (:func:`init_output`),
:mod:`~wxdask.store.region` (region reads and writes from workers),
:mod:`~wxdask.store.slots` (``(time, lead_time)`` slots) and
:mod:`~wxdask.store.journal` (whole variables through staged, journalled commits).
"""

from __future__ import annotations

import logging

# The package lives in submodules; every name the single module had is re-exported here, so callers use
# ``wxdask.store.X`` as before. A test that patches a function to see its calls from another function of the
# package patches the submodule that holds the caller (e.g. ``wxdask.store.region.read_region``).
from wxdask.store.journal import (  # noqa: F401 - private names, re-exported for callers
    _JOURNAL,
    _apply,
    _move_array,
    _remove,
    commit,
    consolidate,
    control_url,
    discard,
    drop_variables,
    recover,
    set_attrs,
    staging,
    write_variables,
)
from wxdask.store.layout import (  # noqa: F401 - private names, re-exported for callers
    _check_compatible,
    _metadata_only,
    _norm,
    _placeholder,
    _raw_fills,
    _reindexed_like,
    _rewrite_sorted,
    _with_time_encoding,
    init_output,
)
from wxdask.store.location import (  # noqa: F401 - private names, re-exported for callers
    TIME_ENCODING,
    _fs_and_path,
    _group,
    _open,
    check_location,
    exists,
    open_input,
    open_store,
    sixteenths_codec,
)
from wxdask.store.region import (  # noqa: F401 - private names, re-exported for callers
    Writer,
    _check_stored,
    _integer_view,
    _Stored,
    _stored,
    open_writer,
    read_region,
    read_slots,
    stored_array,
    write_points,
    write_region,
)
from wxdask.store.slots import (
    chunk_nbytes,
    flatten_slots,
    ok_code,
    ok_mask,
    unflatten_slots,
)

__all__ = [
    "exists",
    "check_location",
    "sixteenths_codec",
    "open_store",
    "open_input",
    "init_output",
    "write_region",
    "write_points",
    "open_writer",
    "Writer",
    "write_variables",
    "staging",
    "discard",
    "commit",
    "recover",
    "control_url",
    "read_region",
    "read_slots",
    "stored_array",
    "ok_code",
    "ok_mask",
    "flatten_slots",
    "unflatten_slots",
    "chunk_nbytes",
    "drop_variables",
    "set_attrs",
    "consolidate",
]

logger = logging.getLogger(__name__)
