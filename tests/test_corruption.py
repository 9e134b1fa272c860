"""Damaged stores on disk: every read either raises CorruptStoreError naming the damaged file or
returns exactly the right answer, never a wrong value."""
from __future__ import annotations

import glob
import os
from contextlib import contextmanager

import pytest

from kvio import CorruptStoreError

from .helpers import key4, parse_partition, write_store

CODECS = ["none", "zstd", "lz4"]
PAIRS = [(key4(i * 3), (b"value %d " % i) * (i % 9)) for i in range(400)]
MODEL = dict(PAIRS)
ABSENT = [key4(i * 3 + 1) for i in range(0, 400, 13)] + [b"", b"\xff\xff\xff\xff\xff"]


@pytest.fixture(params=CODECS)
def damaged_store(request, make_kvs, tmp_path):
    """A store of several partitions of several blocks: (kvs, uri, partition paths)."""
    return _store(make_kvs, tmp_path, request.param)


@pytest.fixture
def plain_store(make_kvs, tmp_path):
    return _store(make_kvs, tmp_path, "none")


def _store(make_kvs, tmp_path, codec):
    kvs = make_kvs({"kvio.block.compression": codec, "kvio.block.size": "512B",
                    "kvio.partition.size.max": "16KB"})
    uri = str(tmp_path / "store")
    write_store(kvs, uri, PAIRS)
    with kvs.open_store(uri) as reader:
        version = reader.version
        parts = [os.path.join(uri, "_versions", version, p.path) for p in reader.manifest.partitions]
    assert len(parts) >= 2
    return kvs, uri, parts


