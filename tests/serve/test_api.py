"""Every endpoint of ``kvio serve`` against a real server process, compared with the
in-process StoreReader of the same (merged) store: lookups of hostile key bytes, batch gets in
JSON and Arrow, scans with byte bounds, and a JSON 4xx for every kind of bad request."""
from __future__ import annotations

import base64
import json

import pyarrow as pa
import pytest

import kvio
from tests.helpers import require_module

from .conftest import HOSTILE_KEYS, pkey

require_module("starlette", "the server extra (kvio[serve]) is not installed")

ARROW = "application/vnd.apache.arrow.stream"


def _arrow(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _read_arrow(body: bytes) -> pa.Table:
    return pa.ipc.open_stream(body).read_all()


def _scan_pairs(lines: bytes) -> list[tuple[bytes, bytes]]:
    """Pairs of an NDJSON scan answer, whichever fields (text or base64) carry them."""
    out = []
    for line in lines.splitlines():
        obj = json.loads(line)
        key = obj["key"].encode() if "key" in obj else base64.b64decode(obj["key_base64"])
        value = obj["value"].encode() if "value" in obj else base64.b64decode(obj["value_base64"])
        out.append((key, value))
    return out


@pytest.fixture(scope="module")
def reader(merged):
    with kvio.KeyValueSystem().open_store(merged[0]) as r:
        yield r


def _error(answer, status: int, code: str) -> dict:
    assert answer.status == status, answer.body
    assert answer.headers["content-type"] == "application/json"
    error = answer.json()["error"]
    assert error["status"] == status and error["code"] == code, error
    return error


# ---- service endpoints --------------------------------------------------------------------------
def test_health_readiness_and_store_listing(server, reader, merged):
    assert server.get("/healthz").json()["status"] == "ok"
    ready = server.get("/readyz").json()
    assert ready["ready"] is True and ready["stores"]["m"] == reader.version
    stores = {s["name"]: s for s in server.get("/v1/stores").json()["stores"]}
    assert set(stores) == {"m", "small"}
    m = stores["m"]
    assert m["version"] == reader.version and m["commit_seq"] == reader.commit.seq
    assert m["pairs"] == len(merged[1]) == len(reader)  # counted by a merged scan (overlapping)
    assert m["partitions"] == len(reader.manifest.partitions) and m["disjoint"] is False
    one = server.get("/v1/stores/small")
    assert one.status == 200 and one.json()["pairs"] == 3
    assert one.headers["kvio-version"] == one.json()["version"]


def test_metrics_count_requests_keys_and_versions(server, reader):
    server.get(f"/v1/stores/m/keys/{pkey(b'k0001')}")
    server.get("/v1/stores/m/keys/absent")
    text = server.get("/metrics").body.decode()
    assert 'kvio_http_requests_total{method="GET",route="/v1/stores/{name}/keys/{key:path}",' \
           'status="404"}' in text
    assert 'kvio_http_request_duration_seconds_bucket{le="0.001",' \
           'route="/v1/stores/{name}/keys/{key:path}",status="200"}' in text
    assert 'kvio_keys_served_total{result="found",store="m"}' in text
    assert 'kvio_keys_served_total{result="absent",store="m"}' in text
    assert f'kvio_store_version_info{{store="m",version="{reader.version}"}} 1.0' in text
    assert f'kvio_store_commit_seq{{store="m"}} {float(reader.commit.seq)}' in text
    assert 'kvio_store_swap_errors_total{store="m"} 0.0' in text
    # unmatched paths are one label, never the raw path (no label explosion)
    server.get("/no/such/path/x1")
    text = server.get("/metrics").body.decode()
    assert 'route="unmatched"' in text and "x1" not in text


# ---- single get ---------------------------------------------------------------------------------
@pytest.mark.parametrize("key", HOSTILE_KEYS + [b"bin", b"k0002", b"k0003"], ids=repr)
def test_single_get_of_any_key_bytes(server, reader, key):
    answer = server.get(f"/v1/stores/m/keys/{pkey(key)}")
    assert answer.status == 200, answer.body
    assert answer.body == reader[key]
    assert answer.headers["content-type"] == "application/octet-stream"
    assert answer.headers["kvio-version"] == reader.version


def test_single_get_raw_slashes_and_unreserved_bytes(server, reader):
    """A '/' may be sent as is; '+' is a plus (not a space); '.' segments reach the server."""
    assert server.get("/v1/stores/m/keys/a/b").body == reader[b"a/b"]
    assert server.get("/v1/stores/m/keys/+").body == reader[b"+"]
    assert server.get("/v1/stores/m/keys/..").body == reader[b".."]
    assert server.get("/v1/stores/m/keys/%2E").body == reader[b"."]
    assert server.get("/v1/stores/m/keys/%c3%A9").status == 404  # hex digits in either case


def test_absent_key_is_a_json_404_with_the_version(server, reader):
    answer = server.get("/v1/stores/m/keys/nope%00%FF")
    error = _error(answer, 404, "key_not_found")
    assert error["key"] == "nope%00%FF" and error["store"] == "m"
    assert answer.headers["kvio-version"] == reader.version


def test_head_of_a_key(server, reader):
    answer = server.request("HEAD", f"/v1/stores/m/keys/{pkey(b'k0004')}")
    assert answer.status == 200 and answer.body == b""
    assert int(answer.headers["content-length"]) == len(reader[b"k0004"])


# ---- batch get ----------------------------------------------------------------------------------
def test_batch_get_json_utf8(server, reader):
    keys = [b"k0000", b"k0001", b"absent", b"caf\xc3\xa9", b"a b", b"", b"%zz"]
    answer = server.post_json("/v1/stores/m/get", {"keys": [k.decode() for k in keys]})
    assert answer.status == 200, answer.body
    doc = answer.json()
    assert doc["version"] == reader.version == answer.headers["kvio-version"]
    assert doc["values"] == [None if v is None else v.decode() for v in reader.get_many(keys)]
    assert doc["values"][2] is None and doc["values"][0] == "new-0" and doc["values"][1] == "old-1"


def test_batch_get_json_base64_any_bytes(server, reader, merged):
    keys = HOSTILE_KEYS + [b"bin", b"missing\xff", b"k0999"]
    answer = server.post_json("/v1/stores/m/get", {"keys": [base64.b64encode(k).decode() for k in keys],
                                                   "encoding": "base64"})
    assert answer.status == 200, answer.body
    values = [None if v is None else base64.b64decode(v) for v in answer.json()["values"]]
    assert values == reader.get_many(keys) == [merged[1].get(k) for k in keys]


def test_batch_get_json_base64_of_one_length(server):
    """Keys and values of one length are coded all at once (kvio.b64): the same answer,
    absent keys null; a wrong key among them is still named by its index."""
    keys = [b"a", b"c", b"d", b"b"]
    answer = server.post_json("/v1/stores/small/get", {
        "keys": [base64.b64encode(k).decode() for k in keys], "encoding": "base64"})
    assert answer.status == 200, answer.body
    assert answer.json()["values"] == ["MQ==", "Mw==", None, "Mg=="]
    assert answer.body.endswith(b'"values":["MQ==","Mw==",null,"Mg=="]}')  # compact, as before
    for bad, index in ((["YQ==", "YQ=A", "Yw=="], 1), (["YWJj", "YW*j"], 1), (["YQ==", 7], 1)):
        error = _error(server.post_json("/v1/stores/small/get", {"keys": bad,
                                                                 "encoding": "base64"}),
                       400, "bad_keys")
        assert error["index"] == index, error


@pytest.mark.parametrize("body, status, expected", [
    (b'{"keys":["YQ==","Yw==","eA=="],"encoding":"base64"}', 200, ["MQ==", "Mw==", None]),
    (b'{"keys":["YQ==","YWJj"],"encoding":"base64"}', 200, ["MQ==", None]),
    (b'{"keys":["YQ==",null],"encoding":"base64"}', 400, 1),
    (b'{"keys":["YQ==","YQ=A","Yw=="],"encoding":"base64"}', 400, 1),
    (rb'{"keys":["YQ==","Y\/=="],"encoding":"base64"}', 200, ["MQ==", "Mw=="]),  # (an escaped /)
    (b'{"keys":["YQ==","YQ=="],"encoding":"base64","keys":["Yw=="]}', 200, ["Mw=="]),
    (b'{"keys":["YQ=="],"encoding":"base64"}trailing', 400, None),
])
def test_batch_get_json_in_the_clients_layout(server, body, status, expected):
    """Bodies laid out as kvio.connect sends them (keys decoded from the text) or nearly so:
    answered as the JSON they are."""
    answer = server.request("POST", "/v1/stores/small/get", body,
                            {"Content-Type": "application/json"})
    if status == 200:
        assert answer.status == 200, answer.body
        assert answer.json()["values"] == expected
    elif expected is None:
        _error(answer, 400, "bad_json")
    else:
        assert _error(answer, 400, "bad_keys")["index"] == expected


def test_batch_get_json_utf8_refuses_binary_values_by_name(server):
    error = _error(server.post_json("/v1/stores/m/get", {"keys": ["k0000", "bin"]}), 422,
                   "value_not_utf8")
    assert error["key"] == "bin" and "base64" in error["message"]


@pytest.mark.parametrize("key_type", [pa.binary(), pa.large_binary(), pa.string()])
def test_batch_get_arrow(server, reader, key_type):
    keys = [b"k0000", b"k0001", b"absent", b"bin", b"\xff", b""] if key_type != pa.string() \
        else [b"k0000", b"absent", b"caf\xc3\xa9"]
    column = pa.array([k if key_type != pa.string() else k.decode() for k in keys], type=key_type)
    answer = server.request("POST", "/v1/stores/m/get", _arrow(pa.table({"key": column})),
                            {"Content-Type": ARROW})
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == ARROW
    assert answer.headers["kvio-version"] == reader.version
    table = _read_arrow(answer.body)
    assert table.column_names == ["key", "value"]
    assert table.column("key").to_pylist() == column.to_pylist()
    assert table.column("value").to_pylist() == reader.get_many(keys)
    assert table.column("value").null_count == 1


def test_batch_get_empty(server, reader):
    assert server.post_json("/v1/stores/m/get", {"keys": []}).json() == \
        {"version": reader.version, "values": []}
    empty = pa.table({"key": pa.array([], pa.binary())})
    answer = server.request("POST", "/v1/stores/m/get", _arrow(empty), {"Content-Type": ARROW})
    assert _read_arrow(answer.body).num_rows == 0


# ---- scan ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("query, bounds", [
    ("", {}),
    ("start=k0990", {"start": b"k0990"}),
    ("start=k0100&stop=k0110", {"start": b"k0100", "stop": b"k0110"}),
    ("prefix=k000", {"prefix": b"k000"}),
    ("prefix=%FF", {"prefix": b"\xff"}),
    ("start=%00&stop=%FF", {"start": b"\x00", "stop": b"\xff"}),
    ("stop=%00%FF", {"stop": b"\x00\xff"}),
    ("prefix=%25", {"prefix": b"%"}),
    ("prefix=a%3Fb%3D", {"prefix": b"a?b="}),
    ("start=%23&stop=%2F", {"start": b"#", "stop": b"/"}),
    ("start=+&stop=%2C", {"start": b"+", "stop": b","}),
    ("start=k0500&stop=k0400", {"start": b"k0500", "stop": b"k0400"}),
], ids=repr)
def test_scan_ndjson_bounds_are_bytes(server, reader, query, bounds):
    answer = server.get(f"/v1/stores/m/scan?{query}")
    assert answer.status == 200, answer.body
    assert answer.headers["content-type"] == "application/x-ndjson"
    assert answer.headers["kvio-version"] == reader.version
    assert _scan_pairs(answer.body) == list(reader.items_range(**bounds))


