"""``KVStoreJob``: an mrjob job whose input is kvio stores (or text) and whose output is a new
kvio store, published atomically by the driver after the runner finishes.

What a user writes::

    class MRCountryCounts(KVStoreJob):
        def mapper_kv(self, key: bytes, value: bytes):   # one call per pair of the input store
            yield country_of(value), b"1"
        def reducer(self, key: bytes, values):           # values of one key, as bytes
            yield key, b"%d" % sum(int(v) for v in values)

    python my_job.py -r inline|local|hadoop STORE_URI --output-store DEST_URI

How it runs (docs/MAPREDUCE.md has the whole story):

* The driver (:meth:`KVStoreJob.run_kv_job`) expands each input store into its partition files
  (from the manifest), picks split points for the output partitions, calls
  ``Job.setup(DEST)`` and writes a plan file that mrjob uploads to every task.
* Map tasks read one partition (or block range) each with ``mapper_raw``, call ``mapper_kv``
  for every pair and route each output key to the partition whose key range holds it.
* The shuffle sorts by (partition, hex key) on every runner (``SORT_VALUES``; on Hadoop two key
  fields, partitioned on the first), so a reduce call sees one partition's pairs in key order
  no matter how partitions are spread over reducers.
* Each reduce call writes its partition through a committer task attempt named by the
  partition id, and outputs the attempt's commit message as its only record.
* The driver reads those messages from the runner's output and commits: one atomic publish.
  On any failure it aborts, so nothing becomes visible and no staging is left behind.
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
from argparse import SUPPRESS
from collections.abc import Iterable, Iterator
from itertools import groupby
from operator import itemgetter
from typing import Any

import pyarrow as pa
from mrjob.job import MRJob
from mrjob.protocol import RawValueProtocol
from mrjob.setup import parse_legacy_hash_path
from mrjob.step import MRStep, StepFailedException
from mrjob.util import log_to_stream

import kvio
import mr_jobs
from kvio import layout, pins
from kvio.committer import Job, JobContext, TaskAttempt
from kvio.config import Config, parse_size
from kvio.errors import ArgumentTypeError, CommitError, KeyOrderError, KvioError
from kvio.fs import FileIO
from kvio.plan import read_version_split
from kvio.system import KeyValueSystem
from kvio.writer import SortedPairWriter

from .plan import (
    SPLIT_SUFFIX,
    InputSplit,
    Plan,
    Router,
    absolute_uri,
    choose_split_points,
    expand_stores,
    read_split_points_file,
)
from .protocols import CommitMessageProtocol, RoutedPairProtocol

log = logging.getLogger(__name__)

COUNTER_GROUP = "kvio"
PLAN_NAME = "kvio-plan.json"
CODE_ZIP_NAME = "kvio-mr-code.zip"
DEFAULT_SPLIT_SIZE = "256MB"
_REDUCE_BATCH = 4096                # pairs per Arrow batch in the default reducer...
_REDUCE_BATCH_BYTES = 8 << 20       # ...or fewer when values are big


def _overrides(obj: Any, name: str, base: type) -> bool:
    return getattr(type(obj), name, None) is not getattr(base, name, None)


class KVStoreJob(MRJob):
    """Base class of MapReduce jobs that write a kvio store. Override :meth:`mapper_kv` (store
    input) or ``mapper`` (text input, with ``INPUT_PROTOCOL``), and :meth:`reducer`.

    Keys and values are ``bytes`` everywhere. A reducer receives the keys of its partition in
    increasing unsigned byte order and must yield strictly increasing keys of the same
    partition (yielding the key it was given always qualifies)."""

    SORT_VALUES = True              # shuffle sorts (partition, key) on every runner
    INPUT_PROTOCOL = RawValueProtocol  # text input only: what ``mapper`` receives

    def __init__(self, args: list[str] | None = None):
        self._kv_plan: Plan | None = None
        self._kv_driving = False          # True while run_kv_job has a runner to configure
        self._kv_inputs: list[str] | None = None
        self._kv_code_zip: str | None = None
        self._kv_router: Router | None = None
        self._kv_context: JobContext | None = None
        self._kv_pins: list[pins.Pin] = []  # the input versions, pinned while the job runs
        super().__init__(args)

    # ---- what users override -------------------------------------------------------------
    def mapper_kv(self, key: bytes, value: bytes) -> Iterable[tuple[bytes, bytes]]:
        """Called for every pair of the input store(s). Default: copy the pair."""
        yield key, value

    def reducer(self, key: bytes, values: Iterator[bytes]) -> Iterable[tuple[bytes, bytes]]:
        """Called once per key with all its values. Default: keep the only value; two values
        for one key are an error (override to combine them)."""
        first = next(values)
        for _ in values:
            raise KvioError("mappers produced two values for one key; override reducer() to "
                            "combine them", key=key)
        yield key, first

    # ---- options --------------------------------------------------------------------------
    def configure_args(self) -> None:
        super().configure_args()
        add = self.arg_parser.add_argument  # driver-only: tasks get everything from the plan
        add("--output-store", dest="output_store", default=None,
            help="URI of the kvio store to write (local path or hdfs://...)")
        add("--output-mode", dest="output_mode", default="error",
            choices=("error", "overwrite", "ignore"),
            help="when the output store exists: fail (default), replace it, or do nothing")
        add("--output-partitions", dest="output_partitions", type=int, default=None,
            help="number of output partitions (key ranges); default: as many as the input "
                 "has non-empty partitions (store input) or 1 (text input)")
        add("--split-size", dest="split_size", default=DEFAULT_SPLIT_SIZE,
            help="bytes of input per map task: small partitions are packed together, larger "
                 f"ones cut into block ranges (default {DEFAULT_SPLIT_SIZE})")
        add("--split-points", dest="split_points", default=None,
            help="file of hex keys, one per line: the first key of each output partition "
                 "but the first (overrides --output-partitions)")
        add("--split-points-from", dest="split_points_from", default=None,
            help="take split points from this store's key distribution (e.g. the previous "
                 "build of the output); needed for text input with --output-partitions > 1")
        add("--kvio-conf", dest="kvio_conf", action="append", default=[], metavar="NAME=VALUE",
            help="kvio setting for the output store, e.g. kvio.block.compression=zstd")
        add("--summary-json", dest="summary_json", action="store_true",
            help="print the result as one JSON object")
        self.add_file_arg("--kvio-plan", dest="kvio_plan", default=None, help=SUPPRESS)

    # ---- mrjob hooks ----------------------------------------------------------------------
    def internal_protocol(self) -> RoutedPairProtocol:
        return RoutedPairProtocol()

    def output_protocol(self) -> CommitMessageProtocol:
        return CommitMessageProtocol()

    def _plan(self) -> Plan | None:
        if self._kv_plan is None and getattr(self.options, "kvio_plan", None):
            self._kv_plan = Plan.load(self.options.kvio_plan)
        return self._kv_plan

    def _input_kind(self) -> str:
        plan = self._plan()
        if plan is not None:
            return plan.input_kind
        return "text" if _overrides(self, "mapper", MRJob) else "store"

    def steps(self) -> list[MRStep]:
        kw: dict[str, Any] = {"reducer": self._kv_reduce}
        if self._input_kind() == "store":
            kw["mapper_raw"] = self._kv_map_store
        else:
            if not _overrides(self, "mapper", MRJob):
                raise KvioError("text input needs a mapper(key, value) that yields (bytes, bytes)")
            kw["mapper"] = self._kv_map_text
        for hook in ("reducer_final", "mapper_raw", "combiner_init", "combiner_final"):
            if _overrides(self, hook, MRJob):
                raise KvioError(f"{type(self).__name__}.{hook} is not supported by KVStoreJob "
                                "(store pairs are written by reducer(); inputs are read by kvio)")
        for hook in ("mapper_init", "reducer_init"):
            if _overrides(self, hook, MRJob):
                kw[hook] = getattr(self, hook)
        if _overrides(self, "mapper_final", MRJob):
            kw["mapper_final"] = self._kv_map_final
        if _overrides(self, "combiner", MRJob):
            kw["combiner"] = self._kv_combine
        return [MRStep(**kw)]

    def jobconf(self) -> dict[str, Any]:
        conf = dict(super().jobconf())
        if self._kv_driving and self._kv_plan is not None:  # one reducer per output partition
            conf.setdefault("mapreduce.job.reduces", str(self._kv_plan.num_partitions))
        return conf

    def _non_option_kwargs(self) -> dict[str, Any]:
        kwargs = super()._non_option_kwargs()
        if self._kv_driving and self._kv_plan is not None:
            kwargs["input_paths"] = list(self._kv_inputs or [])
            kwargs["extra_args"] = list(kwargs["extra_args"]) + [
                "--kvio-plan", parse_legacy_hash_path("file", f"{self._kv_plan.path}#{PLAN_NAME}")]
        return kwargs

    def _runner_kwargs(self) -> dict[str, Any]:
        kwargs = super()._runner_kwargs()
        if self._kv_code_zip and self._runner_class().alias != "inline":
            kwargs["py_files"] = list(kwargs.get("py_files") or []) + [self._kv_code_zip]
        return kwargs

    # ---- task side: routing ---------------------------------------------------------------
    def _context(self) -> JobContext:
        if self._kv_context is None:
            plan = self._plan()
            if plan is None:
                raise KvioError("this task has no kvio plan (--kvio-plan); run the job through "
                                "its driver: python JOB.py -r RUNNER INPUT --output-store DEST")
            self._kv_context = JobContext.from_json(plan.context)
        return self._kv_context

    def _router(self) -> Router:
        if self._kv_router is None:
            plan = self._plan()
            if plan is None:
                self._context()  # raises the explanation
            self._kv_router = Router(plan.split_points)  # type: ignore[union-attr]
        return self._kv_router

    def _routed(self, pairs: Iterable[tuple[bytes, bytes]] | None
                ) -> Iterator[tuple[int, tuple[bytes, bytes]]]:
        route = self._router()
        for key, value in pairs or ():
            if type(key) is not bytes:
                raise ArgumentTypeError(f"{type(self).__name__} yielded a key of type {type(key).__name__}; "
                                "keys and values of a kvio store are bytes")
            yield route(key), (key, value)

    # ---- task side: map -------------------------------------------------------------------
    def _split_batches(self, input_path: str, input_uri: str) -> Iterator[pa.RecordBatch]:
        """The batches of this map task's split, read through the core planner's reader (so
        a merged or appended store yields each key once, with its winning value)."""
        ctx = self._context()
        if not input_path.endswith(SPLIT_SUFFIX):
            raise KvioError(f"input {input_uri} is not a kvio split file of this job (store "
                            "inputs reach map tasks as .kvsplit files written by the driver)")
        split = InputSplit.load(input_path)
        conf = Config(ctx.conf)
        io = FileIO(split.store, allow_non_atomic=True, storage_options=ctx.storage_options,
                    connect_timeout=conf.connect_timeout)
        return read_version_split(io, split.version, split.split, conf)

    def _kv_map_store(self, input_path: str, input_uri: str):
        route = self._router()
        identity = not _overrides(self, "mapper_kv", KVStoreJob)
        mapper = self.mapper_kv
        encode = RoutedPairProtocol.encode_many
        read = 0
        for batch in self._split_batches(input_path, input_uri):
            keys = batch.column(0).to_pylist()
            values = batch.column(1).to_pylist()
            read += len(keys)
            if not identity:
                out_keys: list = []
                out_values: list = []
                for key, value in zip(keys, values, strict=True):
                    for out_key, out_value in mapper(key, value) or ():
                        out_keys.append(out_key)
                        out_values.append(out_value)
                keys, values = self._require_bytes(out_keys, out_values)
            if keys:  # one block of lines per input block: one write instead of one per pair
                yield None, encode([route(k) for k in keys], keys, values)
        self.increment_counter(COUNTER_GROUP, "pairs read", read)

    def _require_bytes(self, keys: list, values: list) -> tuple[list[bytes], list[bytes]]:
        for what, items in (("key", keys), ("value", values)):
            for item in items:
                if type(item) is not bytes:
                    raise ArgumentTypeError(f"{type(self).__name__} yielded a {what} of type "
                                    f"{type(item).__name__}; keys and values of a kvio store are bytes")
        return keys, values

    def _kv_map_text(self, key: Any, value: Any):
        yield from self._routed(self.mapper(key, value))

    def _kv_map_final(self):
        yield from self._routed(self.mapper_final())

    def _kv_combine(self, partition: int, pairs: Iterable[tuple[bytes, bytes]]):
        route = self._router()
        for key, group in groupby(pairs, itemgetter(0)):
            for out_key, out_value in self.combiner(key, (v for _, v in group)) or ():
                if route(out_key) != partition:
                    raise self._range_error(out_key, key, partition, "combiner")
                yield partition, (out_key, out_value)

    # ---- task side: reduce ----------------------------------------------------------------
    def _range_error(self, out_key: bytes, in_key: bytes, partition: int, what: str) -> KvioError:
        return KvioError(f"{what} yielded a key that belongs to output partition "
                         f"{self._router()(out_key)}, but it is writing partition {partition} "
                         f"(given key {in_key!r}); yield keys of the range you were given",
                         store=self._context().uri, key=out_key)

    def _kv_reduce(self, partition: int, pairs: Iterable[tuple[bytes, bytes]]):
        ctx = self._context()
        writer = SortedPairWriter(TaskAttempt(ctx, partition))
        try:
            if _overrides(self, "reducer", KVStoreJob):
                self._reduce_with_user_reducer(partition, pairs, writer)
            else:
                self._reduce_identity(pairs, writer)
            message = writer.close()
        except BaseException:
            writer.discard()
            raise
        self.increment_counter(COUNTER_GROUP, "pairs written", writer.count)
        self.increment_counter(COUNTER_GROUP, "partitions written", 1)
        yield partition, message

    def _reduce_with_user_reducer(self, partition: int, pairs: Iterable[tuple[bytes, bytes]],
                                  writer: SortedPairWriter) -> None:
        route = self._router()
        reducer = self.reducer
        for key, group in groupby(pairs, itemgetter(0)):
            for out_key, out_value in reducer(key, (v for _, v in group)) or ():
                if route(out_key) != partition:
                    raise self._range_error(out_key, key, partition, "reducer")
                writer.put(out_key, out_value)

    def _reduce_identity(self, pairs: Iterable[tuple[bytes, bytes]], writer: SortedPairWriter) -> None:
        """The default reducer, in Arrow batches: keys arrive sorted and routed; a duplicate key
        fails the writer's order check."""
        keys: list[bytes] = []
        values: list[bytes] = []
        size = 0
        try:
            for key, value in pairs:
                keys.append(key)
                values.append(value)
                size += len(value)
                if len(keys) >= _REDUCE_BATCH or size >= _REDUCE_BATCH_BYTES:
                    writer.put_many(_pair_table(keys, values))
                    keys, values, size = [], [], 0
            if keys:
                writer.put_many(_pair_table(keys, values))
        except KeyOrderError as exc:
            raise KvioError(f"{exc} (mappers produced two values for one key; override "
                            "reducer() to combine them)", store=writer.store, key=exc.key) from None

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


def _pair_table(keys: list[bytes], values: list[bytes]) -> pa.Table:
    return pa.table({"key": pa.array(keys, pa.large_binary()),
                     "value": pa.array(values, pa.large_binary())})


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
