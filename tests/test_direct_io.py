"""Partition files written past the page cache (kvio/direct_io.py, ``kvio.write.direct``)."""
from __future__ import annotations

import errno
import os

import pytest

import kvio
from kvio import direct_io
from kvio.cli import main
from kvio.config import Config
from kvio.direct_io import BUFFER_BYTES, DirectFile, open_new
from kvio.errors import ConfigError

SIZES = [0, 1, 4095, 4096, 4097, BUFFER_BYTES - 1, BUFFER_BYTES, BUFFER_BYTES + 1,
         3 * BUFFER_BYTES + 12345]


def direct_supported(path) -> bool:
    probe = open_new(str(path), True)
    probe.close()
    os.unlink(path)
    return isinstance(probe, DirectFile)


@pytest.mark.parametrize("size", SIZES)
def test_bytes_arrive_exactly_in_any_piece_sizes(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "f"
    out = open_new(str(path), True)
    pieces = [data[i:i + 70001] for i in range(0, size, 70001)]
    out.writelines(pieces[:1])
    for piece in pieces[1:]:
        assert out.write(memoryview(piece)) == len(piece)
    if isinstance(out, DirectFile):
        assert out.tell() == size
        out.fsync()
        with pytest.raises(ValueError, match="after fsync"):
            out.write(b"x")
    out.close()
    assert path.read_bytes() == data


def test_direct_is_used_here_and_an_existing_file_is_never_replaced(tmp_path):
    """CI's temp directory is on ext4, which has O_DIRECT: the direct path really runs."""
    if os.environ.get("CI") and hasattr(os, "O_DIRECT"):
        assert direct_supported(tmp_path / "probe")
    (tmp_path / "taken").write_bytes(b"keep")
    for direct in (True, False):
        with pytest.raises(FileExistsError):
            open_new(str(tmp_path / "taken"), direct)
    assert (tmp_path / "taken").read_bytes() == b"keep"
    plain = open_new(str(tmp_path / "plain"), False)
    plain.close()
    assert not isinstance(plain, DirectFile)


def test_a_refused_alignment_falls_back_to_ordinary_writes(tmp_path, monkeypatch):
    """EINVAL from a direct write (a filesystem with stricter alignment): O_DIRECT is turned
    off on the descriptor and the same bytes are written the ordinary way."""
    real_write = os.write
    refused = []

    def write(fd, data):
        if not refused:
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(direct_io.os, "write", write)
    data = os.urandom(2 * BUFFER_BYTES + 777)
    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    out = DirectFile(fd, str(path))
    out.write(data)
    out.fsync()
    out.close()
    assert refused and path.read_bytes() == data


@pytest.fixture
def full_disk_file(tmp_path, monkeypatch):
    """A new DirectFile whose every write to the device fails with ENOSPC."""
    def write(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(direct_io.os, "write", write)
    path = tmp_path / "f"
    return DirectFile(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL), str(path))


def test_a_failed_background_write_is_raised_not_lost(full_disk_file):
    out = full_disk_file
    with pytest.raises(OSError, match="No space left"):
        out.write(os.urandom(2 * BUFFER_BYTES + 1))  # the second hand-off meets the first's error
        out.fsync()
    with pytest.raises(OSError):
        out.close()  # the write still queued failed too
    assert out.closed


def test_a_failed_background_write_is_raised_by_fsync(full_disk_file):
    out = full_disk_file
    out.write(os.urandom(BUFFER_BYTES + 1))  # one buffer handed off, not waited for
    with pytest.raises(OSError, match="No space left"):
        out.fsync()
    out.close()
    assert out.closed


def test_setting_is_checked():
    assert Config().write_direct == "auto"
    with pytest.raises(ConfigError, match="kvio.write.direct must be"):
        Config({"kvio.write.direct": "sometimes"})


def test_imports_write_direct_by_default_other_writers_do_not(tmp_path, monkeypatch):
    supported = direct_supported(tmp_path / "probe")
    made = []
    real_init = DirectFile.__init__

    def spy(self, fd, path):
        made.append(path)
        real_init(self, fd, path)

    monkeypatch.setattr(DirectFile, "__init__", spy)
    source = tmp_path / "in.tsv"
    pairs = {b"k%06d" % i: b"v%d" % i for i in range(30_000)}
    source.write_bytes(b"".join(k + b"\t" + v + b"\n" for k, v in reversed(pairs.items())))
    uri = str(tmp_path / "imported")
    assert main(["import", str(source), uri]) == 0
    kvs = kvio.KeyValueSystem()
    with kvs.open_store(uri) as reader:
        reader.verify()
        assert dict(reader.items()) == pairs
    if supported:
        assert made and all(p.startswith(uri) for p in made)
    made.clear()
    with kvs.create_store(str(tmp_path / "plain")) as writer:  # not a bulk import
        writer.put_many(sorted(pairs.items()))
    assert made == []
    off = str(tmp_path / "off")
    assert main(["--conf", "kvio.write.direct=false", "import", str(source), off]) == 0
    assert made == []
    with kvio.KeyValueSystem(conf={"kvio.write.direct": "true"}).create_store(
            str(tmp_path / "forced")) as writer:
        writer.put_many(sorted(pairs.items()))
    if supported:
        assert made
    with kvs.open_store(str(tmp_path / "forced")) as reader:
        reader.verify()
        assert dict(reader.items()) == pairs