def test_scan_whole_store_matches_the_model(server, merged):
    pairs = _scan_pairs(server.get("/v1/stores/m/scan").body)
    assert pairs == sorted(merged[1].items())


def test_scan_utf8_falls_back_to_base64_fields_per_field(server):
    lines = [json.loads(line) for line in server.get("/v1/stores/m/scan?prefix=%FF").body.splitlines()]
    assert lines[0] == {"key_base64": "/w==",
                        "value_base64": base64.b64encode(b"\x00\xff not utf-8").decode()}
    (cafe,) = [json.loads(line) for line in
               server.get("/v1/stores/m/scan?prefix=caf%C3%A9").body.splitlines()]
    assert cafe == {"key": "café", "value": "hostile:café"}
    (half,) = [json.loads(line) for line in server.get("/v1/stores/m/scan?prefix=%C3").body.splitlines()]
    assert half == {"key_base64": "ww==", "value_base64": base64.b64encode(b"hostile:\xc3").decode()}


def test_scan_base64(server, reader):
    lines = server.get("/v1/stores/m/scan?start=%00&stop=%01&encoding=base64").body.splitlines()
    got = [(base64.b64decode(o["key"]), base64.b64decode(o["value"])) for o in map(json.loads, lines)]
    assert got == list(reader.items_range(b"\x00", b"\x01")) and len(got) == 2


