"""Ingest's pure core: keys, .idx parsing, byte ranges, message framing."""

from __future__ import annotations

import numpy as np
import pytest

from wxdask.errors import CorruptMessageError, SourceError, SourceNotFoundError
from wxdask.ingest import (
    IdxEntry,
    SlotResult,
    Source,
    Tally,
    check_message,
    find_refc,
    group_slots,
    hrrr_key,
    parse_idx,
    summarize,
)

V4_IDX = """1:0:d=2022101401:REFC:entire atmosphere:8 hour fcst:
2:412345:d=2022101401:RETOP:cloud top:8 hour fcst:
3:500000:d=2022101401:TMP:2 m above ground:8 hour fcst:
4:900000:d=2022101401:UGRD:10 m above ground:8 hour fcst:
4.1:900000:d=2022101401:VGRD:10 m above ground:8 hour fcst:
5:1300000:d=2022101401:PRATE:surface:8 hour fcst:
"""

OLD_IDX = """1:0:d=2016010100:REFC:entire atmosphere (considered as a single layer):anl:
2:300:d=2016010100:TMP:2 m above ground:anl:
"""


def test_hrrr_key():
    assert hrrr_key(np.datetime64("2019-09-20T05"), 1) == "hrrr.20190920/conus/hrrr.t05z.wrfsfcf01.grib2"
    assert hrrr_key(np.datetime64("2014-09-30T23"), 48).endswith("hrrr.t23z.wrfsfcf48.grib2")


def test_parse_idx_ranges_are_exclusive_and_last_is_open():
    entries = parse_idx(V4_IDX)
    assert [e.number for e in entries] == ["1", "2", "3", "4", "4.1", "5"]
    assert (entries[0].start, entries[0].end) == (0, 412345)
    assert entries[-1].end is None
    # a sub-message shares its parent's range and ends at the next different start
    assert (entries[3].start, entries[3].end) == (900000, 1300000)
    assert (entries[4].start, entries[4].end) == (900000, 1300000)


def test_find_refc_both_level_labels():
    new = find_refc(parse_idx(V4_IDX), np.datetime64("2022-10-14T01"), 8)
    assert (new.start, new.end, new.level) == (0, 412345, "entire atmosphere")
    old = find_refc(parse_idx(OLD_IDX), np.datetime64("2016-01-01T00"), 0)
    assert old.level.startswith("entire atmosphere (considered")
    assert (old.start, old.end) == (0, 300)


def test_find_refc_checks_date_and_lead():
    entries = parse_idx(V4_IDX)
    with pytest.raises(CorruptMessageError, match="d=2022101401, expected d=2022101402"):
        find_refc(entries, np.datetime64("2022-10-14T02"), 8)
    with pytest.raises(CorruptMessageError, match="expected 'anl'"):
        find_refc(entries, np.datetime64("2022-10-14T01"), 0)


def test_refc_only_as_last_message_is_open_ended():
    text = "1:0:d=2022101401:TMP:2 m above ground:anl:\n2:700:d=2022101401:REFC:entire atmosphere:anl:\n"
    entry = find_refc(parse_idx(text))
    assert (entry.start, entry.end) == (700, None)


def test_no_refc_and_malformed_lines():
    with pytest.raises(SourceNotFoundError, match="no REFC"):
        find_refc(parse_idx("1:0:d=2022101401:TMP:2 m above ground:anl:\n"))
    with pytest.raises(CorruptMessageError, match="line 2 is malformed"):
        parse_idx("1:0:d=2022101401:REFC:entire atmosphere:anl:\n<html>oops</html>\n")
    with pytest.raises(CorruptMessageError, match="backwards"):
        parse_idx("1:500:d=2022101401:REFC:a:anl:\n2:100:d=2022101401:TMP:b:anl:\n")


def _message(n: int) -> bytes:
    body = b"\x00" * (n - 20)
    return b"GRIB\x00\x00\x00\x02" + n.to_bytes(8, "big") + body + b"7777"


def test_check_message_accepts_a_whole_message():
    msg = _message(100)
    check_message(msg, IdxEntry("1", 0, 100, "", "REFC", "", ""))
    check_message(msg, IdxEntry("1", 50, None, "", "REFC", "", ""))


