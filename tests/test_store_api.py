"""The public store API on real local files: writing, reading, errors, Arrow input, rollover,
merge and whole-store operations."""
from __future__ import annotations

import os

import pyarrow as pa
import pytest

import kvio
from kvio import (
    ConfigError,
    CorruptStoreError,
    IncompleteStoreError,
    KeyOrderError,
    KvioError,
    NotAStoreError,
    PairTooLargeError,
    StoreExistsError,
    StoreNotFoundError,
    WriterClosedError,
)
from kvio.committer import Job

from .helpers import assert_matches_model, key4, model_range, sizes_in, write_store

PAIRS = [(key4(i), b"value-%d" % i * (i % 7)) for i in range(0, 2000, 2)]
MODEL = dict(PAIRS)
ABSENT = [key4(i) for i in range(1, 2001, 50)] + [b"", b"\x00", b"\xff" * 5, key4(0) + b"\x00"]


@pytest.fixture
def store(kvs, store_uri):
    write_store(kvs, store_uri, PAIRS)
    with kvs.open_store(store_uri) as reader:
        yield reader


# ---- reading ----------------------------------------------------------------------------------
def test_reader_is_a_mapping_equal_to_what_was_written(store):
    assert_matches_model(store, MODEL, absent=ABSENT)
    assert dict(store) == MODEL
    assert list(store.values()) == [v for _, v in PAIRS]


def test_getitem_of_missing_key_raises_key_error(store):
    with pytest.raises(KeyError):
        store[key4(1)]


def test_iteration_is_in_unsigned_byte_order(kvs, store_uri):
    keys = [b"", b"\x00", b"\x00\x00", b"\x01", b"\x7f", b"\x80", b"\x80\x00", b"\xfe", b"\xff", b"\xff\xff"]
    write_store(kvs, store_uri, [(k, k * 2) for k in keys])
    with kvs.open_store(store_uri) as reader:
        assert list(reader) == keys
        assert [reader[k] for k in keys] == [k * 2 for k in keys]


@pytest.mark.parametrize("start, stop", [
    (None, None), (key4(100), key4(200)), (key4(101), key4(201)), (key4(100), None),
    (None, key4(10)), (key4(200), key4(100)), (key4(50), key4(50)), (b"", b"\x00"),
    (key4(1998), None), (key4(1999), None), (b"\xff", None), (None, b""),
])
def test_items_range_is_half_open(store, start, stop):
    assert list(store.items(start, stop)) == model_range(MODEL, start, stop)
    assert list(store.keys(start, stop)) == [k for k, _ in model_range(MODEL, start, stop)]


@pytest.mark.parametrize("prefix", [b"", b"\x00", b"\x00\x00\x01", key4(10), key4(11), b"\x00\x00\x07\xce",
                                    b"\xff", b"zz"])
def test_items_prefix(store, prefix):
    expected = model_range(MODEL, prefix=prefix)
    assert list(store.items(prefix=prefix)) == expected
    assert list(store.keys(prefix=prefix)) == [k for k, _ in expected]


def test_prefix_made_of_ff_bytes_has_no_upper_bound(kvs, store_uri):
    keys = [b"\xfe\xff", b"\xff", b"\xff\x00", b"\xff\xff", b"\xff\xff\xff", b"\xff\xff\xff\x01"]
    write_store(kvs, store_uri, [(k, b"v") for k in keys])
    with kvs.open_store(store_uri) as reader:
        assert list(reader.keys(prefix=b"\xff\xff")) == [b"\xff\xff", b"\xff\xff\xff", b"\xff\xff\xff\x01"]
        assert list(reader.keys(prefix=b"\xfe")) == [b"\xfe\xff"]
        assert list(reader.keys(b"\xff\x00", b"\xff\xff\xff", prefix=b"\xff")) == [b"\xff\x00", b"\xff\xff"]


@pytest.mark.parametrize("start, stop", [
    (None, None), (b"", None), (None, b"\xff"), (key4(5), key4(700)), (key4(300), key4(1500)),
    (key4(260), key4(262)), (key4(700), key4(5)), (key4(1200), None),
])
@pytest.mark.parametrize("prefix", [b"\x00\x00\x01", b"\x00\x00\x02\x08", b"\x00\x00\x09"])
def test_items_prefix_with_start_and_stop(store, start, stop, prefix):
    assert list(store.items(start, stop, prefix)) == model_range(MODEL, start, stop, prefix)
    assert list(store.keys(start, stop, prefix)) == [k for k, _ in model_range(MODEL, start, stop, prefix)]


