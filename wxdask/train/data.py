"""Training, the data: the whole-day split and batch order (pure numpy), and reading scaled images.

Core (pure numpy): :func:`valid_days`, :func:`holdout_mask`, :func:`split_slots`,
:func:`batch_order`, :func:`grid_name`. Lazy wrapper: :func:`slot_images`.
Reads: :func:`read_images`, and :func:`read_images_cached` through an
:class:`ImageCache`. Part of :mod:`wxdask.train`, which re-exports every name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np

from wxdask import model as wxmodel
from wxdask import store as wxstore
from wxdask.config import StoreConfig

if TYPE_CHECKING:  # pragma: no cover
    import dask.array as da


def valid_days(times: np.ndarray, leads: np.ndarray) -> np.ndarray:
    """Day (UTC) of the valid time ``time + lead`` of every slot.

    Parameters
    ----------
    times : numpy.ndarray
        Initialisation times, datetime64, shape ``(nt,)``.
    leads : numpy.ndarray
        Leads in whole hours, shape ``(nl,)``.

    Returns
    -------
    numpy.ndarray
        ``datetime64[D]``, shape ``(nt, nl)``.

    Examples
    --------
    >>> t = np.array(["2020-06-01T22", "2020-06-01T23"], dtype="datetime64[h]")
    >>> valid_days(t, np.array([0, 1])).astype(str).tolist()
    [['2020-06-01', '2020-06-01'], ['2020-06-01', '2020-06-02']]
    """
    t = np.asarray(times).astype("datetime64[h]")
    lead = np.asarray(leads).astype("timedelta64[h]")
    return (t[:, None] + lead[None, :]).astype("datetime64[D]")


def holdout_mask(days: np.ndarray, every: int, anchor: np.datetime64) -> np.ndarray:
    """Whether each day is held out: day index from ``anchor`` is a multiple of ``every``.

    Parameters
    ----------
    days : numpy.ndarray
        ``datetime64[D]`` of any shape.
    every : int
        Hold out one day in ``every`` (``train.holdout_every``).
    anchor : numpy.datetime64
        Day 0 (the first day in the store when training started).

    Returns
    -------
    numpy.ndarray
        bool, same shape as ``days``.

    Examples
    --------
    >>> d = np.arange(np.datetime64("2020-06-01"), np.datetime64("2020-06-08"))
    >>> holdout_mask(d, 3, np.datetime64("2020-06-01")).astype(int).tolist()
    [1, 0, 0, 1, 0, 0, 1]
    """
    index = (np.asarray(days, dtype="datetime64[D]") - np.datetime64(anchor, "D")).astype(np.int64)  # type: ignore[call-overload]  # numpy stubs lack datetime64(datetime64, unit)
    return index % int(every) == 0


def split_slots(
    status: np.ndarray, days: np.ndarray, heldout: np.ndarray, ok: int = 1
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Training and held-out slots among those with status ok.

    Parameters
    ----------
    status : numpy.ndarray
        ``(nt, nl)`` status codes.
    days : numpy.ndarray
        ``(nt, nl)`` valid days (:func:`valid_days`).
    heldout : numpy.ndarray
        ``(nt, nl)`` bool, True where the slot's day is held out (:func:`holdout_mask`).
    ok : int
        Status code of a filled slot.

    Returns
    -------
    tuple
        ``((train_time_index, train_lead_index), (heldout_time_index, heldout_lead_index))``,
        int64 arrays in time order. No slot is on both sides.

    Examples
    --------
    >>> status = np.array([[1], [1], [2], [1]])
    >>> days = np.array(["2020-06-01", "2020-06-01", "2020-06-02", "2020-06-02"], dtype="datetime64[D]")[:, None]
    >>> (tr, _), (ho, _) = split_slots(status, days, days == np.datetime64("2020-06-02"))
    >>> tr.tolist(), ho.tolist()
    ([0, 1], [3])
    """
    good = np.asarray(status) == ok
    held = np.asarray(heldout, dtype=bool)
    train = np.nonzero(good & ~held)
    test = np.nonzero(good & held)
    return (train[0].astype(np.int64), train[1].astype(np.int64)), (test[0].astype(np.int64), test[1].astype(np.int64))


