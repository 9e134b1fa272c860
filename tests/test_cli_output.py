"""`kvio` output and argument checks, run in-process through ``main([...])`` on real files:
bulk escaping (same result as the per-character reference), output that tells every key apart
(default and --json), error messages instead of tracebacks, export destinations, and imports
that go through the external sort with spilled runs."""
from __future__ import annotations

import base64
import importlib
import json
import random
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvio import KeyValueSystem
from kvio.cli import escape, main
from kvio.cli.encoding import escape_pieces, json_field, preview

_NAMED = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def reference_escape(data: bytes) -> str:
    """The escape as specified, one character at a time (kvio's earlier implementation)."""
    out = []
    for ch in data.decode("utf-8", "surrogateescape"):
        if "\udc80" <= ch <= "\udcff":
            out.append(f"\\x{ord(ch) - 0xDC00:02x}")
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8"))
    return "".join(out)


def unescape(text: str) -> bytes:
    """Read escaped output back: \\\\, \\t, \\n, \\r, \\xNN, other characters as UTF-8."""
    out, i = bytearray(), 0
    while i < len(text):
        if text[i] != "\\":
            out += text[i].encode()
            i += 1
        elif text[i + 1] == "x":
            out.append(int(text[i + 2:i + 4], 16))
            i += 4
        else:
            out += {"\\": b"\\", "t": b"\t", "n": b"\n", "r": b"\r"}[text[i + 1]]
            i += 2
    return bytes(out)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def make_store(uri, pairs: dict[bytes, bytes], conf: dict | None = None) -> str:
    with KeyValueSystem(conf=conf).create_store(str(uri)) as writer:
        writer.put_many(sorted(pairs.items()))
    return str(uri)


def read_store(uri) -> dict[bytes, bytes]:
    with KeyValueSystem().open_store(str(uri)) as reader:
        return dict(reader.items())


# ---- escaping --------------------------------------------------------------------------------
text_st = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
bytes_st = st.one_of(st.binary(max_size=60), text_st.map(lambda t: t.encode()),
                     st.lists(st.one_of(st.binary(max_size=4), text_st.map(lambda t: t.encode())),
                              max_size=8).map(b"".join))


@settings(max_examples=400, deadline=None)
@given(bytes_st)
def test_bulk_escape_equals_the_reference_and_reads_back(data):
    shown = escape(data)
    assert shown == reference_escape(data)
    assert unescape(shown) == data
    assert shown.isprintable() and "\t" not in shown


def test_escape_of_large_values_in_pieces_cuts_no_character():
    rng = random.Random(7)
    alphabet = ["é".encode(), "\u2028".encode(), "😀".encode(), "\U000e0001".encode(), b"\\",
                b"\t", b"\xff", b"\x80", b"a", "中".encode(), b"\xf0\x9f"]
    data = b"".join(rng.choice(alphabet) for _ in range(120_000))  # several 64 KB pieces
    assert "".join(escape_pieces(data)) == reference_escape(data) == escape(data)
    noise = bytes(rng.randrange(256) for _ in range(200_000))
    assert escape(noise) == reference_escape(noise)


def test_preview_encodes_only_the_start():
    assert preview(b"\xff" * 10_000_000, "auto") == ("\\xff" * 12)[:45] + "..."
    assert preview(b"short", "auto") == "short"
    assert preview(bytes(100), "hex", 10) == "0000000..."


def test_default_output_tells_the_escape_character_apart(tmp_path, capsys):
    """The one byte 0xff and the four characters \\xff print differently (issue 10 item 13)."""
    uri = make_store(tmp_path / "s", {b"\xff": b"byte", b"\\xff": b"text", b"\\": b"\\\\"})
    code, out, _ = run(capsys, "scan", uri)
    assert code == 0
    assert out.splitlines() == ["\\\\\t\\\\\\\\", "\\\\xff\ttext", "\\xff\tbyte"]
    lines = [line.split("\t") for line in out.splitlines()]
    assert {unescape(k): unescape(v) for k, v in lines} == read_store(uri)


