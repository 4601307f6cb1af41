"""Ingest: HRRR composite reflectivity from the archive into the Zarr store.

Core (pure): :func:`hrrr_key`, :func:`parse_idx`, :func:`find_refc`,
:func:`check_message`, :func:`decode_refc`.
Lazy wrapper: :func:`ingest`, a Dask graph over ``(time, lead_time)`` slots.
I/O: :func:`run`.
"""

from __future__ import annotations

import logging

# The stage lives in submodules; every name the single module had is re-exported here, so callers import
# (and tests patch) ``wxdask.ingest.X`` as before.
from wxdask.ingest.decode import (  # noqa: F401 - private names, re-exported for callers
    _LATTICE_TOL,
    REFC_MAX,
    REFC_MIN,
    _lattice_by_header,
    _quantise,
    decode_refc,
)
from wxdask.ingest.header import (  # noqa: F401 - private names, re-exported for callers
    _UNIT_NAMES,
    MAX_IDX_BYTES,
    MAX_POINTS,
    RETRYABLE,
    STATUS,
    STATUS_NAMES,
    TIME_UNIT_HOURS,
    MessageHeader,
    SlotFault,
    _max_message_bytes,
    _signed,
    check_slot,
    read_header,
)
from wxdask.ingest.idx import (  # noqa: F401 - private names, re-exported for callers
    _IDX_LINE,
    IdxEntry,
    check_message,
    fcst_label,
    fcst_lead,
    find_refc,
    hrrr_key,
    parse_idx,
)
from wxdask.ingest.plan import (  # noqa: F401 - private names, re-exported for callers
    _NOT_HELD,
    _Held,
    _held_slots,
    _list_days,
    _pending_slots,
    _plan,
    parse_retry,
)
from wxdask.ingest.report import (
    Tally,
    status_report,
    summarize,
)
from wxdask.ingest.slots import (  # noqa: F401 - private names, re-exported for callers
    _REFC_FILL,
    Fetched,
    SlotResult,
    _log_slot,
    fetch_refc,
    fetch_slot,
    write_slot,
)
from wxdask.ingest.source import (  # noqa: F401 - private names, re-exported for callers
    _UNREACHABLE,
    Source,
    _chain,
    _info,
    _is_transient,
    _is_unreachable,
    _is_unsatisfiable,
    _read,
    _retry,
    _Trace,
    object_identity,
    slot_identity,
)
from wxdask.ingest.stage import (  # noqa: F401 - private names, re-exported for callers
    _check_source,
    _probe_grid,
    _store_grid,
    _version,
    run,
)
from wxdask.ingest.tasks import (  # noqa: F401 - private names, re-exported for callers
    FLUSH_SLOTS,
    _DeadSource,
    _run_slots,
    group_slots,
    ingest,
    ingest_group,
    ingest_slot,
)
from wxdask.ingest.template import (  # noqa: F401 - private names, re-exported for callers
    _SLOT_SHARDS,
    ENCODING,
    SHARD_TIMES,
    refc_template,
)

__all__ = [
    "IdxEntry",
    "Source",
    "SlotResult",
    "STATUS",
    "hrrr_key",
    "fcst_label",
    "fcst_lead",
    "parse_idx",
    "find_refc",
    "check_message",
    "MessageHeader",
    "read_header",
    "check_slot",
    "SlotFault",
    "decode_refc",
    "fetch_refc",
    "fetch_slot",
    "write_slot",
    "ingest_slot",
    "ingest_group",
    "group_slots",
    "refc_template",
    "ingest",
    "summarize",
    "Tally",
    "status_report",
    "parse_retry",
    "object_identity",
    "slot_identity",
    "run",
]

logger = logging.getLogger(__name__)
