"""The ``kvio`` command: inspect, check, import, export and manage stores from a shell.

Every subcommand is a small ``cmd_*`` function taking the parsed arguments and a
:class:`KeyValueSystem`. :func:`main` owns the single error path: a :class:`KvioError` (or an
``OSError`` from input/output files) becomes ``kvio: error: <message>`` on stderr and exit 1;
argparse usage errors exit 2. Nothing expected ever shows a traceback.

Bytes on the command line and in output use one of three encodings:

* ``auto`` (default): clean, printable UTF-8 is printed as is, everything else escaped
  (``\\xNN``, ``\\t``, ``\\n``, ``\\r``, and ``\\\\`` for the backslash itself, so every output
  maps back to one byte string). ``--json`` gives a key or value as a string when it is clean
  UTF-8 and as base64 in ``key_base64``/``value_base64`` otherwise. Key arguments are taken as
  typed.
* ``hex`` / ``base64`` (``--hex``, ``--base64``): exact, for binary keys and for scripts.

Ctrl-C ends any command with ``kvio: interrupted`` and exit status 130 (:mod:`.interrupt`).

Exports are lossless: in ``auto`` mode a text export refuses a key or value that cannot be
written as plain text (and names it) instead of writing an escape that import would not undo.
"""
from __future__ import annotations

import argparse
import codecs
import contextlib
import io
import os
import sys
from collections.abc import Callable, Iterator

from ..config import parse_duration
from ..errors import KvioError
from ..system import KeyValueSystem
from .commands import (
    cmd_diff,
    cmd_gc,
    cmd_get,
    cmd_info,
    cmd_mv,
    cmd_rm,
    cmd_rollback,
    cmd_scan,
    cmd_verify,
    cmd_versions,
)
from .encoding import _escape_char, decode_text, display, escape
from .files import FORMATS, _UsageError, check_protocols
from .interrupt import EXIT_INTERRUPTED, InterruptGuard
from .interrupt import MESSAGE as INTERRUPTED
from .output import PROG
from .repair import cmd_repair
from .serve import add_serve_command
from .smoke import cmd_run_kv_test
from .sql import add_database_options, add_sync_command, cmd_export_any, cmd_import_any, is_database_url
from .storage_options import build_storage_options, storage_option_item
from .update import add_update_commands

__all__ = ["main", "display", "escape"]