def test_get_many_keeps_input_order_and_reports_missing_as_none(store):
    probes = [key4(10), key4(11), key4(10), b"", key4(1998), key4(0)]
    assert store.get_many(probes) == [MODEL[key4(10)], None, MODEL[key4(10)], None, MODEL[key4(1998)],
                                      MODEL[key4(0)]]
    assert store.get_many([]) == []


def test_info_describes_the_published_version(store, store_uri):
    info = store.info()
    assert info["uri"] == store_uri
    assert info["commit_seq"] == 1
    assert info["count"] == len(PAIRS)
    assert info["disjoint"] is True
    assert info["options"]["compression"] == "none"
    assert sum(p["count"] for p in info["partitions"]) == len(PAIRS)
    on_disk = 0
    for p in info["partitions"]:
        path = os.path.join(store_uri, "_versions", info["version"], p["path"])
        assert os.path.getsize(path) == p["bytes"]
        on_disk += p["bytes"]
    assert info["bytes"] == on_disk
    assert info["partitions"][0]["min_key"] == key4(0).hex()
    assert info["partitions"][-1]["max_key"] == key4(1998).hex()


def test_empty_values_are_values_not_missing(kvs, store_uri):
    write_store(kvs, store_uri, [(b"a", b""), (b"b", b"x"), (b"c", b"")])
    with kvs.open_store(store_uri) as reader:
        assert reader[b"a"] == b""
        assert reader.get(b"a", b"default") == b""
        assert b"a" in reader and b"c" in reader
        assert reader.get_many([b"a", b"z"]) == [b"", None]
        assert list(reader.items()) == [(b"a", b""), (b"b", b"x"), (b"c", b"")]
        assert len(reader) == 3


def test_empty_key_is_a_key(kvs, store_uri):
    write_store(kvs, store_uri, [(b"", b"empty"), (b"\x00", b"zero")])
    with kvs.open_store(store_uri) as reader:
        assert reader[b""] == b"empty"
        assert list(reader.keys(prefix=b"")) == [b"", b"\x00"]


def test_store_with_no_pairs(kvs, store_uri):
    with kvs.create_store(store_uri):
        pass
    with kvs.open_store(store_uri) as reader:
        assert len(reader) == 0
        assert list(reader) == [] and list(reader.items(b"a", b"b")) == []
        assert reader.get(b"") is None and b"x" not in reader
        assert reader.info()["count"] == 0


def test_bytes_like_keys_and_values_are_accepted(kvs, store_uri):
    with kvs.create_store(store_uri) as w:
        w.put(bytearray(b"a"), memoryview(b"1"))
        w.put(memoryview(b"b"), bytearray(b"2"))
    with kvs.open_store(store_uri) as reader:
        assert reader[bytearray(b"a")] == b"1" and reader.get(memoryview(b"b")) == b"2"


def test_many_blocks_and_partitions_read_like_one(make_kvs, store_uri):
    kvs = make_kvs({"kvio.block.size": "256B", "kvio.partition.size.max": "16KB"})
    pairs = [(b"k%06d" % i, b"v" * (i % 50)) for i in range(3000)]
    write_store(kvs, store_uri, pairs)
    model = dict(pairs)
    with kvs.open_store(store_uri) as reader:
        assert len(reader.info()["partitions"]) > 3
        assert_matches_model(reader, model, absent=[b"k", b"k0", b"k999999", b"k000000\x00"],
                             ranges=[(b"k000100", b"k002100"), (b"k0015", b"k0016"), (b"a", b"z")],
                             prefixes=[b"k0001", b"k00299", b"k"])


# ---- writer errors ------------------------------------------------------------------------------
def test_unsorted_put_names_previous_and_offending_key(kvs, store_uri):
    with pytest.raises(KeyOrderError) as info:
        with kvs.create_store(store_uri) as w:
            w.put(b"banana", b"1")
            w.put(b"apple", b"2")
    message = str(info.value)
    assert "b'banana'" in message and "b'apple'" in message
    assert store_uri in message
    assert info.value.key == b"apple"
    with pytest.raises(StoreNotFoundError):  # a failed first write leaves no store behind
        kvs.open_store(store_uri)


