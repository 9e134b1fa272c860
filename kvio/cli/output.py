"""Output helpers: JSON lines, tables and progress bars on stderr."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tqdm import tqdm

PROG = "kvio"


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=False))


def _print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _stderr_is_tty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def _progress(args: argparse.Namespace, **kwargs) -> tqdm:
    """A progress bar on stderr, shown only to a person watching a terminal."""
    disable = args.no_progress or not _stderr_is_tty()
    return tqdm(file=sys.stderr, disable=disable, leave=False, dynamic_ncols=True, **kwargs)
