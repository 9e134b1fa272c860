"""The small files of a store (docs/FORMAT.md §1, §2): document header lines, the marker,
commit record names and bodies, and that ``kvio verify`` checks what opening does not read."""
from __future__ import annotations

import glob
import json
import os

import pytest

from kvio import CorruptStoreError, UnsupportedFormatError
from kvio.cli import main
from kvio.format import envelope, marker
from kvio.format.spec import HEADER, checksum
from kvio.layout import is_version_name, parse_commit_name

from ..helpers import write_store


def _document(kind: bytes, version: bytes, digest: bytes, body: bytes) -> bytes:
    return kind + b" " + version + b" " + digest + b"\n" + body


@pytest.mark.parametrize("version, upper", [(b"01", False), (b"+1", False), (b"1", True)])
def test_document_header_line_is_exact(version, upper):
    """Writers write ``KIND 1 <16 lowercase hex>``; a reader accepts nothing else (before:
    a leading zero, a sign and upper-case hex were accepted)."""
    body = b'{"a":1}'
    hexsum = b"%016x" % checksum(body)
    assert envelope.decode("KVIOTEST", _document(b"KVIOTEST", b"1", hexsum, body))
    damaged = _document(b"KVIOTEST", version, hexsum.upper() if upper else hexsum, body)
    with pytest.raises(CorruptStoreError) as exc:
        envelope.decode("KVIOTEST", damaged, file="d")
    assert not isinstance(exc.value, UnsupportedFormatError) and exc.value.file == "d"


def test_document_checks_come_in_the_spec_order():
    """Kind, then version (UnsupportedFormatError), then checksum (docs/FORMAT.md §2.1)."""
    body = b'{"a":1}'
    bad_sum = b"0" * 16
    with pytest.raises(CorruptStoreError, match="not a KVIOTEST"):
        envelope.decode("KVIOTEST", _document(b"KVIOOTHER", b"7", bad_sum, body))
    with pytest.raises(UnsupportedFormatError):
        envelope.decode("KVIOTEST", _document(b"KVIOTEST", b"7", bad_sum, body))


def test_marker_content_is_fixed():
    blob = marker.encode()
    assert blob == b'KVIOSTORE 1 c9702a3346c96121\n{"format":"kvio-store"}' and len(blob) == 52
    marker.check(blob)
    marker.check(envelope.encode("KVIOSTORE", {"format": "kvio-store", "later": 1}))  # additive
    for bad in (envelope.encode("KVIOSTORE", {"format": "parquet"}),
                envelope.encode("KVIOSTORE", {}),
                envelope.encode("KVIOCOMMIT", {"format": "kvio-store"}),
                blob.replace(b"store", b"stork"), b""):
        with pytest.raises(CorruptStoreError) as exc:
            marker.check(bad, store="s", file="s/_kvio_store")
        assert exc.value.file == "s/_kvio_store"


@pytest.mark.parametrize("name, seq", [
    ("0000000001.commit", 1), ("9999999999.commit", 9999999999), ("0000000000.commit", 0),
    ("1.commit", None), ("00000000001.commit", None), (".tmp-0a1b-0000000002.commit", None),
    ("0000000001.commit.bak", None), ("000000000\u00b2.commit", None),
    ("000000000\u0663.commit", None), ("0000000001.COMMIT", None), ("0000000001", None),
])
def test_commit_names(name, seq):
    """Exactly ten ASCII digits and ``.commit``; every other name in ``_commits/`` is ignored
    (before: any run of Unicode digits was taken, and a superscript digit crashed int())."""
    assert parse_commit_name(name) == seq


@pytest.mark.parametrize("name, ok", [
    ("20261203T163424Z-e2856af50aa9", True), ("v1", True), ("", False), (".", False),
    ("..", False), ("a/b", False), ("../x", False), ("a\\b", False), (None, False), (7, False),
])
def test_version_names(name, ok):
    assert is_version_name(name) is ok


