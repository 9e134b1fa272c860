"""The ``kvstore`` Spark data source (pyspark's Python Data Source API, pyspark >= 4.1).

    spark.read.format("kvstore").load(uri)                     # key binary, value binary
    spark.read.format("kvstore").option("keyType", "string").option("valueType", "string").load(uri)
    df.write.format("kvstore").mode("overwrite").save(uri)     # or "append"

Register it with ``spark_jobs.register(spark)``, or let Spark find it: it imports every
top-level ``pyspark_*`` module and ``pyspark_kvio`` exposes this class as ``DefaultSource``.

Read options:
  keyType, valueType   binary (default) | string (UTF-8; a non-UTF-8 byte string fails clearly)
  splitSize            bytes per input split (default 128MB, like Spark's maxPartitionBytes):
                       bigger partitions are cut into block ranges, small ones packed together
  minSplits            cut splits smaller so there are at least this many (e.g. the core count)
  version              read a retained older version instead of the current one
  kvio.pin.batch.ttl   how long gc keeps the version a query planned (default 24h, see below)
  batchSize            bytes per Arrow batch handed to Spark (default 4MB; 0: one per block)
  pushdown             true (default) | false: use pushed-down key filters (when Spark's
                       spark.sql.python.filterPushdown.enabled is on) to prune and filter
  kvio.*               kvio settings (e.g. kvio.read.verify.checksums)
  storage.<name>       fsspec storage option <name>

Write options:
  writeMode            error | ignore | overwrite | append; overrides the Spark save mode, which
                       for Python sources can only be overwrite or append
  duplicates           error (default) | first | last, in the DataFrame's row order
  keyColumn, valueColumn  the columns to write (default key and value); other columns are an
                       error unless these are given
  deleteColumn         with writeMode/mode append: a boolean column; true deletes the key
                       (its value may be null), false or null sets it; upserts and deletes
                       publish as one version (tombstones, docs/FORMAT.md §3.8)
  expectedVersion      publish only on top of this version (compare-and-swap): when the store's
                       current version is another one, fail with ConcurrentCommitError and
                       publish nothing (spark_jobs/compact_store.py rewrites what it read)
  sortMemory           bytes a task sorts in memory before spilling a run (default: the setting
                       kvio.sort.memory, 256MB)
  spillDir             local directory for sort runs (default: Spark's local dir)
  kvio.*, storage.<name>  as above

Planning runs in short-lived Python workers on the driver; everything a task needs travels in
the pickled reader, its input partitions, or the writer and its commit messages. Planning pins
the version it plans (``_pins/<version>.spark.pin``, one file per version shared by all
queries, extended by each plan) for ``kvio.pin.batch.ttl``, so retention and ``kvio gc`` keep
it while the tasks read, even when new versions are published meanwhile.

pyspark 4.3 caveat (filter pushdown on): Spark keeps the read plan made by the last query on a
loaded DataFrame that pushed filters, and reuses it for later queries on that DataFrame that
push none (also for the second scan of a self-union/join). Since pushed key filters prune what
the plan reads, such a later query would see only the earlier query's keys. This is Spark's
cache (PythonDataSourceV2.readInfo), not something a source can see; load the store again for
each query (loading is cheap: no data is read), or read with .option("pushdown", "false").
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pyspark.sql.datasource import (
    DataSource,
    DataSourceArrowWriter,
    DataSourceReader,
    EqualNullSafe,
    EqualTo,
    GreaterThan,
    GreaterThanOrEqual,
    In,
    InputPartition,
    IsNotNull,
    IsNull,
    LessThan,
    LessThanOrEqual,
    Not,
    StringStartsWith,
    WriterCommitMessage,
)
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import BinaryType, BooleanType, DataType, StringType, StructField, StructType

from kvio import keyranges, pins, versions
from kvio.committer import MODES, Job, JobContext
from kvio.config import Config, parse_bool, parse_size
from kvio.errors import ConcurrentCommitError, InvalidArgumentError, KvioError
from kvio.fs import FileIO
from kvio.keyranges import ALL, NOTHING, Range
from kvio.plan import Piece, Split, read_version_split
from kvio.system import KeyValueSystem
from kvio.task_writer import DUPLICATES, write_task
from kvio.update import encode_ops, write_ops_task

from .commit import finish_job
from .scan import OutputBatches

NAME = "kvstore"
_TYPES: dict[str, DataType] = {"binary": BinaryType(), "string": StringType()}


# ---- options -------------------------------------------------------------------------------
def absolute_uri(uri: str) -> str:
    """Local paths made absolute on the driver: executors run in other directories."""
    return uri if "://" in uri else os.path.abspath(uri)


def _uri(options: Mapping[str, str]) -> str:
    path = options.get("path")
    if not path:
        raise KvioError("no store given: use .load(uri) / .save(uri) (or the path option)")
    return absolute_uri(path)


def _kvio_conf(options: Mapping[str, str]) -> dict[str, str]:
    conf = {k: v for k, v in options.items() if k.startswith("kvio.")}
    Config(conf)  # unknown or malformed settings fail here, on the driver
    return conf


def _storage_options(options: Mapping[str, str]) -> dict[str, str]:
    return {k[len("storage."):]: v for k, v in options.items() if k.startswith("storage.")}


def _choice(options: Mapping[str, str], name: str, allowed: Sequence[str], default: str) -> str:
    value = str(options.get(name, default)).lower()
    if value not in allowed:
        raise KvioError(f"option {name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _size(options: Mapping[str, str], name: str, default: int) -> int:
    """A positive size option (``128MB``, ``4096``), or a clear error naming the option."""
    if name not in options:
        return default
    try:
        value = parse_size(options[name])
    except KvioError:
        raise InvalidArgumentError(f"option {name} must be a size such as 128MB or 4096, got "
                                   f"{options[name]!r}") from None
    if value < 1:
        raise InvalidArgumentError(f"option {name} must be at least 1 byte, got {options[name]!r}")
    return value


def _positive_int(options: Mapping[str, str], name: str, default: int) -> int:
    """A positive integer option, or a clear error naming the option."""
    text = options.get(name)
    if text is None:
        return default
    try:
        value = int(str(text).strip())
    except ValueError:
        raise InvalidArgumentError(f"option {name} must be a whole number, got {text!r}") from None
    if value < 1:
        raise InvalidArgumentError(f"option {name} must be at least 1, got {text!r}")
    return value


# ---- reading --------------------------------------------------------------------------------
@dataclass
class KvStoreSplit(InputPartition):
    """One read task: the pieces of the store it reads and the pushed-down key ranges."""
    uri: str
    version: str
    conf: dict[str, str]
    storage_options: dict[str, str]
    pieces: tuple[Piece, ...]
    ranges: list[Range] = field(default_factory=lambda: list(ALL))


class _PushFilters:
    """``reader.pushFilters`` as Spark 4.3 sees it. When filter pushdown is disabled, planning
    refuses any reader whose ``pushFilters.__func__`` is not the base class's, and a data source
    cannot know that setting. Pushing filters is only an optimisation here (results are the
    same either way), so the bound callable reports the base function for that check and runs
    kvio's filter translation when Spark calls it with pushdown enabled."""

    def __init__(self, reader: KvStoreReader):
        self.__func__ = DataSourceReader.pushFilters
        self.__self__ = reader

    def __call__(self, filters: list) -> list:
        return self.__self__.push_filters(filters)


