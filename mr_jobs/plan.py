"""Driver-side planning of a kvio MapReduce job: input splits, output routing, the plan file.

Input: a store URI expands to the partition files its manifest lists (never a directory
listing). A partition becomes one map task; a partition larger than the split size becomes
several, each a block range described by a small ``.kvsplit`` file (JSON) that the map task
reads instead of the partition itself. Both kinds reach the mapper through mrjob's
``mapper_raw``, so partition bytes never pass through line-oriented input.

Routing: output partition ``i`` holds the keys in ``[split_points[i-1], split_points[i])``
(unsigned byte order). The split points are quantiles of the input's block first keys, so
ranges are disjoint, roughly equal in bytes, and the same on every runner. Routing is a binary
search: no hash, nothing salted, nothing that depends on the runner.

The plan file (JSON) carries the committer's JobContext, the split points and the input
splits to every task; mrjob uploads it with the job (``--kvio-plan``).
"""
from __future__ import annotations

import json
import math
import os
import posixpath
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from kvio import layout
from kvio.errors import KvioError
from kvio.reader import StoreReader
from kvio.system import KeyValueSystem

PLAN_FORMAT = "kvio-mr-plan"
PLAN_VERSION = 1
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
        if any(not a < b for a, b in zip(points, points[1:])):
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
    """One map task's input: a whole partition file, or a block range of one."""
    name: str                     # basename mrjob sees (unique within the job)
    path: str                     # local path or URI handed to mrjob as input
    store: str
    version: str
    entry: dict[str, Any]         # the partition's manifest entry (validated when opened)
    blocks: tuple[int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "store": self.store, "version": self.version,
                "entry": self.entry, "blocks": list(self.blocks) if self.blocks else None}

    @classmethod
    def from_json(cls, doc: dict[str, Any], path: str = "") -> "InputSplit":
        blocks = tuple(doc["blocks"]) if doc.get("blocks") else None
        return cls(doc["name"], path, doc["store"], doc["version"], doc["entry"], blocks)  # type: ignore[arg-type]


@dataclass
class ExpandedStores:
    splits: list[InputSplit] = field(default_factory=list)
    candidate_keys: list[bytes] = field(default_factory=list)
    partitions: int = 0           # non-empty input partitions
    bytes: int = 0
    count: int = 0


def _partition_uri(reader: StoreReader, entry: dict[str, Any]) -> str:
    rel = posixpath.join(layout.version_dir(reader.version), entry["path"])
    path = reader.io.path(rel)
    return path if reader.io.is_local else reader.io.fs.unstrip_protocol(path)


def expand_stores(uris: Sequence[str], kvs: KeyValueSystem, split_dir: str,
                  split_size: int, num_partitions_hint: int | None) -> ExpandedStores:
    """Partition files (or block-range split files written into ``split_dir``) of the current
    version of each store, plus candidate keys for the split points."""
    out = ExpandedStores()
    readers: list[tuple[StoreReader, list]] = []
    for uri in uris:
        reader = kvs.open_store(uri)
        live = [(entry, part) for entry, part in zip(reader.manifest["partitions"],
                                                     reader.partition_readers()) if entry["count"]]
        readers.append((reader, live))
        out.partitions += len(live)
    wanted = num_partitions_hint or out.partitions
    # Block first keys are the candidates (blocks are about equal in bytes); a huge partition
    # contributes a stride of them so that the driver's memory stays bounded.
    per_partition = max(64, math.ceil(64 * wanted / max(1, out.partitions)))
    for reader, live in readers:
        for entry, part in live:
            out.bytes += entry["size"]
            out.count += entry["count"]
            stride = max(1, part.block_count // per_partition)
            out.candidate_keys.extend(part.first_keys[::stride])
            uri_of_file = _partition_uri(reader, entry)
            base = posixpath.basename(entry["path"])
            pieces = min(part.block_count, max(1, math.ceil(entry["size"] / split_size)))
            if pieces <= 1:
                out.splits.append(InputSplit(base, uri_of_file, reader.uri, reader.version, entry))
                continue
            for j in range(pieces):
                lo, hi = part.block_count * j // pieces, part.block_count * (j + 1) // pieces
                split = InputSplit(f"{base}.b{lo}-{hi}{SPLIT_SUFFIX}", "", reader.uri,
                                   reader.version, entry, (lo, hi))
                split.path = os.path.join(split_dir, split.name)
                with open(split.path, "w") as handle:
                    json.dump({**split.to_json(), "file": uri_of_file}, handle)
                out.splits.append(split)
    # Few blocks for the partitions asked for: take real keys (cheap for a small input).
    if len(set(out.candidate_keys)) < 4 * wanted and out.bytes <= _SAMPLE_ALL_BYTES:
        for _, live in readers:
            for _, part in live:
                for batch in part.iter_batches():
                    out.candidate_keys.extend(batch.column(0).to_pylist())
    for reader, _ in readers:
        reader.close()
    names = [s.name for s in out.splits]
    if len(names) != len(set(names)):
        raise KvioError("two input partitions have the same file name; give each store once")
    return out


def read_split_points_file(path: str) -> list[bytes]:
    """One hex-encoded key per line (blank lines ignored)."""
    with open(path) as handle:
        try:
            return sorted({bytes.fromhex(line.strip()) for line in handle if line.strip()})
        except ValueError as exc:
            raise KvioError(f"split points file {path} must hold one hex key per line: {exc}") from None


@dataclass
class Plan:
    context: dict[str, Any]
    input_kind: str                       # "store" or "text"
    split_points: list[bytes]
    splits: list[InputSplit] = field(default_factory=list)
    path: str | None = None               # where the plan file was written (driver only)

    @property
    def num_partitions(self) -> int:
        return len(self.split_points) + 1

    def split(self, name: str) -> InputSplit | None:
        for s in self.splits:
            if s.name == name:
                return s
        return None

    def to_json(self) -> dict[str, Any]:
        return {"format": PLAN_FORMAT, "format_version": PLAN_VERSION, "context": self.context,
                "input": self.input_kind, "split_points": [p.hex() for p in self.split_points],
                "splits": [s.to_json() for s in self.splits if s.blocks is None]}

    def write(self, path: str) -> None:
        with open(path, "w") as handle:
            json.dump(self.to_json(), handle, sort_keys=True)
        self.path = path

    @classmethod
    def load(cls, path: str) -> "Plan":
        try:
            with open(path) as handle:
                doc = json.load(handle)
        except (OSError, ValueError) as exc:
            raise KvioError(f"cannot read the job plan {path}: {exc}") from None
        if doc.get("format") != PLAN_FORMAT or doc.get("format_version") != PLAN_VERSION:
            raise KvioError(f"{path} is not a kvio MapReduce plan of version {PLAN_VERSION} "
                            "(driver and tasks run different kvio versions?)")
        return cls(doc["context"], doc["input"], [bytes.fromhex(p) for p in doc["split_points"]],
                   [InputSplit.from_json(s) for s in doc["splits"]], path)
