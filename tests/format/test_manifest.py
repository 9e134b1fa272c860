"""Checksummed JSON documents (envelope) and the manifest built on them."""
from __future__ import annotations

import json

import pytest

from kvio import CorruptStoreError, UnsupportedFormatError
from kvio.format import envelope, manifest
from kvio.format.manifest import Manifest, PartitionEntry
from kvio.format.spec import checksum


def test_envelope_round_trip_and_header():
    blob = envelope.encode("KVIOTEST", {"b": [1, 2], "a": "x"})
    head, body = blob.split(b"\n", 1)
    assert head == b"KVIOTEST 1 %016x" % checksum(body)
    assert json.loads(body) == {"a": "x", "b": [1, 2]}
    assert envelope.decode("KVIOTEST", blob) == {"a": "x", "b": [1, 2]}


def test_envelope_every_flipped_byte_is_detected():
    blob = envelope.encode("KVIOTEST", {"version": "v1", "partitions": [{"path": "p", "count": 3}]})
    for pos in range(len(blob)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = bytearray(blob)
            damaged[pos] ^= mask
            try:
                doc = envelope.decode("KVIOTEST", bytes(damaged), store="s", file="f.kvm")
            except CorruptStoreError as exc:
                assert exc.file == "f.kvm" and "f.kvm" in str(exc)
            else:  # only a hex digit changing case keeps the same meaning
                assert doc == envelope.decode("KVIOTEST", blob), (pos, mask)


@pytest.mark.parametrize("blob, error", [
    (b"", CorruptStoreError),
    (b"KVIOTEST 1 0000000000000000", CorruptStoreError),            # no body separator
    (b"KVIOOTHER 1 0000000000000000\n{}", CorruptStoreError),       # another kind
    (b"KVIOTEST one 0000000000000000\n{}", CorruptStoreError),
    (b"KVIOTEST 1 0000000000000000 extra\n{}", CorruptStoreError),
])
def test_envelope_malformed(blob, error):
    with pytest.raises(error):
        envelope.decode("KVIOTEST", blob)


def test_envelope_truncated_or_extended():
    blob = envelope.encode("KVIOTEST", {"k": "v" * 50})
    for n in range(len(blob)):
        with pytest.raises(CorruptStoreError):
            envelope.decode("KVIOTEST", blob[:n])
    with pytest.raises(CorruptStoreError):
        envelope.decode("KVIOTEST", blob + b" ")


def test_envelope_unknown_version_and_non_object_body():
    body = b'{"a":1}'
    with pytest.raises(UnsupportedFormatError, match="version 7"):
        envelope.decode("KVIOTEST", b"KVIOTEST 7 %016x\n" % checksum(body) + body)
    for body in (b"[1,2]", b"not json"):
        with pytest.raises(CorruptStoreError):
            envelope.decode("KVIOTEST", b"KVIOTEST 1 %016x\n" % checksum(body) + body)


def _part(path: str, lo: bytes | None, hi: bytes | None, count: int = 1) -> PartitionEntry:
    return PartitionEntry(path, count, lo, hi, 100, "00" * 8)


def test_build_detects_disjoint_ranges_in_unsigned_order():
    disjoint = Manifest.build("v", [_part("a/1", b"\x00", b"\x7f"), _part("a/2", b"\x80", b"\xff")], {})
    assert disjoint.disjoint is True and disjoint.count == 2
    touching = Manifest.build("v", [_part("a/1", b"a", b"m"), _part("a/2", b"m", b"z")], {})
    assert touching.disjoint is False and touching.count is None
    nested = Manifest.build("v", [_part("a/1", b"a", b"z"), _part("a/2", b"b", b"c")], {})
    assert nested.disjoint is False
    # ranges are compared as a whole, not in listed order; empty partitions do not count
    listed_backwards = Manifest.build("v", [_part("a/2", b"n", b"z"), _part("a/1", b"a", b"m"),
                                            _part("a/3", None, None, count=0)], {})
    assert listed_backwards.disjoint is True
    assert [p.path for p in listed_backwards.partitions] == ["a/2", "a/1", "a/3"]  # priority kept
    assert Manifest.build("v", [], {}).disjoint is True
    assert Manifest.build("v", [_part("a/1", b"a", b"z")], {}, count=5).count == 5


def test_key_range_of_live_and_empty_partitions():
    assert _part("a/1", b"", b"\xff").key_range() == (b"", b"\xff")  # the empty key is a key
    with pytest.raises(ValueError, match="a/2 is empty"):
        _part("a/2", None, None, count=0).key_range()


def test_manifest_round_trip():
    built = Manifest.build("v1", [_part("t/p.kvp", b"a", b"b")], {"compression": "none"})
    assert Manifest.decode(built.encode()) == built


def _raw(built: Manifest) -> dict:
    return built.to_json()


def _encode(doc: dict) -> bytes:
    return envelope.encode(manifest.KIND, doc)


@pytest.mark.parametrize("change", [
    {"path": "../escape.kvp"}, {"path": "/abs.kvp"}, {"path": "a/b/c.kvp"}, {"count": "3"},
    {"size": None}, {"min_key": "zz"}, {"footer_checksum": 5}, {"min_key": "6A"},
    {"min_key": "7a"}, {"count": True}, {"count": -1}, {"path": "a/../b.kvp"},
])
def test_manifest_with_bad_partition_entries_is_corrupt(change):
    doc = _raw(Manifest.build("v1", [_part("t/p.kvp", b"a", b"b")], {}))
    doc["partitions"][0].update(change)
    with pytest.raises(CorruptStoreError, match="malformed"):
        Manifest.decode(_encode(doc), store="s", file="m.kvm")


def test_manifest_missing_fields_is_corrupt():
    for field in ("partitions", "disjoint", "version"):
        doc = _raw(Manifest.build("v1", [], {}))
        del doc[field]
        with pytest.raises(CorruptStoreError):
            Manifest.decode(_encode(doc))


def test_manifest_claiming_disjoint_with_overlapping_ranges_is_corrupt():
    doc = _raw(Manifest.build("v1", [_part("t/1.kvp", b"a", b"m"), _part("t/2.kvp", b"c", b"z")], {}))
    assert doc["disjoint"] is False
    doc["disjoint"] = True  # a reader trusting it would binary-search and miss keys
    with pytest.raises(CorruptStoreError, match="overlap"):
        Manifest.decode(_encode(doc))


def test_tombstone_partitions_make_a_manifest_not_disjoint():
    """docs/FORMAT.md §3.8: a version with a tombstone file is never disjoint (readers must
    merge to drop deleted keys) and its count is not the sum of rows."""
    tomb = PartitionEntry("t/2.kvp", 1, b"x", b"x", 100, "0" * 16, tombstones=True)
    built = Manifest.build("v1", [_part("t/1.kvp", b"a", b"m"), tomb], {})
    assert built.disjoint is False and built.count is None
    doc = _raw(built)
    assert doc["partitions"][1]["tombstones"] is True and "tombstones" not in doc["partitions"][0]
    assert Manifest.decode(_encode(doc)).partitions[1].tombstones
    doc["disjoint"] = True
    with pytest.raises(CorruptStoreError, match="tombstones"):
        Manifest.decode(_encode(doc))
    doc["disjoint"] = False
    doc["partitions"][1]["tombstones"] = 1
    with pytest.raises(CorruptStoreError, match="tombstones"):
        Manifest.decode(_encode(doc))


def test_manifest_names_and_versions():
    ok = Manifest.build("v1", [_part("..foo/x.kvp", b"a", b"b")], {})  # a legal directory name
    assert Manifest.decode(ok.encode()).partitions[0].path == "..foo/x.kvp"
    twice = _raw(Manifest.build("v1", [_part("t/1.kvp", b"a", b"b"), _part("t/2.kvp", b"c", b"d")], {}))
    twice["partitions"][1]["path"] = "t/1.kvp"
    with pytest.raises(CorruptStoreError, match="twice"):
        Manifest.decode(_encode(twice))
    for change, error in (({"format": "other"}, CorruptStoreError),
                          ({"format_version": 99}, UnsupportedFormatError),
                          ({"routing": "hash"}, UnsupportedFormatError)):
        doc = _raw(Manifest.build("v1", [], {}))
        doc.update(change)
        with pytest.raises(error):
            Manifest.decode(_encode(doc))
