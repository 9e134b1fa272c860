"""How the suite drives each engine: the ``kvio`` command and mrjob jobs, as users run them."""
from __future__ import annotations

import base64
import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import fsspec
import pyarrow.parquet as pq

from kvio.cli import main as kvio_main

ROOT = str(Path(__file__).resolve().parents[2])


def run_cli(argv: list[str], process: bool) -> str:
    """Run ``kvio ARGV`` and return its stdout; it must succeed. With ``process`` it is a real
    ``python -m kvio`` process (local stores only); otherwise the same entry point
    (``kvio.cli.main``) runs in this process, which is the only way to reach a ``memory://``
    store and saves a process start per call."""
    argv = ["--no-progress", *argv]
    if process:
        proc = subprocess.run([sys.executable, "-m", "kvio", *argv], cwd=ROOT, capture_output=True)
        assert proc.returncode == 0, proc.stderr.decode(errors="replace")
        assert proc.stderr == b""
        return proc.stdout.decode("ascii")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = kvio_main(argv)
    assert code == 0, err.getvalue()
    return out.getvalue()


def decoder(encoding: str):
    if encoding == "hex":
        return bytes.fromhex
    return lambda text: base64.b64decode(text, validate=True)


def encoder(encoding: str):
    return bytes.hex if encoding == "hex" else (lambda data: base64.b64encode(data).decode("ascii"))


def parse_tsv(text: str, encoding: str) -> list[tuple[bytes, bytes]]:
    """``key<TAB>value`` lines of hex or base64 fields (an empty field is the empty string)."""
    decode = decoder(encoding)
    assert text == "" or text.endswith("\n")
    pairs = []
    for line in text.splitlines():
        fields = line.split("\t")
        assert len(fields) == 2, line
        pairs.append((decode(fields[0]), decode(fields[1])))
    return pairs


def parse_jsonl(text: str, encoding: str) -> list[tuple[bytes, bytes]]:
    decode = decoder(encoding)
    pairs = []
    for line in text.splitlines():
        doc = json.loads(line)
        assert set(doc) == {"key", "value"}, line
        pairs.append((decode(doc["key"]), decode(doc["value"])))
    return pairs


def read_export(dest: str, fmt: str, encoding: str | None) -> list[tuple[bytes, bytes]]:
    """The pairs of an exported file (local path or fsspec URL)."""
    with fsspec.open(dest, "rb") as handle:
        if fmt == "parquet":
            table = pq.read_table(handle)
            return list(zip(table.column("key").to_pylist(), table.column("value").to_pylist(),
                            strict=True))
        text = handle.read().decode("ascii")
    assert encoding is not None
    return parse_tsv(text, encoding) if fmt == "tsv" else parse_jsonl(text, encoding)


def run_kv_job(job_cls, runner: str, inputs: list[str], dest: str, *extra: str) -> dict:
    """Run a KVStoreJob the way its command line does (driver, mrjob runner, commit)."""
    args = ["-r", runner, "--no-conf", *inputs, "--output-store", dest, *extra]
    return job_cls(args).run_kv_job()
