"""``kvio scan`` and ``kvio export`` against the model, in exact encodings (hex, base64,
Parquet), for every store on local disk and memory://.

A memory:// store exists only in this process, so there the CLI's entry point runs
in-process. On local disk the combinations marked ``PROCESS`` run a real ``python -m kvio``
(argument decoding, stdout encoding, exit status of the real command); the others run
in-process too, since every process start costs more than the read it checks.
"""
from __future__ import annotations

import os
import uuid

import pytest

from .model import expected_range, range_bounds
from .runners import encoder, parse_jsonl, parse_tsv, read_export, run_cli

PROCESS = "process"
# (range probe, encoding, --json, process on local disk): chosen combinations, not the product
SCANS = [("all", "hex", False, PROCESS), ("all", "base64", True, ""), ("middle", "hex", True, ""),
         ("from-absent-key", "base64", False, ""), ("prefix-long", "hex", False, ""),
         ("prefix-ff", "base64", False, ""), ("prefix-and-bounds", "base64", True, PROCESS),
         ("tail-past-last", "hex", False, "")]
# Parquet holds the bytes themselves (--hex/--base64 are refused there), so its bound arguments
# are raw bytes, which a process's argv cannot carry when they hold \0: in-process only.
EXPORTS = [("all", "jsonl", "hex", PROCESS), ("all", "tsv", "base64", ""),
           ("all", "parquet", None, PROCESS), ("middle", "tsv", "hex", ""),
           ("prefix-short", "jsonl", "base64", PROCESS), ("prefix-and-bounds", "parquet", None, "")]


def bound_args(name: str, model, encoding: str | None) -> list[str]:
    """--start/--stop/--prefix of the probe ``name``: hex or base64, or (None) the raw bytes
    as the command line passes them (undone by os.fsencode)."""
    start, stop, prefix = range_bounds(name, model)
    encode = encoder(encoding) if encoding is not None else os.fsdecode
    args = []
    for option, value in (("--start", start), ("--stop", stop), ("--prefix", prefix)):
        if value is not None:
            args += [f"{option}={encode(value)}"]
    return args


@pytest.mark.parametrize("name,encoding,as_json,how", SCANS,
                         ids=[f"{n}-{e}{'-json' if j else ''}{'-' + h if h else ''}"
                              for n, e, j, h in SCANS])
def test_scan(store, name, encoding, as_json, how):
    args = ["scan", store.uri, f"--{encoding}", *bound_args(name, store.model, encoding)]
    if as_json:
        args.append("--json")
    out = run_cli(args, process=store.fs == "local" and how == PROCESS)
    got = parse_jsonl(out, encoding) if as_json else parse_tsv(out, encoding)
    assert got == expected_range(store.model, *range_bounds(name, store.model))


def test_scan_limit(store):
    out = run_cli(["scan", store.uri, "--hex", "--limit", "7"], process=False)
    assert parse_tsv(out, "hex") == sorted(store.model.items())[:7]


@pytest.mark.parametrize("name,fmt,encoding,how", EXPORTS,
                         ids=[f"{n}-{f}-{e or 'bytes'}{'-' + h if h else ''}"
                              for n, f, e, h in EXPORTS])
def test_export(store, tmp_path, name, fmt, encoding, how):
    folder = str(tmp_path) if store.fs == "local" else f"{store.root}-exports"
    dest = f"{folder}/{uuid.uuid4().hex}.{fmt}"
    args = ["export", store.uri, dest, "--format", fmt, *bound_args(name, store.model, encoding)]
    if encoding is not None:
        args.append(f"--{encoding}")
    run_cli(args, process=store.fs == "local" and how == PROCESS)
    expected = expected_range(store.model, *range_bounds(name, store.model))
    assert read_export(dest, fmt, encoding) == expected
