"""The server's parts that need no server: NAME=URI specs, options passed to workers, the
token file, the new settings, and the byte codecs (percent-decoding, JSON encodings, Arrow)."""
from __future__ import annotations

import base64
import json

import pyarrow as pa
import pytest

from kvio import ConfigError, InvalidArgumentError, KvioError
from kvio.config import Config
from tests.helpers import require_module

require_module("starlette", "the server extra (kvio[serve]) is not installed")

from kvio.serve import codec  # noqa: E402
from kvio.serve.errors import ApiError  # noqa: E402
from kvio.serve.options import ENV, ServeOptions, parse_store_spec, read_token  # noqa: E402


def test_store_specs():
    assert parse_store_spec("users=/data/u.kv") == ("users", "/data/u.kv")
    assert parse_store_spec("a.b_c-1=s3://b/k=v.kv") == ("a.b_c-1", "s3://b/k=v.kv")
    for bad in ("users", "users=", "=x", "a/b=x", "-a=x", "é=x", "a" * 129 + "=x"):
        with pytest.raises(InvalidArgumentError):
            parse_store_spec(bad)


def test_options_travel_through_the_environment():
    options = ServeOptions(stores=(("a", "/x"), ("b", "memory://y")), conf={"kvio.follow.interval": "2s"},
                           token_file="/t", multiprocess_dir="/m")
    assert ServeOptions.from_env({ENV: options.to_env()}) == options
    with pytest.raises(KvioError, match="not set"):
        ServeOptions.from_env({})
    with pytest.raises(KvioError, match="not valid"):
        ServeOptions.from_env({ENV: '{"stores": 3}'})
    with pytest.raises(InvalidArgumentError, match="given twice: a"):
        ServeOptions(stores=(("a", "/x"), ("a", "/y")))
    with pytest.raises(InvalidArgumentError, match="at least one store"):
        ServeOptions(stores=())


def test_token_file(tmp_path):
    path = tmp_path / "token"
    path.write_bytes(b"  abc.DEF-123_~+/=  \n")
    assert read_token(str(path)) == b"abc.DEF-123_~+/="
    for bad in (b"", b"\n", b"a b", b"caf\xc3\xa9", b"a\x00b"):
        path.write_bytes(bad)
        with pytest.raises(KvioError, match="token"):
            read_token(str(path))
    with pytest.raises(KvioError, match="cannot read the token file"):
        read_token(str(tmp_path / "absent"))


def test_serve_settings():
    conf = Config()
    assert (conf.serve_batch_max_keys, conf.serve_body_max) == (10000, 16 << 20)
    assert Config({"kvio.serve.body.max": "1KB"}).serve_body_max == 1024
    for bad in ({"kvio.serve.batch.max.keys": "0"}, {"kvio.serve.body.max": "0"},
                {"kvio.serve.batch.max.keys": "many"}):
        with pytest.raises(ConfigError):
            Config(bad)


def test_percent_decoding_is_bytewise_and_strict():
    assert codec.percent_decode(b"%00%ff%FFa+b%2B/", "k") == b"\x00\xff\xffa+b+/"
    assert codec.key_from_path(b"/v1/stores/s/keys/a/b%2Fc") == b"a/b/c"
    assert codec.key_from_path(b"/v1/stores/s/keys/") == b""
    for bad in (b"%", b"a%", b"%f", b"%g0", b"%%41"):
        with pytest.raises(ApiError) as err:
            codec.percent_decode(bad, "key")
        assert err.value.status == 400 and err.value.code == "bad_percent_encoding"
    assert codec.show(b"a b/\xff") == "a%20b%2F%FF"


def test_query_parsing():
    assert codec.parse_query(b"start=%00&prefix=a+b&limit=3&", ("start", "prefix", "limit")) == \
        {"start": b"\x00", "prefix": b"a+b", "limit": b"3"}
    assert codec.parse_query(b"stop=", ("stop",)) == {"stop": b""}
    assert codec.parse_query(b"", ("stop",)) == {}


