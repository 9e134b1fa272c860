"""docs/FORMAT.md is exact enough to write a reader from it alone: the independent reader in
``spec_reader.py`` (no kvio import) agrees with kvio on every kind of store kvio writes, and both
refuse the same damaged files with the same kind of error."""
from __future__ import annotations

import glob
import os
import shutil
import struct
from bisect import bisect_right

import pytest

import kvio
from kvio import (
    CorruptStoreError,
    IncompleteStoreError,
    NotAStoreError,
    StoreNotFoundError,
    UnsupportedFormatError,
)
from kvio.committer import Job, TaskAttempt
from kvio.format import envelope, marker
from kvio.format.partition_writer import PartitionWriter

from ..helpers import key4
from . import spec_reader
from .spec_reader import SpecError, SpecStore

HOSTILE = [b"", b"\x00", b"\t", b"\n", b"\r", b"\\", b"\xff", b"\xff\xff", b"a\x00b", b"\x80"]


def _kind(exc: BaseException) -> str:
    """The spec reader's error kind for a kvio error (docs/FORMAT.md "Errors")."""
    for cls, kind in ((UnsupportedFormatError, "unsupported"), (CorruptStoreError, "corrupt"),
                      (StoreNotFoundError, "not-found"), (IncompleteStoreError, "incomplete"),
                      (NotAStoreError, "not-a-store")):
        if isinstance(exc, cls):
            return kind
    raise exc


def kvio_outcome(kvs, uri: str):
    """Everything kvio says about the store: (pairs, lookups) or (error kind, file name)."""
    try:
        with kvs.open_store(uri) as reader:
            pairs = list(reader.items())
            probes = [k for k, _ in pairs] + PROBES
            lookups = reader.get_many(probes)
            assert lookups == [reader.get(k) for k in probes]
            reader.verify()
            return pairs, lookups
    except (CorruptStoreError, StoreNotFoundError, IncompleteStoreError, NotAStoreError) as exc:
        return _kind(exc), os.path.basename(exc.file or exc.store or "")


def spec_outcome(uri: str):
    try:
        store = SpecStore(uri)
        pairs = store.pairs()
        lookups = [store.get(k) for k in [k for k, _ in pairs] + PROBES]
        store.verify()
        return pairs, lookups
    except SpecError as exc:
        return exc.kind, os.path.basename(exc.file or "")


PROBES = [b"", b"\x00", b"\xff" * 5, b"k", b"k0500\x00", key4(7), b"zzz"]


def assert_agree(kvs, uri: str) -> list[tuple[bytes, bytes]]:
    """Both readers give the same pairs and lookups; returns the pairs."""
    ours, theirs = kvio_outcome(kvs, uri), spec_outcome(uri)
    assert isinstance(ours[0], list), ours
    assert theirs == ours
    return ours[0]


def write(kvs, uri: str, pairs, mode: str = "error") -> None:
    with kvs.create_store(uri, mode=mode) as writer:
        for k, v in sorted(pairs):
            writer.put(k, v)


# ---- stores both readers must read alike ---------------------------------------------------------
def test_single_partition_with_hostile_bytes(kvs, tmp_path):
    uri = str(tmp_path / "s")
    pairs = {k: (b"" if i % 3 == 0 else k * 3 + b"\r\n") for i, k in enumerate(HOSTILE)}
    write(kvs, uri, pairs.items())
    assert dict(assert_agree(kvs, uri)) == pairs
    assert SpecStore(uri).get(b"") == pairs[b""]  # the empty key, written as "" in the manifest


@pytest.mark.parametrize("codec", ["none", "zstd", "lz4"])
def test_many_partitions_and_blocks(make_kvs, tmp_path, codec):
    kvs = make_kvs({"kvio.block.compression": codec, "kvio.block.size": "512B",
                    "kvio.partition.size.max": "16KB"})
    uri = str(tmp_path / "s")
    pairs = {key4(i * 7): b"value %d " % i * (i % 11) for i in range(1500)}
    write(kvs, uri, pairs.items())
    store = SpecStore(uri)
    assert len(store.entries) > 3 and store.manifest["disjoint"]
    assert all(len(p.offset) > 2 for p in store.parts)
    assert dict(assert_agree(kvs, uri)) == pairs


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_frames_are_what_the_spec_says(make_kvs, tmp_path, codec):
    """§3.4: frame options as specified, including a block larger than one 64 KB LZ4 block
    (linked blocks) and a tiny one (independent)."""
    kvs = make_kvs({"kvio.block.compression": codec, "kvio.block.size": "256KB"})
    uri = str(tmp_path / "s")
    pairs = [(b"tiny", b"x")] + [(b"v%05d" % i, os.urandom(40) + bytes(200)) for i in range(2000)]
    write(kvs, uri + "-small", pairs[:1])
    write(kvs, uri, pairs)
    for store_uri, big in ((uri + "-small", False), (uri, True)):
        assert_agree(kvs, store_uri)
        part = SpecStore(store_uri).parts[0]
        stored = part.data[part.offset[0]:part.offset[0] + part.stored[0]]
        options = spec_reader.frame_options(stored, codec)
        assert not options["checksum"] and not options["dictionary"]
        if codec == "zstd":
            assert options["content_size"]
        else:
            assert options["version"] == 1 and not options["content_size"]
            assert not options["block_checksum"] and options["block_max"] == 64 << 10
            assert options["independent"] is (part.raw[0] <= 64 << 10)
            assert (part.raw[0] > 64 << 10) is big


