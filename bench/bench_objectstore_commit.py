"""What publishing on an object store costs (issue 14), on moto's S3 server on loopback:

* the commit of a job of N partitions (default 10,000): the job's writes, then ``Job.commit``
  (validating every listed file, the manifest, the create-only put of the record, tidying),
  next to the same job on local disk (the reference, measured in the same run);
* the manifest's bytes per partition;
* the requests one ``follow`` poll costs (a live store checking for the next record), counted
  at the server.

    .venv/bin/python bench/bench_objectstore_commit.py [--partitions 10000] [--threads 16]
        [--polls 50] [--interval 0.1] [--json-out PATH]

Requests are counted from the server's request log (one werkzeug log record per request), so
they include every client in this process. moto is a Python server on the same (shared) CPUs:
absolute times are far slower than AWS S3's; the request counts are what carries over.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from kvio import KeyValueSystem, layout  # noqa: E402
from kvio.committer import Job  # noqa: E402
from kvio.writer import SortedPairWriter  # noqa: E402
from tests.objectstores import start_s3_server  # noqa: E402

#: one pair per partition: the cost measured is per partition, not per byte
CONF = {"kvio.gc.grace": "0", "kvio.partition.size.max": "1KB"}


class RequestCounter(logging.Handler):
    """Counts the server's requests (werkzeug logs one record per request)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0
        self.lines: list[str] = []
        self.guard = threading.Lock()  # not "lock": Handler.handle holds that one

    def emit(self, record: logging.LogRecord) -> None:
        with self.guard:
            self.count += 1
            if len(self.lines) < 200_000:
                self.lines.append(record.getMessage())


def run_job(uri: str, partitions: int, threads: int, storage_options: dict,
            counter: RequestCounter | None = None) -> dict[str, float]:
    """A job of ``threads`` tasks writing ``partitions`` one-pair partitions, then its commit
    (with ``counter``: the requests of each phase and the commit's requests by kind)."""
    started = time.perf_counter()
    job = Job.setup(uri, mode="overwrite", conf=CONF, storage_options=storage_options)
    per_task = -(-partitions // threads)

    def task(t: int) -> dict:
        writer = SortedPairWriter(job.task(t))
        first = t * per_task
        for i in range(first, min(partitions, first + per_task)):
            writer.put(b"k%08d" % i, b"v" * 600)  # two do not fit in 1 KB: one pair per file
        return writer.close()

    with ThreadPoolExecutor(threads) as pool:
        messages = list(pool.map(task, range(threads)))
    written = time.perf_counter()
    if counter is not None:
        with counter.guard:
            before, counter.lines = counter.count, []
    record = job.commit(messages)
    committed = time.perf_counter()
    assert record is not None and record.to_json()["partitions"] == partitions
    out: dict = {"write_s": written - started, "commit_s": committed - written}
    if counter is not None:
        with counter.guard:
            out["commit_requests"] = counter.count - before
            out["commit_request_kinds"] = dict(Counter(_kind(line) for line in counter.lines))
    return out


def _kind(line: str) -> str:
    """'HEAD object', 'GET list', 'PUT object', ... of a werkzeug request log line."""
    request = line.split('"')[1] if '"' in line else line
    method = request.split(" ")[0].split("m")[-1]  # strip the terminal colour codes
    return f"{method} {'list' if 'list-type' in request else 'object'}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--partitions", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--polls", type=int, default=50, help="follow intervals to count")
    parser.add_argument("--interval", type=float, default=0.1, help="follow interval (s)")
    parser.add_argument("--json-out")
    args = parser.parse_args()

    server = start_s3_server()
    counter = RequestCounter()
    werkzeug = logging.getLogger("werkzeug")
    werkzeug.setLevel(logging.INFO)
    werkzeug.addHandler(counter)
    werkzeug.propagate = False
    rows = []
    try:
        options = server.storage_options
        uri = f"s3://{server.new_bucket('kvio-bench')}/store"
        before = counter.count
        s3 = run_job(uri, args.partitions, args.threads, options, counter)
        s3_requests = counter.count - before
        local_dir = tempfile.mkdtemp(prefix="kvio-bench-commit-")
        try:
            local = run_job(str(Path(local_dir) / "store"), args.partitions, args.threads, {})
        finally:
            shutil.rmtree(local_dir, ignore_errors=True)
        kvs = KeyValueSystem(conf=CONF, storage_options=options)
        with kvs.open_store(uri) as reader:
            manifest_bytes = reader.io.size(layout.manifest_path(reader.version))
        rows.append({"figure": "commit of N partitions on the S3 server", "partitions": args.partitions,
                     "s3_commit_s": round(s3["commit_s"], 2), "local_commit_s": round(local["commit_s"], 3),
                     "ratio_s3_to_local": round(s3["commit_s"] / max(local["commit_s"], 1e-9), 1),
                     "s3_write_s": round(s3["write_s"], 2), "local_write_s": round(local["write_s"], 3),
                     "s3_requests_write_and_commit": s3_requests,
                     "s3_commit_requests": s3["commit_requests"],
                     "s3_commit_request_kinds": s3["commit_request_kinds"],
                     "requests_per_partition": round(s3_requests / args.partitions, 2)})
        rows.append({"figure": "manifest bytes per partition", "manifest_bytes": manifest_bytes,
                     "bytes_per_partition": round(manifest_bytes / args.partitions, 1)})

        # Follow polls: the follower thread at a short interval, no new version published.
        # Each poll asks for the next record by name (a ranged GET, 404 while nothing is new):
        # count those, and all requests.
        follow = KeyValueSystem(conf={**CONF, "kvio.follow.interval": f"{args.interval}s"},
                                storage_options=options)
        live = follow.open_store(uri, follow=True)
        try:
            time.sleep(args.interval * 2)
            with counter.guard:
                counter.lines.clear()
                before = counter.count
            time.sleep(args.interval * args.polls)
            with counter.guard:
                total = counter.count - before
                lines = list(counter.lines)
        finally:
            live.close()
        polls = sum(1 for line in lines if layout.COMMITS in line and " 404 " in line)
        rows.append({"figure": "requests per follow poll (no new version), follower thread",
                     "interval_s": args.interval, "polls": polls, "requests": total,
                     "requests_per_poll": round(total / max(polls, 1), 2),
                     "kinds": dict(Counter(_kind(line) for line in lines))})
    finally:
        server.server.stop()
    for row in rows:
        print(json.dumps(row))
    if args.json_out:
        with open(args.json_out, "w") as handle:
            json.dump(rows, handle, indent=1)


if __name__ == "__main__":
    main()
