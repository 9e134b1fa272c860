"""Opening input and output files, and telling their format from the name."""
from __future__ import annotations

import argparse
import contextlib
import posixpath
import shutil
import sys
import tempfile
import uuid

import fsspec
from fsspec.registry import known_implementations

from .. import layout
from ..errors import KvioError
from ..fs import filesystem_for, is_url

FORMATS = ("tsv", "jsonl", "parquet")
_FORMAT_SUFFIXES = {".tsv": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
                    ".parquet": "parquet", ".pq": "parquet"}


_SPOOL_MEMORY = 16 << 20  # stdin kept in memory up to this size, then in a temp file


@contextlib.contextmanager
def _open_input(src: str):
    if src == "-":
        yield sys.stdin.buffer  # not ours to close
        return
    if not is_url(src):
        # Python's own open for local paths: it reads FIFOs and devices (process
        # substitution, /dev/stdin), which fsspec's local file refuses because it seeks.
        with open(src, "rb") as handle:
            yield handle
        return
    fs, path = filesystem_for(src)
    with fs.open(path, "rb") as handle:
        yield handle


@contextlib.contextmanager
def _open_seekable_input(src: str, spool_dir: str | None):
    """Like :func:`_open_input`, for formats read with seeks (Parquet keeps its footer at the
    end): stdin, which cannot seek, is copied into a temporary file first (memory up to
    16 MB, then disk in ``spool_dir``), removed afterwards."""
    if src != "-":
        with _open_input(src) as handle:
            yield handle
        return
    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_MEMORY, dir=spool_dir) as spool:
        shutil.copyfileobj(sys.stdin.buffer, spool, 1 << 20)
        spool.seek(0)
        yield spool


def _input_size(src: str) -> int | None:
    if src == "-":
        return None
    try:
        fs, path = filesystem_for(src)
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
    fs, path = filesystem_for(dest)
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


def check_output_file(dest: str, example: str) -> None:
    """Refuse an export destination that is a directory.

    Writing "into" a directory would need a file name kvio had to invent, and a file written
    there under a hidden temporary name (or inside a store) is never cleaned up by anyone.

    Args:
        dest: the destination as typed (``-`` is stdout and always accepted).
        example: a file name to suggest.

    Raises:
        KvioError: ``dest`` is an existing directory or ends with ``/``, or is inside a
            store.
    """
    if dest == "-":
        return
    fs, path = filesystem_for(dest)
    if dest.endswith("/") or fs.isdir(path):
        raise KvioError(f"{dest} is a directory; name the output file, e.g. "
                        f"{posixpath.join(dest.rstrip('/'), example)}", file=dest)
    if fs.exists(posixpath.join(posixpath.dirname(path), layout.MARKER)):
        raise KvioError("the destination is inside a kvio store directory, where kvio never "
                        "removes a file it did not write; choose a path outside the store",
                        file=dest)


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


_PIP_NAMES = {"hdfs": "'kvio[hdfs]' (hdfs-native)", "viewfs": "'kvio[hdfs]' (hdfs-native)",
              "http": "aiohttp requests", "https": "aiohttp requests"}


def check_protocols(uri: str, is_file: bool = False) -> None:
    """Fail clearly when ``uri`` names a protocol fsspec does not know, or one whose package
    is not installed (fsspec raises ValueError or ImportError deep in a call otherwise).

    Args:
        uri: a store URI or file name as typed (``::``-chained URLs are checked link by link;
            a plain path is not checked).
        is_file: ``uri`` is an input or output file, not a store (for the message).

    Raises:
        KvioError: an unknown protocol, or a missing package (named, with what to install).
    """
    if not is_url(uri):
        return  # a plain local path, taken literally (kvio.fs.filesystem_for)
    store, file = (None, uri) if is_file else (uri, None)
    for link in uri.split("::"):
        protocol, sep, _ = link.partition("://")
        if not sep:
            continue
        try:
            fsspec.get_filesystem_class(protocol)
        except ValueError:
            raise KvioError(f"unknown protocol {protocol + '://'!r}: fsspec has no filesystem "
                            "for it (a local path needs no protocol; e.g. hdfs://, s3://, gs://, "
                            "memory://)", store=store, file=file) from None
        except ImportError as exc:
            known = known_implementations.get(protocol, {})
            package = _PIP_NAMES.get(protocol) or known.get("class", protocol).split(".")[0]
            raise KvioError(f"the {protocol}:// protocol needs a package that is not installed "
                            f"({exc}); install it with: pip install {package}",
                            store=store, file=file) from None