def test_merged_three_times_with_overlaps(kvs, tmp_path):
    """Overlapping partitions: the later partition wins on equal keys (§2.3)."""
    a, model = str(tmp_path / "a"), {}
    write(kvs, a, [(b"k%04d" % i, b"old") for i in range(1000)])
    model.update({b"k%04d" % i: b"old" for i in range(1000)})
    for n, step in enumerate((2, 3, 7)):
        src = str(tmp_path / f"src{n}")
        newer = {b"k%04d" % i: b"new%d" % n for i in range(n, 1200, step)}
        write(kvs, src, newer.items())
        kvs.merge_store(src, a)
        model.update(newer)
    assert not SpecStore(a).manifest["disjoint"] and SpecStore(a).manifest["count"] is None
    assert dict(assert_agree(kvs, a)) == model


def test_disjoint_partitions_out_of_key_order(kvs, tmp_path):
    """§2.3: merging lower keys into a store of higher keys gives a disjoint manifest that is
    not in key order; a binary search over the list as written would miss keys."""
    hi, lo = str(tmp_path / "hi"), str(tmp_path / "lo")
    write(kvs, hi, [(b"k%04d" % i, b"hi") for i in range(500, 1000)])
    write(kvs, lo, [(b"k%04d" % i, b"lo") for i in range(500)])
    kvs.merge_store(lo, hi)
    store = SpecStore(hi)
    mins = [e["lo"] for e in store.entries if e["count"]]
    assert store.manifest["disjoint"] and mins != sorted(mins)
    pairs = assert_agree(kvs, hi)
    assert [k for k, _ in pairs] == [b"k%04d" % i for i in range(1000)]
    # what a literal reader of the old §2 did: bisect the ranges in manifest order, and miss
    j = bisect_right(mins, b"k0700") - 1
    assert not store.entries[j]["lo"] <= b"k0700" <= store.entries[j]["hi"]
    assert store.get(b"k0700") == b"hi"


def test_appended_store(kvs, tmp_path):
    uri = str(tmp_path / "s")
    write(kvs, uri, [(key4(i), b"first") for i in range(0, 300, 2)])
    write(kvs, uri, [(key4(i), b"second") for i in range(0, 300, 3)], mode="append")
    model = {key4(i): b"first" for i in range(0, 300, 2)}
    model.update({key4(i): b"second" for i in range(0, 300, 3)})
    assert dict(assert_agree(kvs, uri)) == model


def test_store_with_tombstones(kvs, tmp_path):
    """§3.8: a delta version with a tombstone file reads the same in both readers, deleted
    keys absent (also those deleted in one update and set again in the next), and an older
    reader that knows only version 1 refuses the tombstone file rather than show deleted keys."""
    kvs = kvio.KeyValueSystem(conf={"kvio.compact.max.layers": "0"})  # keep the layers
    uri = str(tmp_path / "s")
    write(kvs, uri, [(key4(i), b"first") for i in range(0, 300, 2)])
    with kvs.update_store(uri) as u:
        u.delete_many(key4(i) for i in range(0, 300, 10))
        u.set(key4(1), b"new")
        u.delete(key4(999))
    with kvs.update_store(uri) as u:
        u.set(key4(20), b"back")
    model = {key4(i): b"first" for i in range(0, 300, 2) if i % 10}
    model[key4(1)] = b"new"
    model[key4(20)] = b"back"
    store = SpecStore(uri)
    assert any(e.get("tombstones") for e in store.entries) and not store.manifest["disjoint"]
    assert dict(assert_agree(kvs, uri)) == model
    assert store.get(key4(10)) is None and store.get(key4(20)) == b"back"
    store.verify()
    tomb = next(p for p in store.parts if p is not None and p.tombstones)
    old = dict(spec_reader.KNOWN_FLAGS)
    try:
        del spec_reader.KNOWN_FLAGS[2]
        with pytest.raises(spec_reader.Unsupported, match="version 2"):
            spec_reader.Partition(tomb.path)
    finally:
        spec_reader.KNOWN_FLAGS.update(old)


