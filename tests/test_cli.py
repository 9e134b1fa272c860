"""The ``kvio`` command, run in-process through ``main([...])`` on real temporary directories,
plus real ``python -m kvio`` subprocesses where process behaviour itself is under test."""
from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvio import KeyValueSystem, cli
from kvio.cli import display, escape, main

REPO = Path(__file__).resolve().parents[1]


# ---- helpers -----------------------------------------------------------------------------
def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def make_store(uri, pairs: dict[bytes, bytes], conf: dict | None = None) -> str:
    kvs = KeyValueSystem(conf=conf)
    with kvs.create_store(str(uri)) as writer:
        for key in sorted(pairs):
            writer.put(key, pairs[key])
    return str(uri)


def read_store(uri) -> dict[bytes, bytes]:
    with KeyValueSystem().open_store(str(uri)) as reader:
        return dict(reader.items())


def read_keys(uri) -> list[bytes]:
    with KeyValueSystem().open_store(str(uri)) as reader:
        return list(reader)


def hex_tsv(pairs) -> str:
    return "".join(f"{k.hex()}\t{v.hex()}\n" for k, v in pairs)


FRUIT = {b"apple": b"red", b"banana": b"yellow", b"cherry": b"dark red", b"date": b"brown"}


@pytest.fixture
def fruit(tmp_path) -> str:
    return make_store(tmp_path / "fruit", FRUIT)


# Keys chosen so signed and unsigned byte order disagree, with prefixes of each other, the
# empty key, NUL, 0xFF and TSV/line delimiters inside them.
HOSTILE = [b"\xff", b"\x80", b"\x7f", b"\x00", b"", b"\xff\x00", b"a\tb", b"line\nbreak",
           b"\x80\x00", b"\xfe\xff", b"z", b"\x00\x00", b"cr\r", b"\x81"]


# ---- encodings ---------------------------------------------------------------------------
def test_display_prints_clean_text_and_escapes_everything_else():
    assert display("héllo wörld".encode(), "auto") == "héllo wörld"
    assert display(b"a\tb\nc\rd\\", "auto") == "a\\tb\\nc\\rd\\\\"
    assert display(b"\x00\xff", "auto") == "\\x00\\xff"
    assert display(b"\xe2\x80\xa8", "auto") == "\\xe2\\x80\\xa8"  # U+2028 is not printable
    assert display(b"", "auto") == ""
    assert display(b"\x00\xff", "hex") == "00ff"
    assert display(b"\x00\xff", "base64") == "AP8="
    # The escape character itself is escaped: the text \xff and the byte 0xff differ.
    assert display(b"\\xff", "auto") == "\\\\xff"
    assert display(b"C:\\dir", "auto") == "C:\\\\dir"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40))
def test_escaped_display_is_always_one_printable_field(data):
    shown = display(data, "auto")
    assert shown.isprintable()
    assert "\t" not in shown and "\n" not in shown
    if shown != data.decode("utf-8", "replace"):
        assert shown == escape(data)


# ---- run-kv-test -------------------------------------------------------------------------
def test_run_kv_test_passes_and_removes_its_store(tmp_path, capsys):
    uri = tmp_path / "kv-test"
    code, out, err = run(capsys, "run-kv-test", uri)
    assert (code, out, err) == (0, "Passed the test!\n", "")
    assert not uri.exists()


