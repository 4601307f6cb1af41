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
        ({"model.filters": [16, 32], "model.arch": "seed"}, "n_layers=4"),
        ({"model.n_layers": 3}, "model.n_layers apply to the seed architecture only; set model.arch: seed"),
        ({"model.arch": "vae"}, "model.arch must be one of eof, seed, got 'vae'"),
        ({"model.refine_filters": 0}, "model.refine_filters must be a positive int"),
        ({"model.branch_filters": []}, "model.branch_filters must be a list of positive ints"),
        ({"train.eof_max_images": -1}, "train.eof_max_images must be a positive int"),
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


# ----------------------------------------------------------------------------- types, dates, secrets


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("ingest:\n  start: 2019-09-20 05:00:00\n  end: 2019-09-21\n", "2019-09-20T05", "2019-09-21T00"),
        (
            "ingest:\n  start: 2019-09-20T05:00:00Z\n  end: 2019-09-20T09:00:00+02:00\n",
            "2019-09-20T05",
            "2019-09-20T07",
        ),
        ("ingest:\n  start: '2019-09-20T05'\n  end: '2019-09-20T03-05:00'\n", "2019-09-20T05", "2019-09-20T08"),
    ],
)
def test_yaml_dates_become_utc_text_and_to_dict_is_json(tmp_path, text, start, end):
    import json

    path = tmp_path / "cfg.yaml"
    path.write_text(text + "store:\n  url: s3://b/s.zarr\n  storage_options:\n    when: 2019-09-20\n")
    cfg = Config.from_yaml(path)
    assert (cfg.ingest.start, cfg.ingest.end) == (start, end)
    data = json.loads(json.dumps(cfg.to_dict()))
    assert data["ingest"]["start"] == start
    assert data["store"]["storage_options"]["when"] == "2019-09-20"
    assert Config.from_dict(data).ingest == cfg.ingest


def test_offset_conversion_is_logged(caplog):
    with caplog.at_level("INFO", logger="wxdask.config"):
        cfg = Config.from_yaml(None, ["ingest.start=2019-09-20T05+02:00"])
    assert cfg.ingest.start == "2019-09-20T03"
    assert "converted to UTC" in caplog.text and "2019-09-20T03" in caplog.text


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["dask.memory_limit=lots"], "dask.memory_limit must be a byte size"),
        (["dask.memory_limit=-1"], "positive byte size"),
        (["ingest.leads={0: 1}"], "leads must be a list"),
        (["ingest.leads=[0, [1]]"], "leads must be whole hours"),
        (["store.storage_options=[a]"], "store.storage_options must be a mapping"),
        (["store.url=3"], "store.url must be a non-empty path"),
        (["embed.model_dir=[x]"], "embed.model_dir"),
        (["ingest.anon=maybe"], "ingest.anon must be true or false"),
        (["train.on_gpu_worker=yes please"], "train.on_gpu_worker must be true or false"),
        (["store.url=[oops"], "not valid YAML"),
        (["dask.scheduler=foo://x:1"], "unknown scheme 'foo'"),
        (["dask.scheduler=tcp://host"], "no port"),
        (["dask.scheduler=tls://host:99999"], "no valid port"),
        (["kmeans.lead=49"], "kmeans.lead must be a whole hour"),
        (["store.lease_heartbeat=10", "store.lease_stale=5"], "must be longer"),
    ],
)
def test_bad_types_name_the_value(overrides, match):
    with pytest.raises(ConfigError, match=match):
        Config.from_yaml(None, overrides)


def test_good_types_are_kept():
    cfg = Config.from_yaml(None, ["dask.memory_limit=auto", "ingest.leads=3", "dask.scheduler=10.0.0.1:8786",
                                  "dask.scheduler=tls://[::1]:8786", "store.url=s3://b/x.zarr",
                                  "store.storage_options.client_kwargs.region_name=us-east-1"])
    assert cfg.ingest.leads == (3,)
    assert cfg.dask.scheduler == "tls://[::1]:8786"
    assert cfg.store.storage_options == {"client_kwargs": {"region_name": "us-east-1"}}
    assert cfg.dask.host == "127.0.0.1" and cfg.dask.dashboard_address.startswith("127.0.0.1:")


def test_redaction_matches_secret_names_at_any_depth():
    from wxdask.config import redacted

    data = {"store": {"storage_options": {
        "key": "k", "SECRET": "s", "token": "t", "anon": False,
        "client_kwargs": {"aws_access_key_id": "a", "aws_secret_access_key": "b", "aws_session_token": "c",
                          "endpoint_url": "http://x"},
        "config_kwargs": [{"password": "p"}, {"Passwd": "q"}, {"credentials": "r"}],
    }}}
    out = redacted(data)["store"]["storage_options"]
    assert out["key"] == out["SECRET"] == out["token"] == "***"
    assert out["anon"] is False and out["client_kwargs"]["endpoint_url"] == "http://x"
    assert {v for d in out["config_kwargs"] for v in d.values()} == {"***"}
    assert set(out["client_kwargs"].values()) == {"***", "http://x"}
    assert data["store"]["storage_options"]["key"] == "k", "the input is not changed"
    cfg = Config.from_dict({"store": {"url": "s3://b/s.zarr", "storage_options": {"secret": "s"}}})
    assert cfg.to_dict()["store"]["storage_options"]["secret"] == "***"
    assert cfg.to_dict(redact=False)["store"]["storage_options"]["secret"] == "s"
