"""Checks and parsers for configuration values.

The ``_*`` helpers check one field's value and name it in the error; the
``parse_*`` functions turn user text (times, leads, durations, scheduler
addresses) into values, and are used by the stages too.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
from typing import Any

import numpy as np

from wxdask.errors import ConfigError

# The package's logger, as before the split (what ``wxdask.config`` logs, e.g. a time converted to UTC).
logger = logging.getLogger("wxdask.config")

#: First initialisation time in the HRRR archive on AWS.
ARCHIVE_START = np.datetime64("2014-09-30T00", "h")
#: Longest HRRR forecast lead (00/06/12/18z runs of HRRRv4), in hours.
MAX_LEAD = 48


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ConfigError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _positive_float(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def _int(name: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (minimum is not None and value < minimum):
        what = "an int" if minimum is None else f"an int >= {minimum}"
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    return int(value)


def _path(name: str, value: Any, *, optional: bool = True) -> str | None:
    """A path or URL: a non-empty string (``None`` when optional), never a number or a list."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        what = "a non-empty path or URL" + (" or null" if optional else "")
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    return value


def parse_endpoint_url(value: Any, name: str = "ingest.endpoint_url") -> str | None:
    """An S3 endpoint: ``http(s)://host[:port][/path]``, never with credentials in it (they are not echoed).

    Examples
    --------
    >>> parse_endpoint_url("http://127.0.0.1:9000")
    'http://127.0.0.1:9000'
    >>> parse_endpoint_url("localhost:9000")
    Traceback (most recent call last):
    ...
    wxdask.errors.ConfigError: ingest.endpoint_url must be an http:// or https:// URL with a host, got 'localhost:9000'
    """
    from urllib.parse import urlsplit

    if _path(name, value) is None:
        return None
    if "@" in value.split("//", 1)[-1].split("/", 1)[0]:
        raise ConfigError(f"{name} holds credentials (user:password@host), not echoed here; give an S3 endpoint "
                          "without them and the credentials in the environment (AWS_ACCESS_KEY_ID, ...)")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ConfigError(f"{name} must be an http:// or https:// URL with a host and a numeric port, "
                          f"got {value!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"{name} must be an http:// or https:// URL with a host, got {value!r}")
    return value


def _mapping(name: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        # the type, not the value: a credential pasted in the wrong place must not reach the terminal
        raise ConfigError(f"{name} must be a mapping (key: value), got a value of type {type(value).__name__}")
    return dict(value)


def _byte_size(name: str, value: Any) -> str | int | float:
    """A byte size for Dask (``"4GiB"``, an int of bytes, a fraction of memory, or ``"auto"``)."""
    from dask.utils import parse_bytes

    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{name} must be a byte size like 4GiB, got {value!r}")
    if isinstance(value, (int, float)):
        if not value > 0:
            raise ConfigError(f"{name} must be a positive byte size like 4GiB, got {value!r}")
        return value
    if isinstance(value, str) and value.strip().lower() == "auto":
        return value
    try:
        n = parse_bytes(value) if isinstance(value, str) else None
    except (ValueError, TypeError):
        n = None
    if n is None or n <= 0:
        raise ConfigError(f"{name} must be a byte size like 4GiB or 500MB (or 'auto'), got {value!r}")
    return value


#: Schemes of Dask comm addresses, and those that need ``host:port``.
_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")
_PORTED = ("tcp", "tls", "ws", "wss")


def parse_scheduler_address(value: Any, name: str = "dask.scheduler") -> str | None:
    """Check a Dask scheduler address such as ``tcp://host:8786`` (the scheme defaults to tcp).

    Raises
    ------
    ConfigError
        If the scheme is not a Dask comm (tcp, tls, ws, wss, ucx, inproc) or
        a tcp/tls/ws/wss address has no valid port.

    Examples
    --------
    >>> parse_scheduler_address("tcp://10.0.0.2:8786")
    'tcp://10.0.0.2:8786'
    """
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{name} must be an address like tcp://host:8786, got {value!r}")
    scheme, sep, rest = value.strip().partition("://")
    if not sep:
        scheme, rest = "tcp", value.strip()
    if scheme not in _SCHEMES:
        raise ConfigError(f"{name} {value!r} has an unknown scheme {scheme!r}; valid: {', '.join(_SCHEMES)}")
    if scheme in _PORTED:
        host, colon, port = rest.rpartition(":")
        if not colon or not host:
            raise ConfigError(f"{name} {value!r} has no port; write it as {scheme}://host:8786")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"{name} {value!r} has no valid port ({port!r}); write it as {scheme}://host:8786")
        if ":" in host and not host.startswith("["):
            raise ConfigError(f"{name} {value!r}: write an IPv6 host in brackets, {scheme}://[::1]:8786")
    return value.strip()


_OFFSET = re.compile(r"(?:[+-]\d{2}(?::?\d{2})?|Z)$")


def _utc(value: Any, name: str) -> Any:
    """Turn a datetime/date (YAML timestamps) or an ISO string with a UTC offset into naive UTC ISO text."""
    if isinstance(value, np.datetime64) or value is None:
        return value
    if isinstance(value, _dt.datetime):
        if value.tzinfo is not None:
            utc = value.astimezone(_dt.UTC).replace(tzinfo=None)
            logger.info("%s %s converted to UTC: %s", name, value.isoformat(), utc.isoformat())
            value = utc
        return value.replace(tzinfo=None).isoformat()
    if isinstance(value, _dt.date):
        return value.isoformat() + "T00"
    if isinstance(value, str):
        text = value.strip()
        if "T" in text or " " in text:
            _, _, clock = text.replace(" ", "T").partition("T")
            if _OFFSET.search(clock) and not clock.endswith("Z"):
                try:
                    parsed = _dt.datetime.fromisoformat(text)
                except ValueError:
                    raise ConfigError(f"{name} must be an ISO time like 2019-09-20T05, got {value!r}") from None
                return _utc(parsed, name)
        return text
    raise ConfigError(f"{name} must be an ISO time like 2019-09-20T05, got {value!r}")


def parse_time(value: Any, name: str = "time") -> np.datetime64:
    """Parse an initialisation time that must lie on the hour, in the archive.

    Parameters
    ----------
    value : str, datetime.datetime, datetime.date or numpy.datetime64
        ISO time such as ``"2019-09-20T05"`` or ``"2019-09-20T05:00"`` (UTC,
        with or without a trailing ``Z``). A time with a UTC offset
        (``"2019-09-20T07+02:00"``, or a YAML timestamp with one) is converted
        to UTC, and the conversion is logged; a ``datetime`` without one (what
        YAML makes of ``2019-09-20 05:00:00``) is taken as UTC.
    name : str
        Name used in the error message.

    Returns
    -------
    numpy.datetime64
        The time at hour precision.

    Raises
    ------
    ConfigError
        If the value is not a time, not on the hour, or before 2014-09-30.

    Examples
    --------
    >>> parse_time("2019-09-20T05")
    np.datetime64('2019-09-20T05','h')
    """
    value = _utc(value, name)
    try:
        t = np.datetime64(str(value).rstrip("Z"))
    except ValueError:
        raise ConfigError(f"{name} must be an ISO time like 2019-09-20T05, got {value!r}") from None
    if np.isnat(t):
        raise ConfigError(f"{name} must be an ISO time like 2019-09-20T05, got {value!r}")
    hour = t.astype("datetime64[h]")
    if hour != t:
        raise ConfigError(f"{name} must be on the hour (HRRR runs hourly), got {value!r}")
    if hour < ARCHIVE_START:
        raise ConfigError(f"{name} {value!r} is before the archive starts ({ARCHIVE_START})")
    return hour


def parse_leads(value: Any) -> tuple[int, ...]:
    """Parse forecast leads in whole hours (``"0,1,2"`` or a sequence).

    Raises
    ------
    ConfigError
        If a lead is not an integer in ``0..48`` or a lead repeats.

    Examples
    --------
    >>> parse_leads("0,1, 2")
    (0, 1, 2)
    """
    items: list[Any]
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        items = [value]
    elif isinstance(value, (list, tuple, np.ndarray)):
        items = list(value)
    else:
        raise ConfigError(f"leads must be a list of whole hours 0..{MAX_LEAD} (or '0,1,2'), got {value!r}")
    leads = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (str, int, np.integer)):
            raise ConfigError(f"leads must be whole hours 0..{MAX_LEAD}, got {item!r}")
        try:
            lead = int(str(item).strip())
        except ValueError:
            raise ConfigError(f"leads must be whole hours 0..{MAX_LEAD}, got {item!r}") from None
        if not 0 <= lead <= MAX_LEAD:
            raise ConfigError(f"leads must be whole hours 0..{MAX_LEAD}, got {lead}")
        leads.append(lead)
    if not leads:
        raise ConfigError("leads must name at least one lead hour, got none")
    if len(set(leads)) != len(leads):
        raise ConfigError(f"leads must not repeat, got {value!r}")
    return tuple(sorted(leads))


def parse_duration(value: Any, name: str = "duration") -> np.timedelta64:
    """Parse a duration in whole hours such as ``"24h"``, ``"2d"`` or ``"0"``.

    Examples
    --------
    >>> parse_duration("2d")
    np.timedelta64(48,'h')
    """
    if isinstance(value, bool) or not isinstance(value, (str, int, np.integer)):
        raise ConfigError(f"{name} must look like 24h or 2d, got {value!r}")
    text = str(value).strip().lower()
    units = {"h": 1, "d": 24}
    try:
        if text in ("0", "none", ""):
            return np.timedelta64(0, "h")
        if text[-1] in units:
            hours = int(text[:-1]) * units[text[-1]]
        else:
            hours = int(text)
    except (ValueError, IndexError):
        raise ConfigError(f"{name} must look like 24h or 2d, got {value!r}") from None
    if hours < 0:
        raise ConfigError(f"{name} must not be negative, got {value!r}")
    return np.timedelta64(hours, "h")


def _lead(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value <= MAX_LEAD:
        raise ConfigError(f"{name} must be a whole hour 0..{MAX_LEAD} or null, got {value!r}")
    return int(value)