def test_run_kv_test_default_uri_is_under_the_temp_dir(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code, out, _ = run(capsys, "run-kv-test")
    assert (code, out) == (0, "Passed the test!\n")
    assert list(tmp_path.iterdir()) == []


def test_run_kv_test_twice_in_a_row_as_a_real_command(tmp_path):
    uri = tmp_path / "same-uri"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-m", "kvio", "run-kv-test", str(uri)], env=env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == "Passed the test!\n"
        assert "Traceback" not in proc.stderr
        assert not uri.exists()


def _interrupt(*_args):
    raise KeyboardInterrupt  # Ctrl-C: the run stops where it is, without its own cleanup


def test_run_kv_test_replaces_a_store_left_by_an_interrupted_run(tmp_path, capsys, monkeypatch):
    uri = tmp_path / "leftover"
    # Interrupted after publishing, before deleting: a marked test store with one version.
    with monkeypatch.context() as m:
        m.setattr(cli.smoke, "_check_kv_test_store", _interrupt)
        assert run(capsys, "run-kv-test", uri)[0] == 130
    assert read_store(uri)[cli.smoke.kv_test_key(0)] == cli.smoke.kv_test_value(0)
    assert run(capsys, "run-kv-test", uri)[:2] == (0, "Passed the test!\n")
    assert not uri.exists()
    # Interrupted while writing: a marked store with no published version.
    with monkeypatch.context() as m:
        m.setattr(cli.smoke, "kv_test_value", lambda i: _interrupt() if i == 5 else b"v")
        assert run(capsys, "run-kv-test", uri)[0] == 130
    assert (uri / cli.smoke.KV_TEST_MARKER).exists()
    assert run(capsys, "run-kv-test", uri)[:2] == (0, "Passed the test!\n")
    assert not uri.exists()


def test_run_kv_test_never_touches_a_users_store(tmp_path, capsys):
    uri = make_store(tmp_path / "users", {b"user1": b"Japan"})
    with KeyValueSystem().create_store(uri, mode="append") as writer:
        writer.put(b"user2", b"USA")
    before = sorted((p.relative_to(uri), p.stat().st_ino) for p in Path(uri).rglob("*"))
    code, out, err = run(capsys, "run-kv-test", uri)
    assert (code, out) == (1, "")
    assert err.startswith("kvio: error: run-kv-test refuses to use this path: it holds a kvio "
                          "store that run-kv-test did not write") and uri in err
    assert "Traceback" not in err
    assert sorted((p.relative_to(uri), p.stat().st_ino) for p in Path(uri).rglob("*")) == before
    assert read_store(uri) == {b"user1": b"Japan", b"user2": b"USA"}


def test_run_kv_test_never_touches_a_test_store_someone_else_wrote_into(tmp_path, capsys,
                                                                         monkeypatch):
    uri = tmp_path / "kv-test"
    with monkeypatch.context() as m:
        m.setattr(cli.smoke, "_check_kv_test_store", _interrupt)
        assert run(capsys, "run-kv-test", uri)[0] == 130
    with KeyValueSystem().create_store(str(uri), mode="append") as writer:
        writer.put(b"\xff", b"someone's data")
    code, _, err = run(capsys, "run-kv-test", uri)
    assert code == 1 and "refuses to use this path" in err
    assert read_store(uri)[b"\xff"] == b"someone's data"
    # A marked store with a file of someone else's in it is not the test's either.
    kvs = KeyValueSystem()
    kvs.delete_store(str(uri))
    with monkeypatch.context() as m:
        m.setattr(cli.smoke, "_check_kv_test_store", _interrupt)
        assert run(capsys, "run-kv-test", uri)[0] == 130
    (uri / "notes.txt").write_text("mine")
    assert run(capsys, "run-kv-test", uri)[0] == 1
    assert (uri / "notes.txt").read_text() == "mine" and kvs.exists(str(uri))


def test_run_kv_test_never_deletes_a_directory_that_is_not_a_store(tmp_path, capsys):
    uri = tmp_path / "precious"
    uri.mkdir()
    (uri / "thesis.tex").write_text("years of work")
    code, out, err = run(capsys, "run-kv-test", uri)
    assert (code, out) == (1, "")
    assert err.startswith("kvio: error: run-kv-test refuses to use this path: it holds a "
                          "non-empty directory")
    assert (uri / "thesis.tex").read_text() == "years of work"
    assert [p.name for p in uri.iterdir()] == ["thesis.tex"]
    (tmp_path / "file").write_text("data")
    code, _, err = run(capsys, "run-kv-test", tmp_path / "file")
    assert code == 1 and "it holds a file" in err
    assert (tmp_path / "file").read_text() == "data"


def test_run_kv_test_uses_an_empty_directory_and_leaves_it_empty(tmp_path, capsys):
    uri = tmp_path / "empty"
    uri.mkdir()
    assert run(capsys, "run-kv-test", uri)[:2] == (0, "Passed the test!\n")
    assert uri.is_dir() and list(uri.iterdir()) == []


def test_run_kv_test_reports_a_failed_check_and_cleans_up(tmp_path, capsys, monkeypatch):
    # Partitions eight times larger than the test expects: every value lands in one file.
    monkeypatch.setattr(cli.smoke, "KV_TEST_CONF", {"kvio.partition.size.max": "8MB"})
    uri = tmp_path / "kv-test"
    code, out, err = run(capsys, "run-kv-test", uri)
    assert (code, out) == (1, "Failed the test!\n")
    assert "expected 10 partitions, found 1" in err
    assert not uri.exists()


def test_run_kv_test_removes_its_store_after_an_error_while_writing(tmp_path, capsys, monkeypatch):
    def value(i: int) -> bytes:
        if i == 5:
            raise RuntimeError("disk on fire")
        return b"v"
    monkeypatch.setattr(cli.smoke, "kv_test_value", value)
    uri = tmp_path / "kv-test"
    code, out, err = run(capsys, "run-kv-test", uri)
    assert (code, out) == (1, "Failed the test!\n") and "disk on fire" in err
    assert not uri.exists()


def test_run_kv_test_keeps_the_user_conf(tmp_path, capsys):
    # The values are incompressible, so a codec does not change the partition count.
    code, out, _ = run(capsys, "--conf", "kvio.block.compression=zstd", "run-kv-test", tmp_path / "z")
    assert (code, out) == (0, "Passed the test!\n")


# ---- info / get / scan ---------------------------------------------------------------------
def test_info_describes_partitions_and_versions(tmp_path, capsys):
    pairs = {bytes([i]) * 3: b"v" * 600 for i in range(0x61, 0x61 + 8)}
    uri = make_store(tmp_path / "s", pairs, conf={"kvio.partition.size.max": "2KB"})
    code, out, _ = run(capsys, "info", uri, "--json")
    info = json.loads(out)
    assert code == 0
    assert info["count"] == 8 and info["format_version"] == 1 and info["commit_seq"] == 1
    assert len(info["partitions"]) > 1
    assert sum(p["count"] for p in info["partitions"]) == 8
    assert sum(p["bytes"] for p in info["partitions"]) == info["bytes"]
    assert bytes.fromhex(info["partitions"][0]["min_key"]) == b"aaa"
    assert bytes.fromhex(info["partitions"][-1]["max_key"]) == b"hhh"

    code, out, _ = run(capsys, "info", uri)
    assert code == 0
    assert f"version:         {info['version']} (commit 1)" in out
    assert "format version:  1" in out
    assert "pairs:           8" in out
    assert f"partitions:      {len(info['partitions'])}" in out
    assert "aaa" in out and "hhh" in out


def test_get_prints_values_and_fails_at_the_end_for_missing_keys(fruit, capsys):
    assert run(capsys, "get", fruit, "banana", "apple") == (0, "yellow\nred\n", "")
    code, out, err = run(capsys, "get", fruit, "apple", "kiwi", "date")
    assert (code, out) == (1, "red\nbrown\n")
    assert err == "kvio: key not found: kiwi\n"
    code, out, _ = run(capsys, "get", fruit, "kiwi", "apple", "--json")
    assert code == 1
    assert [json.loads(line) for line in out.splitlines()] == [
        {"key": "kiwi", "value": None}, {"key": "apple", "value": "red"}]


def test_get_with_binary_keys_in_hex_and_base64(tmp_path, capsys):
    uri = make_store(tmp_path / "b", {b"\x00\xff": b"\x01\tvalue\n", b"\x80": b"\xfe"})
    assert run(capsys, "get", uri, "00ff") == (1, "", "kvio: key not found: 00ff\n")
    assert run(capsys, "--hex", "get", uri, "00ff", "80") == (0, "010976616c75650a\nfe\n", "")
    assert run(capsys, "get", uri, "AP8=", "--base64") == (0, "AQl2YWx1ZQo=\n", "")
    # Without an encoding, unprintable values are escaped so one value stays one line.
    assert run(capsys, "get", uri, "\udc80") == (0, "\\xfe\n", "")
    assert run(capsys, "--base64", "get", uri, "gA==")[1] == "/g==\n"


def test_get_takes_non_utf8_arguments_as_the_bytes_the_shell_passed(tmp_path, capsys):
    uri = make_store(tmp_path / "b", {b"\xff": b"found"})
    # Python hands a 0xFF byte in argv over as the surrogate U+DCFF.
    assert run(capsys, "get", uri, "\udcff") == (0, "found\n", "")


def test_scan_prints_pairs_in_order_with_bounds_and_limit(fruit, capsys):
    code, out, _ = run(capsys, "scan", fruit)
    assert code == 0
    assert out == "apple\tred\nbanana\tyellow\ncherry\tdark red\ndate\tbrown\n"
    code, out, _ = run(capsys, "scan", fruit, "--start", "b", "--stop", "d")
    assert out == "banana\tyellow\ncherry\tdark red\n"
    assert run(capsys, "scan", fruit, "--prefix", "ch")[1] == "cherry\tdark red\n"
    assert run(capsys, "scan", fruit, "--limit", "2")[1] == "apple\tred\nbanana\tyellow\n"
    assert run(capsys, "scan", fruit, "--start", "zzz")[:2] == (0, "")
    code, out, _ = run(capsys, "scan", fruit, "--limit", "1", "--json")
    assert json.loads(out) == {"key": "apple", "value": "red"}


def test_scan_escapes_and_encodes_binary_pairs(tmp_path, capsys):
    uri = make_store(tmp_path / "b", {b"\x00k": b"a\tb\nc", b"\xffk": "é".encode()})
    assert run(capsys, "scan", uri)[1] == "\\x00k\ta\\tb\\nc\n\\xffk\té\n"
    assert run(capsys, "scan", uri, "--hex", "--start", "ff")[1] == "ff6b\tc3a9\n"
    assert run(capsys, "scan", uri, "--base64", "--prefix", "AA==")[1] == "AGs=\tYQliCmM=\n"


# ---- import / export -----------------------------------------------------------------------
def test_import_sorts_hostile_keys_in_unsigned_byte_order_and_round_trips(tmp_path, capsys):
    pairs = [(k, b"value of " + k) for k in HOSTILE]  # deliberately unsorted
    src = tmp_path / "in.tsv"
    src.write_text(hex_tsv(pairs))
    uri = tmp_path / "s"
    code, out, _ = run(capsys, "import", src, uri, "--format", "tsv", "--hex")
    assert code == 0 and "imported 14 pairs" in out and "not in key order: kvio sorted it" in out
    # Python compares bytes unsigned, which is kvio's order: Arrow's sort must agree.
    assert read_keys(uri) == sorted(HOSTILE)
    assert read_store(uri) == dict(pairs)

    dest = tmp_path / "out.tsv"
    assert run(capsys, "export", uri, dest, "--hex")[0] == 0
    assert dest.read_text() == hex_tsv(sorted(pairs))
    b64 = tmp_path / "out.jsonl"
    assert run(capsys, "--base64", "export", uri, b64)[0] == 0
    docs = [json.loads(line) for line in b64.read_text().splitlines()]
    assert [(base64.b64decode(d["key"]), base64.b64decode(d["value"])) for d in docs] == sorted(pairs)

    # ... and every export reads back to the same store.
    for path, flags in ((dest, ["--hex"]), (b64, ["--base64"])):
        again = tmp_path / f"again-{path.suffix[1:]}"
        assert run(capsys, "import", path, again, *flags)[0] == 0
        assert run(capsys, "diff", uri, again) == (0, "stores are equal (14 pairs)\n", "")


def test_import_of_already_sorted_input_says_so(tmp_path, capsys):
    src = tmp_path / "in.tsv"
    src.write_text("a\t1\nb\t2\n")
    code, out, _ = run(capsys, "import", src, tmp_path / "s", "--json")
    result = json.loads(out)
    assert code == 0
    assert result["input_sorted"] is True and result["count"] == 2 and result["version"]


def test_plain_text_tsv_round_trip_keeps_utf8_backslashes_and_crlf_input(tmp_path, capsys):
    src = tmp_path / "in.tsv"
    src.write_bytes("wörd\tC:\\new\\dir\r\nempty\t\r\n\tempty key\r\n".encode())
    uri = tmp_path / "s"
    assert run(capsys, "import", src, uri)[0] == 0  # format from the suffix
    assert read_store(uri) == {"wörd".encode(): b"C:\\new\\dir", b"empty": b"", b"": b"empty key"}
    dest = tmp_path / "out.tsv"
    assert run(capsys, "export", uri, dest)[0] == 0
    assert dest.read_bytes() == "\tempty key\nempty\t\nwörd\tC:\\new\\dir\n".encode()


def test_import_jsonl_with_custom_fields_and_stdin(tmp_path, capsys, monkeypatch):
    lines = [{"k": "β", "v": "tab\there", "other": 1}, {"k": "α", "v": "line\nbreak"}]
    data = "".join(json.dumps(doc) + "\n" for doc in lines).encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    uri = tmp_path / "s"
    code, _, _ = run(capsys, "import", "-", uri, "--format", "jsonl", "--key-col", "k", "--value-col", "v")
    assert code == 0
    assert read_store(uri) == {"α".encode(): b"line\nbreak", "β".encode(): b"tab\there"}
    # JSON carries tabs and newlines, so a plain jsonl export is lossless.
    dest = tmp_path / "out.jsonl"
    assert run(capsys, "export", uri, dest)[0] == 0
    assert [json.loads(line) for line in dest.read_text(encoding="utf-8").splitlines()] == [
        {"key": "α", "value": "line\nbreak"}, {"key": "β", "value": "tab\there"}]


def test_parquet_import_and_export_use_binary_columns(tmp_path, capsys):
    src = tmp_path / "in.parquet"
    keys = [b"\xff\x00", b"\x00", b"mid"]
    pq.write_table(pa.table({"id": pa.array(keys, pa.binary()),
                             "payload": pa.array(["x", "y", "z"], pa.string()),
                             "ignored": [1, 2, 3]}), src)
    uri = tmp_path / "s"
    assert run(capsys, "import", src, uri, "--key-col", "id", "--value-col", "payload")[0] == 0
    assert read_store(uri) == {b"\xff\x00": b"x", b"\x00": b"y", b"mid": b"z"}

    dest = tmp_path / "out.parquet"
    code, out, _ = run(capsys, "export", uri, dest, "--start", "\x01")
    assert (code, out) == (0, f"exported 2 pairs from {uri} to {dest} (parquet)\n")
    table = pq.read_table(dest)
    assert table.column_names == ["key", "value"]
    assert pa.types.is_large_binary(table.schema.field("key").type)
    assert table.to_pydict() == {"key": [b"mid", b"\xff\x00"], "value": [b"z", b"x"]}


def test_export_of_an_empty_range_writes_a_valid_empty_file(fruit, tmp_path, capsys):
    dest = tmp_path / "none.parquet"
    assert run(capsys, "export", fruit, dest, "--prefix", "zzz")[0] == 0
    assert pq.read_table(dest).num_rows == 0


def test_export_bounds_and_stdout(fruit, capsys):
    code, out, _ = run(capsys, "export", fruit, "-", "--format", "tsv", "--prefix", "b")
    assert (code, out) == (0, "banana\tyellow\n")
    code, out, _ = run(capsys, "export", fruit, "-", "--format", "jsonl", "--start", "c", "--stop", "d")
    assert (code, out) == (0, '{"key": "cherry", "value": "dark red"}\n')


def test_plain_text_export_refuses_bytes_it_cannot_write_losslessly(tmp_path, capsys):
    uri = make_store(tmp_path / "b", {b"ok": b"fine", b"tab": b"a\tb", b"zz": b"\xff"})
    dest = tmp_path / "out.tsv"
    dest.write_text("an older export\n")
    code, out, err = run(capsys, "export", uri, dest)
    assert (code, out) == (1, "")
    assert err.startswith("kvio: error: value contains a tab") and "key=b'tab'" in err
    assert "--hex or --base64" in err
    # Nothing half-written: the older file is intact and no temporary file is left behind.
    assert dest.read_text() == "an older export\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "out.tsv"]
    code, _, err = run(capsys, "export", uri, tmp_path / "out.jsonl", "--prefix", "zz")
    assert code == 1 and "not valid UTF-8" in err and "key=b'zz'" in err


@pytest.mark.parametrize("policy, expected", [("first", b"1"), ("last", b"3")])
def test_import_duplicates_keep_first_or_last_in_input_order(tmp_path, capsys, policy, expected):
    src = tmp_path / "in.tsv"
    src.write_text("b\t1\na\tx\nb\t2\nc\ty\nb\t3\n")
    uri = tmp_path / "s"
    code, out, _ = run(capsys, "import", src, uri, "--duplicates", policy)
    assert code == 0 and "2 duplicate(s) dropped" in out
    assert read_store(uri) == {b"a": b"x", b"b": expected, b"c": b"y"}


def test_import_duplicates_error_names_the_key_and_writes_nothing(tmp_path, capsys):
    src = tmp_path / "in.tsv"
    src.write_text("x\t1\nsame\t1\ny\t2\nsame\t2\n")
    uri = tmp_path / "s"
    code, out, err = run(capsys, "import", src, uri)
    assert (code, out) == (1, "")
    assert err.startswith("kvio: error: duplicate key") and "key=b'same'" in err
    assert not uri.exists()


def test_import_modes_error_and_overwrite(fruit, tmp_path, capsys):
    src = tmp_path / "in.tsv"
    src.write_text("new\tdata\n")
    code, _, err = run(capsys, "import", src, fruit)
    assert code == 1 and "already exists" in err
    assert run(capsys, "import", src, fruit, "--mode", "overwrite")[0] == 0
    assert read_store(fruit) == {b"new": b"data"}


@pytest.mark.parametrize("content, flags, message", [
    ("a\t1\nb\t2\tthree\n", [], "line 2: expected key<TAB>value, found 3"),
    ("a\t1\nnotab\n", [], "line 2: expected key<TAB>value, found 1"),
    ("61\t31\nzz\t31\n", ["--hex"], "line 2:"),
    ("YQ==\t!!!\n", ["--base64"], "line 1: not valid base64"),
])
def test_import_reports_bad_tsv_lines(tmp_path, capsys, content, flags, message):
    src = tmp_path / "in.tsv"
    src.write_text(content)
    code, out, err = run(capsys, "import", src, tmp_path / "s", *flags)
    assert (code, out) == (1, "")
    assert err.startswith("kvio: error: ") and message in err and f"file={src}" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("line, message", [
    ("not json", "line 1: not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"key": "a", "value": 3}', "field 'value' must be a string, found int"),
    ('{"key": "a"}', "field 'value' must be a string, found NoneType"),
])
def test_import_reports_bad_jsonl_lines(tmp_path, capsys, line, message):
    src = tmp_path / "in.jsonl"
    src.write_text(line + "\n")
    code, _, err = run(capsys, "import", src, tmp_path / "s")
    assert code == 1 and message in err


def test_import_input_file_errors(tmp_path, capsys):
    code, _, err = run(capsys, "import", tmp_path / "missing.tsv", tmp_path / "s")
    assert code == 1 and err.startswith("kvio: error: ") and "missing.tsv" in err
    not_parquet = tmp_path / "x.parquet"
    not_parquet.write_text("hello")
    code, _, err = run(capsys, "import", not_parquet, tmp_path / "s")
    assert code == 1 and "cannot read Parquet input" in err
    ints = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"key": [1], "value": [2]}), ints)
    code, _, err = run(capsys, "import", ints, tmp_path / "s")
    assert code == 1 and "column 'key' has type int64" in err
    assert not (tmp_path / "s").exists()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.binary(max_size=6), st.binary(max_size=6)), max_size=30))
