"""The task side of :class:`mr_jobs.KVStoreJob`: routing, map tasks over planner splits, the
combiner and the reducers that write output partitions through committer task attempts.

Everything a task needs comes from the plan file the driver ships (``--kvio-plan``): the
committer's JobContext and the split points; a map task's input is a ``.kvsplit`` file.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import groupby
from operator import itemgetter
from typing import Any

import pyarrow as pa
from mrjob.job import MRJob

from kvio import pins
from kvio.committer import JobContext, TaskAttempt
from kvio.config import Config
from kvio.errors import ArgumentTypeError, KeyOrderError, KvioError
from kvio.fs import FileIO
from kvio.plan import read_version_split
from kvio.writer import SortedPairWriter

from .plan import SPLIT_SUFFIX, InputSplit, Plan, Router
from .protocols import RoutedPairProtocol

COUNTER_GROUP = "kvio"
_REDUCE_BATCH = 4096                # pairs per Arrow batch in the default reducer...
_REDUCE_BATCH_BYTES = 8 << 20       # ...or fewer when values are big


def _overrides(obj: Any, name: str, base: type) -> bool:
    return getattr(type(obj), name, None) is not getattr(base, name, None)




class TaskSide(MRJob):
    """Map, combine and reduce for store input and output; the defaults of what users
    override (:meth:`mapper_kv`, :meth:`reducer`) live here too."""

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


    def _plan(self) -> Plan | None:
        if self._kv_plan is None and getattr(self.options, "kvio_plan", None):
            self._kv_plan = Plan.load(self.options.kvio_plan)
        return self._kv_plan


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
        identity = not _overrides(self, "mapper_kv", TaskSide)
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
        attempt = TaskAttempt(ctx, partition)
        writer = SortedPairWriter(attempt)
        # In an append job a reducer's (key, None) deletes the key: it goes to a tombstone
        # file of the same attempt (docs/FORMAT.md §3.8), above the carried partitions.
        deletes = SortedPairWriter(attempt, tombstones=True) if ctx.mode == "append" else None
        try:
            if _overrides(self, "reducer", TaskSide):
                self._reduce_with_user_reducer(partition, pairs, writer, deletes)
            else:
                self._reduce_identity(pairs, writer)
            if deletes is not None:
                deletes.close()  # first: the attempt's message (writer.close) then lists both
            message = writer.close()
        except BaseException:
            if deletes is not None:
                deletes.discard()
            writer.discard()
            raise
        written = writer.count + (deletes.count if deletes is not None else 0)
        self.increment_counter(COUNTER_GROUP, "pairs written", written)
        self.increment_counter(COUNTER_GROUP, "partitions written", 1)
        yield partition, message

    def _reduce_with_user_reducer(self, partition: int, pairs: Iterable[tuple[bytes, bytes]],
                                  writer: SortedPairWriter,
                                  deletes: SortedPairWriter | None = None) -> None:
        route = self._router()
        reducer = self.reducer
        last: bytes | None = None
        for key, group in groupby(pairs, itemgetter(0)):
            for out_key, out_value in reducer(key, (v for _, v in group)) or ():
                if route(out_key) != partition:
                    raise self._range_error(out_key, key, partition, "reducer")
                if deletes is None:
                    writer.put(out_key, out_value)
                    continue
                # Two writers: each checks its own order, this checks the keys across both.
                if last is not None and type(out_key) is bytes and not last < out_key:
                    raise KeyOrderError("reducer yielded keys out of order or twice (a key "
                                        "both set and deleted?)", store=writer.store, key=out_key)
                (deletes if out_value is None else writer).put(out_key, b"" if out_value is None
                                                               else out_value)
                last = out_key

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



def _pair_table(keys: list[bytes], values: list[bytes]) -> pa.Table:
    return pa.table({"key": pa.array(keys, pa.large_binary()),
                     "value": pa.array(values, pa.large_binary())})


