"""Region I/O from workers: values as stored (``refc``: int16 sixteenths of a dB), written and read by index."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import zarr

from wxdask.config import StoreConfig
from wxdask.errors import StoreLayoutError
from wxdask.store.location import _group


def _stored(group: zarr.Group, name: str) -> tuple[zarr.Array, bool]:
    """Array ``name`` as stored, and whether that is an integer view below a scale codec (``refc``)."""
    arr = cast("zarr.Array", group[name])
    view = _integer_view(arr)
    return (arr, False) if view is None else (view, True)


def _integer_view(arr: zarr.Array) -> zarr.Array | None:
    """The integers below ``arr``'s leading scale codec (``refc``), or None if it has none.

    ``refc`` is a float32 array in dBZ whose first codec, numcodecs'
    ``FixedScaleOffset`` (scale 16, ``astype`` int16), stores it as int16
    sixteenths of a dB. This view reads and writes those int16 values with the
    rest of the codec chain (bytes, zstd), so stages move compact images with
    no float pass. Its fill value is the integer's minimum (-32768), and an
    image written all at that value is not stored (the chunk is removed), so it
    reads back as NaN in the float32 array. Any other array (an ``refc`` of
    the int16 + ``scale_factor`` layout, a float32 one) has no such view.
    """
    from dataclasses import replace

    from zarr.codecs.numcodecs import FixedScaleOffset
    from zarr.core.array import AsyncArray

    codecs = arr.metadata.codecs if arr.metadata.zarr_format == 3 else ()
    if not codecs or not isinstance(codecs[0], FixedScaleOffset):
        return None
    conf = codecs[0].codec_config
    stored = np.dtype(cast(str, conf.get("astype") or conf["dtype"]))
    if stored.kind != "i" or conf.get("offset", 0) != 0:
        return None
    doc: dict[str, Any] = dict(arr.metadata.to_dict())
    doc.update(data_type=stored.name, fill_value=int(np.iinfo(stored).min), codecs=list(doc["codecs"])[1:])
    raw = AsyncArray(metadata=cast(Any, doc), store_path=arr._async_array.store_path,
                     config=replace(arr._async_array.config, write_empty_chunks=False))
    return zarr.Array(raw)


def _check_stored(name: str, arr: zarr.Array, value: Any) -> None:
    """Refuse a write to a scaled array's integer view ``arr`` that would store a value it does not mean.

    A float (NaN would be cast to an arbitrary integer) is refused; so is an
    image (the last two axes) holding the fill value in some pixels only,
    which would read back as a number (-2048 dBZ), not NaN.
    """
    value = np.asarray(value)
    if value.dtype != arr.dtype:
        raise StoreLayoutError(
            f"{name} is written as stored, {arr.dtype} (int16 sixteenths of a dB for refc), got {value.dtype}; "
            "no float can be written to it (a NaN would become a number)"
        )
    if value.ndim >= 2:
        fill = value == arr.fill_value
        some, every = fill.any(axis=(-2, -1)), fill.all(axis=(-2, -1))
        if np.any(some & ~every):
            raise StoreLayoutError(
                f"{name}: an image holds the fill value {arr.fill_value} in some pixels only; a slot is "
                "either whole (no fill value) or cleared (every pixel the fill value)"
            )


def _put_chunk(arr: zarr.Array, value: Any, index: tuple) -> bool:
    """Write ``value``, the one whole chunk ``index`` selects, through ``arr``'s own codecs, past zarr's indexing.

    For an ``refc`` image (checked by :func:`_check_stored`) this saves about
    2 ms of an 8 ms write on the HRRR grid. Returns False, having written
    nothing, unless ``index`` is in-range integers over the leading axes whose
    chunks are 1, ``value`` is the rest of one unsharded chunk, and it is not
    the fill value (whose chunk zarr removes instead): the caller then writes
    through zarr's indexing.
    """
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.sync import sync

    value = np.asarray(value)
    lead = len(index)
    if (arr.shards is not None or value.ndim + lead != arr.ndim or value.shape != tuple(arr.chunks[lead:])
            or tuple(arr.chunks[:lead]) != (1,) * lead or value.size == 0 or value.flat[0] == arr.fill_value
            or not all(isinstance(i, (int, np.integer)) and 0 <= i < n for i, n in zip(index, arr.shape))):
        return False
    aa = arr._async_array
    coords = tuple(int(i) for i in index) + (0,) * value.ndim
    proto = default_buffer_prototype()
    spec = aa.metadata.get_chunk_spec(coords, aa.config, proto)
    chunk = proto.nd_buffer.from_numpy_array(np.ascontiguousarray(value.reshape(arr.chunks), dtype=arr.dtype))

    async def put() -> bool:
        (encoded,) = await aa.codec_pipeline.encode([(chunk, spec)])
        if encoded is None:
            return False
        await (aa.store_path / aa.metadata.encode_chunk_key(coords)).set(encoded)
        return True

    return bool(sync(put()))


class Writer:
    """Writes to one store's arrays, each opened once (one task's many writes, not one open per write).

    Made by :func:`open_writer`; :func:`write_region` and :func:`write_points` are one-write shorthands.
    Keep one only for the length of a task: it does not see arrays added to the store after it opened them.
    """

    def __init__(self, cfg: StoreConfig) -> None:
        self._group = _group(cfg)
        self._arrays: dict[str, tuple[zarr.Array, bool]] = {}

    def _array(self, name: str, value: Any) -> zarr.Array:
        if name not in self._arrays:
            self._arrays[name] = _stored(self._group, name)
        arr, scaled = self._arrays[name]
        if scaled:
            _check_stored(name, arr, value)
        return arr

    def region(self, values: dict[str, Any], index: tuple) -> None:
        """As :func:`write_region`."""
        for name, value in values.items():
            arr = self._array(name, value)
            if not (self._arrays[name][1] and _put_chunk(arr, value, index)):
                arr[index] = value

    def points(self, values: dict[str, np.ndarray], index: tuple[np.ndarray, ...]) -> None:
        """As :func:`write_points`."""
        for name, value in values.items():
            self._array(name, value).vindex[index] = value


def open_writer(cfg: StoreConfig) -> Writer:
    """A :class:`Writer` for ``cfg``'s store, to write many regions from one worker task."""
    return Writer(cfg)