# ---- argument parsing -----------------------------------------------------------------------
def _conf_item(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return name.strip(), value.strip()


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except KvioError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _common_options(in_subcommand: bool) -> argparse.ArgumentParser:
    """Options accepted both before and after the subcommand. argparse copies every attribute
    of the subcommand's namespace over the main one, so there the defaults are SUPPRESS (an
    option not repeated after the subcommand keeps its earlier value) and --conf collects
    into its own list, merged in _parse."""
    def default(value):
        return argparse.SUPPRESS if in_subcommand else value

    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("global options")
    group.add_argument("--conf", dest="conf_after" if in_subcommand else "conf", action="append",
                       type=_conf_item, metavar="KEY=VALUE", default=default([]),
                       help="override a setting (repeatable), e.g. kvio.block.compression=zstd")
    group.add_argument("--storage-option", dest="storage_options_after" if in_subcommand
                       else "storage_options", action="append", type=storage_option_item,
                       metavar="KEY=VALUE", default=default([]),
                       help="fsspec storage option for the stores (repeatable; JSON values, "
                            "dotted keys nest), e.g. endpoint_url=http://127.0.0.1:9000")
    group.add_argument("--json", action="store_true", default=default(False),
                       help="machine-readable output")
    group.add_argument("--no-progress", action="store_true", default=default(False),
                       help="never show progress bars")
    encodings = group.add_mutually_exclusive_group()
    encodings.add_argument("--hex", dest="encoding", action="store_const", const="hex",
                           default=default("auto"),
                           help="keys/values as hex (output, text files and KEY arguments)")
    encodings.add_argument("--base64", dest="encoding", action="store_const", const="base64",
                           default=default("auto"),
                           help="keys/values as base64 (output, text files and KEY arguments)")
    return common


def _add_bounds(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--start", metavar="KEY", help="first key (inclusive)")
    parser.add_argument("--stop", metavar="KEY", help="end key (exclusive)")
    parser.add_argument("--prefix", metavar="P", help="only keys starting with P")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[_common_options(in_subcommand=False)],
        description="Inspect, check, import, export and manage kvio key-value stores.",
        epilog="Store URIs are local paths or fsspec URLs (hdfs://, memory://, ...).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [_common_options(in_subcommand=True)]

    def command(name: str, func: Callable, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=common, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    p = command("run-kv-test", cmd_run_kv_test,
                "smoke test: write 10 x 512 KB pairs in 10 partitions, read them back, delete")
    p.add_argument("uri", nargs="?", help="store to use (default: a fresh path in the temp dir)")

    command("info", cmd_info, "describe a store: version, partitions, key ranges, sizes") \
        .add_argument("uri")

    p = command("get", cmd_get, "print the values of keys (exit 1 if any is missing)")
    p.add_argument("uri")
    p.add_argument("keys", nargs="+", metavar="KEY")

    p = command("scan", cmd_scan, "print key<TAB>value lines in key order")
    p.add_argument("uri")
    _add_bounds(p)
    p.add_argument("--limit", type=_positive_int, metavar="N", help="print at most N pairs")

    p = command("import", cmd_import_any, "create a store from a TSV, JSON lines or Parquet file, "
                "or from a database table or query")
    p.add_argument("src", help="input file ('-' for stdin with tsv/jsonl) or a database URL")
    importer = p
    p.add_argument("uri")
    p.add_argument("--format", choices=FORMATS, help="input format (default: from the file suffix)")
    p.add_argument("--key-col", default="key",
                   help="key column/field of jsonl and parquet (default: key)")
    p.add_argument("--value-col", default="value", help="value column/field (default: value)")
    p.add_argument("--mode", choices=("error", "overwrite"), default="error",
                   help="if the store exists: fail (default) or publish a new version")
    p.add_argument("--duplicates", choices=("error", "first", "last"), default="error",
                   help="repeated keys: fail (default), keep the first or the last occurrence")

    p = command("export", cmd_export_any,
                "write a store (or a key range) to TSV, JSON lines or Parquet, or a version "
                "into a database table")
    p.add_argument("uri")
    p.add_argument("dest", help="output file ('-' for stdout) or a database URL")
    add_database_options(importer, p)
    p.add_argument("--format", choices=FORMATS,
                   help="output format (default: from the file suffix)")
    _add_bounds(p)

    command("verify", cmd_verify, "check every checksum and the key order of a store") \
        .add_argument("uri")

    p = command("diff", cmd_diff, "compare two stores' keys and values (exit 1 if they differ)")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--max-diffs", type=_positive_int, default=10, metavar="N",
                   help="stop after N differences (default 10)")

    command("rm", cmd_rm, "delete a store").add_argument("uri")

    p = command("mv", cmd_mv, "rename a store (same filesystem)")
    p.add_argument("src")
    p.add_argument("dst")

    command("versions", cmd_versions, "show a store's commit history").add_argument("uri")

    p = command("rollback", cmd_rollback, "make an earlier retained version current again")
    p.add_argument("uri")
    p.add_argument("version", nargs="?", help="version to restore (default: the previous one)")

    p = command("repair", cmd_repair, "make an intact version current again when the newest "
                "commit record is damaged (publishes a new record; never rewrites one)")
    p.add_argument("uri")
    p.add_argument("version", nargs="?", help="version to restore (default: the one the newest "
                   "intact commit names)")

    p = command("gc", cmd_gc, "remove superseded versions and stale staging of crashed jobs")
    p.add_argument("uri")
    p.add_argument("--older-than", type=_duration, metavar="AGE",
                   help="staging age to remove, e.g. 30m, 24h (default: kvio.staging.max.age)")

    add_update_commands(command)
    add_serve_command(command)
    add_sync_command(command)
    return parser


def _decode_key_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Turn KEY arguments into bytes with the chosen encoding; a malformed one is a usage
    error (exit 2), reported before any store is touched."""
    for name in ("keys", "start", "stop", "prefix"):
        raw = getattr(args, name, None)
        if raw is None:
            continue
        try:
            if isinstance(raw, list):
                setattr(args, name, [decode_text(text, args.encoding) for text in raw])
            else:
                setattr(args, name, decode_text(raw, args.encoding))
        except ValueError as exc:
            label = "KEY" if name == "keys" else f"--{name}"
            parser.error(f"argument {label}: not valid {args.encoding}: {exc}")


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    args.conf = list(args.conf) + list(getattr(args, "conf_after", []))
    args.storage_options = list(args.storage_options) + list(getattr(args, "storage_options_after", []))
    _decode_key_arguments(parser, args)
    return args


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _silence_broken_stdout() -> None:
    # The reader (e.g. `kvio scan ... | head`) went away: send further output to /dev/null so
    # the interpreter's final flush does not raise again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _check_protocols(args: argparse.Namespace) -> None:
    """Unknown protocols and missing filesystem packages, reported before anything runs."""
    stores = [getattr(args, name, None) for name in ("uri", "a", "b", "dst")]
    files = [getattr(args, name, None) for name in ("dest",)]
    (stores if args.func is cmd_mv else files).append(getattr(args, "src", None))
    for uri in stores:
        if isinstance(uri, str):
            check_protocols(uri)
    for name in files:
        if isinstance(name, str) and name != "-" and not is_database_url(name):
            check_protocols(name, is_file=True)


def _escape_unencodable(exc: UnicodeError) -> tuple[str, int]:
    """Output error handler: a character the output encoding lacks (e.g. with
    PYTHONIOENCODING=ascii) is written as its UTF-8 bytes, ``\\xNN``, which is how kvio's
    escaped output shows bytes anyway, so the output still maps back to exactly one value."""
    if not isinstance(exc, UnicodeEncodeError):
        raise exc
    return "".join(_escape_char(ch) for ch in exc.object[exc.start:exc.end]), exc.end


codecs.register_error("kvio-escape", _escape_unencodable)


@contextlib.contextmanager
def _escaping_output() -> Iterator[None]:
    streams = []
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, io.TextIOWrapper):
            streams.append((stream, stream.errors))
            with contextlib.suppress(ValueError, OSError, AttributeError):
                stream.reconfigure(errors="kvio-escape")
    try:
        yield
    finally:
        for stream, errors in streams:
            with contextlib.suppress(ValueError, OSError, AttributeError):
                stream.reconfigure(errors=errors)


def main(argv: list[str] | None = None) -> int:
    """Run one ``kvio`` command.

    Args:
        argv: the arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 success, 1 error (``kvio: error: ...`` on stderr), 2 usage error,
        130 interrupted (Ctrl-C).
    """
    with InterruptGuard(), _escaping_output():
        try:
            return _run(argv)
        except KeyboardInterrupt:
            print(INTERRUPTED, file=sys.stderr)
            return EXIT_INTERRUPTED


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = _parse(parser, argv)
    except SystemExit as exc:  # --help, or a usage error already printed by argparse
        return _exit_code(exc)
    conf = dict(args.conf)
    try:
        _check_protocols(args)
        if args.func is cmd_run_kv_test:
            return cmd_run_kv_test(args, conf)  # reports its own failures, by contract
        options = build_storage_options(args.storage_options)
        return args.func(args, KeyValueSystem(conf=conf, storage_options=options))
    except _UsageError as exc:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (KvioError, OSError) as exc:
        if isinstance(exc, BrokenPipeError):
            _silence_broken_stdout()
            return 1
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