def test_hex_import_then_export_matches_python_sort_and_last_wins(capsys, pairs):
    with tempfile.TemporaryDirectory() as tmp:
        src, uri, dest = (os.path.join(tmp, name) for name in ("in.tsv", "s", "out.tsv"))
        Path(src).write_text(hex_tsv(pairs))
        assert main(["import", src, uri, "--hex", "--duplicates", "last"]) == 0
        assert main(["export", uri, dest, "--hex"]) == 0
        capsys.readouterr()
        assert Path(dest).read_text() == hex_tsv(sorted(dict(pairs).items()))


# ---- verify / diff -------------------------------------------------------------------------
def test_verify_ok_and_corrupt(tmp_path, capsys):
    uri = make_store(tmp_path / "s", {b"k%03d" % i: b"v" * 100 for i in range(50)})
    code, out, _ = run(capsys, "verify", uri)
    assert code == 0 and out.startswith(f"OK {uri}: 1 partitions, 50 pairs")
    assert json.loads(run(capsys, "verify", uri, "--json")[1])["ok"] is True

    part = next((tmp_path / "s").rglob("*.kvp"))
    data = bytearray(part.read_bytes())
    data[200] ^= 0xFF  # inside the first data block
    part.write_bytes(bytes(data))
    code, out, err = run(capsys, "verify", uri)
    assert (code, out) == (1, f"CORRUPT {part}\n")
    assert err.startswith("kvio: error: ") and "checksum" in err
    doc = json.loads(run(capsys, "verify", uri, "--json")[1])
    assert doc["ok"] is False and doc["file"] == str(part)