def test_scan_limit(server, reader):
    pairs = _scan_pairs(server.get("/v1/stores/m/scan?prefix=k&limit=7").body)
    assert pairs == list(reader.items_range(prefix=b"k"))[:7]
    big = _scan_pairs(server.get("/v1/stores/m/scan?limit=100000").body)
    assert big == list(reader.items())


def test_scan_arrow(server, reader):
    answer = server.get("/v1/stores/m/scan?start=k0100&stop=k0200&limit=50", headers={"Accept": ARROW})
    assert answer.status == 200 and answer.headers["content-type"] == ARROW
    table = _read_arrow(answer.body)
    expected = list(reader.items_range(b"k0100", b"k0200"))[:50]
    assert list(zip(table.column("key").to_pylist(), table.column("value").to_pylist(),
                    strict=True)) == expected
    whole = _read_arrow(server.get("/v1/stores/m/scan", headers={"Accept": ARROW}).body)
    assert whole.equals(reader.to_table())
    empty = _read_arrow(server.get("/v1/stores/m/scan?prefix=zzz", headers={"Accept": ARROW}).body)
    assert empty.num_rows == 0 and empty.column_names == ["key", "value"]


# ---- bad requests -------------------------------------------------------------------------------
def test_unknown_store_and_endpoint(server):
    for target in ("/v1/stores/nope", "/v1/stores/nope/keys/a", "/v1/stores/nope/scan"):
        error = _error(server.get(target), 404, "unknown_store")
        assert "nope" in error["message"] and "m, small" in error["message"]
    _error(server.post_json("/v1/stores/nope/get", {"keys": []}), 404, "unknown_store")
    _error(server.get("/v2/whatever"), 404, "not_found")
    _error(server.request("DELETE", "/v1/stores/m/keys/a"), 405, "method_not_allowed")
    _error(server.get("/v1/stores/m/get"), 405, "method_not_allowed")