def write_region(cfg: StoreConfig, values: dict[str, Any], index: tuple) -> None:
    """Write values as stored (``refc``: int16 sixteenths of a dB) of several variables at one index.

    Called from workers. ``index`` must select whole chunks of every variable
    (e.g. one ``(time, lead_time)`` slot whose image is one chunk), so concurrent
    writers never touch the same chunk.

    Parameters
    ----------
    cfg : StoreConfig
        Where the store is.
    values : dict of str to numpy.ndarray
        Values as stored per variable, written in the order given; an
        ``refc`` image all -32768 clears its slot (it reads back as NaN).
    index : tuple
        Positional index into each variable's leading dims.

    Raises
    ------
    StoreLayoutError
        If an ``refc`` value is not int16, or an image holds -32768 in some
        pixels only (it would read back as a number, not NaN).
    """
    open_writer(cfg).region(values, index)


def write_points(cfg: StoreConfig, values: dict[str, np.ndarray], index: tuple[np.ndarray, ...]) -> None:
    """Write raw values of several variables at scattered points (one write per variable), in order.

    Called from workers, like :func:`write_region`; the points must lie in
    shards (or chunks) that no other writer touches at the same time.

    Parameters
    ----------
    cfg : StoreConfig
        Where the store is.
    values : dict of str to numpy.ndarray
        Encoded values per variable, one per point, written in the order given.
    index : tuple of numpy.ndarray
        Integer coordinates of the points, one array per dimension.
    """
    open_writer(cfg).points(values, index)


def read_region(cfg: StoreConfig, name: str, index: tuple) -> np.ndarray:
    """Read values as stored of one variable, from a worker: the one way stages read raw images.

    The counterpart of :func:`write_region`: no xarray decoding, so ``refc``
    comes back as stored, int16 sixteenths of a dB (from the float32 layout's
    int16 codec, or from an older int16 + ``scale_factor`` store alike).
    Chunks never written read as the variable's fill value (-32768 for
    ``refc``, NaN for float variables).

    Parameters
    ----------
    cfg : StoreConfig
        Where the store is.
    name : str
        Variable name.
    index : tuple
        Orthogonal index: ints, slices, or integer arrays per dimension.

    Returns
    -------
    numpy.ndarray
    """
    return np.asarray(_stored(_group(cfg, mode="r"), name)[0].oindex[index])


class _Stored:
    """Array-like over :func:`read_region` (picklable: a config and a name), for :func:`stored_array`."""

    def __init__(self, cfg: StoreConfig, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.cfg, self.name, self.shape, self.dtype, self.ndim = cfg, name, shape, dtype, len(shape)

    def __getitem__(self, index: tuple) -> np.ndarray:
        return read_region(self.cfg, self.name, index)


def stored_array(cfg: StoreConfig, name: str = "refc") -> Any:
    """A variable as stored (``refc``: int16 sixteenths of a dB), lazily: :func:`read_region` per chunk.

    For lazy wrappers that read raw images (the PCA baseline); chunked as
    stored, so one task reads one ``refc`` image.

    Returns
    -------
    dask.array.Array
        Shape of the variable, its stored dtype (int16 for ``refc``, -32768
        where a slot is not filled).
    """
    import dask.array as da

    arr = _stored(_group(cfg, mode="r"), name)[0]
    like = _Stored(cfg, name, tuple(arr.shape), arr.dtype)
    return da.from_array(like, chunks=tuple(arr.chunks), name=False, asarray=True, lock=False,
                         meta=np.empty((0,) * len(arr.shape), dtype=arr.dtype))


def read_slots(cfg: StoreConfig, time_index: np.ndarray, lead_index: np.ndarray, name: str = "refc") -> np.ndarray:
    """Read the stored values (``refc``: int16 images in 1/16 dBZ) of some ``(time, lead)`` slots.

    One orthogonal read per lead (a slice where the times are consecutive),
    straight from Zarr, in this thread; from a worker or from the client.

    Parameters
    ----------
    cfg : StoreConfig
        Where the store is.
    time_index, lead_index : numpy.ndarray
        ``(n,)`` positions of the slots along ``time`` and ``lead_time``.
    name : str
        Variable to read.

    Returns
    -------
    numpy.ndarray
        ``(n, ...)`` raw values, in the order of the slots given.
    """
    time_index = np.asarray(time_index, dtype=np.int64).reshape(-1)
    lead_index = np.asarray(lead_index, dtype=np.int64).reshape(-1)
    out = None
    for lead in np.unique(lead_index):
        rows = np.flatnonzero(lead_index == lead)
        times = time_index[rows]
        contiguous = times.size > 0 and np.all(np.diff(times) == 1)
        sel = slice(int(times[0]), int(times[-1]) + 1) if contiguous else times
        block = read_region(cfg, name, (sel, int(lead)))
        if rows.size == lead_index.size:  # one lead: the block is the answer, no copy
            return block
        if out is None:
            out = np.empty((lead_index.size, *block.shape[1:]), dtype=block.dtype)
        out[rows] = block
    if out is None:
        raise ValueError("read_slots needs at least one slot, got 0")
    return out
