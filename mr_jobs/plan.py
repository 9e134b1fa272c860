"""Driver-side planning of a kvio MapReduce job: input splits, output routing, the plan file.

Input: each input store's current version is planned by the core's one read planner
(:meth:`kvio.reader.StoreReader.plan`, the same that the reader, the Spark source and the CLI
use). Every split becomes one map task, described by a small ``.kvsplit`` file (JSON: store,
version, the split's pieces) that the task reads through :func:`kvio.plan.read_version_split`.
Overlapping partitions (merged or appended stores) are merged inside their piece, so a mapper
sees each key once, with the value of the latest partition — never a superseded value.

Routing: output partition ``i`` holds the keys in ``[split_points[i-1], split_points[i])``
(unsigned byte order). The split points are quantiles of the input's block first keys, so
ranges are disjoint, roughly equal in bytes, and the same on every runner. Routing is a binary
search: no hash, nothing salted, nothing that depends on the runner.

The plan file (JSON) carries the committer's JobContext and the split points to every task;
mrjob uploads it with the job (``--kvio-plan``).
"""
from __future__ import annotations

import json
import math
import os
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from kvio import pins
from kvio.errors import InvalidArgumentError, KvioError
from kvio.plan import Split
from kvio.reader import StoreReader
from kvio.system import KeyValueSystem

PLAN_FORMAT = "kvio-mr-plan"
PLAN_VERSION = 2
SPLIT_FORMAT = "kvio-mr-split-v2"
SPLIT_SUFFIX = ".kvsplit"
#: read real keys (not only block first keys) for split points when the input is this small
_SAMPLE_ALL_BYTES = 256 << 20


def absolute_uri(uri: str) -> str:
    """Local paths become absolute (tasks run in other working directories)."""
    return uri if "://" in uri else os.path.abspath(uri)


class Router:
    """Key -> output partition id by binary search over sorted split points."""

    def __init__(self, split_points: Sequence[bytes]):
        points = list(split_points)
        if any(not a < b for a, b in pairwise(points)):
            raise ValueError("split points must be strictly increasing")
        self.split_points = points
        self.num_partitions = len(points) + 1

    def __call__(self, key: bytes) -> int:
        return bisect_right(self.split_points, key)

    def bounds(self, partition: int) -> tuple[bytes | None, bytes | None]:
        """[low, high) of a partition; None = unbounded."""
        low = self.split_points[partition - 1] if partition > 0 else None
        high = self.split_points[partition] if partition < len(self.split_points) else None
        return low, high