def test_duplicate_key_is_a_key_order_error(kvs, store_uri):
    with kvs.create_store(store_uri) as w:
        w.put(b"a", b"1")
        with pytest.raises(KeyOrderError, match="duplicate"):
            w.put(b"a", b"2")
        w.put(b"b", b"3")  # the writer is still usable after a rejected put
    with kvs.open_store(store_uri) as reader:
        assert dict(reader) == {b"a": b"1", b"b": b"3"}


def test_order_is_unsigned_and_prefix_sorts_first(kvs, store_uri):
    with kvs.create_store(store_uri) as w:
        w.put(b"a", b"")
        w.put(b"a\x00", b"")
        w.put(b"a\x7f", b"")
        w.put(b"a\x80", b"")  # signed comparison would put this first
        with pytest.raises(KeyOrderError):
            w.put(b"a\x7f\xff", b"")
        with pytest.raises(KeyOrderError):
            w.put(b"a", b"")


@pytest.mark.parametrize("bad", [None, "text", 7, 1.5, [b"a"]])
def test_non_bytes_key_or_value_is_a_type_error(kvs, store_uri, bad):
    with kvs.create_store(store_uri) as w:
        with pytest.raises(TypeError):
            w.put(bad, b"v")
        with pytest.raises(TypeError):
            w.put(b"k", bad)
        with pytest.raises(TypeError):
            w.put_many([(b"k", bad)])
        w.put(b"k", b"v")  # nothing above was recorded
    with kvs.open_store(store_uri) as reader:
        assert dict(reader) == {b"k": b"v"}
        with pytest.raises(TypeError):
            reader.get(bad)
        with pytest.raises(TypeError):
            list(reader.items(start="x" if bad is None else bad))
        with pytest.raises(TypeError):
            list(reader.items(prefix="x" if bad is None else bad))


def test_str_key_error_suggests_encoding(kvs, store_uri):
    with kvs.create_store(store_uri) as w:
        with pytest.raises(TypeError, match="encode"):
            w.put("key", b"v")
        w.abort()


def test_pair_larger_than_partition_limit(make_kvs, store_uri):
    limit = 64 << 10
    kvs = make_kvs({"kvio.partition.size.max": limit})
    key, value = b"big", b"x" * (limit + 1)
    with pytest.raises(PairTooLargeError) as info:
        with kvs.create_store(store_uri) as w:
            w.put(b"a", b"small")
            w.put(key, value)
    message = str(info.value)
    numbers = sizes_in(message)
    assert limit in numbers
    assert any(n >= len(key) + len(value) and n != limit for n in numbers)
    assert "kvio.partition.size.max" in message and store_uri in message
    with pytest.raises(StoreNotFoundError):  # a failed first write leaves no store behind
        kvs.open_store(store_uri)


def test_pair_just_under_the_limit_is_accepted_first_or_later(make_kvs, tmp_path):
    limit = 64 << 10
    kvs = make_kvs({"kvio.partition.size.max": limit})
    value = b"y" * (limit - 100)  # fits with its per-pair overhead, but not with a whole file's
    write_store(kvs, str(tmp_path / "first"), [(b"b", value)])
    write_store(kvs, str(tmp_path / "later"), [(b"a", b"1"), (b"b", value)])
    for name, expected in (("first", {b"b": value}), ("later", {b"a": b"1", b"b": value})):
        with kvs.open_store(str(tmp_path / name)) as reader:
            assert dict(reader) == expected


def test_put_after_commit_is_rejected(kvs, store_uri):
    with kvs.create_store(store_uri) as w:
        w.put(b"a", b"1")
    with pytest.raises(WriterClosedError):
        w.put(b"b", b"2")


# ---- publishing and store errors ------------------------------------------------------------------
def test_exception_inside_with_publishes_nothing(kvs, store_uri):
    with pytest.raises(RuntimeError, match="boom"):
        with kvs.create_store(store_uri) as w:
            w.put_many((key4(i), b"v") for i in range(1000))
            raise RuntimeError("boom")
    with pytest.raises(StoreNotFoundError) as info:
        kvs.open_store(store_uri)
    assert store_uri in str(info.value)
    assert not kvs.exists(store_uri)
    assert not os.path.exists(store_uri)  # the writer created it: nothing is left behind
    # the location is usable for a new attempt
    write_store(kvs, store_uri, [(b"a", b"1")])
    with kvs.open_store(store_uri) as reader:
        assert dict(reader) == {b"a": b"1"}