# ---- on a real store ------------------------------------------------------------------------
@pytest.fixture
def store(kvs, tmp_path) -> str:
    uri = str(tmp_path / "store")
    write_store(kvs, uri, [(b"k%03d" % i, b"v%d" % i) for i in range(50)])
    return uri


def _rewrite_commit(path: str, **changes) -> None:
    """Rewrite a commit record with a valid checksum (as a buggy or hostile writer would)."""
    with open(path, "rb") as f:
        doc = envelope.decode("KVIOCOMMIT", f.read())
    doc.update(changes)
    with open(path, "wb") as f:
        f.write(envelope.encode("KVIOCOMMIT", doc))


def test_commit_record_seq_must_equal_its_name(kvs, store):
    """A record whose body names another seq than its file is corrupt (before: accepted)."""
    (path,) = glob.glob(os.path.join(store, "_commits", "*.commit"))
    _rewrite_commit(path, seq=2)
    with pytest.raises(CorruptStoreError, match="seq") as exc:
        kvs.open_store(store)
    assert exc.value.file.endswith("0000000001.commit")
    _rewrite_commit(path, seq=True)  # JSON true is not the number 1
    with pytest.raises(CorruptStoreError, match="seq"):
        kvs.open_store(store)


def test_commit_record_version_must_be_a_directory_name(kvs, store):
    (path,) = glob.glob(os.path.join(store, "_commits", "*.commit"))
    _rewrite_commit(path, version="../../elsewhere")
    with pytest.raises(CorruptStoreError, match="invalid version"):
        kvs.open_store(store)


def test_names_readers_ignore_in_commits(kvs, store):
    """A later-numbered file that is not a record name does not become the current state."""
    commits = os.path.join(store, "_commits")
    with kvs.open_store(store) as reader:
        version = reader.version
    for name in ("9.commit", "0000000009.commit.tmp", ".tmp-x-0000000009.commit", "README"):
        with open(os.path.join(commits, name), "wb") as f:
            f.write(b"junk")
    with kvs.open_store(store) as reader:
        assert reader.version == version and len(reader) == 50


def _verify(capsys, uri: str) -> tuple[int, str, str]:
    code = main(["verify", uri])
    out, err = capsys.readouterr()
    return code, out, err


def test_verify_checks_the_marker(store, capsys):
    """A damaged or missing marker fails ``kvio verify``, naming the marker (before: passed)."""
    path = os.path.join(store, "_kvio_store")
    with open(path, "rb") as f:
        original = f.read()
    assert _verify(capsys, store)[0] == 0
    for damaged in (original.replace(b"kvio-store", b"kvio-stork"), original[:-1],
                    bytes([original[0] ^ 0x20]) + original[1:]):
        with open(path, "wb") as f:
            f.write(damaged)
        code, out, err = _verify(capsys, store)
        assert code == 1 and "_kvio_store" in out and "kvio: error:" in err, (damaged, out, err)
    os.remove(path)
    code, out, err = _verify(capsys, store)
    assert code == 1 and "_kvio_store" in out and "missing" in err


def test_verify_notices_a_flipped_flags_byte(store, capsys):
    """The header's flags have no checksum of their own; they must equal the trailer's
    (before: ``kvio verify`` passed with any flags byte)."""
    (part,) = glob.glob(os.path.join(store, "_versions", "*", "*", "*.kvp"))
    with open(part, "r+b") as f:
        f.seek(HEADER.size - 4)
        f.write(b"\x01")
    code, out, err = _verify(capsys, store)
    assert code == 1 and os.path.basename(part) in out and "flags" in err


def test_verify_json_names_the_marker(store, capsys):
    with open(os.path.join(store, "_kvio_store"), "ab") as f:
        f.write(b" ")
    assert main(["verify", "--json", store]) == 1
    out, _ = capsys.readouterr()
    result = json.loads(out.splitlines()[0])
    assert result["ok"] is False and result["file"].endswith("_kvio_store")
