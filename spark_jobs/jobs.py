"""What the spark-submit jobs share: argument checks before Spark starts, the session, the one
error path and the summary line.

Every job is ``main(argv=None, spark=None) -> exit status``: it validates its arguments and the
stores it reads before starting Spark (a typo costs no JVM start), then runs. A KvioError, a
Spark analysis error (missing input, unknown column) or a bad argument becomes
``<job>: error: <message>`` on stderr and exit status 1 (argparse usage errors: 2).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from kvio.config import Config
from kvio.errors import KvioError

SOURCE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class JobError(Exception):
    """A problem the user can fix (bad argument, missing input): printed without a traceback."""


def parse_conf(pairs: Sequence[str]) -> dict[str, str]:
    """``--conf kvio.name=value`` arguments, validated against kvio's settings."""
    conf = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise JobError(f"--conf expects name=value, got {pair!r}")
        conf[name.strip()] = value.strip()
    Config(conf)
    return conf


def add_store_mode_argument(parser: argparse.ArgumentParser) -> None:
    """--mode for jobs that write a store (the committer's modes that Spark jobs offer)."""
    parser.add_argument("--mode", choices=("error", "ignore", "overwrite"), default="error",
                        help="when DEST already holds a store (default: error)")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--conf", action="append", default=[], metavar="kvio.NAME=VALUE",
                        help="a kvio setting for the store written or read (repeatable)")
    parser.add_argument("--master", default=None,
                        help="Spark master when run with python (spark-submit sets its own); "
                             "default local[*]")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def spark_session(app: str, master: str | None = None):
    """The active session (spark-submit) or a new one (python), with kvstore registered."""
    # Python workers must run this interpreter (it has kvio and pyarrow), unless told otherwise.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    from .api import register
    builder = SparkSession.builder.appName(app)
    if master:
        builder = builder.master(master)
    spark = builder.getOrCreate()
    # Run from a source checkout, Python workers on this machine need the checkout on their
    # path too (an installed kvio is found anyway). Set before register(): the data source
    # captures the environment when it is registered.
    env = spark.sparkContext.environment
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if SOURCE_ROOT not in paths:
        env["PYTHONPATH"] = os.pathsep.join([*paths, SOURCE_ROOT])
    register(spark)
    return spark


def print_summary(job: str, summary: dict[str, Any], seconds: float, as_json: bool) -> None:
    summary = {**summary, "seconds": round(seconds, 3)}
    if as_json:
        print(json.dumps(summary))
        return
    print(f"{job}: " + ", ".join(f"{k}={v}" for k, v in summary.items()))


def run(job: str, body: Callable[[], dict[str, Any]], as_json: bool) -> int:
    """Run ``body`` (returns the summary) with the single error path."""
    start = time.perf_counter()
    try:
        summary = body()
    except (JobError, KvioError) as exc:
        print(f"{job}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - Spark errors: show the first line, not a JVM trace
        from pyspark.errors import PySparkException
        if not isinstance(exc, PySparkException):
            raise
        print(f"{job}: error: {_first_lines(str(exc))}", file=sys.stderr)
        return 1
    print_summary(job, summary, time.perf_counter() - start, as_json)
    return 0


def _first_lines(text: str, limit: int = 6) -> str:
    """A kvio error raised inside Spark (it arrives wrapped in a Python traceback) by its own
    message; anything else by its first lines."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    for line in reversed(lines):
        name, sep, message = line.strip().partition(": ")
        if sep and name.startswith("kvio.errors."):
            return message
    shown = "\n".join(lines[:limit])
    return shown + ("\n..." if len(lines) > limit else "")


