"""Remote lookups: requests and bytes per get on a non-local fsspec filesystem.

The store lives in fsspec's ``memory://`` filesystem, which kvio treats like any remote store:
no memory map, one ranged ``cat_file`` per piece it needs. Every call into the filesystem
object is counted (calls it makes internally are not), as an object store would count HTTP
requests: ``cat_file`` (GET, bytes counted), ``info``/``exists``/``ls``... (HEAD/LIST).

"Cold" gets run with ``kvio.read.cache.blocks = 1`` so that each get needs its index page and
its block afresh (the default cache of 256 blocks and 1024 pages would serve repeated pieces).
"""
from __future__ import annotations

import random
import threading
import uuid
from typing import Any

import fsspec

from kvio import KeyValueSystem

from .common import Row
from .datagen import Dataset

_COUNTED = ("cat_file", "cat", "open", "info", "exists", "isdir", "isfile", "ls", "find", "size",
            "modified", "glob")


class CountingFS:
    """Counts top-level calls into one fsspec filesystem instance (patched in place)."""

    def __init__(self, fs: Any):
        self.fs = fs
        self.requests = 0
        self.bytes = 0
        self._depth = threading.local()
        self._saved: dict[str, Any] = {}

    def __enter__(self) -> CountingFS:
        for name in _COUNTED:
            original = getattr(self.fs, name)
            self._saved[name] = original
            setattr(self.fs, name, self._wrap(original))
        return self

    def __exit__(self, *exc) -> None:
        for name in self._saved:
            delattr(self.fs, name)  # back to the class's method

    def _wrap(self, method):
        def counted(*args, **kwargs):
            depth = getattr(self._depth, "n", 0)
            self._depth.n = depth + 1
            try:
                result = method(*args, **kwargs)
            finally:
                self._depth.n = depth
            if depth == 0:
                self.requests += 1
                if isinstance(result, (bytes, bytearray)):
                    self.bytes += len(result)
            return result
        return counted

    def snapshot(self) -> tuple[int, int]:
        return self.requests, self.bytes


def _build(ds: Dataset, uri: str, conf: dict[str, Any]) -> None:
    with KeyValueSystem(conf=conf).create_store(uri) as writer:
        writer.put_many(zip(ds.keys, ds.values, strict=True))


def _measure(ds: Dataset, uri: str, gets: int, seed: int) -> dict[str, float]:
    fs = fsspec.filesystem("memory")
    rnd = random.Random(seed)
    hits = [ds.keys[rnd.randrange(ds.count)] for _ in range(gets)]
    misses = ds.sample_misses(gets, seed + 1)
    out: dict[str, float] = {}
    with CountingFS(fs) as counter:
        reader = KeyValueSystem(conf={"kvio.read.cache.blocks": 1}).open_store(uri)
        out["open_requests"], out["open_bytes"] = counter.snapshot()
        before = counter.snapshot()
        reader.get(hits[0])  # opens the partition: trailer and footer reads
        after = counter.snapshot()
        out["first_get_requests"], out["first_get_bytes"] = after[0] - before[0], after[1] - before[1]
        for label, keys in (("hit", hits[1:]), ("miss", misses)):
            before = counter.snapshot()
            for k in keys:
                reader.get(k)
            after = counter.snapshot()
            out[f"{label}_requests"] = (after[0] - before[0]) / len(keys)
            out[f"{label}_bytes"] = (after[1] - before[1]) / len(keys)
        reader.close()
    return out


def run(ds: Dataset, gets: int, section: str = "remote") -> list[Row]:
    rows: list[Row] = []
    fs = fsspec.filesystem("memory")
    for label, conf in (("default 64 KiB blocks", {}), ("kvio.block.size=4KB", {"kvio.block.size": "4KB"})):
        uri = f"memory://kvio-bench-{uuid.uuid4().hex[:8]}/store"
        try:
            _build(ds, uri, conf)
            m = _measure(ds, uri, gets, seed=11)
        finally:
            fs.rm(uri.rsplit("/", 1)[0], recursive=True)
        note = (f"{ds.name}, {label}; open: {m['open_requests']:.0f} requests / "
                f"{m['open_bytes'] / 1024:.1f} KiB; first get (+ partition open): "
                f"{m['first_get_requests']:.0f} requests / {m['first_get_bytes'] / 1024:.1f} KiB")
        for kind in ("hit", "miss"):
            req, byt = m[f"{kind}_requests"], m[f"{kind}_bytes"]
            kind_label = "hits" if kind == "hit" else "misses"
            rows.append(Row(f"remote get ({kind_label}), {label}: requests per get", req, None,
                            "requests/get",
                            None, "<= 2", note=note if kind == "hit" else f"{ds.name}, {label}",
                            section=section, repetitions=1, met=req <= 2.05,
                            extra={"bytes_per_get": byt}))
            rows.append(Row(f"remote get ({kind_label}), {label}: bytes per get", byt / 1024, None, "KiB/get",
                            None, "a few KB (<= 16 KiB)", note=f"{gets - (kind == 'hit'):,} cold gets",
                            section=section, repetitions=1, met=byt <= 16 * 1024))
    return rows