def test_diff_equal_and_different_stores(fruit, tmp_path, capsys):
    same = make_store(tmp_path / "same", FRUIT)
    assert run(capsys, "diff", fruit, same) == (0, "stores are equal (4 pairs)\n", "")
    other = make_store(tmp_path / "other", {**{k: v for k, v in FRUIT.items() if k != b"apple"},
                                            b"banana": b"green", b"elder": b"black"})
    code, out, _ = run(capsys, "diff", fruit, other)
    assert code == 1
    assert out.splitlines() == [
        "only in A: apple",
        "value differs: banana  (A: yellow [6 B], B: green [5 B])",
        "only in B: elder",
        "stores differ: 3 difference(s)",
    ]
    code, out, _ = run(capsys, "diff", fruit, other, "--max-diffs", "1", "--json")
    assert code == 1
    assert json.loads(out) == {"equal": False, "equal_pairs_seen": 0, "truncated": True,
                               "differences": [{"kind": "only_in_A", "key": "apple"}]}


def test_diff_streams_stores_with_different_batch_layouts(tmp_path, capsys):
    pairs = {b"key%06d" % i: b"value%d" % i for i in range(3000)}
    a = make_store(tmp_path / "a", pairs, conf={"kvio.block.size": "64B"})  # many tiny batches
    b = make_store(tmp_path / "b", {**pairs, b"key001500x": b"extra"})
    code, out, _ = run(capsys, "diff", a, b)
    assert (code, out) == (1, "only in B: key001500x\nstores differ: 1 difference(s)\n")
    code, out, _ = run(capsys, "diff", b, b)
    assert (code, out) == (0, "stores are equal (3001 pairs)\n")