class KvStoreReader(DataSourceReader):
    def __init__(self, options: Mapping[str, str], schema: StructType):
        self.uri = _uri(options)
        self.conf = _kvio_conf(options)
        self.storage_options = _storage_options(options)
        self.version = options.get("version") or None
        self.split_bytes = _size(options, "splitSize", 128 << 20)
        self.min_splits = _positive_int(options, "minSplits", 1)
        self.pushdown = parse_bool(options.get("pushdown", "true"))
        self.batch_bytes = _size(options, "batchSize", 4 << 20)
        fields = _check_read_schema(schema)
        self.key_name = fields[0].name
        self.key_is_string = isinstance(fields[0].dataType, StringType)
        self.arrow_schema = to_arrow_schema(schema, timezone="UTC")
        self.ranges: list[Range] = list(ALL)

    # -- filter pushdown --
    @property
    def pushFilters(self) -> _PushFilters:
        return _PushFilters(self)

    def push_filters(self, filters: list) -> list:
        """Claims the filters on the key that translate exactly into key ranges; the rest
        (filters on the value, NOT LIKE, ...) are returned for Spark to evaluate."""
        if not self.pushdown:
            return list(filters)
        rest = []
        for f in filters:
            truth = self._truth(f)
            if truth is None:
                rest.append(f)
            else:
                self.ranges = keyranges.intersect(self.ranges, truth[0])
        return rest

    def _literal(self, value: Any) -> bytes | None:
        if self.key_is_string:
            return value.encode("utf-8") if isinstance(value, str) else None
        return bytes(value) if isinstance(value, (bytes, bytearray)) else None

    def _truth(self, f: Any) -> tuple[list[Range], list[Range]] | None:
        """(keys where ``f`` is TRUE, keys where it is NULL), or None if not handled. SQL's
        three-valued logic matters under NOT: ``NOT (key IN ('a', NULL))`` is never true."""
        if isinstance(f, Not):
            inner = self._truth(f.child)
            if inner is None:
                return None
            true, null = inner
            return keyranges.complement(keyranges.union(true, null)), null
        if getattr(f, "attribute", None) != (self.key_name,):
            return None
        if isinstance(f, IsNull):
            return NOTHING, NOTHING  # keys are never null
        if isinstance(f, IsNotNull):
            return ALL, NOTHING
        if isinstance(f, In):
            values = list(f.value)
            literals = [self._literal(v) for v in values if v is not None]
            keys = [k for k in literals if k is not None]
            if len(keys) < len(literals):  # a literal of another type: Spark evaluates it
                return None
            true = keyranges.normalize(r for k in keys for r in keyranges.point(k))
            return true, (keyranges.complement(true) if len(keys) < len(values) else NOTHING)
        if not isinstance(f, (EqualTo, EqualNullSafe, GreaterThan, GreaterThanOrEqual, LessThan,
                              LessThanOrEqual, StringStartsWith)):
            return None
        if f.value is None:
            return (NOTHING, NOTHING) if isinstance(f, EqualNullSafe) else (NOTHING, ALL)
        key = self._literal(f.value)
        if key is None:
            return None
        if isinstance(f, (EqualTo, EqualNullSafe)):
            return keyranges.point(key), NOTHING
        if isinstance(f, StringStartsWith):
            return keyranges.prefix(key), NOTHING
        if isinstance(f, (GreaterThan, GreaterThanOrEqual)):
            return keyranges.at_least(key, isinstance(f, GreaterThanOrEqual)), NOTHING
        return keyranges.below(key, isinstance(f, LessThanOrEqual)), NOTHING

    # -- planning (driver) --
    def partitions(self) -> list[InputPartition]:
        if not self.ranges:
            return []
        kvs = KeyValueSystem(conf=self.conf, storage_options=self.storage_options)
        with kvs.open_store(self.uri, version=self.version) as store:
            splits = store.plan(self.ranges, self.split_bytes, self.min_splits)
            # The query outlives this short-lived planning worker (and its reader's pin): pin
            # the version for kvio.pin.batch.ttl so that gc keeps it while the tasks read.
            pins.hold_batch(store.io, store.version, kvs.conf)
        return [KvStoreSplit(self.uri, store.version, self.conf, self.storage_options,
                             s.pieces, self.ranges) for s in splits]

    # -- reading (executors) --
    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        if not isinstance(partition, KvStoreSplit):  # Spark's placeholder for "no splits"
            return iter(())
        return self._read(partition)

    def _read(self, split: KvStoreSplit) -> Iterator[pa.RecordBatch]:
        conf = Config(split.conf)
        io = FileIO.for_conf(split.uri, conf, split.storage_options)
        batches = read_version_split(io, split.version, Split(split.pieces, 0), conf, split.ranges)
        yield from OutputBatches(self.arrow_schema, split.uri, self.batch_bytes)(batches)


