"""Export a kvio store to Parquet or JSON (one object per line) with Spark.

    spark-submit spark_jobs/export_store.py SRC DEST --format parquet|json \\
        [--mode error|ignore|overwrite|append] [--key-type binary|string] \\
        [--value-type binary|string] [--conf kvio.NAME=VALUE] [--json]
    python spark_jobs/export_store.py ...   (same arguments; --master picks the Spark master)

DEST gets two columns, key and value, in key order across its files. Binary columns are
exact in Parquet; JSON writes them as base64 text, so use --key-type/--value-type string for
text data (a byte string that is not UTF-8 then fails clearly instead of being mangled).
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
from spark_jobs.jobs import add_common_arguments, parse_conf, run, spark_session  # noqa: E402

JOB = "export_store"
_SPARK_MODES = {"error": "errorifexists", "ignore": "ignore", "overwrite": "overwrite",
                "append": "append"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="export_store.py", description=__doc__.split("\n\n")[0])
    p.add_argument("src", metavar="SRC", help="the store to export")
    p.add_argument("dest", metavar="DEST", help="output directory (any Spark path)")
    p.add_argument("--format", choices=("parquet", "json"), required=True)
    p.add_argument("--mode", choices=tuple(_SPARK_MODES), default="error",
                   help="when DEST exists (default: error)")
    p.add_argument("--key-type", choices=("binary", "string"), default="binary")
    p.add_argument("--value-type", choices=("binary", "string"), default="binary")
    add_common_arguments(p)
    return p


def _output_bytes(uri: str) -> tuple[int | None, int | None]:
    try:
        from kvio.fs import filesystem_for  # a local "a::b" is that path, not an fsspec chain
        fs, path = filesystem_for(uri)
        files = [f for f, info in fs.find(path, detail=True).items()
                 if not f.rsplit("/", 1)[-1].startswith(("_", "."))]
        return len(files), sum(fs.size(f) for f in files)
    except (ImportError, ValueError, OSError):
        return None, None


def export(args: argparse.Namespace, spark: Any = None) -> dict[str, Any]:
    conf = parse_conf(args.conf)
    src, dest = absolute(args.src), absolute(args.dest)
    source = spark_jobs.store_summary(src, conf)  # a missing or unfinished store fails here
    spark = spark or spark_session("kvio export_store", args.master)
    df = (spark.read.format(spark_jobs.FORMAT).option("keyType", args.key_type)
          .option("valueType", args.value_type).options(**conf).load(src))
    df.write.format(args.format).mode(_SPARK_MODES[args.mode]).save(dest)
    files, size = _output_bytes(dest)
    return {"uri": dest, "format": args.format, "records": source["records"],
            "partitions": source["partitions"], "files": files, "bytes": size, "source": src}


def main(argv: list[str] | None = None, spark: Any = None) -> int:
    args = parser().parse_args(argv)
    return run(JOB, lambda: export(args, spark), args.json)


if __name__ == "__main__":
    sys.exit(main())