def test_create_on_existing_store_raises_and_keeps_it(kvs, store_uri):
    write_store(kvs, store_uri, [(b"a", b"1")])
    with pytest.raises(StoreExistsError) as info:
        kvs.create_store(store_uri)
    assert store_uri in str(info.value)
    with kvs.open_store(store_uri) as reader:
        assert dict(reader) == {b"a": b"1"}


def test_create_refuses_a_file_and_a_foreign_directory(kvs, tmp_path):
    (tmp_path / "file").write_bytes(b"hello")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "data.csv").write_text("x")
    for name in ("file", "dir"):
        with pytest.raises(StoreExistsError):
            kvs.create_store(str(tmp_path / name))
    assert (tmp_path / "file").read_bytes() == b"hello"
    assert os.listdir(tmp_path / "dir") == ["data.csv"]


def test_create_into_an_existing_empty_directory(kvs, tmp_path):
    (tmp_path / "empty").mkdir()
    write_store(kvs, str(tmp_path / "empty"), [(b"a", b"1")])
    with kvs.open_store(str(tmp_path / "empty")) as reader:
        assert reader[b"a"] == b"1"


def test_open_missing_path(kvs, tmp_path):
    uri = str(tmp_path / "nothing-here")
    with pytest.raises(StoreNotFoundError) as info:
        kvs.open_store(uri)
    assert uri in str(info.value)
    assert not kvs.exists(uri)


@pytest.mark.parametrize("contents", [[], ["a.txt"]])
def test_open_plain_directory(kvs, tmp_path, contents):
    for name in contents:
        (tmp_path / name).write_text("x")
    with pytest.raises(NotAStoreError) as info:
        kvs.open_store(str(tmp_path))
    assert str(tmp_path) in str(info.value)


def test_open_a_file(kvs, tmp_path):
    path = tmp_path / "file.kvp"
    path.write_bytes(b"KVIOPART" + bytes(100))
    with pytest.raises(NotAStoreError) as info:
        kvs.open_store(str(path))
    assert str(path) in str(info.value)


def test_open_store_whose_writer_never_finished(kvs, store_uri):
    writer = kvs.create_store(store_uri)
    writer.put(b"a", b"1")
    try:
        with pytest.raises(IncompleteStoreError) as info:
            kvs.open_store(store_uri)
        assert store_uri in str(info.value)
        assert not kvs.exists(store_uri)
    finally:
        writer.abort()
    with pytest.raises(StoreNotFoundError):
        kvs.open_store(store_uri)


def test_every_error_is_a_kvio_error():
    for name in kvio.__all__:
        obj = getattr(kvio, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, KvioError), name
    assert issubclass(kvio.UnsupportedFormatError, CorruptStoreError)
    assert issubclass(kvio.ConcurrentCommitError, kvio.CommitError)


def test_write_modes(kvs, store_uri):
    write_store(kvs, store_uri, [(b"a", b"1")])
    with kvs.create_store(store_uri, mode="ignore") as w:
        w.put(b"b", b"2")
    assert w.record is None
    with kvs.open_store(store_uri) as reader:
        assert dict(reader) == {b"a": b"1"}
    write_store(kvs, store_uri, [(b"b", b"2")], mode="overwrite")
    with kvs.open_store(store_uri) as reader:
        assert dict(reader) == {b"b": b"2"}
        assert reader.info()["commit_seq"] == 2
    with pytest.raises(KvioError, match="unknown write mode"):
        kvs.create_store(store_uri, mode="replace")


def test_settings_reach_the_files(make_kvs, store_uri):
    kvs = make_kvs({"kvio.block.compression": "zstd", "kvio.block.size": "1KB"})
    pairs = [(key4(i), b"abc" * 30) for i in range(500)]
    write_store(kvs, store_uri, pairs)
    with kvs.open_store(store_uri) as reader:
        assert reader.info()["options"] == {"compression": "zstd", "block_size": 1024}
        (part,) = reader.partition_readers()
        assert part.codec == "zstd" and part.block_count > 10
        assert dict(reader) == dict(pairs)


def test_unknown_setting_is_rejected_by_the_system():
    with pytest.raises(ConfigError, match="kvio.block.size"):
        kvio.KeyValueSystem(conf={"kvio.blocksize": "1KB"})