class Flipped:
    """Change bytes of a file in place for the duration of a ``with`` block."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as f:
            self.original = f.read()

    @contextmanager
    def flip(self, pos: int, mask: int = 0xFF):
        # One byte rewritten in place (no truncation, which makes ext4 flush the file on close)
        self._write_at(pos, bytes([self.original[pos] ^ mask]))
        try:
            yield
        finally:
            self._write_at(pos, self.original[pos:pos + 1])

    @contextmanager
    def replace(self, data: bytes):
        with open(self.path, "wb") as f:
            f.write(data)
        try:
            yield
        finally:
            with open(self.path, "wb") as f:
                f.write(self.original)

    def _write_at(self, pos: int, data: bytes) -> None:
        with open(self.path, "r+b") as f:
            f.seek(pos)
            f.write(data)


def check_reads(kvs, uri: str, damaged: str) -> bool:
    """Open and read everything; every outcome must be the right answer or a CorruptStoreError
    that names the store and the damaged file. Returns whether anything raised."""
    def named(exc: CorruptStoreError) -> None:
        assert exc.file is not None and os.path.basename(exc.file) == os.path.basename(damaged), str(exc)
        assert exc.file in str(exc) and uri in str(exc)

    try:
        reader = kvs.open_store(uri)
    except CorruptStoreError as exc:
        named(exc)
        return True
    raised = False
    with reader:
        for k, v in PAIRS:
            try:
                assert reader.get(k) == v, k
            except CorruptStoreError as exc:
                named(exc)
                raised = True
        for k in ABSENT:
            try:
                assert reader.get(k) is None and k not in reader
            except CorruptStoreError as exc:
                named(exc)
                raised = True
        operations = [
            (lambda: list(reader.items()), sorted(MODEL.items())),
            (lambda: list(reader.items(key4(100), key4(700))),
             [p for p in PAIRS if key4(100) <= p[0] < key4(700)]),
            (lambda: reader.get_many([k for k, _ in PAIRS[::7]]), [v for _, v in PAIRS[::7]]),
            (lambda: len(reader), len(MODEL)),
        ]
        for op, expected in operations:
            try:
                assert op() == expected
            except CorruptStoreError as exc:
                named(exc)
                raised = True
    return raised


def _positions(layout, sweep: int | None) -> list[tuple[str, int]]:
    """First, middle and last byte of every region, plus every ``sweep``-th byte of the file."""
    out = []
    for name, lo, hi in layout.regions:
        out += [(name, lo), (name, (lo + hi) // 2), (name, hi - 1)]
    if sweep:
        out += [("sweep", pos) for pos in range(0, layout.size, sweep)]
    return out


def test_flipped_byte_in_every_region_of_a_partition(damaged_store):
    kvs, uri, parts = damaged_store
    for path in (parts[0], parts[-1]):
        flipped = Flipped(path)
        layout = parse_partition(flipped.original)
        assert path != parts[0] or layout.meta["blocks"] > 3
        detected = set()
        for region, pos in _positions(layout, sweep=97 if path == parts[0] else None):
            with flipped.flip(pos, 0xFF if pos % 2 else 0x01):
                if check_reads(kvs, uri, path):
                    detected.add(region.split(" ")[0])
        assert {"header", "block", "index", "footer", "trailer"} <= detected
    assert check_reads(kvs, uri, parts[0]) is False  # restored


@pytest.mark.parametrize("name", ["manifest", "commit"])
def test_flipped_byte_in_manifest_and_commit_record(plain_store, name):
    kvs, uri, parts = plain_store
    pattern = "_versions/*/manifest.kvm" if name == "manifest" else "_commits/*.commit"
    (path,) = glob.glob(os.path.join(uri, pattern))
    flipped = Flipped(path)
    for pos in range(len(flipped.original)):
        mask = (0x01, 0x80, 0xFF)[pos % 3]
        with flipped.flip(pos, mask):
            assert check_reads(kvs, uri, path), (pos, mask)


def test_truncated_partition(damaged_store):
    kvs, uri, parts = damaged_store
    flipped = Flipped(parts[1] if len(parts) > 2 else parts[0])
    size = len(flipped.original)
    for length in (0, 1, 15, 16, 47, 48, 100, size // 2, size - 48, size - 1):
        with flipped.replace(flipped.original[:length]):
            with pytest.raises(CorruptStoreError) as exc:
                kvs.open_store(uri)
            assert os.path.basename(exc.value.file) == os.path.basename(flipped.path)
            assert str(size) in str(exc.value)


def test_partition_with_extra_bytes_damaged_run_or_replaced(damaged_store, tmp_path):
    kvs, uri, parts = damaged_store
    flipped = Flipped(parts[0])
    with flipped.replace(flipped.original + b"\x00" * 8):
        with pytest.raises(CorruptStoreError):
            kvs.open_store(uri)
    layout = parse_partition(flipped.original)
    lo = layout.block_offset[1]
    with flipped.replace(flipped.original[:lo] + bytes(64) + flipped.original[lo + 64:]):
        assert check_reads(kvs, uri, parts[0])


def test_partition_replaced_by_a_valid_file_of_another_store(damaged_store, tmp_path):
    """Same keys, values of the same lengths, same settings: a well-formed file (for uncompressed
    stores of exactly the same size) that is not the one the manifest names."""
    kvs, uri, parts = damaged_store
    twin = str(tmp_path / "twin")
    write_store(kvs, twin, [(k, v.upper()) for k, v in PAIRS])
    with kvs.open_store(twin) as reader:
        entry = reader.manifest.partitions[0]
        foreign = os.path.join(twin, "_versions", reader.version, entry.path)
    flipped = Flipped(parts[0])
    with open(foreign, "rb") as f:
        with flipped.replace(f.read()):
            with pytest.raises(CorruptStoreError, match="manifest") as exc:
                kvs.open_store(uri)
            assert os.path.basename(exc.value.file) == os.path.basename(parts[0])


def test_missing_partition_file(damaged_store):
    kvs, uri, parts = damaged_store
    os.remove(parts[-1])
    with pytest.raises(CorruptStoreError) as exc:
        kvs.open_store(uri)
    assert os.path.basename(exc.value.file) == os.path.basename(parts[-1])


def test_missing_manifest(damaged_store):
    kvs, uri, parts = damaged_store
    (manifest,) = glob.glob(os.path.join(uri, "_versions", "*", "manifest.kvm"))
    os.remove(manifest)
    with pytest.raises(CorruptStoreError) as exc:
        kvs.open_store(uri)
    assert exc.value.file.endswith("manifest.kvm") and uri in str(exc.value)


def test_verify_reports_a_damaged_block(damaged_store):
    kvs, uri, parts = damaged_store
    flipped = Flipped(parts[-1])
    layout = parse_partition(flipped.original)
    with flipped.flip(layout.block_offset[-1] + 5):
        with kvs.open_store(uri) as reader:
            with pytest.raises(CorruptStoreError) as exc:
                reader.verify()
            assert os.path.basename(exc.value.file) == os.path.basename(parts[-1])
    with kvs.open_store(uri) as reader:
        reader.verify()
