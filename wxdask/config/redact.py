"""Redaction of secret-looking values (credentials) in nested plain data."""

from __future__ import annotations

import re
from typing import Any

#: Key names whose values are secrets (matched case-insensitively anywhere in a key).
SECRET_KEY_PATTERN = re.compile(
    r"key|secret|token|passw|credential|auth|signature|private", re.IGNORECASE)
#: Keys that match the pattern but hold no secret.
_NOT_SECRET = {"key_prefix", "keys", "signature_version", "auth_type"}
#: What replaces a secret value.
REDACTED = "***"


def redacted(data: Any) -> Any:
    """A copy of nested plain data with the values of secret-looking keys replaced by ``"***"``.

    Keys are matched case-insensitively on ``key``, ``secret``, ``token``,
    ``passw``, ``credential``, ``auth``, ``signature`` and ``private``
    (so ``key``, ``secret``, ``token``, ``aws_access_key_id``,
    ``aws_secret_access_key``, ``aws_session_token``, ``password``, ``passwd``
    ...) at any depth, in mappings and in lists of mappings. This is the one
    function through which a configuration is recorded (store attributes) or
    shown (``wxdask config show``, logs).

    Examples
    --------
    >>> redacted({"store": {"storage_options": {"key": "AKIA", "client_kwargs": {"endpoint_url": "http://x"}}}})
    {'store': {'storage_options': {'key': '***', 'client_kwargs': {'endpoint_url': 'http://x'}}}}
    """
    if isinstance(data, dict):
        out = {}
        for k, v in data.items():
            secret = isinstance(k, str) and k.lower() not in _NOT_SECRET and SECRET_KEY_PATTERN.search(k)
            out[k] = REDACTED if secret and v is not None and not isinstance(v, (dict, list, tuple)) else redacted(v)
        return out
    if isinstance(data, (list, tuple)):
        return [redacted(v) for v in data]
    return data