def _check_read_schema(schema: StructType) -> list[StructField]:
    fields = list(schema.fields)
    if len(fields) != 2 or not all(isinstance(f.dataType, (BinaryType, StringType)) for f in fields):
        raise KvioError(f"a kvstore reads as two columns, key and value, each binary or string; "
                        f"got schema {schema.simpleString()}")
    return fields


# ---- writing --------------------------------------------------------------------------------
@dataclass
class KvStoreCommitMessage(WriterCommitMessage):
    task: dict[str, Any]   # the committer's commit message of the task's attempt
    rows: int


def _task_message(message: WriterCommitMessage | None) -> dict[str, Any] | None:
    """The committer's message inside a task's commit message (None: the task failed)."""
    if message is None:
        return None
    if not isinstance(message, KvStoreCommitMessage):  # Spark returns what write() returned
        raise TypeError(f"not a kvstore commit message: {type(message).__name__}")
    return message.task


class KvStoreWriter(DataSourceArrowWriter):
    """Created on the driver (where the committer job is set up); ``write`` runs on executors
    with a pickled copy, ``commit``/``abort`` on the driver with another."""

    def __init__(self, ctx: dict[str, Any], key_column: str, value_column: str, duplicates: str,
                 sort_memory: int, spill_dir: str | None, delete_column: str | None = None):
        self.ctx = ctx
        self.delete_column = delete_column
        self.key_column = key_column
        self.value_column = value_column
        self.duplicates = duplicates
        self.sort_memory = sort_memory
        self.spill_dir = spill_dir

    def write(self, iterator: Iterator[pa.RecordBatch]) -> KvStoreCommitMessage:
        from pyspark import TaskContext
        task = TaskContext.get()
        task_id = task.partitionId() if task is not None else 0
        if self.delete_column is not None:
            ctx = JobContext.from_json(self.ctx)
            ops = (encode_ops(b.column(self.key_column), b.column(self.value_column),
                              b.column(self.delete_column), ctx.uri)
                   for b in iterator if b.num_rows)
            message, rows = write_ops_task(ctx, task_id, ops, duplicates=self.duplicates,
                                           sort_memory=self.sort_memory, spill_dir=self.spill_dir)
            return KvStoreCommitMessage(message, rows)
        message, rows = write_task(JobContext.from_json(self.ctx), task_id, iterator,
                                   key_column=self.key_column, value_column=self.value_column,
                                   duplicates=self.duplicates, sort_memory=self.sort_memory,
                                   spill_dir=self.spill_dir)
        return KvStoreCommitMessage(message, rows)

    def commit(self, messages: list[WriterCommitMessage | None]) -> None:
        finish_job(Job(JobContext.from_json(self.ctx)), [_task_message(m) for m in messages],
                   self.duplicates)

    def abort(self, messages: list[WriterCommitMessage | None]) -> None:
        """Remove the job's staging (Job.abort retries while straggling attempts still write)."""
        Job(JobContext.from_json(self.ctx)).abort()