@pytest.mark.parametrize("target", ["/v1/stores/m/keys/a%", "/v1/stores/m/keys/%zz",
                                    "/v1/stores/m/keys/%F", "/v1/stores/m/keys/ok%2"])
def test_undecodable_key_in_path(server, target):
    error = _error(server.get(target), 400, "bad_percent_encoding")
    assert "key" in error["message"] and "%25" in error["message"]


@pytest.mark.parametrize("query, code", [
    ("start=%G0", "bad_percent_encoding"),
    ("limit=0", "bad_limit"),
    ("limit=-3", "bad_limit"),
    ("limit=ten", "bad_limit"),
    ("limit=", "bad_limit"),
    ("encoding=latin-1", "bad_encoding"),
    ("from=a", "unknown_parameter"),
    ("start=a&start=b", "repeated_parameter"),
])
def test_bad_scan_parameters(server, query, code):
    _error(server.get(f"/v1/stores/m/scan?{query}"), 400, code)


@pytest.mark.parametrize("doc, code", [
    ({"keys": "k0000"}, "bad_keys"),
    ({"keys": [1, 2]}, "bad_keys"),
    ({"keys": ["!!not base64"], "encoding": "base64"}, "bad_keys"),
    ({"keys": ["\ud800"]}, "bad_keys"),
    ({"keys": ["a"], "encoding": "hex"}, "bad_encoding"),
    ({"key": ["a"]}, "bad_json"),
    ({"keys": ["a"], "limit": 3}, "bad_json"),
    (["a"], "bad_json"),
])
def test_bad_batch_bodies(server, doc, code):
    _error(server.post_json("/v1/stores/m/get", doc), 400, code)


