"""Partition files on in-memory bytes: the layout of format v1, round trips, scans and
detection of damaged bytes."""
from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvio import CorruptStoreError, UnsupportedFormatError
from kvio.format.partition_reader import SCHEMA, TOMBSTONE, PartitionReader
from kvio.format.partition_writer import PartitionWriter
from kvio.format.source import BufferSource, RangeSource
from kvio.format.spec import HEADER, INDEX_ALIGN, INDEX_PAGE_BYTES, TRAILER, checksum, pad8

from ..helpers import decode_block, model_range, parse_partition

CODECS = ["none", "zstd", "lz4"]


def make_pairs(n: int, seed: int = 0) -> tuple[list[bytes], list[bytes]]:
    rng = np.random.default_rng(seed)
    keys = sorted({rng.bytes(int(rng.integers(0, 12))) for _ in range(n)})
    values = [rng.bytes(int(rng.integers(0, 60))) if i % 4 else b"" for i in range(len(keys))]
    return keys, values


def write_partition(keys, values, *, codec="none", block_rows=37, load_factor=0.7,
                    columns=False) -> tuple[bytes, dict]:
    out = io.BytesIO()
    writer = PartitionWriter(out, codec=codec, load_factor=load_factor)
    for i in range(0, len(keys), block_rows):
        k, v = keys[i:i + block_rows], values[i:i + block_rows]
        if columns:
            ka, va = pa.array(k, pa.large_binary()), pa.array(v, pa.large_binary())
            koffs = np.frombuffer(ka.buffers()[1], dtype="<i8", count=len(k) + 1)
            voffs = np.frombuffer(va.buffers()[1], dtype="<i8", count=len(v) + 1)
            writer.write_columns(k, koffs, ka.buffers()[2] or b"", voffs, va.buffers()[2] or b"")
        else:
            writer.write_pairs(k, v)
    info = writer.finish()
    return out.getvalue(), info


KEYS, VALUES = make_pairs(500)


@pytest.fixture(params=CODECS)
def codec(request):
    return request.param


