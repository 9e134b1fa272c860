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

* The driver (:meth:`KVStoreJob.run_kv_job`, :mod:`mr_jobs.driver`) plans each input store
  with the core planner (one ``.kvsplit`` file per map task; the versions stay pinned for the
  run), picks split points for the output partitions, calls ``Job.setup(DEST)`` and writes a
  plan file that mrjob uploads to every task.
* Map tasks (:mod:`mr_jobs.tasks`) read their split with ``mapper_raw`` — each key once, with
  its winning value, even in merged or appended stores — call ``mapper_kv`` for every pair and
  route each output key to the partition whose key range holds it.
* The shuffle sorts by (partition, hex key) on every runner (``SORT_VALUES``; on Hadoop two key
  fields, partitioned on the first), so a reduce call sees one partition's pairs in key order
  no matter how partitions are spread over reducers.
* Each reduce call writes its partition through a committer task attempt named by the
  partition id, and outputs the attempt's commit message as its only record.
* The driver reads those messages from the runner's output and commits: one atomic publish.
  On any failure it aborts, so nothing becomes visible and no staging is left behind.
"""
from __future__ import annotations

from argparse import SUPPRESS
from typing import Any

from mrjob.job import MRJob
from mrjob.protocol import RawValueProtocol
from mrjob.setup import parse_legacy_hash_path
from mrjob.step import MRStep

from kvio.errors import KvioError

from .driver import PLAN_NAME, Driver
from .protocols import CommitMessageProtocol, RoutedPairProtocol
from .tasks import _overrides

DEFAULT_SPLIT_SIZE = "256MB"


class KVStoreJob(Driver):
    """Base class of MapReduce jobs that write a kvio store. Override :meth:`mapper_kv` (store
    input) or ``mapper`` (text input, with ``INPUT_PROTOCOL``), and :meth:`reducer`.

    Keys and values are ``bytes`` everywhere. A reducer receives the keys of its partition in
    increasing unsigned byte order and must yield strictly increasing keys of the same
    partition (yielding the key it was given always qualifies).

    The task side is :class:`mr_jobs.tasks.TaskSide` (where the defaults of ``mapper_kv`` and
    ``reducer`` are), the driver :class:`mr_jobs.driver.Driver`; this class wires them into
    mrjob: options, steps, protocols, runner arguments."""

    SORT_VALUES = True              # shuffle sorts (partition, key) on every runner
    INPUT_PROTOCOL = RawValueProtocol  # text input only: what ``mapper`` receives

    # ---- options --------------------------------------------------------------------------
    def configure_args(self) -> None:
        super().configure_args()
        add = self.arg_parser.add_argument  # driver-only: tasks get everything from the plan
        add("--output-store", dest="output_store", default=None,
            help="URI of the kvio store to write (local path or hdfs://...)")
        add("--output-mode", dest="output_mode", default="error",
            choices=("error", "overwrite", "ignore", "append"),
            help="when the output store exists: fail (default), replace it, do nothing, or "
                 "append (new values win; a reducer's (key, None) deletes the key)")
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

