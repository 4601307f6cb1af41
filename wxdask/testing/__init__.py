"""Helpers for tests, benchmarks and the demo: small real stores, a flaky S3 proxy, a compute counter.

Nothing here is mocked: :func:`make_refc_store` writes a synthetic archive and
ingests it with the real ingest code; :func:`make_store` builds a tiny store of
given values with ingest's own template through :mod:`wxdask.store`;
:class:`FlakyProxy` is a real HTTP proxy on loopback that injects S3 failures in
front of a real S3 endpoint; :func:`raise_if_dask_computes` checks that a lazy
wrapper builds a graph without computing it. Fake numpy models
(:func:`save_fake_model`) stand in for Keras where the test is not about Keras.

Modules, by concern: :mod:`~wxdask.testing.stores` (small real stores, reading
them back and comparing two), :mod:`~wxdask.testing.network` (:class:`FlakyProxy`,
:func:`write_s3_archive`, :func:`free_port`), :mod:`~wxdask.testing.models` (the
numpy stand-ins for the model and a tiny Keras one), :mod:`~wxdask.testing.dask_checks`
(:func:`raise_if_dask_computes`, :func:`task_result_shapes`), :mod:`~wxdask.testing.messages`
(finding and setting octets of a GRIB2 message) and :mod:`~wxdask.testing.configs` (the tests'
configs and :func:`assert_one_error_line`).
"""

from __future__ import annotations

import logging

# The helpers live in submodules; every name the single module had is re-exported here, so callers use
# ``wxdask.testing.X`` as before. A test that patches a function to see its calls from another function of the
# package patches the submodule that holds the caller.
from wxdask.testing.configs import (
    TINY_MODEL,
    assert_one_error_line,
    embed_config,
    train_config,
)
from wxdask.testing.dask_checks import (
    CountingScheduler,
    raise_if_dask_computes,
    task_result_shapes,
)
from wxdask.testing.models import (
    FakeDecoder,
    FakeEncoder,
    FakeModelSource,
    HostScaledEncoder,
    reference_embeddings,
    save_fake_model,
    save_keras_model,
    save_model_dir_stub,
)
from wxdask.testing.network import (
    FlakyProxy,
    free_port,
    write_s3_archive,
)
from wxdask.testing.stores import (  # noqa: F401 - private names, re-exported for callers
    TINY_GRID,
    _tiny_grid,
    assert_same_store,
    file_digests,
    load_store,
    make_refc_store,
    make_store,
    make_tiny_store,
    read_raw,
)

__all__ = [
    "TINY_GRID",
    "TINY_MODEL",
    "CountingScheduler",
    "FakeDecoder",
    "FakeEncoder",
    "FakeModelSource",
    "FlakyProxy",
    "HostScaledEncoder",
    "assert_one_error_line",
    "assert_same_store",
    "embed_config",
    "file_digests",
    "free_port",
    "load_store",
    "make_refc_store",
    "make_store",
    "make_tiny_store",
    "raise_if_dask_computes",
    "read_raw",
    "reference_embeddings",
    "save_fake_model",
    "save_keras_model",
    "save_model_dir_stub",
    "task_result_shapes",
    "train_config",
    "write_s3_archive",
]

logger = logging.getLogger(__name__)