@pytest.mark.parametrize(
    ("data", "end", "match"),
    [
        (_message(100)[:-1], 100, "fetched 99 bytes, expected 100"),
        (_message(100)[:-4] + b"XXXX", 100, "7777"),
        (b"<Error>" + _message(100)[7:], 100, "GRIB"),
        (_message(100)[:7] + b"\x01" + _message(100)[8:], 100, "edition 1"),
        (_message(100)[:60], None, "says it is 100 bytes long, got 60"),
    ],
)
def test_check_message_rejects_damage(data, end, match):
    with pytest.raises(CorruptMessageError, match=match):
        check_message(data, IdxEntry("1", 0, end, "", "REFC", "", ""))


def test_ingest_wrapper_and_template_are_lazy(tmp_path):
    from wxdask.config import StoreConfig
    from wxdask.grid import COARSE
    from wxdask.ingest import Source, ingest, refc_template
    from wxdask.testing import raise_if_dask_computes

    times = np.datetime64("2022-06-01T00", "h") + np.arange(3).astype("timedelta64[h]")
    slots = [(t, lead, (i, j)) for i, t in enumerate(times) for j, lead in enumerate((0, 1))]
    with raise_if_dask_computes():
        tasks = ingest(slots, Source(str(tmp_path / "archive")), StoreConfig(url=str(tmp_path / "s.zarr")), COARSE)
        template = refc_template(times, (0, 1), COARSE)
    assert len(tasks) == 6 and template["refc"].chunks is not None
    assert not (tmp_path / "s.zarr").exists()


def test_unsatisfiable_range_is_permanent_not_retried():
    from botocore.exceptions import ClientError

    from wxdask.errors import SourceError
    from wxdask.ingest import Source, _retry

    calls = []

    def read():
        calls.append(1)
        raise ClientError({"Error": {"Code": "InvalidRange", "Message": "The requested range is not satisfiable"},
                           "ResponseMetadata": {"HTTPStatusCode": 416}}, "GetObject")

    with pytest.raises(SourceError) as info:
        _retry(Source("s3://b", retries=5, backoff=0.0), "reading 'b/k'", read)
    assert len(calls) == 1 and info.value.unsatisfiable


def test_unreachable_endpoint_gets_two_attempts():
    from wxdask.errors import SourceError
    from wxdask.ingest import Source, _retry

    calls = []

    def read():
        calls.append(1)
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(SourceError) as info:
        _retry(Source("s3://b", retries=5, backoff=0.0), "reading 'b/k'", read)
    assert len(calls) == 2 and info.value.unreachable


