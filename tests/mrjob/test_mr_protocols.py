"""Property tests of the binary-safe, order-preserving mrjob protocols on hostile bytes."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mr_jobs.protocols import (
    CommitMessageProtocol,
    HexProtocol,
    HexValueProtocol,
    RoutedPairProtocol,
    SortableBytesProtocol,
    decode_key,
    decode_value,
    encode_key,
)

# Bytes drawn mostly from record separators and the bytes around them, plus anything.
hostile = st.one_of(
    st.binary(max_size=64),
    st.lists(st.sampled_from([b"\t", b"\n", b"\r", b"\x00", b"\xff", b"0", b"a", b"\\", b" "]),
             max_size=24).map(b"".join),
)
partition_ids = st.integers(min_value=0, max_value=2**32 - 1)
PAIR_PROTOCOLS = [HexProtocol(), SortableBytesProtocol()]


def _streaming_line_ok(line: bytes) -> None:
    """What Hadoop Streaming and mrjob need: one line, and nothing mrjob's rstrip would eat."""
    assert b"\n" not in line and b"\r" not in line


@pytest.mark.parametrize("protocol", PAIR_PROTOCOLS, ids=lambda p: type(p).__name__)
@given(key=hostile, value=hostile)
def test_pair_protocols_round_trip_any_bytes(protocol, key, value):
    line = protocol.write(key, value)
    _streaming_line_ok(line)
    assert line.count(b"\t") == 1  # the key field ends at the only tab
    assert protocol.read(line) == (key, value)
    assert protocol.read(line.rstrip(b"\r\n")) == (key, value)  # as mrjob hands lines over


@given(value=hostile)
def test_hex_value_protocol_round_trips(value):
    line = HexValueProtocol().write(None, value)
    _streaming_line_ok(line)
    assert HexValueProtocol().read(line) == (None, value)


@given(a=hostile, b=hostile)
def test_encoded_keys_sort_like_raw_keys(a, b):
    assert (encode_key(a) < encode_key(b)) == (a < b)
    assert (encode_key(a) == encode_key(b)) == (a == b)


@pytest.mark.parametrize("protocol", PAIR_PROTOCOLS, ids=lambda p: type(p).__name__)
@given(a=hostile, b=hostile, va=hostile, vb=hostile)
def test_whole_encoded_lines_sort_by_raw_key(protocol, a, b, va, vb):
    """Sorting whole lines (mrjob SORT_VALUES, `sort` in -r local) must order by the raw key:
    the tab after a key sorts below every hex digit, so prefixes come first."""
    if a != b:
        assert (protocol.write(a, va) < protocol.write(b, vb)) == (a < b)


@given(pa_=partition_ids, pb=partition_ids, a=hostile, b=hostile, va=hostile, vb=hostile)
def test_routed_pairs_sort_by_partition_then_key(pa_, pb, a, b, va, vb):
    proto = RoutedPairProtocol()
    la, lb = proto.write(pa_, (a, va)), proto.write(pb, (b, vb))
    _streaming_line_ok(la)
    if (pa_, a) != (pb, b):
        assert (la < lb) == ((pa_, a) < (pb, b))
        # Hadoop's view with stream.num.map.output.key.fields=2: the key is the first 2 fields
        ka, kb = b"\t".join(la.split(b"\t")[:2]), b"\t".join(lb.split(b"\t")[:2])
        assert (ka < kb) == ((pa_, a) < (pb, b))
    assert proto.read(la) == (pa_, (a, va))
    # Hadoop streaming hands "key TAB value" back; with an empty value the tab may be gone
    assert proto.read(la.rstrip(b"\t")) == (pa_, (a, va))


@settings(max_examples=50)
@given(partition=partition_ids,
       message=st.fixed_dictionaries({"task_id": st.integers(0, 10**6), "attempt": st.text(max_size=8),
                                      "partitions": st.lists(st.fixed_dictionaries(
                                          {"path": st.text(max_size=20), "count": st.integers(0, 10**9),
                                           "min_key": hostile.map(bytes.hex)}), max_size=3)}))
def test_commit_message_protocol_round_trips(partition, message):
    line = CommitMessageProtocol().write(partition, message)
    _streaming_line_ok(line)
    assert CommitMessageProtocol().read(line + b"\n") == (partition, message)


def test_protocols_refuse_text_and_bad_input():
    with pytest.raises(TypeError, match="encode str"):
        SortableBytesProtocol().write("key", b"v")
    with pytest.raises(TypeError, match="value must be bytes"):
        RoutedPairProtocol().write(0, (b"k", 5))
    with pytest.raises(ValueError, match="hex"):
        decode_key(b"abc")  # odd length
    with pytest.raises(ValueError, match="base64"):
        decode_value(b"a\tb=")
    with pytest.raises(ValueError, match="routed pair"):
        RoutedPairProtocol().read(b"zz\t00\t")
    with pytest.raises(TypeError, match="needs its output partition"):
        RoutedPairProtocol().write(None, (b"k", b"v"))
    block = RoutedPairProtocol.encode_many([1], [b"k"], [b"v"])
    assert RoutedPairProtocol().write(None, block) == bytes(block)
    with pytest.raises(ValueError, match="partition None"):
        RoutedPairProtocol().write(1, block)


def test_mrjob_raw_protocol_is_not_binary_safe():
    """Why these protocols exist: mrjob's RawProtocol decodes text and splits on the tab."""
    from mrjob.protocol import RawProtocol
    key, value = b"a\tb", b"\xff"
    assert RawProtocol().read(key + b"\t" + value) == ("a", "b\t\xff")  # split, decoded: wrong
    with pytest.raises(AttributeError):
        RawProtocol().write(key, value)  # bytes cannot even be written
    assert SortableBytesProtocol().read(SortableBytesProtocol().write(key, value)) == (key, value)
