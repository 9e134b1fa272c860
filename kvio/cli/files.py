"""Opening input and output files, and telling their format from the name."""
from __future__ import annotations

import argparse
import contextlib
import posixpath
import sys
import uuid

import fsspec
from fsspec.core import url_to_fs


FORMATS = ("tsv", "jsonl", "parquet")
_FORMAT_SUFFIXES = {".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                    ".parquet": "parquet", ".pq": "parquet"}


@contextlib.contextmanager
def _open_input(src: str):
    if src == "-":
        yield sys.stdin.buffer  # not ours to close
        return
    with fsspec.open(src, "rb") as handle:
        yield handle


def _input_size(src: str) -> int | None:
    if src == "-":
        return None
    try:
        fs, path = url_to_fs(src)
        return int(fs.size(path))
    except (OSError, ValueError, TypeError):
        return None  # the size only feeds the progress bar


@contextlib.contextmanager
def _open_output(dest: str):
    """DEST is written through a temporary sibling renamed into place on success, so a failed
    export never leaves a truncated file that looks complete (nor destroys an older export)."""
    if dest == "-":
        sys.stdout.flush()  # text already printed must come before the binary stream
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    fs, path = url_to_fs(dest)
    tmp = posixpath.join(posixpath.dirname(path),
                         f".{posixpath.basename(path)}.kvio-tmp-{uuid.uuid4().hex[:8]}")
    try:
        with fs.open(tmp, "wb") as handle:
            yield handle
        fs.mv(tmp, path)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise


def _resolve_format(args: argparse.Namespace, path: str) -> str:
    if args.format:
        return args.format
    for suffix, fmt in _FORMAT_SUFFIXES.items():
        if path.lower().endswith(suffix):
            return fmt
    raise _UsageError(f"cannot tell the format of {path!r} from its name; pass --format "
                      + "|".join(FORMATS))


class _UsageError(Exception):
    """A problem with the command line found after parsing: reported like argparse (exit 2)."""
