"""Config: YAML round trip, overrides, and one clear error per bad value."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from wxdask.config import Config, parse_duration, parse_leads, parse_time
from wxdask.errors import ConfigError


def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = Config().replace(ingest={"start": "2019-09-20T00", "end": "2019-09-21T00", "leads": (0, 2)})
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert Config.from_yaml(path) == cfg


def test_overrides_beat_the_file(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("search:\n  k: 3\nstore:\n  url: a.zarr\n")
    cfg = Config.from_yaml(path, ["search.k=7", "ingest.leads=0,1"])
    assert cfg.search.k == 7
    assert cfg.ingest.leads == (0, 1)
    assert cfg.store.url == "a.zarr"
    assert Config.from_yaml(path, {"search.k": None}).search.k == 3


def test_times_are_hourly_and_end_exclusive():
    cfg = Config().replace(ingest={"start": "2019-09-20T22", "end": "2019-09-21T01"})
    times = cfg.ingest.times()
    assert list(times.astype(str)) == ["2019-09-20T22", "2019-09-20T23", "2019-09-21T00"]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"ingest.start": "2019-09-21T00", "ingest.end": "2019-09-20T00"}, "must be after"),
        ({"ingest.start": "2013-01-01T00"}, "before the archive starts"),
        ({"ingest.start": "2019-09-20T00:30"}, "on the hour"),
        ({"ingest.start": "yesterday"}, "ISO time"),
        ({"ingest.leads": "0,49"}, "0..48"),
        ({"ingest.leads": "0,0"}, "must not repeat"),
        ({"search.k": 0}, "search.k must be a positive int, got 0"),
        ({"search.exclude_window": "soon"}, "24h"),
        ({"model.filters": [16, 32]}, "n_layers=4"),
        ({"dask.gpu_workers": 5}, "gpu_workers"),
        ({"nosuch.key": 1}, "unknown config section 'nosuch'"),
        ({"store.nosuch": 1}, "unknown key"),
    ],
)
def test_bad_values_name_the_value(overrides, match):
    with pytest.raises(ConfigError, match=match):
        Config.from_yaml(None, overrides)


def test_config_errors_are_value_errors():
    with pytest.raises(ValueError):
        parse_leads("x")


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        Config.from_yaml(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("store: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        Config.from_yaml(bad)


def test_parsers():
    assert parse_time("2019-09-20T05Z") == np.datetime64("2019-09-20T05", "h")
    assert parse_duration("2d") == np.timedelta64(48, "h")
    assert parse_duration("0") == np.timedelta64(0, "h")
    assert parse_leads([2, 0]) == (0, 2)