def test_ndjson_lines():
    keys, values = [b"a", b"\xff", b"caf\xc3\xa9"], [b"\x00\xfe", b"v", b"\n\"\\"]
    lines = [json.loads(line) for line in codec.ndjson_lines(keys, values, codec.UTF8).splitlines()]
    assert lines == [{"key": "a", "value_base64": "AP4="}, {"key_base64": "/w==", "value": "v"},
                     {"key": "café", "value": "\n\"\\"}]
    lines = [json.loads(line) for line in codec.ndjson_lines(keys, values, codec.BASE64).splitlines()]
    assert [(base64.b64decode(o["key"]), base64.b64decode(o["value"])) for o in lines] == \
        list(zip(keys, values, strict=True))


def test_json_values_and_keys():
    assert codec.encode_values([b"a", b"b"], [b"x", None], codec.UTF8, "s") == ["x", None]
    assert codec.encode_values([b"a"], [b"\xff"], codec.BASE64, "s") == ["/w=="]
    with pytest.raises(ApiError) as err:
        codec.encode_values([b"a b", b"k"], [b"ok", b"\xff"], codec.UTF8, "s")
    assert err.value.status == 422 and err.value.fields["key"] == "k"
    assert codec.decode_json_keys(["/w==", ""], codec.BASE64) == [b"\xff", b""]
    assert codec.parse_encoding(b"UTF8", "e") == codec.UTF8
    with pytest.raises(ApiError):
        codec.parse_encoding(None, "e")


def test_arrow_stream_encoder_writes_one_valid_stream():
    encoder = codec.ArrowStreamEncoder(codec.PAIR_SCHEMA)
    nullable = pa.schema([("key", pa.large_binary()), ("value", pa.large_binary())])
    batch = pa.record_batch([pa.array([b"k"], pa.large_binary()), pa.array([b"v"], pa.large_binary())],
                            schema=nullable)  # another nullability than the stream's schema
    data = encoder.take() + encoder.write(batch) + encoder.write(batch) + encoder.close()
    table = pa.ipc.open_stream(data).read_all()
    assert table.num_rows == 2 and table.schema == codec.PAIR_SCHEMA
    empty = codec.ArrowStreamEncoder(codec.PAIR_SCHEMA)
    assert pa.ipc.open_stream(empty.take() + empty.close()).read_all().num_rows == 0


class _Transport:
    def __init__(self):
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data):
        self.writes.append(bytes(data))

    def writelines(self, pieces):
        self.writes.append(tuple(bytes(p) for p in pieces))

    def is_closing(self):
        return self.closed

    def close(self):
        self.closed = True

    def get_extra_info(self, name):
        return name


def test_coalescing_transport_joins_head_and_body():
    """A response's head and body leave in one write; a lone small write leaves at the end of
    the loop's pass; large writes are not held; close sends what is held first."""
    import asyncio

    from kvio.serve.protocol import HOLD_MAX, CoalescingTransport
    from kvio.serve.server import http_protocol

    assert http_protocol() == "kvio.serve.protocol:DirectHttpToolsProtocol"

    async def run() -> None:
        real = _Transport()
        t = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        assert real.writes == []
        t.write(b"body")
        assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
        t.write(b"chunk")
        await asyncio.sleep(0)  # the end of the pass
        assert real.writes[-1] == b"chunk"
        big = b"x" * (HOLD_MAX + 1)
        t.write(big)
        assert real.writes[-1] == big
        t.write(b"head")
        t.write(big)  # a held write and a large one: one writelines, nothing copied
        assert real.writes[-1] == (b"head", big)
        t.write(b"last")
        t.close()
        assert real.writes[-1] == b"last" and real.closed
        assert t.get_extra_info("peername") == "peername"

    asyncio.run(run())


def test_batch_json_is_the_json_rendering():
    """The joined base64 answer has the very bytes json.dumps renders (and utf-8 answers go
    through json.dumps)."""
    for values in ([], ["YQ==", None, ""], [None]):
        for encoding in ("base64", "utf-8"):
            assert codec.batch_json("v-1", values, encoding) == \
                codec.json_bytes({"version": "v-1", "values": values})
    assert json.loads(codec.batch_json("v", ["caf\u00e9", None], "utf-8")) == \
        {"version": "v", "values": ["caf\u00e9", None]}
