"""``kvio serve NAME=URI ...``: the HTTP lookup server (kvio.serve), started from the shell.

The server's packages (Starlette, uvicorn, prometheus-client) are the ``serve`` extra: this
module imports them only when the command runs, so every other command works without them and
a missing one is reported as ``kvio: error: ...`` naming the extra.
"""
from __future__ import annotations

import argparse
import ipaddress
import socket
import sys
from collections.abc import Callable

from ..errors import InvalidArgumentError, KvioError
from ..system import KeyValueSystem
from .files import _UsageError, check_protocols
from .output import PROG

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8470


def _store_spec(text: str) -> tuple[str, str]:
    from ..serve.options import parse_store_spec  # no optional package: safe at parse time
    try:
        return parse_store_spec(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(" | ")[0]) from None


def _read_through_spec(text: str) -> tuple[str, str]:
    from ..serve.read_through import parse_read_through_spec  # stdlib and kvio only until used
    try:
        return parse_read_through_spec(text)
    except InvalidArgumentError as exc:
        raise argparse.ArgumentTypeError(str(exc).split(" | ")[0]) from None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number 1-65535, got {text!r}")
    return int(text)


def _workers(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of workers, got {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def add_serve_command(command: Callable[[str, Callable, str], argparse.ArgumentParser]) -> None:
    """Register ``serve`` with the CLI's subcommand factory."""
    p = command("serve", cmd_serve, "serve stores over HTTP: lookups, batch gets and scans for "
                "any language (see docs/SERVING.md)")
    p.add_argument("stores", nargs="+", type=_store_spec, metavar="NAME=URI",
                   help="a store to serve and the name it has in URLs (repeatable)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT,
                   help=f"port to listen on (default {DEFAULT_PORT})")
    p.add_argument("--workers", type=_workers, default=1, metavar="N",
                   help="worker processes sharing the port (default 1)")
    p.add_argument("--token-file", metavar="F",
                   help="require 'Authorization: Bearer <token>' with the token in file F "
                   "(not on /healthz and /readyz)")
    p.add_argument("--drain-timeout", type=_seconds, default=30.0, metavar="SECONDS",
                   help="on SIGTERM or Ctrl-C, wait this long for requests in flight (default 30)")
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument("--read-through", action="append", type=_read_through_spec, default=[],
                   metavar="NAME=MODULE:FUNCTION",
                   help="ask loader(name, key) -> bytes | None for keys store NAME does not hold; "
                   "answers kept for kvio.serve.read.through.ttl (repeatable)")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_address(host: str, port: int) -> None:
    """Fail with ``kvio: error`` (not uvicorn's log line and exit) when the address cannot be
    listened on; bound the way uvicorn binds (SO_REUSEADDR), then released."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        raise KvioError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def cmd_serve(args: argparse.Namespace, kvs: KeyValueSystem) -> int:
    """Run the server until SIGTERM (exit 0) or Ctrl-C (exit 130), after draining requests."""
    from ..serve import require
    require()
    from ..serve.options import ServeOptions, read_token
    from ..serve.server import Stopped, serve
    from ..serve.stores import StoreSet

    names = [name for name, _ in args.stores]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise _UsageError(f"store name(s) given twice: {', '.join(repeated)}")
    for _, uri in args.stores:
        check_protocols(uri)
    try:
        options = ServeOptions(stores=tuple(args.stores), conf=dict(kvs.conf_overrides),
                               token_file=args.token_file, read_through=tuple(args.read_through))
    except InvalidArgumentError as exc:
        raise _UsageError(str(exc).split(" | ")[0]) from None
    from ..serve.read_through import load_loader
    for _, spec in options.read_through:
        load_loader(spec)  # refuse a loader that cannot be imported before listening
    if args.token_file:
        read_token(args.token_file)  # refuse an unusable token file before opening anything
    elif not _is_loopback(args.host):
        print(f"{PROG} serve: warning: listening on {args.host} without --token-file: anyone "
              "who can reach this address can read the stores", file=sys.stderr)
    _check_address(args.host, args.port)
    stores = StoreSet.open(options)  # a store that cannot be opened fails here, cleanly
    for name, store in stores.stores.items():
        print(f"{PROG} serve: {name} = {store.uri} (version {store.version})", file=sys.stderr)
    print(f"{PROG} serve: listening on http://{args.host}:{args.port} with {args.workers} "
          f"worker(s)", file=sys.stderr, flush=True)
    try:
        serve(options, host=args.host, port=args.port, workers=args.workers,
              drain_timeout=args.drain_timeout, access_log=args.access_log, stores=stores)
    except Stopped:
        pass
    except SystemExit as exc:  # uvicorn gave up starting (its own log line says why)
        if exc.code:
            raise KvioError("the server could not start (see the message above)") from None
    print(f"{PROG} serve: stopped", file=sys.stderr)
    return 0
