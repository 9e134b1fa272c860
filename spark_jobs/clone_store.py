"""CloneStore on Spark: copy a kvio store through a Spark job (Alluxio's CloneStore example).

    spark-submit spark_jobs/clone_store.py SRC DEST [--num-partitions N] \\
        [--mode error|ignore|overwrite] [--conf kvio.NAME=VALUE] [--json]
    python spark_jobs/clone_store.py ...   (same arguments; --master picks the Spark master)

Every pair is read by the ``kvstore`` source and written by it again. Without
--num-partitions the read splits (key ranges, in key order) become the new partitions with no
shuffle; with it, rows are range-partitioned into that many partitions. Either way DEST has
disjoint partitions and the same pairs as SRC; the summary shows both record counts.
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

JOB = "clone_store"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clone_store.py", description=__doc__.split("\n\n")[0])
    p.add_argument("src", metavar="SRC", help="the store to copy")
    p.add_argument("dest", metavar="DEST", help="the new store")
    p.add_argument("--num-partitions", type=int, default=None,
                   help="repartition into this many partitions (default: one per read split)")
    add_store_mode_argument(p)
    add_common_arguments(p)
    return p


def clone(args: argparse.Namespace, spark: Any = None) -> dict[str, Any]:
    conf = parse_conf(args.conf)
    if args.num_partitions is not None and args.num_partitions < 1:
        raise JobError(f"--num-partitions must be at least 1, got {args.num_partitions}")
    src, dest = absolute(args.src), absolute(args.dest)
    if src.rstrip("/") == dest.rstrip("/"):
        raise JobError("SRC and DEST are the same store")
    source = spark_jobs.store_summary(src, conf)  # a missing or unfinished store fails here
    skipped = spark_jobs.existing_store(dest, args.mode, conf)
    if skipped is not None:
        return skipped

    spark = spark or spark_session("kvio clone_store", args.master)
    df = spark.read.format(spark_jobs.FORMAT).options(**conf).load(src)
    summary = spark_jobs.write_store(df, dest, mode=args.mode, num_partitions=args.num_partitions,
                                     presorted=args.num_partitions is None, conf=conf)
    return {**summary, "source_records": source["records"]}


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    args = parser().parse_args(argv)
    return run(JOB, lambda: clone(args, spark), args.json)


if __name__ == "__main__":
    sys.exit(main())