# ---- the layout, checked with an independent parser ---------------------------------------------
def test_layout_follows_the_spec(codec):
    data, info = write_partition(KEYS, VALUES, codec=codec)
    layout = parse_partition(data)
    assert data[:8] == b"KVIOPART" and data[-8:] == b"KVIOPART"
    assert layout.version == 1
    assert layout.meta["codec"] == codec and layout.meta["count"] == len(KEYS)
    assert layout.meta["min_key"] == KEYS[0].hex() and layout.meta["max_key"] == KEYS[-1].hex()
    nb = layout.meta["blocks"]
    assert nb == -(-len(KEYS) // 37)
    # blocks follow the header back to back, each starting 8-byte aligned
    expected_offset = HEADER.size
    for b in range(nb):
        assert layout.block_offset[b] == expected_offset
        expected_offset = pad8(expected_offset + layout.block_stored[b])
    # the index starts at the next 4 KiB boundary; the footer follows it; the trailer ends the file
    assert layout.index_offset == -(-expected_offset // INDEX_ALIGN) * INDEX_ALIGN
    assert layout.footer_offset == layout.index_offset + len(layout.page_checksums) * INDEX_PAGE_BYTES
    assert layout.footer_offset + layout.footer_length + TRAILER.size == len(data)
    footer = data[layout.footer_offset:layout.footer_offset + layout.footer_length]
    assert checksum(footer) == layout.footer_checksum
    assert checksum(data[-TRAILER.size:-16]) == TRAILER.unpack(data[-TRAILER.size:])[5]
    assert info == {"count": len(KEYS), "min_key": KEYS[0].hex(), "max_key": KEYS[-1].hex(),
                    "size": len(data), "footer_checksum": f"{layout.footer_checksum:016x}"}
    for p, page_sum in enumerate(layout.page_checksums):
        start = layout.index_offset + p * INDEX_PAGE_BYTES
        assert checksum(data[start:start + INDEX_PAGE_BYTES]) == page_sum
    # every block decodes (by the spec's Arrow-like layout) to exactly the rows written
    assert layout.first_rows == [min(b * 37, len(KEYS)) for b in range(nb + 1)]
    for b in range(nb):
        stored = data[layout.block_offset[b]:layout.block_offset[b] + layout.block_stored[b]]
        assert checksum(stored) == layout.block_checksum[b]
        if codec == "none":
            raw = stored
        else:
            raw = pa.decompress(stored, layout.block_raw[b], codec=codec).to_pybytes()
        assert len(raw) == layout.block_raw[b]
        lo, hi = layout.first_rows[b], layout.first_rows[b + 1]
        assert decode_block(raw, hi - lo) == (KEYS[lo:hi], VALUES[lo:hi])
        assert layout.first_keys[b] == KEYS[lo]


def test_columns_and_pairs_write_identical_files(codec):
    from_pairs, _ = write_partition(KEYS, VALUES, codec=codec)
    from_columns, _ = write_partition(KEYS, VALUES, codec=codec, columns=True)
    assert from_pairs == from_columns


def test_compression_makes_compressible_blocks_smaller():
    keys = [b"%08d" % i for i in range(2000)]
    values = [b"the same text again " * 5] * 2000
    plain, _ = write_partition(keys, values, block_rows=200)
    for codec in ("zstd", "lz4"):
        packed, _ = write_partition(keys, values, codec=codec, block_rows=200)
        assert len(packed) < len(plain) // 3
        reader = PartitionReader(BufferSource(packed))
        assert reader.get(b"00001999") == values[0]


# ---- reading --------------------------------------------------------------------------------------
def test_round_trip_point_lookups(codec):
    data, info = write_partition(KEYS, VALUES, codec=codec)
    reader = PartitionReader(BufferSource(data), expected=info)
    assert reader.count == len(KEYS) and reader.codec == codec
    assert (reader.min_key, reader.max_key) == (KEYS[0], KEYS[-1])
    assert reader.first_keys == KEYS[::37]
    for k, v in zip(KEYS, VALUES, strict=True):
        assert reader.get(k) == v
    present = set(KEYS)
    for k in KEYS:
        for probe in (k + b"\x00", k[:-1], k + b"\xff"):
            if probe not in present:
                assert reader.get(probe) is None
                assert reader.get(probe, b"default") == b"default"
    reader.verify_all()


def test_scan_as_arrow_batches_equals_input(codec):
    data, _ = write_partition(KEYS, VALUES, codec=codec)
    reader = PartitionReader(BufferSource(data))
    batches = list(reader.iter_batches())
    assert len(batches) == reader.block_count
    assert all(b.schema == SCHEMA for b in batches)
    table = pa.Table.from_batches(batches)
    expected = pa.table({"key": pa.array(KEYS, pa.large_binary()),
                         "value": pa.array(VALUES, pa.large_binary())}, schema=SCHEMA)
    assert table.equals(expected)
    for b in range(reader.block_count):
        rows = slice(b * 37, (b + 1) * 37)
        assert reader.batch(b).to_pydict() == {"key": KEYS[rows], "value": VALUES[rows]}


def _bounded_scan(reader, start, stop, blocks=None):
    return [(k, v) for batch in reader.iter_batches(start, stop, blocks=blocks)
            for k, v in zip(batch.column(0).to_pylist(), batch.column(1).to_pylist(), strict=True)]


def test_scan_ranges(codec):
    data, _ = write_partition(KEYS, VALUES, codec=codec)
    reader = PartitionReader(BufferSource(data))
    model = dict(zip(KEYS, VALUES, strict=True))
    bounds = [None, b"", b"\x00", b"\xff", b"\xff\xff\xff"] + KEYS[::23] + [k + b"\x00" for k in KEYS[5::41]]
    for start in bounds:
        for stop in bounds[::3]:
            assert _bounded_scan(reader, start, stop) == model_range(model, start, stop), (start, stop)


def test_scan_restricted_to_blocks():
    data, _ = write_partition(KEYS, VALUES)
    reader = PartitionReader(BufferSource(data))
    nb = reader.block_count
    for lo, hi in [(0, 1), (2, 5), (nb - 1, nb), (3, 3), (0, nb)]:
        expected = list(zip(KEYS[lo * 37:hi * 37], VALUES[lo * 37:hi * 37], strict=True))
        assert _bounded_scan(reader, None, None, blocks=(lo, hi)) == expected
    # splits and bounds combine: the union over all single-block splits equals the bounded scan
    start, stop = KEYS[50], KEYS[300]
    pieces = [pair for b in range(nb) for pair in _bounded_scan(reader, start, stop, blocks=(b, b + 1))]
    assert pieces == _bounded_scan(reader, start, stop)


def test_range_source_reads_like_buffer_source(codec):
    data, info = write_partition(KEYS, VALUES, codec=codec)
    source = RangeSource(lambda offset, length: data[offset:offset + length], len(data), "remote.kvp")
    reader = PartitionReader(source, expected=info, cache_blocks=2)
    assert [reader.get(k) for k in KEYS] == VALUES
    assert _bounded_scan(reader, None, None) == list(zip(KEYS, VALUES, strict=True))
    assert source.requests > 0 and source.bytes_read > 0


def test_empty_partition():
    data, info = write_partition([], [])
    assert info["count"] == 0 and info["min_key"] is None
    reader = PartitionReader(BufferSource(data), expected=info)
    assert reader.count == 0 and reader.block_count == 0
    assert reader.get(b"") is None and reader.get(b"x") is None
    assert list(reader.iter_batches()) == []
    reader.verify_all()


def test_large_values_and_keys():
    keys = [b"a" * 5000, b"b", b"c" * 70000]
    values = [b"", b"v" * 300000, b"w"]
    data, info = write_partition(keys, values, codec="zstd", block_rows=1)
    reader = PartitionReader(BufferSource(data), expected=info)
    assert [reader.get(k) for k in keys] == values
    assert _bounded_scan(reader, None, None) == list(zip(keys, values, strict=True))


@settings(max_examples=60, deadline=None)
@given(pairs=st.dictionaries(st.binary(max_size=10), st.binary(max_size=30), max_size=120),
       block_rows=st.integers(1, 50), codec=st.sampled_from(CODECS),
       load_factor=st.sampled_from([0.1, 0.7, 0.95]),
       bounds=st.lists(st.tuples(st.none() | st.binary(max_size=4), st.none() | st.binary(max_size=4)),
                       max_size=5),
       probes=st.lists(st.binary(max_size=10), max_size=20))
def test_any_sorted_pairs_round_trip(pairs, block_rows, codec, load_factor, bounds, probes):
    keys = sorted(pairs)
    values = [pairs[k] for k in keys]
    data, info = write_partition(keys, values, codec=codec, block_rows=block_rows, load_factor=load_factor)
    reader = PartitionReader(BufferSource(data), expected=info)
    assert [reader.get(k) for k in keys] == values
    assert [reader.get(k, "absent") for k in probes] == [pairs.get(k, "absent") for k in probes]
    assert _bounded_scan(reader, None, None) == list(zip(keys, values, strict=True))
    for start, stop in bounds:
        assert _bounded_scan(reader, start, stop) == model_range(pairs, start, stop)


# ---- damaged bytes ----------------------------------------------------------------------------------
def _all_reads_correct_or_corrupt(data: bytes, keys, values, expected=None) -> bool:
    """Open, look up every key and scan; each step either raises CorruptStoreError or is right.
    Returns whether any step raised."""
    try:
        reader = PartitionReader(BufferSource(data, name="damaged.kvp"), store="mem://s", expected=expected)
    except CorruptStoreError as exc:
        assert exc.file == "damaged.kvp" and "damaged.kvp" in str(exc)
        return True
    raised = False
    for k, v in zip(keys, values, strict=True):
        try:
            assert reader.get(k) == v
        except CorruptStoreError as exc:
            assert exc.file == "damaged.kvp"
            raised = True
    for k in (b"\x00absent", b"zz-absent"):
        try:
            assert reader.get(k) is None
        except CorruptStoreError:
            raised = True
    try:
        assert _bounded_scan(reader, None, None) == list(zip(keys, values, strict=True))
    except CorruptStoreError:
        raised = True
    return raised


@pytest.mark.parametrize("codec", CODECS)
def test_every_flipped_byte_is_detected_or_harmless(codec):
    keys, values = make_pairs(60, seed=3)
    data, info = write_partition(keys, values, codec=codec, block_rows=9)
    layout = parse_partition(data)
    detected_regions = set()
    for pos in range(len(data)):
        region = next((name for name, lo, hi in layout.regions if lo <= pos < hi), "padding")
        if region.startswith("index page") and pos % 7:
            continue  # index pages are mostly empty slots; sample them
        damaged = bytearray(data)
        damaged[pos] ^= 0x20 if pos % 2 else 0xFF
        if _all_reads_correct_or_corrupt(bytes(damaged), keys, values):
            detected_regions.add(region.split(" ")[0])
        else:
            # Only padding can be harmless to reads, and verify_all still notices it.
            assert region == "padding", (region, pos)
            with pytest.raises(CorruptStoreError, match="padding"):
                PartitionReader(BufferSource(bytes(damaged))).verify_all()
    assert detected_regions >= {"header", "block", "index", "footer", "trailer"}


def test_truncated_files_are_corrupt():
    keys, values = make_pairs(100, seed=4)
    data, info = write_partition(keys, values, block_rows=10)
    for length in list(range(0, 80)) + list(range(80, len(data), 97)) + [len(data) - 1]:
        with pytest.raises(CorruptStoreError) as exc:
            PartitionReader(BufferSource(data[:length], name="short.kvp"))
        assert exc.value.file == "short.kvp"
        source = RangeSource(lambda o, n, d=data[:length]: d[o:o + n], len(data), "short-remote.kvp")
        with pytest.raises(CorruptStoreError):  # the manifest's size, but fewer bytes behind it
            PartitionReader(source, expected=info)


def test_manifest_expectations_are_checked():
    keys, values = make_pairs(50, seed=5)
    data, info = write_partition(keys, values)
    PartitionReader(BufferSource(data), expected=info)
    other, other_info = write_partition(keys[:-1], values[:-1])
    wrong = [{"size": info["size"] + 8}, {"footer_checksum": other_info["footer_checksum"]},
             {"count": info["count"] + 1}, {"min_key": "00"}, {"max_key": other_info["max_key"]}]
    for change in wrong:
        with pytest.raises(CorruptStoreError):
            PartitionReader(BufferSource(data), expected={**info, **change})


def _rewrite_header_and_trailer(data: bytes, version: int | None = None, flags: int | None = None,
                                header: bool = True, trailer: bool = True) -> bytes:
    """``data`` with a new version and/or flags in the header and/or the trailer (the trailer's
    checksum recomputed, as a writer of that version would)."""
    out = bytearray(data)
    magic, h_version, h_flags = HEADER.unpack_from(out, 0)
    if header:
        HEADER.pack_into(out, 0, magic, h_version if version is None else version,
                         h_flags if flags is None else flags)
    if trailer:
        t = list(TRAILER.unpack_from(out, len(out) - TRAILER.size))
        t[3] = t[3] if version is None else version
        t[4] = t[4] if flags is None else flags
        head = TRAILER.pack(*t)[:32]
        TRAILER.pack_into(out, len(out) - TRAILER.size, *t[:5], checksum(head), t[6])
    return bytes(out)


def test_unknown_format_version():
    """A newer writer's file (header and checksummed trailer agree) is unsupported; a header
    that disagrees with the trailer is damage, whatever it says (docs/FORMAT.md §3.1)."""
    keys, values = make_pairs(20, seed=6)
    data = write_partition(keys, values)[0]
    future = _rewrite_header_and_trailer(data, version=3)  # (2 is the tombstone version)
    with pytest.raises(UnsupportedFormatError, match="version 3") as exc:
        PartitionReader(BufferSource(future, name="future.kvp"))
    assert exc.value.file == "future.kvp"
    for damaged in (_rewrite_header_and_trailer(data, version=3, trailer=False),
                    _rewrite_header_and_trailer(future, version=1, trailer=False)):
        with pytest.raises(CorruptStoreError, match="disagrees with the trailer") as exc:
            PartitionReader(BufferSource(damaged, name="damaged.kvp"))
        assert not isinstance(exc.value, UnsupportedFormatError) and exc.value.file == "damaged.kvp"


@pytest.mark.parametrize("flags", [1, 0x100, 0x80000000])
def test_flags_are_checked(flags):
    """Version 1 defines no flag: set in both places it is a newer writer's file; set in the
    header only (which no checksum covers) it is damage. Failed before: both were read."""
    keys, values = make_pairs(20, seed=6)
    data, info = write_partition(keys, values)
    with pytest.raises(UnsupportedFormatError, match="flags") as exc:
        PartitionReader(BufferSource(_rewrite_header_and_trailer(data, flags=flags), name="f.kvp"))
    assert exc.value.file == "f.kvp"
    for damaged in (_rewrite_header_and_trailer(data, flags=flags, trailer=False),
                    _rewrite_header_and_trailer(data, flags=flags, header=False)):
        with pytest.raises(CorruptStoreError) as exc:
            PartitionReader(BufferSource(damaged, name="f.kvp"), expected=info)
        assert not isinstance(exc.value, UnsupportedFormatError) and exc.value.file == "f.kvp"


def test_not_a_partition_file():
    with pytest.raises(CorruptStoreError, match="magic"):
        PartitionReader(BufferSource(b"PAR1" + bytes(200)))


def test_verify_all_finds_a_damaged_block_a_lookup_did_not_touch():
    keys, values = make_pairs(200, seed=8)
    data, _ = write_partition(keys, values, block_rows=20)
    layout = parse_partition(data)
    damaged = bytearray(data)
    damaged[layout.block_offset[-1] + 3] ^= 0x01
    reader = PartitionReader(BufferSource(bytes(damaged)))
    assert reader.get(keys[0]) == values[0]  # the first block is intact
    with pytest.raises(CorruptStoreError, match="block"):
        reader.verify_all()


def _with_meta(data: bytes, **changes) -> bytes:
    """``data`` with footer meta fields changed, footer and trailer checksums recomputed (a
    writer that wrote these values): the footer checksum alone does not make a footer valid."""
    f_off, f_len, _, version, flags, _, magic = TRAILER.unpack_from(data, len(data) - TRAILER.size)
    footer = data[f_off:f_off + f_len]
    meta_len = int.from_bytes(footer[:8], "little")
    meta = json.loads(footer[8:8 + meta_len])
    for name, value in changes.items():
        if name.startswith("index_"):
            meta["index"][name[6:]] = value
        else:
            meta[name] = value
    meta_bytes = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    footer = (len(meta_bytes).to_bytes(8, "little") + meta_bytes + bytes(pad8(len(meta_bytes))
              - len(meta_bytes)) + footer[8 + pad8(meta_len):])
    head = TRAILER.pack(f_off, len(footer), checksum(footer), version, flags, 0, magic)[:32]
    return data[:f_off] + footer + TRAILER.pack(f_off, len(footer), checksum(footer), version,
                                                 flags, checksum(head), magic)


@pytest.mark.parametrize("changes, error", [
    ({"format_version": 2}, CorruptStoreError),           # footer disagrees with header/trailer
    ({"codec": "snappy"}, UnsupportedFormatError),
    ({"index_hash": "murmur3"}, UnsupportedFormatError),
    ({"min_key": "UPPER"}, CorruptStoreError),             # not lowercase hex
    ({"count": 0}, CorruptStoreError),                     # rows in blocks, none in count
    ({"min_key": None}, CorruptStoreError),
    ({"index_home_slots": 0}, CorruptStoreError),
    ({"index_offset": 8192 + 4096}, CorruptStoreError),    # index must end where the footer starts
    ({"blocks": "3"}, CorruptStoreError),
])
def test_footer_fields_follow_the_spec(changes, error):
    """Each rule of FORMAT.md §3.5 that a footer with a valid checksum can still break; the
    format version, codec, hash, hex-case and index-position rules were not checked before."""
    keys = [b"%03d" % i for i in range(100)]
    data, _ = write_partition(keys, keys)
    PartitionReader(BufferSource(_with_meta(data)))  # the rewrite itself keeps a valid file
    if "min_key" in changes and changes["min_key"] == "UPPER":
        changes["min_key"] = keys[0].hex().upper() + "AB"
    with pytest.raises(error) as exc:
        PartitionReader(BufferSource(_with_meta(data, **changes), name="meta.kvp"))
    assert exc.value.file == "meta.kvp"
    if error is CorruptStoreError:
        assert not isinstance(exc.value, UnsupportedFormatError)


def test_verify_all_checks_block_layout_and_padding():
    """Padding between blocks and before the index is covered by no checksum: reads ignore it,
    verify_all checks it is zero (before: never checked)."""
    keys, values = make_pairs(100, seed=9)
    data, _ = write_partition(keys, values, codec="zstd", block_rows=7)  # stored lengths vary
    layout = parse_partition(data)
    gap = next(b for b in range(layout.meta["blocks"])
               if (layout.block_offset[b] + layout.block_stored[b]) % 8)
    end = layout.block_offset[gap] + layout.block_stored[gap]
    for pos in (end, layout.index_offset - 1):
        damaged = bytearray(data)
        damaged[pos] = 1
        reader = PartitionReader(BufferSource(bytes(damaged), name="pad.kvp"))
        assert [reader.get(k) for k in keys] == values  # reads never look at padding
        with pytest.raises(CorruptStoreError, match="padding") as exc:
            reader.verify_all()
        assert exc.value.file == "pad.kvp"


def test_use_after_close_raises_reader_closed():
    """Every read path of a closed partition reader raises ReaderClosedError naming the file
    (before: get did, while get_many, scans and verify_all raised a bare ValueError)."""
    from kvio import ReaderClosedError
    keys, values = make_pairs(300, seed=10)
    data, _ = write_partition(keys, values, codec="zstd")
    for source in (BufferSource(data, name="c.kvp"),
                   RangeSource(lambda o, n: data[o:o + n], len(data), "c.kvp")):
        reader = PartitionReader(source, store="s")
        reader.close()
        reader.close()  # idempotent
        for use in (lambda r: r.get(keys[0]), lambda r: r.get_many(keys),
                    lambda r: list(r.iter_batches()), lambda r: r.verify_all()):
            with pytest.raises(ReaderClosedError) as exc:
                use(reader)
            assert exc.value.file == "c.kvp"


# ---- tombstones (docs/FORMAT.md §3.8) ------------------------------------------------------------
def _tombstone_file(keys) -> tuple[bytes, dict]:
    out = io.BytesIO()
    writer = PartitionWriter(out, tombstones=True)
    writer.write_pairs(keys, [b""] * len(keys))
    info = writer.finish()
    return out.getvalue(), info


def test_files_without_tombstones_stay_version_1_and_tombstone_files_are_version_2():
    """Old readers keep reading what they can: only a file holding tombstones is version 2
    with flag bit 0, in the header, the trailer and the footer."""
    keys, values = make_pairs(20, seed=6)
    plain, info = write_partition(keys, values)
    assert HEADER.unpack_from(plain, 0)[1:] == (1, 0) and "tombstones" not in info
    tomb, tinfo = _tombstone_file(keys)
    assert HEADER.unpack_from(tomb, 0)[1:] == (2, 1) and tinfo["tombstones"] is True
    assert TRAILER.unpack_from(tomb, len(tomb) - TRAILER.size)[3:5] == (2, 1)
    reader = PartitionReader(BufferSource(tomb), expected=tinfo)
    assert reader.tombstones and reader.meta["format_version"] == 2
    assert reader.get(keys[3]) is TOMBSTONE and reader.get(b"absent", 5) == 5
    assert reader.get_many(keys + [b"absent"], 0) == [TOMBSTONE] * len(keys) + [0]
    reader.verify_all()
    assert not PartitionReader(BufferSource(plain), expected=info).tombstones


def test_tombstone_flag_must_match_the_manifest_and_unknown_flags_are_refused():
    keys, _ = make_pairs(20, seed=6)
    tomb, tinfo = _tombstone_file(keys)
    with pytest.raises(CorruptStoreError, match="tombstone") as exc:
        PartitionReader(BufferSource(tomb, name="t.kvp"), expected={**tinfo, "tombstones": False})
    assert not isinstance(exc.value, UnsupportedFormatError)
    with pytest.raises(UnsupportedFormatError, match="flags"):
        PartitionReader(BufferSource(_rewrite_header_and_trailer(tomb, flags=3), name="t.kvp"))
    with pytest.raises(ValueError):
        PartitionWriter(io.BytesIO(), tombstones=True).write_pairs([b"a"], [b"value"])
