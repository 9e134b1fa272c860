"""kvio.connect against a real ``kvio serve`` process: the client answers as StoreReader does on
a merged store (hostile keys, ranges, batches), maps the server's errors to kvio's, and its near
cache moves to a new version after a publish."""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

import kvio
from kvio.client import RemoteStore

from .conftest import HOSTILE_KEYS, free_port


@pytest.fixture(scope="module")
def remote(server) -> Iterator[RemoteStore]:
    with kvio.connect(server.url(), "m") as store:
        yield store


@pytest.mark.parametrize("cache_bytes", [0, 1 << 20])
def test_gets_agree_with_the_reader(server, merged, cache_bytes):
    uri, model = merged
    with kvio.connect(server.url(), "m", cache_bytes=cache_bytes) as remote, \
            kvio.KeyValueSystem().open_store(uri) as reader:
        probes = [*HOSTILE_KEYS, *sorted(model)[::37], b"absent", b"k99999", b"\xff\xfe"]
        for _ in range(2):  # the second round comes from the near cache when there is one
            for key in probes:
                assert remote.get(key) == reader.get(key), key
                assert (key in remote) == (key in reader)
        assert remote[b"bin"] == bytes(range(256))
        with pytest.raises(KeyError):
            remote[b"absent"]
        assert remote.get(b"absent", b"dflt") == b"dflt"
        for store in (remote, reader):  # text is refused the same way
            with pytest.raises(kvio.ArgumentTypeError):
                store.get("k0001")
        assert remote.version == reader.version
        stats = remote.cache_stats()
        if cache_bytes:
            assert stats.hits >= len(probes) and stats.entries == len({*probes, b"bin"})
        else:
            assert stats.hits == stats.entries == 0


@pytest.mark.parametrize("batch_format", ["arrow", "json"])
def test_get_many_agrees(server, merged, batch_format):
    uri, model = merged
    keys = [*HOSTILE_KEYS, b"nope", *sorted(model)[:20]]
    with RemoteStore(server.url(), "m", batch_format=batch_format) as remote, \
            kvio.KeyValueSystem().open_store(uri) as reader:
        assert remote.get_many(keys) == reader.get_many(keys)
        assert remote.get_many(keys, b"-") == reader.get_many(keys, b"-")
        assert remote.get_many([]) == []


@pytest.mark.parametrize("batch_format", ["arrow", "json"])
def test_get_many_of_keys_and_values_of_one_length(server, batch_format):
    """(JSON: keys and values coded all at once, kvio.b64; an absent key is None.)"""
    with RemoteStore(server.url(), "small", batch_format=batch_format) as remote:
        assert remote.get_many([b"c", b"a", b"x", b"b"]) == [b"3", b"1", None, b"2"]
        assert remote.get_many([b"x", b"y"], b"-") == [b"-", b"-"]


def test_get_many_with_the_near_cache_asks_only_for_the_rest(server, merged):
    uri, model = merged
    keys = sorted(model)[:30]
    with kvio.connect(server.url(), "m", cache_bytes=1 << 20) as remote, \
            kvio.KeyValueSystem().open_store(uri) as reader:
        assert remote.get(keys[0]) == reader.get(keys[0])
        assert remote.get_many([*keys, b"zz"]) == reader.get_many([*keys, b"zz"])
        before = remote.cache_stats()
        assert remote.get_many([*keys, b"zz"]) == reader.get_many([*keys, b"zz"])
        assert remote.cache_stats().hits - before.hits == 31


def test_ranges_len_and_info_agree(remote, merged):
    uri, model = merged
    with kvio.KeyValueSystem().open_store(uri) as reader:
        assert list(remote.items()) == list(reader.items())
        assert list(remote) == list(reader)
        for bounds in [dict(start=b"k0100", stop=b"k0200"), dict(prefix=b"k05"),
                       dict(start=b"\x00", stop=b"\xff"), dict(start=b"\xff"),
                       dict(prefix=b"k", stop=b"k0003"), dict(start=b"z", stop=b"a")]:
            assert list(remote.items(**bounds)) == list(reader.items(**bounds)), bounds
            assert list(remote.keys(**bounds)) == list(reader.keys(**bounds))
            assert list(remote.values(**bounds)) == list(reader.values(**bounds))
            assert len(remote.items(**bounds)) == len(reader.items(**bounds))
        assert len(remote) == len(reader) == len(model)
        info = remote.info()
        assert info["version"] == reader.version and info["pairs"] == len(model)