# ---- put_many and Arrow input ---------------------------------------------------------------------
ARROW_KEYS = [b"k%04d" % i for i in range(300)]
ARROW_VALUES = [b"" if i % 5 == 0 else b"value %d" % i for i in range(300)]


def _arrow_round_trip(kvs, uri, data, **kw) -> dict[bytes, bytes]:
    with kvs.create_store(uri) as w:
        w.put_many(data, **kw)
    with kvs.open_store(uri) as reader:
        return dict(reader.items())


def test_put_many_with_list_and_generator(kvs, tmp_path):
    pairs = list(zip(ARROW_KEYS, ARROW_VALUES, strict=True))
    assert _arrow_round_trip(kvs, str(tmp_path / "list"), pairs) == dict(pairs)
    assert _arrow_round_trip(kvs, str(tmp_path / "gen"), (p for p in pairs)) == dict(pairs)


@pytest.mark.parametrize("key_type, value_type", [
    (pa.binary(), pa.binary()), (pa.large_binary(), pa.large_binary()), (pa.string(), pa.binary()),
    (pa.binary(), pa.large_string()), (pa.binary_view(), pa.string_view()),
])
def test_put_many_arrow_column_types(kvs, store_uri, key_type, value_type):
    def column(items, typ):
        if typ in (pa.string(), pa.large_string(), pa.string_view()):
            return pa.array([b.decode() for b in items], typ)
        return pa.array(items, typ)
    table = pa.table({"key": column(ARROW_KEYS, key_type), "value": column(ARROW_VALUES, value_type)})
    assert _arrow_round_trip(kvs, store_uri, table) == dict(zip(ARROW_KEYS, ARROW_VALUES, strict=True))


def test_put_many_record_batch_and_custom_columns(kvs, store_uri):
    batch = pa.record_batch({"k": pa.array(ARROW_KEYS, pa.binary()), "extra": pa.array(range(300)),
                             "v": pa.array(ARROW_VALUES, pa.binary())})
    got = _arrow_round_trip(kvs, store_uri, batch, key_column="k", value_column="v")
    assert got == dict(zip(ARROW_KEYS, ARROW_VALUES, strict=True))


def test_put_many_sliced_arrays_with_offsets(kvs, tmp_path):
    keys, values = pa.array(ARROW_KEYS, pa.binary()), pa.array(ARROW_VALUES, pa.binary())
    table = pa.table({"key": keys, "value": values}).slice(37, 200)
    expected = dict(zip(ARROW_KEYS[37:237], ARROW_VALUES[37:237], strict=True))
    assert _arrow_round_trip(kvs, str(tmp_path / "table-slice"), table) == expected
    # columns sliced differently from their buffers: the key and value offsets differ
    shifted = pa.table({"key": pa.array(ARROW_KEYS[10:], pa.large_binary()).slice(5, 100),
                        "value": pa.array(ARROW_VALUES, pa.large_binary()).slice(15, 100)})
    assert _arrow_round_trip(kvs, str(tmp_path / "column-slice"), shifted) == \
        dict(zip(ARROW_KEYS[15:115], ARROW_VALUES[15:115], strict=True))
    batch = pa.record_batch({"key": keys, "value": values}).slice(250)
    assert _arrow_round_trip(kvs, str(tmp_path / "batch-slice"), batch) == \
        dict(zip(ARROW_KEYS[250:], ARROW_VALUES[250:], strict=True))


def test_put_many_chunked_table_and_several_calls(make_kvs, tmp_path):
    kvs = make_kvs({"kvio.block.size": "128B", "kvio.partition.size.max": "8KB"})
    chunks = [pa.table({"key": pa.array(ARROW_KEYS[i:i + 70], pa.binary()),
                        "value": pa.array(ARROW_VALUES[i:i + 70], pa.binary())}) for i in range(0, 300, 70)]
    table = pa.concat_tables(chunks)
    assert table.column("key").num_chunks == len(chunks)
    uri = str(tmp_path / "chunked")
    assert _arrow_round_trip(kvs, uri, table) == dict(zip(ARROW_KEYS, ARROW_VALUES, strict=True))
    with kvs.open_store(uri) as reader:
        assert len(reader.info()["partitions"]) > 1
    uri = str(tmp_path / "mixed")
    with kvs.create_store(uri) as w:
        w.put(ARROW_KEYS[0], ARROW_VALUES[0])
        w.put_many(chunks[0].slice(1))
        for chunk in chunks[1:-1]:
            w.put_many(chunk.to_batches()[0])
        last = chunks[-1]
        w.put_many(list(zip(last.column("key").to_pylist(), last.column("value").to_pylist(), strict=True)))
        assert w.count == 300
    with kvs.open_store(uri) as reader:
        assert_matches_model(reader, dict(zip(ARROW_KEYS, ARROW_VALUES, strict=True)),
                             absent=[b"k", b"k0300"])