def check_write_schema(schema: StructType, options: Mapping[str, str]) -> tuple[str, str]:
    key_column = options.get("keyColumn", "key")
    value_column = options.get("valueColumn", "value")
    names = schema.fieldNames()
    explicit = "keyColumn" in options or "valueColumn" in options
    delete_column = options.get("deleteColumn")
    if delete_column is not None:
        if delete_column not in names:
            raise KvioError(f"the DataFrame has no column {delete_column!r} named by the option "
                            f"deleteColumn (columns: {names})")
        if not isinstance(schema[delete_column].dataType, BooleanType):
            raise KvioError(f"deleteColumn {delete_column!r} has type "
                            f"{schema[delete_column].dataType.simpleString()}; it must be boolean "
                            "(true deletes the key)")
    for what, name in (("key", key_column), ("value", value_column)):
        if name not in names:
            raise KvioError(f"the DataFrame has no {what} column {name!r} (columns: {names}); "
                            f"rename one, or name it with the option {what}Column")
    wanted = {key_column, value_column} | ({delete_column} if delete_column else set())
    if not explicit and sorted(names) != sorted(wanted):
        raise KvioError(f"the DataFrame has columns {names}; a kvstore holds a key and a value "
                        "column: select them first (df.select('key', 'value')) or name them with "
                        "the options keyColumn and valueColumn")
    for what, name in (("key", key_column), ("value", value_column)):
        dtype = schema[name].dataType
        if isinstance(dtype, (BinaryType, StringType)):
            continue
        hint = f"df.withColumn({name!r}, F.col({name!r}).cast('string'))"
        if what == "value" and dtype.typeName() in ("struct", "map", "array"):
            hint = (f"df.withColumn({name!r}, F.to_json({name!r})), or "
                    "spark_jobs.write_store(df, uri, value_format='json')")
        raise KvioError(f"{what} column {name!r} has type {dtype.simpleString()}; a kvstore holds "
                        f"binary or string keys and values: convert it first, e.g. {hint}")
    return key_column, value_column


