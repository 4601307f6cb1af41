"""The whole :class:`Config`: building it from plain data, YAML and overrides, and back to plain data."""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from wxdask.config.analysis import InterpolateConfig, KMeansConfig, SearchConfig, TilesConfig
from wxdask.config.data import DaskConfig, IngestConfig, StoreConfig
from wxdask.config.model import DecodeConfig, EmbedConfig, EvaluateConfig, ModelConfig, TrainConfig
from wxdask.config.redact import redacted
from wxdask.errors import ConfigError

_SECTIONS: dict[str, type] = {
    "store": StoreConfig,
    "dask": DaskConfig,
    "ingest": IngestConfig,
    "model": ModelConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "embed": EmbedConfig,
    "decode": DecodeConfig,
    "search": SearchConfig,
    "interpolate": InterpolateConfig,
    "kmeans": KMeansConfig,
    "tiles": TilesConfig,
}


@dataclass(frozen=True)
class Config:
    """The whole configuration: one frozen section per stage."""

    store: StoreConfig = field(default_factory=StoreConfig)
    dask: DaskConfig = field(default_factory=DaskConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    interpolate: InterpolateConfig = field(default_factory=InterpolateConfig)
    kmeans: KMeansConfig = field(default_factory=KMeansConfig)
    tiles: TilesConfig = field(default_factory=TilesConfig)

    @classmethod
    def from_dict(cls, data: dict | None) -> Config:
        """Build from nested plain data; unknown sections or keys are errors.

        Every field's value is checked where its section is built (types
        included: a list where a mapping belongs, a number where a path
        belongs, ``maybe`` for a boolean...), so nothing invalid reaches a
        stage or the store.

        Raises
        ------
        ConfigError
            Naming the unknown section or key and the valid ones, or the bad value.
        """
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a mapping of sections, got {data!r}")
        sections = {}
        for name, values in data.items():
            if name not in _SECTIONS:
                raise ConfigError(f"unknown config section {name!r}; valid: {', '.join(_SECTIONS)}")
            if values is None:
                values = {}
            if not isinstance(values, dict):
                raise ConfigError(f"config section {name!r} must be a mapping, got {values!r}")
            section_cls = _SECTIONS[name]
            valid = {f.name for f in fields(section_cls)}
            unknown = set(values) - valid
            if unknown:
                raise ConfigError(
                    f"unknown key(s) {sorted(map(str, unknown))} in config section {name!r}; valid: {sorted(valid)}"
                )
            sections[name] = section_cls(**values)
        return cls(**sections)

    @classmethod
    def from_yaml(cls, path: str | Path | None = None, overrides: dict | list | None = None,
                  options: dict | None = None) -> Config:
        """Load a YAML file (optional), apply overrides, then options: the one way a Config is built.

        Parameters
        ----------
        path : str or Path, optional
            YAML file with one mapping per section.
        overrides : dict or list of str, optional
            ``{"ingest.start": "2019-09-20T00"}`` or ``["ingest.start=2019-09-20T00"]``
            (the CLI's ``--set``); list values are parsed as YAML. A key may
            reach into a mapping: ``store.storage_options.client_kwargs.region_name=x``.
        options : dict, optional
            Flat ``section.key`` values applied last (a CLI command's own
            options). In both, ``None`` values are ignored, so unset CLI
            options fall through to the file.

        Raises
        ------
        ConfigError
            If the file is missing or malformed, an override is not valid YAML,
            or a value is invalid.
        """
        data: dict = {}
        if path is not None:
            try:
                text = Path(path).read_text()
            except OSError as exc:
                raise ConfigError(f"cannot read config file {str(path)!r}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise ConfigError(f"config file {str(path)!r} is not text (UTF-8)") from None
            try:
                data = yaml.safe_load(text) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"config file {str(path)!r} is not valid YAML: {_one_line(exc)}") from None
            if not isinstance(data, dict):
                raise ConfigError(f"config file {str(path)!r} must hold a mapping of sections, got {data!r}")
        for key, value in _override_items(overrides) + _override_items(options):
            _set_dotted(data, key, value)
        return cls.from_dict(data)

    def to_dict(self, *, redact: bool = True) -> dict:
        """Plain, JSON-serialisable nested data (tuples as lists), for YAML, logs and Zarr attrs.

        Parameters
        ----------
        redact : bool
            Replace the values of secret-looking keys (credentials in
            ``store.storage_options``) by ``"***"`` (:func:`redacted`). The
            default, since this is what gets recorded and shown; ``False``
            only to hand a config to code that needs the credentials.
        """
        data = _plain(dataclasses.asdict(self))
        return redacted(data) if redact else data

    def replace(self, **sections: Any) -> Config:
        """Return a copy with keys of sections changed: ``cfg.replace(ingest={"leads": (0, 1)})``."""
        new = {}
        for name, values in sections.items():
            current = getattr(self, name)
            new[name] = dataclasses.replace(current, **values)
        return dataclasses.replace(self, **new)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())


def _override_items(overrides: dict | list | None) -> list[tuple[str, Any]]:
    if not overrides:
        return []
    if isinstance(overrides, dict):
        return [(str(k), v) for k, v in overrides.items() if v is not None]
    items = []
    for text in overrides:
        key, sep, value = str(text).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {text!r} must look like section.key=value")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {text!r}: the value is not valid YAML ({_one_line(exc)})") from None
        items.append((key.strip(), parsed))
    return items


def _set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``data[a][b][c] = value`` for ``key="a.b.c"``, making mappings on the way."""
    parts = [p.strip() for p in key.split(".")]
    if len(parts) < 2 or not all(parts):
        raise ConfigError(f"override {key!r} must look like section.key=value")
    node = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict) and depth == 0:
            raise ConfigError(f"config section {part!r} must be a mapping, got {child!r}")
        if not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            shown = redacted({part: child})[part]
            raise ConfigError(f"override {key!r}: {where} is {shown!r}, not a mapping")
        node = child
    node[parts[-1]] = value


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, (_dt.timedelta, np.timedelta64, np.datetime64)):
        return str(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