def test_put_many_empty_table(kvs, store_uri):
    empty = pa.table({"key": pa.array([], pa.binary()), "value": pa.array([], pa.binary())})
    assert _arrow_round_trip(kvs, store_uri, empty) == {}


@pytest.mark.parametrize("column", ["key", "value"])
def test_put_many_arrow_nulls_are_type_errors(kvs, store_uri, column):
    data = {"key": [b"a", b"b", b"c"], "value": [b"1", b"2", b"3"]}
    data[column][1] = None
    with kvs.create_store(store_uri) as w:
        with pytest.raises(TypeError, match="null"):
            w.put_many(pa.table({k: pa.array(v, pa.binary()) for k, v in data.items()}))
        w.abort()


def test_put_many_arrow_bad_schema(kvs, store_uri):
    with kvs.create_store(store_uri) as w:
        with pytest.raises(TypeError):
            w.put_many(pa.table({"key": pa.array([1, 2]), "value": pa.array([b"1", b"2"])}))
        with pytest.raises(TypeError, match="column"):
            w.put_many(pa.table({"id": pa.array([b"1"]), "value": pa.array([b"1"])}))
        w.abort()


def test_put_many_arrow_unsorted_or_duplicate(kvs, store_uri):
    with kvs.create_store(store_uri) as w:
        with pytest.raises(KeyOrderError) as info:
            w.put_many(pa.table({"key": [b"a", b"c", b"b"], "value": [b"1", b"2", b"3"]}))
        assert "b'c'" in str(info.value) and "b'b'" in str(info.value)
        with pytest.raises(KeyOrderError, match="duplicate"):
            w.put_many(pa.table({"key": [b"a", b"b", b"b"], "value": [b"1", b"2", b"3"]}))
        w.put_many(pa.table({"key": [b"m", b"n"], "value": [b"1", b"2"]}))
        with pytest.raises(KeyOrderError):  # must follow the previous call's last key
            w.put_many(pa.table({"key": [b"n", b"o"], "value": [b"1", b"2"]}))
        with pytest.raises(KeyOrderError):
            w.put(b"a", b"x")
        w.put_many(pa.table({"key": [b"n\x00"], "value": [b"3"]}))
    with kvs.open_store(store_uri) as reader:
        assert dict(reader) == {b"m": b"1", b"n": b"2", b"n\x00": b"3"}


def test_put_many_arrow_pair_too_large(make_kvs, store_uri):
    kvs = make_kvs({"kvio.partition.size.max": "8KB"})
    table = pa.table({"key": [b"a", b"b"], "value": [b"1", b"x" * (9 << 10)]})
    with kvs.create_store(store_uri) as w:
        with pytest.raises(PairTooLargeError) as info:
            w.put_many(table)
        assert 8192 in sizes_in(str(info.value))
        w.abort()


# ---- rollover ---------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["put", "arrow"])
def test_rollover_ten_half_megabyte_values_make_ten_partitions(make_kvs, store_uri, how):
    limit = 1 << 20
    kvs = make_kvs({"kvio.partition.size.max": "1MB"})
    pairs = [(key4(i), bytes([i]) * (512 << 10)) for i in range(10)]
    with kvs.create_store(store_uri) as w:
        if how == "put":
            for k, v in pairs:
                w.put(k, v)
        else:
            w.put_many(pa.table({"key": [k for k, _ in pairs], "value": [v for _, v in pairs]}))
    with kvs.open_store(store_uri) as reader:
        info = reader.info()
        assert len(info["partitions"]) == 10
        assert all(p["count"] == 1 and p["bytes"] <= limit for p in info["partitions"])
        assert len(reader) == 10
        assert list(reader) == [k for k, _ in pairs]
        for k, v in pairs:
            assert reader[k] == v


