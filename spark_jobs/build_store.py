"""Build a kvio store from Parquet, JSON (one object per line) or CSV (with a header) files.

    spark-submit spark_jobs/build_store.py INPUT DEST --format parquet|json|csv \\
        --key-col K --value-col V [--num-partitions N] [--mode error|ignore|overwrite] \\
        [--duplicates error|first|last] [--conf kvio.NAME=VALUE] [--json]
    python spark_jobs/build_store.py ...   (same arguments; --master picks the Spark master)

Keys and values are written as bytes: binary columns as they are, strings as UTF-8, other
scalar columns as their string form; a struct, map or array value becomes JSON text. Rows are
range-partitioned by key and sorted, so the store's partitions are disjoint key ranges. Prints
one summary line (records, partitions, bytes, seconds).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as a file from a source checkout
    import os
    import sys
    try:
        import spark_jobs  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import argparse  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

import spark_jobs  # noqa: E402
from spark_jobs.datasource import absolute_uri as absolute  # noqa: E402
from spark_jobs.jobs import (  # noqa: E402
    JobError,
    add_common_arguments,
    add_store_mode_argument,
    parse_conf,
    run,
    spark_session,
)

JOB = "build_store"
FORMATS = ("parquet", "json", "csv")
_SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".json": "json", ".jsonl": "json",
             ".ndjson": "json", ".csv": "csv"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="build_store.py", description=__doc__.split("\n\n")[0])
    p.add_argument("input", metavar="INPUT", help="input file or directory (any Spark path)")
    p.add_argument("dest", metavar="DEST", help="the store to write (path or fsspec URL)")
    p.add_argument("--format", choices=FORMATS, help="input format (default: from INPUT's suffix)")
    p.add_argument("--key-col", default="key", help="key column (default: key)")
    p.add_argument("--value-col", default="value", help="value column (default: value)")
    p.add_argument("--num-partitions", type=int, default=None,
                   help="store partitions, i.e. write tasks (default: the input's partition count)")
    add_store_mode_argument(p)
    p.add_argument("--duplicates", choices=("error", "first", "last"), default="error",
                   help="what to do with a key that appears twice (default: error)")
    add_common_arguments(p)
    return p


def _input_format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    path = args.input.rstrip("/")
    for suffix, fmt in _SUFFIXES.items():
        if path.endswith(suffix):
            return fmt
    raise JobError(f"cannot tell the format of {args.input!r} from its name; give --format "
                   f"({'|'.join(FORMATS)})")


def _check_input(uri: str) -> None:
    try:
        from kvio.fs import filesystem_for  # a local "a::b" is that path, not an fsspec chain
        fs, path = filesystem_for(uri)
    except (ImportError, ValueError):
        return  # a filesystem fsspec cannot open here: let Spark report it
    if not fs.exists(path):
        raise JobError(f"input {uri} does not exist")


def build(args: argparse.Namespace, spark: Any = None) -> dict[str, Any]:
    conf = parse_conf(args.conf)
    fmt = _input_format(args)
    if args.num_partitions is not None and args.num_partitions < 1:
        raise JobError(f"--num-partitions must be at least 1, got {args.num_partitions}")
    source, dest = absolute(args.input), absolute(args.dest)
    _check_input(source)
    skipped = spark_jobs.existing_store(dest, args.mode, conf)
    if skipped is not None:
        return skipped

    spark = spark or spark_session("kvio build_store", args.master)
    from pyspark.sql import functions as F
    reader = spark.read.format(fmt)
    if fmt == "csv":
        reader = reader.option("header", "true")
    df = reader.load(source)
    for what, name in (("key", args.key_col), ("value", args.value_col)):
        if name not in df.columns:
            raise JobError(f"{what} column {name!r} is not in the input (columns: {df.columns})")
    key_type = df.schema[args.key_col].dataType.typeName()
    value_type = df.schema[args.value_col].dataType.typeName()
    if key_type in ("struct", "map", "array"):
        raise JobError(f"key column {args.key_col!r} is a {key_type}; keys must be scalar")
    key = F.col(args.key_col)
    if key_type not in ("binary", "string"):
        key = key.cast("string")
    value = F.col(args.value_col)
    if value_type not in ("binary", "string", "struct", "map", "array"):
        value = value.cast("string")
    pairs = df.select(key.alias("key"), value.alias("value"))
    return spark_jobs.write_store(pairs, dest, mode=args.mode, num_partitions=args.num_partitions,
                                  duplicates=args.duplicates, value_format="json", conf=conf)


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    args = parser().parse_args(argv)
    return run(JOB, lambda: build(args, spark), args.json)


if __name__ == "__main__":
    sys.exit(main())