def test_errors_map_to_the_kvio_hierarchy(server):
    with pytest.raises(kvio.StoreNotFoundError, match="unknown_store"):
        kvio.connect(server.url(), "nosuch")
    with kvio.connect(server.url(), "small") as small:
        # the server's limit is 50 keys per batch: its message comes through
        with pytest.raises(kvio.InvalidArgumentError, match="too_many_keys.*50"):
            small.get_many([b"k%d" % i for i in range(51)])
        with pytest.raises(kvio.InvalidArgumentError):
            small.get(12)
    port = free_port()  # nothing listens there
    with pytest.raises(kvio.KvioError, match=f"127.0.0.1:{port}"):
        kvio.connect(f"http://127.0.0.1:{port}", "m", timeout=5)
    with pytest.raises(kvio.InvalidArgumentError):
        kvio.connect("ftp://example", "m")


def test_closed_client_refuses(server):
    store = kvio.connect(server.url(), "small")
    store.close()
    with pytest.raises(kvio.ReaderClosedError):
        store.get(b"a")
    with pytest.raises(kvio.ReaderClosedError):
        list(store.items())


def test_token(tmp_path, spawn, merged):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    srv = spawn([f"m={merged[0]}"], "--token-file", str(token_file), token="s3cret")
    with pytest.raises(kvio.InvalidArgumentError, match="401 unauthorized"):
        kvio.connect(srv.url(), "m")
    with kvio.connect(srv.url(), "m", token="s3cret") as remote:
        assert remote.get(b"bin") == bytes(range(256))
        assert len(list(remote.items(prefix=b"k00"))) == 100


def test_near_cache_moves_to_a_new_publish(tmp_path, spawn):
    kvs = kvio.KeyValueSystem(conf={"kvio.gc.grace": "0s"})
    uri = str(tmp_path / "live.kv")
    with kvs.create_store(uri) as w:
        w.put_many([(b"a", b"1"), (b"b", b"2")])
    srv = spawn([f"live={uri}"], "--conf", "kvio.follow.interval=0.1")
    with kvio.connect(srv.url(), "live", cache_bytes=1 << 20,
                      conf={"kvio.follow.interval": "0.1"}) as remote:
        first = remote.version
        for _ in range(3):
            assert remote.get(b"a") == b"1" and remote.get(b"c") is None
        assert remote.cache_stats().hits >= 1
        with kvs.create_store(uri, mode="overwrite") as w:
            w.put_many([(b"a", b"10"), (b"c", b"30")])
        deadline = time.monotonic() + 60
        while remote.get(b"a") != b"10":
            assert time.monotonic() < deadline, "the client never saw the new version"
            time.sleep(0.02)
        # every answer now comes from the new version: the old cached absence of c is not used
        assert remote.version != first
        assert remote.get(b"c") == b"30" and remote.get(b"b") is None
        assert remote.get_many([b"a", b"b", b"c"]) == [b"10", None, b"30"]


@pytest.mark.parametrize("body", [
    b'{"version":"v1","values":["QUJD","QUJE"]}',
    b'{"version":"v1","values":["QUJD",null,"QUJE"]}',
    b'{"version":"v1","values":["QQ==","QUJD"]}',
    b'{"version":"v1","values":[]}',
    b'{"version":"v1","values":[""]}',
    b'{"version": "v1", "values": ["QUJD", "QUJE"]}',
    b'{"version":"v\\"1,\\"values\\":[","values":["QUJD"]}',
    b'{"values":["QUJD"],"version":"v1"}',
    b'{"version":"v1","values":["QUJD"],"values":["QUJE"]}',
])
def test_json_answers_are_read_as_json_says(body):
    """The values of a JSON batch answer read straight from the text when laid out as the
    server does, and by the JSON parser otherwise: the same values either way."""
    import binascii
    import json

    from kvio.client import _json_values
    expected = [None if v is None else binascii.a2b_base64(v)
                for v in json.loads(body)["values"]]
    assert _json_values(body) == expected