# ---- merge ------------------------------------------------------------------------------------
def _merge_fixture(make_kvs, tmp_path):
    kvs = make_kvs({"kvio.partition.size.max": "12KB", "kvio.block.size": "512B"})
    src = {key4(i): b"src-%d" % i for i in list(range(0, 400, 2)) + list(range(700, 900))}
    dst = {key4(i): b"dst-%d" % i for i in range(100, 800, 3)}
    src_uri, dst_uri = str(tmp_path / "src"), str(tmp_path / "dst")
    write_store(kvs, src_uri, sorted(src.items()))
    write_store(kvs, dst_uri, sorted(dst.items()))
    return kvs, src, dst, src_uri, dst_uri


def test_merge_overlapping_stores_src_wins(make_kvs, tmp_path):
    kvs, src, dst, src_uri, dst_uri = _merge_fixture(make_kvs, tmp_path)
    record = kvs.merge_store(src_uri, dst_uri)
    assert record["op"] == "merge"
    merged = {**dst, **src}
    with kvs.open_store(dst_uri) as reader:
        assert reader.info()["disjoint"] is False
        assert len(reader.info()["partitions"]) > 2
        assert_matches_model(reader, merged, absent=[key4(i) for i in range(1, 1000, 7)],
                             ranges=[(key4(150), key4(450)), (key4(399), key4(701)), (None, key4(5))],
                             prefixes=[b"\x00\x00\x01", b"\x00\x00\x03"])
    with kvs.open_store(src_uri) as reader:
        assert dict(reader) == src  # src is unchanged


def test_merge_three_times_latest_wins(make_kvs, tmp_path):
    kvs, src, dst, src_uri, dst_uri = _merge_fixture(make_kvs, tmp_path)
    newest = {key4(i): b"new-%d" % i for i in range(0, 1000, 5)}
    write_store(kvs, str(tmp_path / "newest"), sorted(newest.items()))
    kvs.merge_store(src_uri, dst_uri)
    kvs.merge_store(str(tmp_path / "newest"), dst_uri)
    with kvs.open_store(dst_uri) as reader:
        assert_matches_model(reader, {**dst, **src, **newest}, absent=[key4(1001)])


def test_merge_disjoint_stores_stays_disjoint(kvs, tmp_path):
    write_store(kvs, str(tmp_path / "a"), [(key4(i), b"a") for i in range(100)])
    write_store(kvs, str(tmp_path / "b"), [(key4(i), b"b") for i in range(100, 200)])
    kvs.merge_store(str(tmp_path / "b"), str(tmp_path / "a"))
    with kvs.open_store(str(tmp_path / "a")) as reader:
        assert reader.info()["disjoint"] is True
        assert len(reader) == 200
        assert reader[key4(99)] == b"a" and reader[key4(100)] == b"b"


def test_merge_needs_both_stores(kvs, tmp_path):
    write_store(kvs, str(tmp_path / "a"), [(b"a", b"1")])
    with pytest.raises(StoreNotFoundError):
        kvs.merge_store(str(tmp_path / "missing"), str(tmp_path / "a"))
    with pytest.raises(StoreNotFoundError):
        kvs.merge_store(str(tmp_path / "a"), str(tmp_path / "missing"))
    with kvs.open_store(str(tmp_path / "a")) as reader:
        assert dict(reader) == {b"a": b"1"}


# ---- delete / rename / versions / rollback ------------------------------------------------------------
def test_delete_store(kvs, store_uri):
    write_store(kvs, store_uri, [(b"a", b"1")])
    assert kvs.exists(store_uri)
    kvs.delete_store(store_uri)
    assert not kvs.exists(store_uri)
    assert not os.path.exists(store_uri)
    with pytest.raises(StoreNotFoundError):
        kvs.open_store(store_uri)
    with pytest.raises(StoreNotFoundError):
        kvs.delete_store(store_uri)
    write_store(kvs, store_uri, [(b"b", b"2")])  # the name can be reused
    with kvs.open_store(store_uri) as reader:
        assert dict(reader) == {b"b": b"2"}


def test_delete_of_an_incomplete_store_removes_it(kvs, store_uri):
    Job.setup(store_uri)  # a writer that died without aborting
    kvs.delete_store(store_uri)
    with pytest.raises(StoreNotFoundError):
        kvs.open_store(store_uri)


