"""``kvio repair``: step past a damaged newest commit record, saying what was found."""
from __future__ import annotations

import argparse

from ..system import KeyValueSystem
from .output import _print_json


def cmd_repair(args: argparse.Namespace, kvs: KeyValueSystem) -> int:
    """Publish an intact version on top of a damaged newest commit record.

    Args:
        args: ``uri`` and the optional ``version`` to restore.
        kvs: the system.

    Returns:
        0 (errors raise KvioError, which main() prints).
    """
    report = kvs.repair(args.uri, args.version)
    if args.json:
        _print_json(report)
        return 0
    for damaged in report["damaged"]:
        print(f"damaged: commit {damaged['seq']}: {damaged['error']} ({damaged['file']})")
    last = report["last_intact"]
    if last is not None:
        print(f"last intact: commit {last['seq']} ({last['op']}), version {last['version'] or '-'}")
    for name in report["unnamed_versions"]:
        print(f"complete version that no intact commit names: {name}")
    record = report["record"]
    if record is None:
        print(f"nothing to repair: the newest commit record of {args.uri} is intact")
    else:
        print(f"repaired {args.uri}: commit {record['seq']} makes version {record['version']} "
              f"current, a copy of version {report['restored']}")
    return 0