def batch_order(n: int, batch_size: int, seed: int, epoch: int, *, shuffle: bool = True) -> list[np.ndarray]:
    """Indices ``0..n-1`` split into batches; shuffled by ``(seed, epoch)`` only.

    Each batch is sorted (reads in store order; the order within a batch does
    not change the batch's loss). The last batch may be short.

    Examples
    --------
    >>> [b.tolist() for b in batch_order(5, 2, seed=0, epoch=0, shuffle=False)]
    [[0, 1], [2, 3], [4]]
    >>> sorted(np.concatenate(batch_order(5, 2, seed=0, epoch=3)).tolist())
    [0, 1, 2, 3, 4]
    """
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(n) if shuffle else np.arange(n)
    return [np.sort(order[i : i + batch_size]) for i in range(0, n, batch_size)]


def grid_name(attrs: dict, shape: tuple[int, int]) -> str:
    """Name of the grid from ``refc.attrs["grid"]``, else from its shape.

    Examples
    --------
    >>> grid_name({}, (66, 112))
    'coarse'
    >>> grid_name({}, (10, 20))
    '10x20'
    """
    name = attrs.get("grid")
    if name:
        return str(name)
    for key, value in wxmodel.GRIDS.items():
        if tuple(value) == tuple(shape):
            return key
    return f"{shape[0]}x{shape[1]}"


# ----------------------------------------------------------------------------- lazy wrapper


def slot_images(refc: da.Array, time_index: np.ndarray, lead_index: np.ndarray, clip_max: float) -> da.Array:
    """Scaled model inputs of some slots, lazily.

    Parameters
    ----------
    refc : dask.array.Array
        The store's ``refc`` as stored (int16 sixteenths of a dB, :func:`wxdask.store.stored_array`),
        ``(time, lead_time, y, x)``.
    time_index, lead_index : numpy.ndarray
        Positions of the slots.
    clip_max : float
        dBZ clip of the model's scaling.

    Returns
    -------
    dask.array.Array
        float32 ``(n, ny, nx, 1)`` in ``[0, 1]``, one chunk per image. Nothing is computed.
    """
    raw = refc.vindex[np.asarray(time_index), np.asarray(lead_index)]
    return raw.map_blocks(_scale_block, clip_max, dtype=np.float32, new_axis=3, chunks=raw.chunks + ((1,),))


def _scale_block(block: np.ndarray, clip_max: float) -> np.ndarray:
    return wxmodel.scale_raw(block, clip_max)[..., None]


def read_images(store_cfg: StoreConfig, time_index: np.ndarray, lead_index: np.ndarray, clip_max: float) -> np.ndarray:
    """Read and scale the images of some slots: float32 ``(n, ny, nx, 1)``, in the order given."""
    return wxmodel.scale_raw(wxstore.read_slots(store_cfg, time_index, lead_index), clip_max)[..., None]


class ImageCache:
    """Stored images already read, by slot, least recently used out first, within ``max_bytes``.

    Thread-safe (reader threads of a ``PyDataset`` share it).

    Examples
    --------
    >>> c = ImageCache(max_bytes=2 * 8)
    >>> c.put((0, 0), np.zeros(4, np.int16)); c.put((1, 0), np.ones(4, np.int16))
    >>> c.put((2, 0), np.ones(4, np.int16))      # evicts (0, 0)
    >>> c.get((0, 0)) is None, c.get((2, 0)).tolist(), c.nbytes
    (True, [1, 1, 1, 1], 16)
    """

    def __init__(self, max_bytes: int) -> None:
        import collections
        import threading

        self.max_bytes = int(max_bytes)
        self.nbytes = 0
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[int, int]) -> np.ndarray | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[int, int], value: np.ndarray) -> None:
        if value.nbytes > self.max_bytes:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self.nbytes += value.nbytes
            while self.nbytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.nbytes -= old.nbytes


def read_images_cached(store_cfg: StoreConfig, time_index: np.ndarray, lead_index: np.ndarray, clip_max: float,
                       cache: ImageCache | None) -> np.ndarray:
    """:func:`read_images`, taking what it can from ``cache`` and caching what it reads."""
    if cache is None or cache.max_bytes == 0:
        return read_images(store_cfg, time_index, lead_index, clip_max)
    keys = list(zip(np.asarray(time_index).tolist(), np.asarray(lead_index).tolist()))
    got = [cache.get(k) for k in keys]
    missing = [i for i, g in enumerate(got) if g is None]
    if missing:
        raw = wxstore.read_slots(store_cfg, np.asarray(time_index)[missing], np.asarray(lead_index)[missing])
        for j, i in enumerate(missing):
            got[i] = raw[j]
            cache.put(keys[i], raw[j])
    return wxmodel.scale_raw(np.stack(cast(list[np.ndarray], got)), clip_max)[..., None]  # all filled now