def test_diff_against_an_empty_store(fruit, tmp_path, capsys):
    empty = make_store(tmp_path / "empty", {})
    code, out, _ = run(capsys, "diff", empty, fruit, "--max-diffs", "2")
    assert code == 1
    assert out.splitlines() == ["only in B: apple", "only in B: banana",
                                "stores differ; stopped after the first 2 differences"]


# ---- rm / mv / versions / rollback / gc ------------------------------------------------------
def test_rm_and_mv(fruit, tmp_path, capsys):
    moved = tmp_path / "moved"
    assert run(capsys, "mv", fruit, moved) == (0, f"moved {fruit} -> {moved}\n", "")
    assert read_store(moved) == FRUIT and not Path(fruit).exists()
    code, _, err = run(capsys, "mv", moved, moved)
    assert code == 1 and "already exists" in err
    assert run(capsys, "rm", moved, "--json") == (0, json.dumps({"deleted": str(moved)}) + "\n", "")
    assert not moved.exists()
    code, out, err = run(capsys, "rm", moved)
    assert (code, out) == (1, "")
    assert err.startswith("kvio: error: no store to delete")


def test_versions_rollback_and_gc(fruit, tmp_path, capsys):
    src = tmp_path / "in.tsv"
    src.write_text("v2\tdata\n")
    assert run(capsys, "import", src, fruit, "--mode", "overwrite")[0] == 0
    history = json.loads(run(capsys, "versions", fruit, "--json")[1])
    first, second = history[0]["version"], history[1]["version"]
    assert [(d["seq"], d["op"], d["current"]) for d in history] == [
        (1, "create", False), (2, "overwrite", True)]

    code, out, _ = run(capsys, "versions", fruit)
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["seq", "version", "op", "time", "status"]
    assert lines[1].split()[:3] == ["1", first, "create"] and lines[1].endswith("available")
    assert lines[2].split()[:3] == ["2", second, "overwrite"] and lines[2].endswith("current")

    code, out, err = run(capsys, "rollback", fruit)
    assert (code, err) == (0, "")
    assert out.startswith(f"rolled back {fruit} to version {first} (published as ")
    assert out.endswith(", commit 3)\n")
    assert read_store(fruit) == FRUIT
    assert run(capsys, "rollback", fruit, second)[0] == 0
    assert read_store(fruit) == {b"v2": b"data"}
    code, _, err = run(capsys, "rollback", fruit, "no-such-version")
    assert code == 1 and "no-such-version" in err

    # A crashed job's staging: kept while young, removed when older than --older-than.
    KeyValueSystem().create_store(fruit, mode="overwrite")
    assert json.loads(run(capsys, "gc", fruit, "--json")[1])["staging"] == []
    code, out, _ = run(capsys, "gc", fruit, "--older-than", "0s")
    assert code == 0 and "1 staging dir(s)" in out
    assert read_store(fruit) == {b"v2": b"data"}


