"""Clone throughput with mrjob's local runner: kvio CloneStore vs an identity job over JSON lines.

    python bench/bench_mrjob.py [--quick] [--records N] [--value-bytes N] [--reps N]
                                [--json FILE] [--json-out FILE]

Both jobs move the same pairs through map, the sort and reduce with ``-r local`` on this
machine, with as many map tasks (input partitions / input files) and output partitions each:

* ``CloneStore``: kvio store -> kvio store (hex/base64 shuffle encoding, partition files
  written and verified by the committer, one atomic publish);
* ``identity-json``: JSON lines -> JSON lines, a plain mrjob job (JSONValueProtocol in,
  JSONProtocol shuffle and output) — the baseline a user would otherwise write.

Reported: the median wall time of the repetitions (job start to published result), MB/s of
key+value bytes and records/s. Other load on the machine shows up in the numbers; the load
average is printed with them.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import string
import sys
import tempfile
import time

from mrjob.job import MRJob
from mrjob.protocol import JSONProtocol, JSONValueProtocol

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class IdentityJSON(MRJob):
    """The baseline: every record through map, shuffle and reduce unchanged."""
    INPUT_PROTOCOL = JSONValueProtocol
    INTERNAL_PROTOCOL = JSONProtocol
    OUTPUT_PROTOCOL = JSONProtocol

    def mapper(self, _, record):
        yield record["key"], record["value"]

    def reducer(self, key, values):
        for value in values:
            yield key, value


def _import_kvio():
    """kvio is imported by the benchmark driver only: mrjob runs this file as the identity
    job's tasks too, where nothing but mrjob is needed."""
    try:
        import mr_jobs  # noqa: F401
    except ImportError:  # a source checkout without installing
        sys.path.insert(0, ROOT)
    from kvio import KeyValueSystem
    from mr_jobs.clone_store import CloneStore
    return KeyValueSystem, CloneStore


