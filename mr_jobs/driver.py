"""The driver side of :class:`mr_jobs.KVStoreJob`: plan the inputs (core planner splits,
pinned for the run), choose the output split points, set up the committer job, run the mrjob
runner, check the reducers' commit messages and publish once — or abort and leave nothing.
"""
from __future__ import annotations

import codecs
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import zipfile
from typing import Any

from mrjob.step import StepFailedException
from mrjob.util import log_to_stream

import kvio
import mr_jobs
from kvio import layout
from kvio.committer import Job
from kvio.config import parse_size
from kvio.errors import CommitError, KvioError
from kvio.fs import FileIO
from kvio.system import KeyValueSystem

from .plan import (
    InputSplit,
    Plan,
    absolute_uri,
    choose_split_points,
    expand_stores,
    read_split_points_file,
)
from .tasks import COUNTER_GROUP, TaskSide

log = logging.getLogger("mr_jobs.job")

PLAN_NAME = "kvio-plan.json"
CODE_ZIP_NAME = "kvio-mr-code.zip"


class Driver(TaskSide):
    """``run_job`` / ``run_kv_job``: what runs on the machine that submits the job."""

    # ---- driver ---------------------------------------------------------------------------
    def run_job(self) -> None:
        """Command line: run, publish, print a summary; a clean message and exit 1 on error."""
        stream = codecs.getwriter("utf_8")(self.stderr)
        self.set_up_logging(quiet=self.options.quiet, verbose=self.options.verbose, stream=stream)
        if not self.options.quiet:
            log_to_stream(name="mr_jobs", debug=self.options.verbose, stream=stream)
        try:
            result = self.run_kv_job()
        except StepFailedException as exc:
            log.error("%s; nothing was published", exc)
            sys.exit(1)
        except KvioError as exc:
            log.error("%s", exc)
            sys.exit(1)
        if self.options.summary_json:
            line = json.dumps(result, sort_keys=True)
        elif result.get("skipped"):
            line = f"{result['store']}: exists, nothing written (--output-mode ignore)"
        else:
            line = (f"{result['store']}: published version {result['version']} with "
                    f"{result['count']} pairs in {result['partitions']} partition files "
                    f"({result['seconds']:.1f} s)")
        self.stdout.write(line.encode() + b"\n")
        self.stdout.flush()

    def run_kv_job(self) -> dict[str, Any]:
        """Plan, run the mrjob runner, commit. Returns a summary dict. On failure the job is
        aborted (nothing published, staging removed) and the exception propagates."""
        started = time.monotonic()
        opts = self.options
        if not opts.output_store:
            raise KvioError("--output-store DEST_URI is required")
        if not opts.args:
            raise KvioError("give at least one input: a kvio store URI or text files")
        conf = {}
        for item in opts.kvio_conf:
            name, sep, value = item.partition("=")
            if not sep:
                raise KvioError(f"--kvio-conf takes NAME=VALUE, got {item!r}")
            conf[name.strip()] = value.strip()
        kvs = KeyValueSystem(conf)
        dest = absolute_uri(opts.output_store)
        inputs = [absolute_uri(u) for u in opts.args]
        stores = [u for u in inputs if _is_store(u, kvs)]
        if stores and len(stores) != len(inputs):
            raise KvioError("inputs mix kvio stores and text files; run one job per kind")
        scratch = tempfile.mkdtemp(prefix="kvio-mr-")
        try:
            return self._drive(kvs, dest, inputs, bool(stores), scratch, started)
        finally:
            self._kv_plan = self._kv_inputs = self._kv_code_zip = None
            self._kv_driving = False
            for pin in self._kv_pins:
                pin.release()
            self._kv_pins = []
            shutil.rmtree(scratch, ignore_errors=True)

    def _drive(self, kvs: KeyValueSystem, dest: str, inputs: list[str], store_input: bool,
               scratch: str, started: float) -> dict[str, Any]:
        opts = self.options
        wanted = opts.output_partitions
        if wanted is not None and wanted < 1:
            raise KvioError("--output-partitions must be at least 1")
        splits: list[InputSplit] = []
        if store_input:
            expanded = expand_stores(inputs, kvs, scratch, parse_size(opts.split_size), wanted,
                                     pin=True)
            self._kv_pins = expanded.pins
            splits = expanded.splits
            candidates = expanded.candidate_keys
            wanted = wanted or max(1, expanded.partitions)
        if opts.split_points:
            points = read_split_points_file(opts.split_points)
        elif opts.split_points_from:
            other = expand_stores([absolute_uri(opts.split_points_from)], kvs, scratch,
                                  1 << 62, wanted)
            points = choose_split_points(other.candidate_keys, wanted or max(1, other.partitions))
        elif store_input:
            points = choose_split_points(candidates, wanted or 1)
        elif wanted and wanted > 1:
            raise KvioError("text input has no key distribution to split on: give "
                            "--split-points FILE or --split-points-from STORE with "
                            "--output-partitions > 1")
        else:
            points = []
        # Tasks get the driver's full, resolved settings, not their machines' environment.
        job = Job.setup(dest, mode=opts.output_mode, conf=dict(kvs.conf.raw))
        if job.ctx.skip:
            return {"store": dest, "skipped": True, "seconds": time.monotonic() - started}
        try:
            plan = Plan(job.ctx.to_json(), "store" if store_input else "text", points)
            plan.write(os.path.join(scratch, PLAN_NAME))
            self._kv_plan = plan
            self._kv_driving = True
            self._kv_inputs = [s.path for s in splits] if store_input else inputs
            self._kv_code_zip = _code_zip(scratch)
            if store_input and not splits:
                messages: list[dict] = []  # empty input: nothing to run, publish an empty store
                written: int | None = 0
            else:
                messages, written = self._run_and_collect(plan)
            # Output partitions that received no pairs have no reducer and so no message (an
            # aggregating job often fills only a few of the default ranges): number the tasks
            # that wrote something 0..n-1, in key order, as the committer expects.
            record = job.commit([{**m, "task_id": i} for i, m in
                                 enumerate(sorted(messages, key=lambda m: m["task_id"]))])
        except BaseException as exc:
            unknown = isinstance(exc, CommitError) and exc.landed is None
            if not job.committed and not unknown:
                job.abort()  # also removes the store directory if this job created it
            raise
        parts = [p for m in messages for p in m["partitions"]]
        return {"store": dest, "version": record.version if record else None,
                "seq": record.seq if record else None, "partitions": len(parts),
                "count": sum(p["count"] for p in parts), "bytes": sum(p["size"] for p in parts),
                "output_partitions": plan.num_partitions, "map_tasks": len(splits) or None,
                "runner": self.options.runner or "inline", "pairs_written_counter": written,
                "seconds": time.monotonic() - started}

    def _run_and_collect(self, plan: Plan) -> tuple[list[dict], int | None]:
        with self.make_runner() as runner:
            runner.run()
            outputs = list(self.parse_output(runner.cat_output()))
            counters = runner.counters()
        messages: list[dict] = []
        seen: set[int] = set()
        for partition, message in outputs:
            if partition in seen or not 0 <= partition < plan.num_partitions \
                    or message.get("task_id") != partition:
                raise CommitError(f"unexpected commit message for partition {partition} "
                                  "(duplicate or out of range)", store=plan.context["uri"])
            seen.add(partition)
            messages.append(message)
        # Cross-check: what the reducers counted must be what their messages describe.
        written = None
        for step in counters or ():
            if COUNTER_GROUP in step:
                written = (written or 0) + int(step[COUNTER_GROUP].get("pairs written", 0))
        described = sum(p["count"] for m in messages for p in m["partitions"])
        if written is not None and written != described:
            raise CommitError(f"reducers counted {written} pairs written but their commit "
                              f"messages describe {described}; refusing to publish",
                              store=plan.context["uri"])
        if written is None and described:
            log.warning("no kvio counters from the runner; skipped the count cross-check")
        return messages, written




def _is_store(uri: str, kvs: KeyValueSystem) -> bool:
    io = FileIO(uri, allow_non_atomic=kvs.conf.allow_non_atomic)
    return io.isdir() and io.exists(layout.MARKER)




def _code_zip(directory: str) -> str:
    """A zip of the kvio and mr_jobs packages that mrjob ships with the job (``py_files``), so
    tasks run exactly the driver's code; their third-party dependencies (pyarrow, numpy,
    xxhash, fsspec) must be installed where tasks run."""
    path = os.path.join(directory, CODE_ZIP_NAME)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for init_file in (kvio.__file__, mr_jobs.__file__):
            root = os.path.dirname(os.path.abspath(init_file))
            top = os.path.dirname(root)
            for folder, dirs, files in os.walk(root):
                dirs[:] = [d for d in dirs if d != "__pycache__"]
                for name in sorted(files):
                    if name.endswith((".py", ".conf")):
                        full = os.path.join(folder, name)
                        zf.write(full, os.path.relpath(full, top))
    return path