def choose_split_points(keys: Iterable[bytes], num_partitions: int) -> list[bytes]:
    """``num_partitions - 1`` quantiles of ``keys`` (fewer when there are too few distinct
    keys). A point never equals the smallest key, so no partition is empty by construction."""
    ordered = sorted(set(keys))
    if num_partitions <= 1 or len(ordered) < 2:
        return []
    points: list[bytes] = []
    for i in range(1, num_partitions):
        point = ordered[(i * len(ordered)) // num_partitions]
        if point > ordered[0] and (not points or point > points[-1]):
            points.append(point)
    return points


@dataclass
class InputSplit:
    """One map task's input: a split of one store version, planned by the core planner.

    Attributes:
        name: the split file's basename (unique within the job).
        path: where the split file was written (the input path mrjob sees).
        store: the store's URI.
        version: the version planned (tasks read exactly this version).
        split: the pieces to read.
    """
    name: str
    path: str
    store: str
    version: str
    split: Split

    def to_json(self) -> dict[str, Any]:
        """The split file's content."""
        return {"format": SPLIT_FORMAT, "name": self.name, "store": self.store,
                "version": self.version, "split": self.split.to_json()}

    @classmethod
    def from_json(cls, doc: dict[str, Any], path: str = "") -> InputSplit:
        """Parse a split file's content.

        Raises:
            KvioError: not a kvio split file of this version.
        """
        if not isinstance(doc, dict) or doc.get("format") != SPLIT_FORMAT:
            raise KvioError(f"{path or 'input'} is not a kvio {SPLIT_FORMAT} split file (driver "
                            "and tasks run different kvio versions?)")
        return cls(doc["name"], path, doc["store"], doc["version"], Split.from_json(doc["split"]))

    @classmethod
    def load(cls, path: str) -> InputSplit:
        """Read a split file written by the driver."""
        try:
            with open(path) as handle:
                return cls.from_json(json.load(handle), path)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise KvioError(f"cannot read the input split {path}: {exc}") from None


@dataclass
class ExpandedStores:
    splits: list[InputSplit] = field(default_factory=list)
    candidate_keys: list[bytes] = field(default_factory=list)
    partitions: int = 0           # non-empty input partitions
    bytes: int = 0
    pins: list[pins.Pin] = field(default_factory=list)  # with pin=True: release after the job


def expand_stores(uris: Sequence[str], kvs: KeyValueSystem, split_dir: str,
                  split_size: int, num_partitions_hint: int | None,
                  pin: bool = False) -> ExpandedStores:
    """Plan the current version of each store into split files written to ``split_dir``, and
    gather candidate keys for the output split points.

    Args:
        uris: input store URIs.
        kvs: settings and storage options.
        split_dir: where split files are written (uploaded with the job by mrjob).
        split_size: target bytes per map task.
        num_partitions_hint: the number of output partitions wanted, if known.
        pin: pin each planned version (renewed by this process) so that retention and gc
            keep it while the job runs; the caller releases ``pins`` when the job ends.

    Returns:
        The splits and candidate keys (and the pins).

    Raises:
        KvioError: a store cannot be read, or an argument is wrong.
    """
    if split_size < 1:
        raise InvalidArgumentError(f"--split-size must be at least 1 byte, got {split_size}")
    out = ExpandedStores()
    readers: list[StoreReader] = []
    try:
        for uri in uris:
            reader = kvs.open_store(uri)
            readers.append(reader)
            if pin:  # taken while the reader's own pin still holds the version
                held = pins.acquire(reader.io, reader.version, kvs.conf, purpose=pins.MRJOB)
                if held is not None:
                    out.pins.append(held)
            out.partitions += len(reader.manifest.live())
        wanted = num_partitions_hint or out.partitions
        # Block first keys are the candidates (blocks are about equal in bytes); a huge
        # partition contributes a stride of them so that the driver's memory stays bounded.
        per_partition = max(64, math.ceil(64 * wanted / max(1, out.partitions)))
        for n, reader in enumerate(readers):
            out.bytes += reader.manifest.size
            for part in reader.partition_readers():
                stride = max(1, part.block_count // per_partition)
                out.candidate_keys.extend(part.first_keys[::stride])
            for i, split in enumerate(reader.plan(split_bytes=split_size)):
                name = f"store{n:03d}-split{i:05d}{SPLIT_SUFFIX}"
                item = InputSplit(name, os.path.join(split_dir, name), reader.uri, reader.version, split)
                with open(item.path, "w") as handle:
                    json.dump(item.to_json(), handle)
                out.splits.append(item)
        # Few blocks for the partitions asked for: take real keys (cheap for a small input).
        if len(set(out.candidate_keys)) < 4 * wanted and out.bytes <= _SAMPLE_ALL_BYTES:
            for reader in readers:
                for batch in reader.batches():
                    out.candidate_keys.extend(batch.column(0).to_pylist())
    except BaseException:
        for held in out.pins:
            held.release()
        raise
    finally:
        for reader in readers:
            reader.close()
    return out


def read_split_points_file(path: str) -> list[bytes]:
    """One hex-encoded key per line (blank lines ignored).

    Raises:
        KvioError: the file cannot be read or holds something that is not hex.
    """
    try:
        with open(path) as handle:
            return sorted({bytes.fromhex(line.strip()) for line in handle if line.strip()})
    except OSError as exc:
        raise KvioError(f"cannot read the split points file {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise KvioError(f"split points file {path} must hold one hex key per line: {exc}") from None


@dataclass
class Plan:
    context: dict[str, Any]
    input_kind: str                       # "store" or "text"
    split_points: list[bytes]
    path: str | None = None               # where the plan file was written (driver only)

    @property
    def num_partitions(self) -> int:
        return len(self.split_points) + 1

    def to_json(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "format_version": PLAN_VERSION, "context": self.context,
                "input": self.input_kind, "split_points": [p.hex() for p in self.split_points]}

    def write(self, path: str) -> None:
        with open(path, "w") as handle:
            json.dump(self.to_json(), handle, sort_keys=True)
        self.path = path

    @classmethod
    def load(cls, path: str) -> Plan:
        try:
            with open(path) as handle:
                doc = json.load(handle)
        except (OSError, ValueError) as exc:
            raise KvioError(f"cannot read the job plan {path}: {exc}") from None
        if doc.get("format") != PLAN_FORMAT or doc.get("format_version") != PLAN_VERSION:
            raise KvioError(f"{path} is not a kvio MapReduce plan of version {PLAN_VERSION} "
                            "(driver and tasks run different kvio versions?)")
        return cls(doc["context"], doc["input"], [bytes.fromhex(p) for p in doc["split_points"]],
                   path)