def test_rename_store(kvs, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "sub" / "b")
    write_store(kvs, a, [(b"a", b"1")])
    kvs.rename_store(a, b)
    with pytest.raises(StoreNotFoundError):
        kvs.open_store(a)
    with kvs.open_store(b) as reader:
        assert dict(reader) == {b"a": b"1"}
    write_store(kvs, a, [(b"z", b"9")])
    with pytest.raises(StoreExistsError):
        kvs.rename_store(a, b)
    with kvs.open_store(a) as ra, kvs.open_store(b) as rb:
        assert dict(ra) == {b"z": b"9"} and dict(rb) == {b"a": b"1"}
    with pytest.raises(StoreNotFoundError):
        kvs.rename_store(str(tmp_path / "missing"), str(tmp_path / "c"))


def test_versions_and_rollback(kvs, store_uri):
    write_store(kvs, store_uri, [(b"a", b"v1")])
    write_store(kvs, store_uri, [(b"a", b"v2")], mode="overwrite")
    history = kvs.versions(store_uri)
    assert [h["seq"] for h in history] == [1, 2]
    assert [h["current"] for h in history] == [False, True]
    assert all(h["available"] for h in history)
    v1, v2 = history[0]["version"], history[1]["version"]
    with kvs.open_store(store_uri, version=v1) as old:
        assert old[b"a"] == b"v1"
    record = kvs.rollback(store_uri)
    assert record["op"] == "rollback" and record["seq"] == 3
    with kvs.open_store(store_uri) as reader:
        assert reader[b"a"] == b"v1"
        assert reader.info()["commit_seq"] == 3
    history = kvs.versions(store_uri)
    assert [h["current"] for h in history] == [False, False, True]
    kvs.rollback(store_uri, v2)
    with kvs.open_store(store_uri) as reader:
        assert reader[b"a"] == b"v2"
    with pytest.raises(StoreNotFoundError):
        kvs.rollback(store_uri, "no-such-version")
    with pytest.raises(StoreNotFoundError):
        kvs.open_store(store_uri, version="no-such-version")


def test_old_versions_are_garbage_collected(make_kvs, store_uri):
    kvs = make_kvs(**{"kvio.gc.grace": "0"})  # versions published milliseconds apart
    for i in range(4):
        write_store(kvs, store_uri, [(b"a", b"v%d" % i)], mode="error" if i == 0 else "overwrite")
    history = kvs.versions(store_uri)
    retained = [h["version"] for h in history if h["available"]]
    assert len(retained) == 2  # kvio.versions.retain = 2
    assert len(os.listdir(os.path.join(store_uri, "_versions"))) == 2
    with kvs.open_store(store_uri) as reader:
        assert reader[b"a"] == b"v3"
    kvs.rollback(store_uri)
    with kvs.open_store(store_uri) as reader:
        assert reader[b"a"] == b"v2"


def test_rollback_without_an_earlier_version(kvs, store_uri):
    write_store(kvs, store_uri, [(b"a", b"1")])
    with pytest.raises(KvioError, match="no earlier version"):
        kvs.rollback(store_uri)


def test_reader_keeps_its_version_after_a_new_publish(kvs, store_uri):
    write_store(kvs, store_uri, [(b"a", b"v1")])
    with kvs.open_store(store_uri) as old:
        for i in range(2, 5):  # enough publishes to garbage-collect the old version
            write_store(kvs, store_uri, [(b"a", b"v%d" % i)], mode="overwrite")
        assert old[b"a"] == b"v1" and list(old.items()) == [(b"a", b"v1")]
    with kvs.open_store(store_uri) as new:
        assert new[b"a"] == b"v4"


def test_versions_of_missing_store(kvs, tmp_path):
    with pytest.raises(StoreNotFoundError):
        kvs.versions(str(tmp_path / "missing"))


def test_abort_inside_with_publishes_nothing_and_does_not_raise(kvs, store_uri):
    with kvs.create_store(store_uri) as w:
        w.put(b"a", b"1")
        w.abort()
    assert w.record is None
    with pytest.raises(StoreNotFoundError):
        kvs.open_store(store_uri)
    assert not os.path.exists(store_uri)


def test_tiny_partition_limit_still_accepts_small_pairs(make_kvs, store_uri):
    kvs = make_kvs({"kvio.partition.size.max": "1KB", "kvio.block.size": "64B"})
    pairs = [(key4(i), b"v" * i) for i in range(20)]
    write_store(kvs, store_uri, pairs)
    with kvs.open_store(store_uri) as reader:
        assert len(reader.info()["partitions"]) == 20  # every file is past 1KB after one pair
        assert_matches_model(reader, dict(pairs), absent=[key4(20)])