def test_json_output_is_exact_for_any_bytes(tmp_path, capsys):
    hostile = [b"\xff", b"\\xff", b"", b"\x00", b"a\tb\n", "é".encode(), b"\xc3", b"\\"]
    pairs = {k: k + b"!" for k in hostile}
    uri = make_store(tmp_path / "s", pairs)
    code, out, _ = run(capsys, "scan", uri, "--json")
    assert code == 0
    docs = [json.loads(line) for line in out.splitlines()]

    def field(doc, name):
        if name in doc:
            return doc[name].encode()
        return base64.b64decode(doc[f"{name}_base64"])
    assert {field(d, "key"): field(d, "value") for d in docs} == pairs
    assert {"key_base64": "/w==", "value_base64": "/yE="} in docs
    assert {"key": "\\xff", "value": "\\xff!"} in docs
    code, out, err = run(capsys, "get", uri, "--json", "\\xff", "nope")
    assert code == 1 and "key not found: nope" in err
    assert [json.loads(line) for line in out.splitlines()] == [
        {"key": "\\xff", "value": "\\xff!"}, {"key": "nope", "value": None}]
    assert json_field("key", b"\xff", "hex") == {"key": "ff"}


def test_diff_shows_previews_of_large_values(tmp_path, capsys):
    a = make_store(tmp_path / "a", {b"k": b"\x00" * 3_000_000})
    b = make_store(tmp_path / "b", {b"k": b"\x01" * 3_000_000})
    code, out, _ = run(capsys, "diff", a, b)
    assert code == 1
    first = out.splitlines()[0]
    assert first.startswith("value differs: k  (A: \\x00\\x00") and "[3000000 B]" in first
    assert len(first) < 200


# ---- errors instead of tracebacks ----------------------------------------------------------------
@pytest.fixture
def hide_packages(monkeypatch):
    """Make fsspec's filesystem packages look uninstalled: ``import s3fs`` fails (a None entry
    in sys.modules) and fsspec forgets the classes it already loaded, so the test runs whether
    or not the packages are installed (s3fs is, in the dev environment)."""
    def hide(*packages: str) -> None:
        for package in packages:
            monkeypatch.setitem(sys.modules, package, None)
        registry = importlib.import_module("fsspec.registry")  # fsspec.registry is a mapping
        for protocol, spec in registry.known_implementations.items():
            if spec.get("class", "").split(".")[0] in packages:
                monkeypatch.delitem(registry._registry, protocol, raising=False)
    return hide


@pytest.mark.parametrize("uri, message", [
    ("bogus://x/store", "unknown protocol 'bogus://'"),
    ("gs://bucket/store", "pip install gcsfs"),
    ("s3://bucket/store", "pip install s3fs"),
    ("simplecache::gs://bucket/store", "pip install gcsfs"),
])
def test_unknown_or_uninstalled_protocols_are_clear_errors(tmp_path, capsys, hide_packages, uri,
                                                           message):
    hide_packages("s3fs", "gcsfs")
    for argv in (["info", uri], ["scan", uri], ["import", tmp_path / "in.tsv", uri],
                 ["export", tmp_path / "s", uri.replace("store", "out.tsv")], ["diff", uri, uri]):
        (tmp_path / "in.tsv").write_text("a\t1\n")
        code, out, err = run(capsys, *argv)
        assert (code, out) == (1, ""), argv
        assert err.startswith("kvio: error: ") and message in err and err.count("\n") == 1, err