def test_empty_store(kvs, tmp_path):
    uri = str(tmp_path / "s")
    write(kvs, uri, [])
    assert SpecStore(uri).manifest["partitions"] == []
    assert assert_agree(kvs, uri) == []


def test_store_with_a_zero_key_partition(kvs, tmp_path):
    """§3.7: kvio's writers never list one, but both readers accept it, and its bytes are the
    layout the spec gives."""
    uri = str(tmp_path / "s")
    job = Job.setup(uri)
    attempt = TaskAttempt(job.ctx, 0)
    for pairs in ([], [(b"a", b"1"), (b"b", b"2")]):
        rel, handle = attempt.new_partition_file()
        writer = PartitionWriter(handle)
        if pairs:
            writer.write_pairs([k for k, _ in pairs], [v for _, v in pairs])
        attempt.add_partition(rel, writer.finish())
        handle.close()
    job.commit([attempt.commit()])
    store = SpecStore(uri)
    empty = store.entries[0]
    assert empty["count"] == 0 and empty["min_key"] is None and store.parts[0] is None
    path = os.path.join(uri, "_versions", store.version, empty["path"])
    part = spec_reader.Partition(path, empty)
    data = part.data
    assert data[16:8192] == bytes(8192 - 16) and part.index_offset == 4096
    assert (part.home_slots, part.total_slots, part.page_sums) == (1, 256, [0x93D76FE148C689BA])
    assert len(data) == 8192 + struct.unpack_from("<Q", data, len(data) - 40)[0] + 48
    part.verify()
    assert part.lookup(b"a") is None and list(part.rows()) == []
    assert assert_agree(kvs, uri) == [(b"a", b"1"), (b"b", b"2")]


# ---- damaged or unusual stores: both refuse, with the same kind of error ---------------------
@pytest.fixture
def store(make_kvs, tmp_path):
    kvs = make_kvs({"kvio.block.size": "256B", "kvio.block.compression": "zstd"})
    uri = str(tmp_path / "s")
    write(kvs, uri, [(key4(i), b"v%d" % i * (i % 5)) for i in range(200)])
    (part,) = glob.glob(os.path.join(uri, "_versions", "*", "*", "*.kvp"))
    return kvs, uri, part


def assert_same_refusal(kvs, uri: str, kind: str, file: str) -> None:
    ours, theirs = kvio_outcome(kvs, uri), spec_outcome(uri)
    assert ours == theirs == (kind, os.path.basename(file)), (ours, theirs)


def patch(path: str, pos: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(pos)
        f.write(data)


def rewrite_trailer(path: str, version: int | None = None, flags: int | None = None) -> None:
    """Change the trailer's version/flags and recompute its checksum (a newer writer)."""
    with open(path, "rb") as f:
        data = f.read()
    t = list(spec_reader.TRAILER.unpack_from(data, len(data) - 48))
    t[3] = t[3] if version is None else version
    t[4] = t[4] if flags is None else flags
    t[5] = spec_reader.xxh3(spec_reader.TRAILER.pack(*t)[:32])
    patch(path, len(data) - 48, spec_reader.TRAILER.pack(*t))


def test_flipped_flags_byte(store):
    kvs, uri, part = store
    patch(part, 12, b"\x01")
    assert_same_refusal(kvs, uri, "corrupt", part)


def test_flags_of_a_newer_writer(store):
    kvs, uri, part = store
    patch(part, 12, b"\x01")
    rewrite_trailer(part, flags=1)
    assert_same_refusal(kvs, uri, "unsupported", part)


def test_header_and_trailer_versions_disagree(store):
    kvs, uri, part = store
    patch(part, 8, b"\x03")
    assert_same_refusal(kvs, uri, "corrupt", part)
    rewrite_trailer(part, version=3)
    assert_same_refusal(kvs, uri, "unsupported", part)


@pytest.mark.parametrize("change", ["flip", "other format", "missing"])
def test_bad_marker(store, change):
    kvs, uri, _ = store
    path = os.path.join(uri, "_kvio_store")
    if change == "flip":
        patch(path, 30, b"X")
    elif change == "other format":
        with open(path, "wb") as f:
            f.write(envelope.encode("KVIOSTORE", {"format": "something-else"}))
    else:
        os.remove(path)
    assert_same_refusal(kvs, uri, "corrupt", path)


def _rewrite_document(path: str, kind: str, **changes) -> None:
    with open(path, "rb") as f:
        doc = envelope.decode(kind, f.read())
    doc.update(changes)
    with open(path, "wb") as f:
        f.write(envelope.encode(kind, doc))


def test_commit_seq_differs_from_its_name(store):
    kvs, uri, _ = store
    (record,) = glob.glob(os.path.join(uri, "_commits", "*.commit"))
    _rewrite_document(record, "KVIOCOMMIT", seq=5)
    assert_same_refusal(kvs, uri, "corrupt", record)


def test_names_in_commits_that_are_not_records(store):
    kvs, uri, _ = store
    good = assert_agree(kvs, uri)
    (record,) = glob.glob(os.path.join(uri, "_commits", "*.commit"))
    for name in ("2.commit", "00000000002.commit", ".tmp-abc-0000000002.commit"):
        shutil.copy(record, os.path.join(uri, "_commits", name))
    assert assert_agree(kvs, uri) == good


def test_deleted_store_record(store):
    """§1.3: the null-version record delete_store writes before removing the directory."""
    kvs, uri, _ = store
    (record,) = glob.glob(os.path.join(uri, "_commits", "*.commit"))
    with open(record, "rb") as f:
        doc = envelope.decode("KVIOCOMMIT", f.read())
    later = os.path.join(uri, "_commits", "0000000002.commit")
    with open(later, "wb") as f:
        f.write(envelope.encode("KVIOCOMMIT", {**doc, "seq": 2, "version": None, "op": "delete",
                                               "job": None}))
    ours, theirs = kvio_outcome(kvs, uri), spec_outcome(uri)
    assert ours[0] == theirs[0] == "not-found"


def test_incomplete_and_not_a_store(kvs, tmp_path):
    marker_only = tmp_path / "incomplete"
    marker_only.mkdir()
    (marker_only / "_kvio_store").write_bytes(marker.encode())
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "data.txt").write_text("hello")
    for uri, kind in ((marker_only, "incomplete"), (plain, "not-a-store"),
                      (tmp_path / "absent", "not-found")):
        assert kvio_outcome(kvs, str(uri))[0] == spec_outcome(str(uri))[0] == kind


