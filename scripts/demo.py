"""The main job, end to end on one machine (run by scripts/demo after installing).

1. kvio's smoke test (`kvio run-kv-test`, Alluxio's runKVTest).
2. Generate a demo dataset (users -> country) as Parquet.
3. Build a store from it with the Spark job (spark_jobs/build_store.py, local Spark).
4. Look keys up and scan a prefix with the `kvio` command.
5. Clone the store with the MapReduce CloneStore job (mrjob local runner) and verify the clone.
6. Export the clone back to Parquet with Spark and check the row count.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
COUNTRIES = ["USA", "China", "India", "Brazil", "Nigeria", "Germany", "Japan", "Mexico"]


def step(title: str, *cmd: str) -> str:
    print(f"\n== {title}\n$ {' '.join(cmd)}", flush=True)
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, text=True, capture_output=True)
    sys.stdout.write(proc.stdout)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        sys.exit(f"demo failed at: {title} (exit {proc.returncode})")
    print(f"   ({time.perf_counter() - started:.1f} s)")
    return proc.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200_000, help="demo users (default 200000)")
    parser.add_argument("--dir", default=str(ROOT / "demo-data"), help="working directory (replaced)")
    args = parser.parse_args()
    work = Path(args.dir).resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    py = sys.executable
    kvio_cmd = (py, "-m", "kvio")

    step("smoke test", *kvio_cmd, "run-kv-test", str(work / "smoke.kv"))

    n = args.rows
    keys = [f"user{i:08d}.country".encode() for i in range(n)]
    values = [COUNTRIES[(i * 7919) % len(COUNTRIES)].encode() for i in range(n)]
    order = list(range(n))
    order.reverse()  # unsorted input on purpose: the build job sorts
    pq.write_table(pa.table({"user": pa.array([keys[i] for i in order], pa.binary()),
                             "country": pa.array([values[i] for i in order], pa.binary())}),
                   work / "users.parquet")
    print(f"\n== generated {n} users in {work / 'users.parquet'}")

    store, clone = str(work / "users.kv"), str(work / "users-clone.kv")
    step("build the store with Spark", py, "spark_jobs/build_store.py", str(work / "users.parquet"),
         store, "--format", "parquet", "--key-col", "user", "--value-col", "country",
         "--num-partitions", "4")
    step("store info", *kvio_cmd, "info", store)
    step("point lookups", *kvio_cmd, "get", store, "user00000042.country", "user00199999.country")
    step("prefix scan", *kvio_cmd, "scan", store, "--prefix", "user0000001", "--limit", "5")
    step("clone with MapReduce (mrjob local runner)", py, "scripts/clone-store", store, clone,
         "--engine", "mr", "--runner", "local")
    step("verify checksums of the clone", *kvio_cmd, "verify", clone)
    step("export the clone with Spark", py, "spark_jobs/export_store.py", clone,
         str(work / "export"), "--format", "parquet")
    exported = pq.read_table(work / "export").num_rows
    if exported != n:
        sys.exit(f"demo failed: exported {exported} rows, expected {n}")
    print(f"\nDemo finished: {n} users built with Spark, cloned with mrjob, verified and exported."
          f"\nStores are in {work}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    sys.exit(main())