def _writer(options: Mapping[str, str], schema: StructType, overwrite: bool) -> KvStoreWriter:
    uri = _uri(options)
    key_column, value_column = check_write_schema(schema, options)
    mode = _choice(options, "writeMode", MODES, "overwrite" if overwrite else "append")
    duplicates = _choice(options, "duplicates", DUPLICATES, "error")
    # sortMemory, else the kvio.sort.memory setting (options, $KVIO_CONF, defaults)
    sort_memory = _size(options, "sortMemory", Config(_kvio_conf(options)).sort_memory)
    delete_column = options.get("deleteColumn") or None
    if delete_column is not None and mode != "append":
        raise KvioError(f"the option deleteColumn deletes keys from the current version: it "
                        f"needs mode append, not {mode!r}", store=uri)
    job = Job.setup(uri, mode=mode, conf=_kvio_conf(options),
                    storage_options=_storage_options(options))
    expected = options.get("expectedVersion") or None
    if expected is not None and job.ctx.base_version != expected:
        # Compare-and-swap for jobs that rewrite what they read (compaction): the commit
        # itself refuses a publish that lands after this point, this refuses one before it.
        job.abort()
        raise ConcurrentCommitError(
            f"expected to replace version {expected}, but the current version is "
            f"{job.ctx.base_version}: another job published meanwhile; nothing was published",
            store=uri, landed=False)
    return KvStoreWriter(job.ctx.to_json(), key_column, value_column, duplicates, sort_memory,
                         options.get("spillDir") or None, delete_column)


# ---- the source -------------------------------------------------------------------------------
class KvStoreDataSource(DataSource):
    """``format("kvstore")``: a kvio store as a DataFrame of key/value pairs."""

    @classmethod
    def name(cls) -> str:
        return NAME

    def schema(self) -> StructType:
        uri = _uri(self.options)
        # Fail at load() with kvio's explanation (missing, deleted, not a store, unfinished).
        conf = Config(_kvio_conf(self.options))
        versions.current_state_for_read(FileIO(uri, allow_non_atomic=conf.allow_non_atomic,
                                               storage_options=_storage_options(self.options)))
        key = _TYPES[_choice(self.options, "keyType", tuple(_TYPES), "binary")]
        value = _TYPES[_choice(self.options, "valueType", tuple(_TYPES), "binary")]
        return StructType([StructField("key", key, nullable=False),
                           StructField("value", value, nullable=False)])

    def reader(self, schema: StructType) -> KvStoreReader:
        return KvStoreReader(self.options, schema)

    def writer(self, schema: StructType, overwrite: bool) -> KvStoreWriter:
        return _writer(self.options, schema, overwrite)