def test_manifest_rules(store):
    kvs, uri, part = store
    (manifest,) = glob.glob(os.path.join(uri, "_versions", "*", "manifest.kvm"))
    with open(manifest, "rb") as f:
        original = f.read()
    doc = envelope.decode("KVIOMANIFEST", original)
    entry = doc["partitions"][0]
    assert entry["max_key"] != entry["max_key"].upper()
    for partitions in ([{**entry, "max_key": entry["max_key"].upper()}],       # hex case
                       [entry, {**entry, "path": "carried/00000-x.kvp"}]):      # false disjoint
        with open(manifest, "wb") as f:
            f.write(envelope.encode("KVIOMANIFEST", {**doc, "partitions": partitions}))
        ours, theirs = kvio_outcome(kvs, uri), spec_outcome(uri)
        assert ours == theirs == ("corrupt", "manifest.kvm"), (partitions, ours, theirs)


def test_padding_byte(store):
    """Reads never use padding; verification (§4) checks it."""
    kvs, uri, part = store
    p = spec_reader.Partition(part)
    end = next(p.offset[b] + p.stored[b] for b in range(len(p.offset))
               if (p.offset[b] + p.stored[b]) % 8)
    patch(part, end, b"\x01")
    assert_same_refusal(kvs, uri, "corrupt", part)
    with kvs.open_store(uri) as reader:
        assert len(list(reader.items())) == 200  # only verify notices


def test_every_flipped_byte_gets_the_same_verdict(store):
    """A sweep over one partition file: for each damaged byte both readers either refuse with
    the same kind of error naming the same file, or both return exactly the right data."""
    kvs, uri, part = store
    good = assert_agree(kvs, uri)
    with open(part, "rb") as f:
        original = f.read()
    p = spec_reader.Partition(part)
    footer = p.index_offset + 16 * p.total_slots
    # every header and trailer byte, a third of the footer, every 23rd byte of blocks and index
    positions = set(range(0, 16)) | set(range(len(original) - 48, len(original))) \
        | set(range(footer, len(original), 3)) | set(range(16, footer, 23))
    refused = 0
    for pos in sorted(positions):
        patch(part, pos, bytes([original[pos] ^ (0xFF if pos % 2 else 0x01)]))
        try:
            ours, theirs = kvio_outcome(kvs, uri), spec_outcome(uri)
            assert ours == theirs, (pos, ours, theirs)
            if isinstance(ours[0], str):
                assert ours == ("corrupt", os.path.basename(part)) or ours[0] == "unsupported", pos
                refused += 1
            else:
                assert ours[0] == good
        finally:
            patch(part, pos, original[pos:pos + 1])
    assert refused == len(positions)  # every byte of a partition file is checked by verify
