"""One-off queries: the neighbours of one store slot or one image, as a table or a picture.

I/O only: :func:`query` runs one search on the cluster with the engine of
:mod:`wxdask.search` (:func:`wxdask.search.knn`); :func:`format_table`,
:func:`query_table` and :func:`plot_query` are for people. A query image comes
as an array in dBZ, a ``.npy`` file or a GRIB2 file, read through ingest's
framing check and decoder (:func:`wxdask.ingest.check_message`,
:func:`wxdask.ingest.decode_refc`), and is encoded by the model that made the
store's embedding (:func:`wxdask.models.encoder_for`: a missing model, or one
whose hash is not the embedding's, is a :class:`~wxdask.errors.ModelError`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from wxdask.config import Config, parse_time
from wxdask.errors import (
    ConfigError,
    CorruptMessageError,
    ModelError,
    SourceNotFoundError,
)
from wxdask.model import Predictor, decode_dbz
from wxdask.models import encoder_for
from wxdask.search import NEIGHBOR_DTYPE, check_embedding, knn, window_hours  # noqa: F401 - NEIGHBOR_DTYPE: doctest
from wxdask.store import flatten_slots

if TYPE_CHECKING:  # pragma: no cover
    from distributed import Client

__all__ = [
    "SearchResult",
    "format_table",
    "plot_query",
    "query",
    "query_table",
]

logger = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """Neighbours of one query.

    Attributes
    ----------
    label : str
        What was searched (``2019-09-20T05 lead 0`` or an image's name).
    time : numpy.datetime64 or None
        The query slot's time, when it came from the store.
    lead : int or None
        The query slot's lead.
    neighbors : numpy.ndarray
        ``(k,)`` records of :data:`NEIGHBOR_DTYPE`, nearest first.
    embedding : numpy.ndarray
        The query embedding.
    image : numpy.ndarray or None
        The query image in dBZ, when the query was an image.
    """

    label: str
    time: np.datetime64 | None
    lead: int | None
    neighbors: np.ndarray
    embedding: np.ndarray
    image: np.ndarray | None = None
    multi_lead: bool = field(default=False)


def query(
    cfg: Config,
    client: Client | None,
    *,
    time: str | np.datetime64 | None = None,
    lead: int | None = None,
    image: np.ndarray | str | None = None,
    encoder: Predictor | None = None,
) -> SearchResult:
    """Search the store for the neighbours of one slot or one image.

    Parameters
    ----------
    cfg : Config
        Uses ``cfg.store`` and ``cfg.search`` (``k``, ``exclude_window``,
        ``lead``: search that lead only, else every slot).
    client : distributed.Client or None
        Where the search runs (the current scheduler when ``None``).
    time : str or numpy.datetime64, optional
        Query slot's initialisation time; its lead is ``lead``, else
        ``cfg.search.lead``, else the first lead in the store.
    lead : int, optional
        Query slot's lead.
    image : numpy.ndarray or str, optional
        An image in dBZ ``(y, x)``, or the path of a GRIB2 file holding REFC
        (or a ``.npy``), to encode with the model that made the store's
        embedding and search (no exclusion window).
    encoder : Predictor, optional
        Raw-int16 encoder to use instead of the model's (tests).

    Returns
    -------
    SearchResult

    Raises
    ------
    ConfigError
        If neither or both of ``time`` and ``image`` are given, or the slot is
        not in the store or is missing.
    ModelError
        For an image: if there is no model, or it is not the one that made the embedding.
    """
    import dask.array as da

    from wxdask import store
    from wxdask.client import compute

    if (time is None) == (image is None):
        raise ConfigError("give either a query time (--time 2019-09-20T05) or a query image (--image FILE), not both")
    scfg = cfg.search
    ds = store.open_input(cfg.store, ["embedding"])
    emb = ds["embedding"]
    check_embedding(emb)
    base_emb = emb if scfg.lead is None else emb.sel(lead_time=[scfg.lead])
    nl = base_emb.sizes["lead_time"]
    base_flat, times, leads = flatten_slots(base_emb)
    img = None
    if image is not None:
        img, label = _read_image(image)
        if encoder is None:
            encoder, _info = encoder_for(scfg.model_dir, emb.attrs, cfg.store.url, batch_size=1)
        qvec = _encode(img, encoder)
        query_index = np.array([-1])
        query_times = None
        window = 0
        query_time, query_lead = None, None
    else:
        query_time = parse_time(time, "--time")
        searched = base_emb["lead_time"].values.tolist()
        query_lead = int(lead) if lead is not None else int(searched[0])
        tpos = np.flatnonzero(base_emb["time"].values.astype("datetime64[h]") == query_time)
        lpos = np.flatnonzero(base_emb["lead_time"].values == query_lead)
        if tpos.size == 0 or lpos.size == 0:
            times_all = emb["time"].values.astype("datetime64[h]")
            raise ConfigError(f"query slot {query_time} lead {query_lead} is not in store {cfg.store.url!r} "
                              f"(times {times_all[0]} .. {times_all[-1]}, leads searched {searched})")
        row = int(tpos[0]) * nl + int(lpos[0])
        qvec = np.asarray(base_emb.isel(time=int(tpos[0]), lead_time=int(lpos[0])).values, dtype=np.float32)
        if not np.isfinite(qvec).all():
            raise ConfigError(f"query slot {query_time} lead {query_lead} has no embedding (missing image)")
        query_index = np.array([row])
        query_times = np.array([query_time])
        window = window_hours(scfg.exclude_window)
        label = f"{np.datetime_as_string(query_time, unit='h')} lead {query_lead}"
    rec = knn(da.from_array(qvec[None, :]), base_flat, scfg.k, base_time=times, base_lead=leads,
              query_index=da.from_array(query_index), query_time=query_times, exclude_window=window,
              block_size=1, chunk_size=scfg.chunk_size)
    (result,) = compute(client, [rec], scheduler=None)
    return SearchResult(label=label, time=query_time, lead=query_lead, neighbors=result[0], embedding=qvec,
                        image=img, multi_lead=nl > 1)


def format_table(result: SearchResult) -> str:
    """The neighbours as a text table, like the seed's (time, squared distance).

    Examples
    --------
    >>> rec = np.zeros(2, dtype=NEIGHBOR_DTYPE)
    >>> rec["time"] = np.array(["2019-09-21T07", "NaT"], dtype="M8[ns]")
    >>> rec["sqdist"] = [0.25, np.nan]; rec["index"] = [3, -1]
    >>> print(format_table(SearchResult("2019-09-20T05 lead 0", None, 0, rec, np.zeros(1))))
    neighbours of 2019-09-20T05 lead 0
    rank  time                  sqdist
       1  2019-09-21T07:00  0.250000
    """
    lines = [f"neighbours of {result.label}"]
    head = "rank  time              " + ("  lead" if result.multi_lead else "") + "    sqdist"
    lines.append(head)
    for rank, row in enumerate(result.neighbors, start=1):
        if row["index"] < 0:
            continue
        t = np.datetime_as_string(row["time"].astype("M8[m]"), unit="m")
        lead = f"  {int(row['lead']):4d}" if result.multi_lead else ""
        lines.append(f"{rank:4d}  {t}{lead}  {float(row['sqdist']):.6f}")
    if len(lines) == 2:
        lines.append("   (no other slot qualifies)")
    return "\n".join(lines)


def query_table(cfg: Config, client: Client | None, time: str | np.datetime64, lead: int | None = None) -> str:
    """Search one store slot and return its neighbours as a table (for ``wxdask demo``)."""
    return format_table(query(cfg, client, time=time, lead=lead))


def plot_query(cfg: Config, result: SearchResult, path: str, *, decoder: Predictor | None = None) -> str:
    """Write a PNG of the query image beside its neighbours' images, with times and distances.

    Images come from the store's ``refc``; a slot without one is decoded from
    its embedding when a model (or ``decoder``) is available, else left blank.

    Returns
    -------
    str
        ``path``.
    """
    from wxdask import plots, store
    from wxdask.models import decoder_for

    ds = store.open_input(cfg.store, ["embedding"])
    have = result.neighbors[result.neighbors["index"] >= 0]
    slots = [(row["time"], int(row["lead"])) for row in have]
    if result.image is not None:
        images = [np.asarray(result.image, dtype=np.float32)] + _slot_images(ds, slots)
    else:
        images = _slot_images(ds, [(result.time, result.lead)] + slots)
    vectors = [result.embedding] + [ds["embedding"].sel(time=t, lead_time=lead).values for t, lead in slots]
    missing = [i for i, im in enumerate(images) if im is None]
    if missing:
        try:
            clip_max = cfg.model.clip_max
            if decoder is None:
                decoder, info = decoder_for(cfg.search.model_dir, ds["embedding"].attrs, cfg.store.url)
                clip_max = info["clip_max"]
            decoded = decode_dbz(np.stack([vectors[i] for i in missing]), decoder, clip_max=clip_max)
            for j, i in enumerate(missing):
                images[i] = decoded[j]
        except (ModelError, ImportError) as exc:  # no model here: leave those panels blank
            logger.warning("cannot decode %d image(s) from embeddings (%s); leaving them blank", len(missing), exc)
    titles = [f"query {result.label}"]
    for rank, row in enumerate(have, start=1):
        t = np.datetime_as_string(row["time"].astype("M8[h]"), unit="h")
        lead = f" +{int(row['lead'])}h" if result.multi_lead else ""
        titles.append(f"#{rank} {t}{lead}\nsqdist {float(row['sqdist']):.4g}")
    lat = ds["latitude"].values if "latitude" in ds.variables else None
    lon = ds["longitude"].values if "longitude" in ds.variables else None
    plots.image_panel(images, titles, path, latitude=lat, longitude=lon,
                      suptitle=f"analogs of {result.label} (squared distance in embedding space)")
    return path


def _slot_images(ds: xr.Dataset, slots: list[tuple[Any, Any]]) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = []
    for t, lead in slots:
        if "refc" not in ds or t is None:
            out.append(None)
            continue
        img = np.asarray(ds["refc"].sel(time=t, lead_time=lead).values, dtype=np.float32)
        out.append(None if not np.isfinite(img).any() else img)
    return out


def _encode(img: np.ndarray, encoder: Predictor) -> np.ndarray:
    """Embedding of one image in dBZ, through a raw-int16 encoder (as the store's images are encoded)."""
    x = np.asarray(img, dtype=np.float32)
    raw = np.where(np.isfinite(x), np.round(np.nan_to_num(x) * np.float32(16.0)), -32768)
    raw = np.clip(raw, -32768, 32767).astype(np.int16)[None]
    return np.asarray(encoder.predict(raw), dtype=np.float32).reshape(-1)


def _read_image(image: np.ndarray | str) -> tuple[np.ndarray, str]:
    """An image in dBZ, from an array or a GRIB2 file holding REFC (row 0 south, as HRRR stores it)."""
    if not isinstance(image, (str, bytes)) and not hasattr(image, "__fspath__"):
        arr = np.asarray(image, dtype=np.float32)
        if arr.ndim != 2:
            raise ConfigError(f"a query image must be 2-D (y, x), got shape {arr.shape}")
        return arr, "image"
    path = os.fspath(image)
    if not os.path.exists(path):
        raise SourceNotFoundError(f"query image {path!r} does not exist")
    if path.endswith(".npy"):
        return _read_image(np.load(path))[0], os.path.basename(path)
    with open(path, "rb") as f:
        data = f.read()
    sixteenths = _first_refc(data, path)  # int16, 1/16 dBZ
    return np.asarray(sixteenths, dtype=np.float32) / np.float32(16.0), os.path.basename(path)


def _first_refc(data: bytes, path: str) -> np.ndarray:
    """The REFC field of a GRIB2 file, through ingest's framing check and decoder (int16 sixteenths)."""
    from wxdask.ingest import IdxEntry, check_message, decode_refc

    offset, errors = 0, list[str]()
    while True:
        start = data.find(b"GRIB", offset)
        if start < 0 or len(data) - start < 16:
            break
        length = int.from_bytes(data[start + 8:start + 16], "big")
        msg = data[start:start + length]
        try:
            check_message(msg, IdxEntry(str(len(errors) + 1), start, start + length, "", "REFC", "", ""))
            return decode_refc(msg)[0]
        except CorruptMessageError as exc:
            errors.append(str(exc))
        offset = start + max(length, 4)
    why = f" ({'; '.join(dict.fromkeys(errors))[:400]})" if errors else ""
    raise CorruptMessageError(f"{path!r} holds no REFC (composite reflectivity) GRIB2 message{why}")
