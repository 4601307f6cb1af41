"""Counter-based random numbers for the synthetic archive: a uniform in [0, 1) for any tuple of integers.

Every random quantity of the synthetic weather is a pure function of the archive
seed, a stream tag (``_T_*``) and integer keys (hours, source and storm ids), so
any field can be computed alone, in any order, on any worker.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_PROP_STEP = _U64(0xD1B54A32D192ED03)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
    return x ^ (x >> _U64(31))


def _u64(key: Any) -> np.ndarray:
    a = np.atleast_1d(np.asarray(key))
    return a.astype(_U64) if a.dtype.kind == "u" else a.astype(np.int64).astype(_U64)


def _chain(h: np.ndarray, *keys: Any) -> np.ndarray:
    """Hash ``h`` combined with integer keys (broadcast)."""
    with np.errstate(over="ignore"):
        for key in keys:
            h = _mix(h ^ (_u64(key) + _GOLDEN + (h << _U64(6)) + (h >> _U64(2))))
    return h


def _hash(seed: int, tag: int, *keys: Any) -> np.ndarray:
    """A uint64 hash of the seed, a stream tag and integer keys (broadcast)."""
    with np.errstate(over="ignore"):
        h = _mix(_u64(seed) ^ (_U64(tag) * _GOLDEN))
    return _chain(h, *keys)


def _draw(h: np.ndarray, n: int) -> np.ndarray:
    """``n`` independent uniforms in [0, 1) per hash: shape ``h.shape + (n,)``."""
    with np.errstate(over="ignore"):
        x = _mix(h[..., np.newaxis] ^ (np.arange(1, n + 1, dtype=_U64) * _PROP_STEP))
    return (x >> _U64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)


def _uniform(seed: int, tag: int, *keys: Any) -> np.ndarray:
    """Uniforms in [0, 1), a pure function of the seed, a tag and integer keys (broadcast)."""
    return _draw(_hash(seed, tag, *keys), 1)[..., 0]


# Tags keep the random streams of different quantities apart.
_T_BOUND, _T_REGIME, _T_REGIME0, _T_EPISODE, _T_BIRTH, _T_BAND, _T_ERR, _T_TEXTURE, _T_OTHER = range(9)


def _hours(times: Any) -> np.ndarray:
    """Hours since 1970-01-01T00 (int64) of datetime64 values or ISO strings."""
    t = np.asarray(times)
    if t.dtype.kind in "US":
        t = t.astype("datetime64[h]")
    return np.asarray(t.astype("datetime64[h]").astype(np.int64))