def test_bad_batch_body_bytes(server):
    _error(server.request("POST", "/v1/stores/m/get", b"{not json", {"Content-Type": "application/json"}),
           400, "bad_json")
    _error(server.request("POST", "/v1/stores/m/get", b"\xff\xfe", {"Content-Type": "application/json"}),
           400, "bad_json")
    _error(server.request("POST", "/v1/stores/m/get", b"not arrow", {"Content-Type": ARROW}),
           400, "bad_arrow")
    wrong_column = _arrow(pa.table({"k": pa.array([b"a"])}))
    assert "no \"key\" column" in _error(server.request("POST", "/v1/stores/m/get", wrong_column,
                                                        {"Content-Type": ARROW}), 400, "bad_arrow")["message"]
    ints = _arrow(pa.table({"key": pa.array([1, 2])}))
    _error(server.request("POST", "/v1/stores/m/get", ints, {"Content-Type": ARROW}), 400, "bad_arrow")
    nulls = _arrow(pa.table({"key": pa.array([b"a", None])}))
    _error(server.request("POST", "/v1/stores/m/get", nulls, {"Content-Type": ARROW}), 400, "bad_arrow")


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type(server, content_type):
    headers = {} if content_type is None else {"Content-Type": content_type}
    error = _error(server.request("POST", "/v1/stores/m/get", b'{"keys": []}', headers), 415,
                   "unsupported_media_type")
    assert ARROW in error["message"] and "application/json" in error["message"]


def test_json_content_type_with_parameters(server):
    answer = server.request("POST", "/v1/stores/small/get", b'{"keys": ["a"]}',
                            {"Content-Type": "Application/JSON; charset=utf-8"})
    assert answer.status == 200 and answer.json()["values"] == ["1"]


def test_too_many_keys(server):
    """The server runs with kvio.serve.batch.max.keys=50."""
    assert server.post_json("/v1/stores/m/get", {"keys": ["a"] * 50}).status == 200
    error = _error(server.post_json("/v1/stores/m/get", {"keys": ["a"] * 51}), 413, "too_many_keys")
    assert "51" in error["message"] and "kvio.serve.batch.max.keys" in error["message"]
    compact = b'{"keys":[' + b",".join([b'"YQ=="'] * 51) + b'],"encoding":"base64"}'
    _error(server.request("POST", "/v1/stores/m/get", compact,
                          {"Content-Type": "application/json"}), 413, "too_many_keys")
    column = pa.array([b"a"] * 51)
    _error(server.request("POST", "/v1/stores/m/get", _arrow(pa.table({"key": column})),
                          {"Content-Type": ARROW}), 413, "too_many_keys")


def test_body_over_the_limit(server):
    """The server runs with kvio.serve.body.max=64KB: refused whether or not the length is
    declared up front."""
    body = json.dumps({"keys": ["x" * 70000]}).encode()
    error = _error(server.request("POST", "/v1/stores/m/get", body,
                                  {"Content-Type": "application/json"}), 413, "body_too_large")
    assert "kvio.serve.body.max" in error["message"]

    def chunks():
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]
    chunked = server.request("POST", "/v1/stores/m/get", chunks(),  # type: ignore[arg-type]
                             {"Content-Type": "application/json"})  # no length: sent chunked
    _error(chunked, 413, "body_too_large")