def _reference_summary(results, limit=20):
    """The summary as it was built before :class:`Tally`: every result held in a list."""
    counts, kinds, shown = {}, {}, {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
        if r.status != "ok":
            by = kinds.setdefault(r.status, {})
            by[r.kind] = by.get(r.kind, 0) + 1
            if len(shown.setdefault(r.status, [])) < limit:
                shown[r.status].append(r)
    lines = [f"{len(results)} slot(s) attempted: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    for status in sorted(kinds):
        lines.append(f"{status}: {counts[status]} (" + ", ".join(f"{k}: {n}" for k, n in sorted(kinds[status].items()))
                     + ")")
        for r in shown[status]:
            lines.append(f"  {np.datetime_as_string(r.time, unit='h')} f{r.lead:02d}: {r.status}: {r.detail}")
        if counts[status] > limit:
            lines.append(f"  ... and {counts[status] - limit} more (wxdask status --store STORE --status {status})")
    return "\n".join(lines)


def _mixed_results(n):
    t0 = np.datetime64("2020-01-01T00", "h")
    kinds = [("ok", ""), ("absent", "no GRIB object: gone"), ("corrupt", "message: bad"),
             ("corrupt", "range past end: short"), ("failed", "read error: 503"), ("mismatch", "grid: other")]
    for i in range(n):
        status, detail = kinds[(i * 7) % len(kinds) if i % 3 else 0]
        yield SlotResult(t0 + np.timedelta64(i, "h"), i % 3, status, f"{detail} {i}".strip() if detail else "")


@pytest.mark.parametrize("limit", [1, 5, 20])
def test_tally_gives_the_summary_as_before(limit):
    results = list(_mixed_results(300))
    expected = _reference_summary(results, limit)
    assert summarize(results, limit=limit) == expected
    assert summarize(iter(results), limit=limit) == expected
    assert summarize([]) == _reference_summary([])


def test_summary_from_a_generator_holds_no_result():
    import weakref  # results hold no cycles: reference counting frees each as soon as it is dropped

    alive = weakref.WeakSet()

    def results():
        for r in _mixed_results(2000):
            assert len(alive) <= 1  # at most the consumer's loop variable: the others were counted and dropped
            alive.add(r)
            yield r
            del r

    text = summarize(results())
    assert text.startswith("2000 slot(s) attempted:")


def test_run_slots_groups_lazily_and_keeps_no_result(monkeypatch):
    import weakref

    from wxdask.ingest import tasks

    alive = weakref.WeakSet()
    pulled = [0]
    t0 = np.datetime64("2020-01-01T00", "h")

    def todo():
        for i in range(240):
            pulled[0] += 1
            yield (t0 + np.timedelta64(i, "h"), 0, (i, 0), False)

    def fake_group(source, store_cfg, grid, group):
        assert len(alive) == 0  # the previous task's results were counted and dropped
        assert pulled[0] <= group[-1][2][0] + 2  # todo is consumed one block at a time
        out = [SlotResult(t, lead, "absent", "no GRIB object: x") for t, lead, _, _ in group]
        alive.update(out)
        return out

    monkeypatch.setattr(tasks, "ingest_group", fake_group)
    tally = tasks._run_slots(None, todo(), Source("/nowhere"), None, None, tasks._DeadSource(Source("/nowhere")),
                             Tally(), 240)
    assert tally.total == 240 and tally.counts == {"absent": 240}


def test_run_slots_on_a_cluster_runs_every_group_once_whatever_the_window(monkeypatch, client):
    # more groups than the window: the first window's groups, then one per finished task, none lost
    from wxdask.ingest import tasks

    t0 = np.datetime64("2020-01-01T00", "h")
    todo = [(t0 + np.timedelta64(i, "h"), 0, (i, 0), False) for i in range(24 * 7 + 5)]

    def fake_group(source, store_cfg, grid, group):
        return [SlotResult(t, lead, "absent", f"no GRIB object: {i}") for t, lead, (i, _), _ in group]

    monkeypatch.setattr(tasks, "ingest_group", fake_group)
    for window in (1, 3, 8, 16):
        tally = tasks._run_slots(client, iter(todo), Source("/nowhere"), None, None,
                                 tasks._DeadSource(Source("/nowhere")), Tally(), len(todo), window=window)
        assert tally.total == len(todo) and tally.counts == {"absent": len(todo)}, window


def test_group_slots_refuses_slots_out_of_time_order():
    t = np.datetime64("2020-01-01T00", "h")
    items = [(t, 0, (i, 0), False) for i in (0, 30, 5)]
    with pytest.raises(ValueError, match="out of time order"):
        list(group_slots(items, 24))


@pytest.mark.parametrize("content_range, size, body", [
    ("bytes 2-5/10", 10, b"2345"),   # S3: the part and the object's size
    ("bytes 2-5/*", 10, b"2345"),    # a part of a size not said: looked up
    (None, 10, b"2345"),             # a server that ignored the range sent the whole object
])
def test_a_ranged_read_gives_the_objects_size_and_identity_whatever_the_server_says(content_range, size, body):
    import fsspec.asyn

    from wxdask.ingest.source import _read

    whole = b"0123456789"

    class Body:
        def __init__(self, data):
            self.data = data

        async def read(self):
            return self.data

        def close(self):
            pass

    class FakeS3:
        loop = fsspec.asyn.get_loop()
        calls: list = []

        def split_path(self, path):
            return "bucket", path.split("/", 1)[1], None

        async def _call_s3(self, method, **kw):
            self.calls.append((method, kw["Range"]))
            part = whole[2:6] if content_range else whole
            return {"Body": Body(part), "ETag": '"abc"', "LastModified": None,
                    **({"ContentRange": content_range} if content_range else {})}

        async def _info(self, path, refresh=False):
            return {"size": len(whole)}

    fs = FakeS3()
    data, info = _read(Source("s3://bucket", anon=False), fs, "bucket/key", 2, 6)  # with credentials: s3fs
    assert (data, info["size"], info["ETag"]) == (body, size, '"abc"')
    assert fs.calls == [("get_object", "bytes=2-5")]


class _Server:
    """A real HTTP server on loopback whose answer to a GET the test sets: status, headers, body."""

    def __init__(self):
        import http.server
        import threading

        outer = self
        self.answer, self.requests = (206, {}, b""), []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append((self.path, self.headers.get("Range")))
                status, headers, body = outer.answer
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def http_server():
    server = _Server()
    yield server
    server.close()


class _SizeOnly:
    """The s3fs lookup :func:`_read` falls back on for a size the GET did not say (``_call_s3`` marks it S3)."""

    _call_s3 = None

    def info(self, path, refresh=False):
        return {"size": 10}


@pytest.mark.parametrize("status, headers, body, expect", [
    (206, {"Content-Range": "bytes 2-5/10", "ETag": '"abc"'}, b"2345", (b"2345", 10)),  # S3
    (206, {"Content-Range": "bytes 2-5/*", "ETag": '"abc"'}, b"2345", (b"2345", 10)),   # size looked up
    (200, {"ETag": '"abc"'}, b"0123456789", (b"2345", 10)),  # the range ignored: the whole object
    (200, {"ETag": '"abc"'}, b"01", (b"", 2)),  # ... and the object ends before it: nothing, and the size
    (206, {"Content-Range": "bytes 2-5/10", "ETag": '"abc"', "Content-Encoding": "gzip"}, b"2345",
     (b"2345", 10)),  # the stored bytes, not un-gzipped
])
def test_an_anonymous_read_is_one_plain_ranged_get(http_server, status, headers, body, expect):
    from wxdask.ingest.source import _read

    http_server.answer, http_server.requests[:] = (status, headers, body), []
    source = Source("s3://bucket/pre", endpoint_url=http_server.url)
    data, info = _read(source, _SizeOnly(), source.path("a b/key"), 2, 6)
    assert (data, info["size"], info["ETag"]) == (*expect, '"abc"')
    assert http_server.requests == [("/bucket/pre/a%20b/key", "bytes=2-5")]


def test_a_plain_read_goes_through_the_proxy_the_environment_names(http_server, monkeypatch):
    from wxdask.ingest import source as src

    http_server.answer = (206, {"Content-Range": "bytes 2-5/10", "ETag": '"abc"'}, b"2345")
    http_server.requests[:] = []
    monkeypatch.setattr(src, "_POOLS", {})
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", http_server.url)  # the test server plays a forward proxy
    source = Source("s3://bucket", endpoint_url="http://archive.invalid:9000")
    data, _ = src._read(source, _SizeOnly(), "bucket/key", 2, 6)
    assert data == b"2345"
    assert http_server.requests == [("http://archive.invalid:9000/bucket/key", "bytes=2-5")]
    monkeypatch.setenv("NO_PROXY", "archive.invalid")  # bypassed: straight to the (unresolvable) host
    with pytest.raises(SourceError, match="archive.invalid"):
        src._read(Source("s3://bucket", "http://archive.invalid:9000", retries=1), _SizeOnly(), "bucket/key", 2, 6)
    assert len(http_server.requests) == 1


@pytest.mark.parametrize("status, body, error, attempts", [
    (404, b"<Error><Code>NoSuchKey</Code></Error>", FileNotFoundError, 1),
    (403, b"<Error><Code>AccessDenied</Code></Error>", "HTTP 403", 1),
    (416, b"<Error><Code>InvalidRange</Code></Error>", "HTTP 416 InvalidRange", 1),
    (503, b"<Error><Code>SlowDown</Code></Error>", "HTTP 503 SlowDown", 3),  # transient: retried
    (206, b"23", "2 of 4 bytes", 3),  # a body cut short (Content-Length says 2): retried
])
def test_a_plain_read_fails_as_the_s3_reader_does(http_server, status, body, error, attempts):
    from wxdask.ingest.source import _read

    http_server.answer = (status, {"Content-Range": "bytes 2-5/10"}, body)
    http_server.requests[:] = []
    source = Source("s3://bucket", endpoint_url=http_server.url, retries=3, backoff=0.01)
    expected = error if isinstance(error, type) else SourceError
    with pytest.raises(expected) as info:
        _read(source, _SizeOnly(), "bucket/key", 2, 6)
    if not isinstance(error, type):
        assert error in str(info.value)
        assert info.value.unsatisfiable == (status == 416)
    assert len(http_server.requests) == attempts