# ---- export destinations ---------------------------------------------------------------------
def test_export_refuses_a_directory_or_a_path_inside_a_store(tmp_path, capsys):
    """Issue 10 item 4: exporting "into" a directory used to leave the data in a hidden temp
    file inside it."""
    uri = make_store(tmp_path / "s", {b"a": b"1"})
    folder = tmp_path / "out"
    folder.mkdir()
    for dest in (folder, f"{folder}/", uri):
        code, out, err = run(capsys, "export", uri, dest, "--format", "tsv")
        assert (code, out) == (1, "")
        assert "is a directory; name the output file, e.g. " in err
    code, _, err = run(capsys, "export", uri, f"{uri}/dump.tsv")
    assert code == 1 and "inside a kvio store directory" in err
    assert list(folder.iterdir()) == []
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == \
        sorted(["_commits", "_kvio_store", "_staging", "_versions"])
    assert run(capsys, "export", uri, folder / "a.tsv")[0] == 0
    assert (folder / "a.tsv").read_text() == "a\t1\n"


def test_input_and_output_files_with_colons_are_plain_paths(tmp_path, capsys, monkeypatch):
    """`a::b.tsv` is that file, not an fsspec chain writing to `./a:` (issue 10 item 2, for
    the CLI's own files)."""
    monkeypatch.chdir(tmp_path)
    uri = make_store(tmp_path / "s", {b"a": b"1"})
    assert run(capsys, "export", uri, "out::1.tsv")[0] == 0
    assert run(capsys, "import", "out::1.tsv", "t::1")[0] == 0
    assert (tmp_path / "out::1.tsv").read_text() == "a\t1\n"
    assert read_store(tmp_path / "t::1") == {b"a": b"1"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out::1.tsv", "s", "t::1"]


@pytest.mark.parametrize("flag", ["--hex", "--base64"])
def test_export_refuses_hex_or_base64_with_parquet(tmp_path, capsys, flag):
    uri = make_store(tmp_path / "s", {b"a": b"1"})
    code, out, err = run(capsys, "export", uri, tmp_path / "out.parquet", flag)
    assert (code, out) == (2, "")
    assert "--hex/--base64 apply to tsv and jsonl output only" in err
    assert not (tmp_path / "out.parquet").exists()


# ---- import through the external sort ------------------------------------------------------
@pytest.mark.parametrize("policy", ["first", "last", "error"])
def test_import_duplicates_across_spilled_runs(tmp_path, capsys, policy):
    """With a 64KB sort budget the input is sorted in many spilled runs; equal keys that land
    in different runs still resolve in input order."""
    rng = random.Random(11)
    lines = [(b"key%05d" % rng.randrange(4000), b"%06d" % i + b"." * 40) for i in range(30_000)]
    src = tmp_path / "in.tsv"
    src.write_bytes(b"".join(k + b"\t" + v + b"\n" for k, v in lines))
    uri = tmp_path / "s"
    code, out, err = run(capsys, "--conf", "kvio.sort.memory=64KB", "import", src, uri,
                         "--duplicates", policy, "--json")
    if policy == "error":
        assert (code, out) == (1, "")
        assert "duplicate key" in err and "--duplicates first" in err
        assert not uri.exists()  # a failed first import leaves no store behind
        return
    assert code == 0, err
    expected: dict[bytes, bytes] = {}
    for k, v in lines:
        if policy == "last" or k not in expected:
            expected[k] = v
    result = json.loads(out)
    assert result["input_sorted"] is False
    assert result["duplicates_dropped"] == len(lines) - len(expected)
    assert read_store(uri) == expected


def test_import_parquet_streams_in_batches_and_checks_columns(tmp_path, capsys):
    src = tmp_path / "in.parquet"
    keys = [b"k%05d" % ((i * 7) % 20_000) for i in range(20_000)]
    pq.write_table(pa.table({"id": pa.array(keys, pa.binary()),
                             "payload": pa.array([b"v" * 300] * 20_000, pa.binary())}), src,
                   row_group_size=5000)
    code, _, err = run(capsys, "import", src, tmp_path / "s")
    assert code == 1 and "no column 'key'" in err and "--key-col" in err
    code, out, err = run(capsys, "--conf", "kvio.sort.memory=1MB", "import", src, tmp_path / "s",
                         "--key-col", "id", "--value-col", "payload")
    assert code == 0, err
    assert "kvio sorted it" in out
    assert list(read_store(tmp_path / "s")) == sorted(keys)
