"""The typed commit record: parsed and validated once, on in-memory bytes."""
from __future__ import annotations

import json

import pytest

from kvio import CorruptStoreError, UnsupportedFormatError
from kvio.format import envelope
from kvio.format.commit_record import KIND, CommitRecord


def body(**fields) -> bytes:
    doc = {"seq": 3, "version": "20240101T000000Z-0123456789ab", "op": "overwrite",
           "job": "20240101T000000Z-0123456789ab", "time": 1.5, **fields}
    return envelope.encode(KIND, doc)


def test_round_trip_keeps_every_field():
    record = CommitRecord.create(7, "v-1", "rollback", "j-1", 12.25,
                                 {"mode": "overwrite", "partitions": 4, "source": "v-0",
                                  "damaged": [6], "future": {"x": 1}})
    assert (record.mode, record.partitions, record.source, record.damaged) == \
        ("overwrite", 4, "v-0", (6,))
    assert record.extra == {"future": {"x": 1}}
    decoded = CommitRecord.decode(record.encode(), 7, store="s", file="f")
    assert decoded == record
    assert decoded.to_json() == {"seq": 7, "version": "v-1", "op": "rollback", "job": "j-1",
                                 "time": 12.25, "mode": "overwrite", "partitions": 4,
                                 "source": "v-0", "damaged": [6], "future": {"x": 1}}


def test_a_delete_record_has_no_version_and_only_the_core_fields():
    record = CommitRecord.create(2, None, "delete", None, 5.0)
    assert not record.live
    assert json.loads(record.encode().split(b"\n", 1)[1]) == \
        {"job": None, "op": "delete", "seq": 2, "time": 5.0, "version": None}


def test_fields_of_records_written_before_the_typed_record_are_read():
    decoded = CommitRecord.decode(body(mode="error", partitions=1), 3)
    assert decoded.live and decoded.seq == 3 and decoded.op == "overwrite"
    assert decoded.mode == "error" and decoded.partitions == 1 and decoded.source is None


@pytest.mark.parametrize("fields, message", [
    ({"seq": 4}, "says seq 4, its file name says 3"),
    ({"seq": True}, "says seq True"),
    ({"version": "../x"}, "invalid version"),
    ({"version": 5}, "invalid version"),
    ({"op": 1}, "field op"),
    ({"time": True}, "field time"),
    ({"partitions": -1}, "field partitions"),
    ({"partitions": "2"}, "field partitions"),
    ({"source": "a/b"}, "field source"),
    ({"damaged": "2"}, "field damaged"),
    ({"damaged": [0]}, "field damaged"),
])
def test_malformed_records_are_corrupt(fields, message):
    with pytest.raises(CorruptStoreError, match=message) as info:
        CommitRecord.decode(body(**fields), 3, store="s", file="_commits/0000000003.commit")
    assert info.value.file == "_commits/0000000003.commit"
    assert not isinstance(info.value, UnsupportedFormatError)


def test_a_flipped_byte_is_corrupt_and_an_unknown_format_version_is_unsupported():
    blob = bytearray(body())
    blob[-2] ^= 1
    with pytest.raises(CorruptStoreError, match="checksum"):
        CommitRecord.decode(bytes(blob), 3)
    newer = b"KVIOCOMMIT 3" + body()[len(b"KVIOCOMMIT 1"):]  # 2 is a transaction's record
    with pytest.raises(UnsupportedFormatError):
        CommitRecord.decode(newer, 3)


def test_a_transaction_record_is_version_2_and_round_trips():
    from kvio.format.txn_record import TxnRef
    ref = TxnRef("20260101T000000Z-0123456789ab", "/s/_txns/20260101T000000Z-0123456789ab.txn")
    record = CommitRecord.create(3, "20260101T000000Z-aaaaaaaaaaaa", "update", "j", 1.0,
                                 {"txn": ref})
    blob = record.encode()
    assert blob.startswith(b"KVIOCOMMIT 2 ")
    assert CommitRecord.decode(blob, 3) == record
    plain = CommitRecord.create(3, "20260101T000000Z-aaaaaaaaaaaa", "update", "j", 1.0)
    assert plain.encode().startswith(b"KVIOCOMMIT 1 ")
    # A txn field in a version 1 document, or version 2 without one, is malformed.
    from kvio.format import envelope
    with pytest.raises(CorruptStoreError, match="txn"):
        CommitRecord.decode(envelope.encode("KVIOCOMMIT", record.to_json()), 3)
    with pytest.raises(CorruptStoreError, match="txn"):
        CommitRecord.decode(envelope.encode("KVIOCOMMIT", plain.to_json(), 2), 3)
    with pytest.raises(CorruptStoreError, match="txn"):
        CommitRecord.decode(envelope.encode("KVIOCOMMIT", {**record.to_json(), "txn": 5}, 2), 3)