def make_data(work: str, records: int, value_bytes: int, parts: int) -> tuple[str, list[str], int]:
    """The same pairs as a kvio store with ``parts`` partitions and as ``parts`` JSON files."""
    KeyValueSystem, _ = _import_kvio()
    rng = random.Random(42)
    alphabet = (string.ascii_letters + string.digits).encode()
    keys = [b"user%010d" % i for i in range(records)]
    values = [bytes(rng.choices(alphabet, k=value_bytes)) for _ in range(records)]
    payload = sum(map(len, keys)) + sum(map(len, values))
    on_disk = payload + 48 * records  # offsets and hash index slots per pair
    kvs = KeyValueSystem({"kvio.partition.size.max": str(on_disk // parts + (on_disk >> 5))})
    store = os.path.join(work, "src.kv")
    with kvs.create_store(store) as writer:
        writer.put_many(zip(keys, values, strict=True))
    files = []
    step = -(-records // parts)
    for p in range(parts):
        path = os.path.join(work, f"input-{p}.jsonl")
        with open(path, "w") as handle:
            for k, v in zip(keys[p * step:(p + 1) * step], values[p * step:(p + 1) * step], strict=True):
                handle.write(json.dumps({"key": k.decode(), "value": v.decode()}) + "\n")
        files.append(path)
    return store, files, payload


def run_clone(store: str, dest: str, parts: int, runner: str) -> float:
    _, CloneStore = _import_kvio()
    shutil.rmtree(dest, ignore_errors=True)
    started = time.perf_counter()
    CloneStore(["-r", runner, "--no-conf", store, "--output-store", dest,
                "--output-partitions", str(parts)]).run_kv_job()
    return time.perf_counter() - started


def run_identity(files: list[str], out: str, parts: int, runner: str) -> float:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    job = IdentityJSON(["-r", runner, "--no-conf", *files, "--output-dir", out,
                        "-D", f"mapreduce.job.reduces={parts}"])
    with job.make_runner() as runner:
        runner.run()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small data, one repetition")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--parts", type=int, default=4, help="map tasks and output partitions")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--runner", choices=("local", "inline"), default="local",
                        help="mrjob runner (default local; inline shows per-record cost alone)")
    parser.add_argument("--json", default=None, help="also write the raw results to this file")
    parser.add_argument("--json-out", default=None,
                        help="write rows in bench/run.py's contract (bench/README.md) to this file")
    args = parser.parse_args(argv)
    KeyValueSystem, _ = _import_kvio()
    records = args.records or (20_000 if args.quick else 300_000)
    reps = args.reps or (1 if args.quick else 3)
    import logging
    logging.getLogger("mrjob").setLevel(logging.ERROR)

    work = tempfile.mkdtemp(prefix="kvio-bench-mrjob-")
    try:
        store, files, payload = make_data(work, records, args.value_bytes, args.parts)
        with KeyValueSystem().open_store(store) as reader:
            store_parts = len(reader.manifest.partitions)
        times: dict[str, list[float]] = {"CloneStore (kvio -> kvio)": [], "identity-json (mrjob)": []}
        for _ in range(reps):  # interleaved, so both see the same machine load
            times["CloneStore (kvio -> kvio)"].append(
                run_clone(store, os.path.join(work, "dst.kv"), args.parts, args.runner))
            times["identity-json (mrjob)"].append(
                run_identity(files, os.path.join(work, "out"), args.parts, args.runner))
        # the clone must be exact
        kvs = KeyValueSystem()
        with kvs.open_store(store) as a, kvs.open_store(os.path.join(work, "dst.kv")) as b:
            assert a.to_table().equals(b.to_table()), "clone differs from the source"
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mb = payload / 1e6
    rows = []
    for name, samples in times.items():
        median = statistics.median(samples)
        rows.append({"job": name, "seconds": round(median, 3), "samples": [round(s, 3) for s in samples],
                     "MB_per_s": round(mb / median, 3), "records_per_s": round(records / median)})
    ratio = rows[0]["MB_per_s"] / rows[1]["MB_per_s"]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"mrjob -r {args.runner}, {records} records x "
          f"({len(b'user0000000000')} B key + {args.value_bytes} B value) "
          f"= {mb:.1f} MB, {args.parts} map tasks ({store_parts} store partitions / {len(files)} JSON files) "
          f"and {args.parts} output partitions, median of {reps}, {os.cpu_count()} cores, load {load:.1f}")
    print(f"{'job':<28}{'seconds':>10}{'MB/s':>10}{'records/s':>12}")
    for r in rows:
        print(f"{r['job']:<28}{r['seconds']:>10.2f}{r['MB_per_s']:>10.2f}{r['records_per_s']:>12,}")
    print(f"CloneStore / identity-json throughput: {ratio:.2f}x")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"runner": args.runner, "records": records, "payload_bytes": payload, "reps": reps,
                       "load": load, "rows": rows, "ratio": ratio}, handle, indent=2)
    if args.json_out:
        note = (f"-r {args.runner}, {records} records, {mb:.1f} MB, {args.parts} map tasks and output "
                f"partitions, median of {reps}, load {load:.1f}")
        contract = []
        for unit, field in (("MB/s", "MB_per_s"), ("records/s", "records_per_s")):
            contract.append({
                "measurement": f"mrjob clone (-r {args.runner}) throughput, {unit}",
                "kvio": rows[0][field], "reference": rows[1][field], "unit": unit,
                "ratio": round(rows[0][field] / rows[1][field], 3), "target": ">= 1.0",
                "reference_name": "mrjob identity job over JSON lines", "repetitions": reps,
                "note": note})
        with open(args.json_out, "w") as handle:
            json.dump(contract, handle, indent=2)
    return 0


if __name__ == "__main__":
    if any(a.startswith("--step-num") for a in sys.argv[1:]):
        IdentityJSON.run()  # mrjob runs this file as the identity job's task
    else:
        sys.exit(main())
