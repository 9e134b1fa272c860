"""Compaction on Spark: rewrite a store's current version (its delta layers and tombstones) into
disjoint partitions without tombstones, for stores too big for one machine's ``kvio compact``.

    spark-submit spark_jobs/compact_store.py STORE [--num-partitions N] [--conf kvio.NAME=VALUE] [--json]
    python spark_jobs/compact_store.py ...   (same arguments; --master picks the Spark master)

The job reads exactly the version that is current when it starts (``.option("version", V)``,
pinned for the whole run like every Spark read, so retention and ``kvio gc`` keep it) through
the core read planner, which merges the layers by priority and drops deleted keys, and
publishes the pairs as a new version of the same store with ``expectedVersion=V``: if another
job (an update, say) publishes meanwhile, compaction fails with ConcurrentCommitError and
publishes nothing, so no update is lost (run it again). Without --num-partitions the read
splits (key ranges, in key order) become the new partitions with no shuffle.
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
from spark_jobs.jobs import JobError, add_common_arguments, parse_conf, run, spark_session  # noqa: E402

JOB = "compact_store"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="compact_store.py", description=__doc__.split("\n\n")[0])
    p.add_argument("store", metavar="STORE", help="the store to compact")
    p.add_argument("--num-partitions", type=int, default=None,
                   help="repartition into this many partitions (default: one per read split)")
    add_common_arguments(p)
    return p


def compact(args: argparse.Namespace, spark: Any = None) -> dict[str, Any]:
    """Run the compaction.

    Args:
        args: the parsed command line.
        spark: a session to use (default: a new one for ``args.master``).

    Returns:
        The summary of the new version, with ``source_version`` and ``source_partitions``.

    Raises:
        JobError: bad arguments.
        StoreNotFoundError, ConcurrentCommitError: from the core (no store; another publish
            landed while compacting, nothing was published).
    """
    conf = parse_conf(args.conf)
    if args.num_partitions is not None and args.num_partitions < 1:
        raise JobError(f"--num-partitions must be at least 1, got {args.num_partitions}")
    uri = absolute(args.store)
    source = spark_jobs.store_summary(uri, conf)  # a missing or unfinished store fails here
    spark = spark or spark_session("kvio compact_store", args.master)
    df = (spark.read.format(spark_jobs.FORMAT).options(**conf)
          .option("version", source["version"]).load(uri))
    summary = spark_jobs.write_store(df, uri, mode="overwrite", num_partitions=args.num_partitions,
                                     presorted=args.num_partitions is None, conf=conf,
                                     options={"expectedVersion": source["version"]})
    return {**summary, "source_version": source["version"],
            "source_partitions": source["partitions"]}


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    args = parser().parse_args(argv)
    return run(JOB, lambda: compact(args, spark), args.json)


if __name__ == "__main__":
    sys.exit(main())