# ---- options, errors, progress -----------------------------------------------------------------
def test_global_options_work_before_and_after_the_subcommand(tmp_path, capsys):
    src = tmp_path / "in.tsv"
    src.write_text("".join(f"k{i:03d}\t{'v' * 700}\n" for i in range(6)))
    uri = tmp_path / "s"
    code, _, _ = run(capsys, "--conf", "kvio.block.compression=zstd", "import", src, uri,
                     "--conf", "kvio.partition.size.max=2KB")
    assert code == 0
    info = json.loads(run(capsys, "info", uri, "--json")[1])
    assert info["options"]["compression"] == "zstd" and len(info["partitions"]) > 1
    assert json.loads(run(capsys, "--json", "info", uri)[1])["count"] == 6


def test_errors_are_one_line_without_traceback(tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    for argv, message in ((["info", tmp_path / "nothing"], "no store at this location"),
                          (["scan", plain], "not a kvio store"),
                          (["--conf", "kvio.no.such=1", "info", plain], "unknown setting 'kvio.no.such'"),
                          (["--conf", "kvio.block.size=lots", "info", plain], "cannot parse size")):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (1, "")
        assert err.startswith("kvio: error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("argv, message", [
    ([], "required: COMMAND"),
    (["frobnicate"], "invalid choice"),
    (["--conf", "novalue", "info", "x"], "expected key=value"),
    (["get", "x", "zz", "--hex"], "argument KEY: not valid hex"),
    (["scan", "x", "--start", "!!", "--base64"], "argument --start: not valid base64"),
    (["scan", "x", "--limit", "0"], "expected a positive integer"),
    (["gc", "x", "--older-than", "soon"], "cannot parse duration"),
    (["import", "in.parquet", "x", "--hex"], "--hex/--base64 apply to tsv and jsonl input only"),
    (["import", "data.csv", "x"], "pass --format"),
    (["scan", "x", "--hex", "--base64"], "not allowed with argument"),
])
def test_usage_errors_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert (code, out) == (2, "")
    assert message in err and "Traceback" not in err


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "import", "--help")
    assert code == 0 and "--duplicates {error,first,last}" in out


def test_progress_bar_only_for_a_terminal_and_never_with_no_progress(fruit, tmp_path, capsys, monkeypatch):
    dest = tmp_path / "out.tsv"
    assert run(capsys, "export", fruit, dest)[2] == ""  # stderr is not a terminal under pytest
    monkeypatch.setattr(cli.output, "_stderr_is_tty", lambda: True)
    code, _, err = run(capsys, "export", fruit, dest)
    assert code == 0 and "export" in err and "pairs" in err
    assert run(capsys, "export", fruit, dest, "--no-progress")[2] == ""
    assert run(capsys, "--no-progress", "verify", fruit)[2] == ""


def test_closed_pipe_on_stdout_is_not_a_traceback(tmp_path):
    uri = make_store(tmp_path / "s", {b"key%06d" % i: b"x" * 50 for i in range(5000)})
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "kvio", "scan", uri], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"key000000\t" + b"x" * 50 + b"\n"
    proc.stdout.close()  # like `kvio scan ... | head -1`
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 1
    assert b"Traceback" not in err
