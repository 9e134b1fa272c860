"""Remote lookups and scans against moto's S3 server on loopback (issue 14).

Requests and bytes are counted for real: botocore's event hooks on the reader's own s3fs
client see every HTTP request and every GetObject body (:mod:`bench.suite.s3count`).

Two stores of the same data are written to S3 by kvio:

* **default**: default settings, so remote blocks of ``kvio.block.size.remote`` (3.5 KiB);
* **reference**: ``kvio.block.size.remote = 0`` (the 64 KiB blocks every store had before)
  read with ``kvio.read.ahead.bytes = 1`` (one request per block, as scans read before read-ahead
  existed) -- "today's" remote reads, measured in the same run.

Measured:

* requests and bytes per cold hit, cold miss and repeated hit. "Cold" gets run with
  ``kvio.read.cache.blocks = 1`` so that each needs its index page and block afresh (the
  default cache of 256 blocks and 1,024 pages would serve repeated pieces); repeated hits use
  the default cache;
* get latency: cold (a fresh reader with default settings, every key in a block not read yet),
  warm (a fresh reader whose pieces come from the disk cache ``kvio.read.cache.dir`` filled by
  the cold pass) and local disk (the same data in a local store, a fresh reader);
* full-scan throughput, default against the reference.
"""
from __future__ import annotations

import logging
import random
import shutil
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kvio import KeyValueSystem

from .common import Row
from .datagen import Dataset
from .s3count import S3Requests

_KEY, _SECRET, _REGION = "kvio-bench", "kvio-bench-secret", "us-east-1"


class _Moto:
    """moto's ThreadedMotoServer on a free loopback port."""

    def __init__(self) -> None:
        import socket

        from moto.server import ThreadedMotoServer
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self.server.start()
        self.endpoint = f"http://127.0.0.1:{port}"
        self.storage_options = {"key": _KEY, "secret": _SECRET, "endpoint_url": self.endpoint,
                                "client_kwargs": {"region_name": _REGION}}

    def bucket(self) -> str:
        import boto3
        name = f"kvio-bench-{uuid.uuid4().hex[:8]}"
        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=_KEY,
                     aws_secret_access_key=_SECRET, region_name=_REGION).create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.server.stop()


def _open(uri: str, so: dict[str, Any] | None, conf: dict[str, Any]) -> tuple[Any, S3Requests | None]:
    reader = KeyValueSystem(conf=conf, storage_options=so).open_store(uri)
    counter = S3Requests().attach(reader.io.fs) if so is not None else None
    reader.partition_readers()  # open the partitions (header, trailer, footer) before measuring
    return reader, counter


def _per_get(reader: Any, counter: S3Requests, keys: list[bytes]) -> tuple[float, float, float]:
    r0, b0 = counter.snapshot()
    t0 = time.perf_counter()
    for k in keys:
        reader.get(k)
    dt = time.perf_counter() - t0
    r1, b1 = counter.snapshot()
    n = len(keys)
    return (r1 - r0) / n, (b1 - b0) / n, dt / n


def _latency(uri: str, so: dict[str, Any] | None, conf: dict[str, Any], keys: list[bytes]) -> float:
    """Mean seconds per get of a fresh reader (store and partitions opened first)."""
    reader, _ = _open(uri, so, conf)
    with reader:
        t0 = time.perf_counter()
        for k in keys:
            reader.get(k)
        return (time.perf_counter() - t0) / len(keys)


def _scan_seconds(uri: str, so: dict[str, Any], conf: dict[str, Any], reps: int) -> tuple[float, int]:
    times, requests = [], 0
    for _ in range(reps):
        reader, counter = _open(uri, so, conf)
        assert counter is not None
        with reader:
            r0 = counter.requests
            t0 = time.perf_counter()
            rows = sum(b.num_rows for b in reader.batches())
            times.append(time.perf_counter() - t0)
            requests = counter.requests - r0
        assert rows > 0
    return statistics.median(times), requests


def _spread_keys(reader: Any, ds: Dataset, count: int, seed: int) -> list[bytes]:
    """``count`` keys of distinct blocks (so none is served by a block another one read)."""
    parts = reader.partition_readers()
    rnd = random.Random(seed)
    seen, keys = set(), []
    for k in rnd.sample(ds.keys, min(len(ds.keys), count * 3)):
        for i, p in enumerate(parts):
            if p.count and p.min_key <= k <= p.max_key:
                b = p.block_range(k, None)[0]
                if (i, b) not in seen:
                    seen.add((i, b))
                    keys.append(k)
                break
        if len(keys) == count:
            break
    return keys


def run(ds: Dataset, gets: int, reps: int = 3, section: str = "remote") -> list[Row]:
    try:
        moto = _Moto()
    except ImportError as exc:
        return [Row("remote (moto S3 server)", None, None, "", None, None,
                    note=f"skipped: moto[server] is not installed ({exc})", section=section)]
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="kvio-bench-remote-"))
    try:
        so = moto.storage_options
        bucket = moto.bucket()
        uris = {"default": f"s3://{bucket}/default", "reference": f"s3://{bucket}/reference"}
        for label, conf in (("default", {}), ("reference", {"kvio.block.size.remote": "0"})):
            with KeyValueSystem(conf=conf, storage_options=so).create_store(uris[label]) as w:
                w.put_many(zip(ds.keys, ds.values, strict=True))
        local = str(tmp / "local")
        with KeyValueSystem().create_store(local) as w:
            w.put_many(zip(ds.keys, ds.values, strict=True))
        rnd = random.Random(11)
        hits = [ds.keys[rnd.randrange(ds.count)] for _ in range(gets)]
        misses = ds.sample_misses(gets, 12)

        # ---- requests and bytes per get --------------------------------------------------
        counts: dict[str, dict[str, tuple[float, float, float]]] = {}
        for label in ("default", "reference"):
            reader, counter = _open(uris[label], so, {"kvio.read.cache.blocks": 1})
            assert counter is not None
            with reader:
                blocks = sum(p.block_count for p in reader.partition_readers())
                footer = sum(p.size - p._index_offset - 4096 * p.index_pages
                             for p in reader.partition_readers())
                counts[label] = {"hit": _per_get(reader, counter, hits),
                                 "miss": _per_get(reader, counter, misses)}
            reader, counter = _open(uris[label], so, {})
            assert counter is not None
            with reader:
                _per_get(reader, counter, hits[:200])
                counts[label]["repeat"] = _per_get(reader, counter, hits[:200])
            counts[label]["shape"] = (blocks, footer, 0.0)
        for kind, target_req, target_bytes in (("hit", "<= 2", 8 * 1024), ("miss", "<= 1", 4096 + 64),
                                               ("repeat", "<= 0", 0)):
            req, byt, _ = counts["default"][kind]
            ref_req, ref_byt, _ = counts["reference"][kind]
            label = {"hit": "cold hit", "miss": "cold miss", "repeat": "repeated hit"}[kind]
            shape = counts["default"]["shape"]
            rows.append(Row(f"S3 get ({label}): requests per get", req, ref_req, "requests/get", None,
                            target_req, section=section, repetitions=1,
                            reference_name="64 KiB blocks (before)",
                            met=req <= float(target_req.split()[1]) + 0.02,
                            note=f"{ds.name} on moto S3; {len(hits) if kind != 'repeat' else 200:,} gets; "
                                 f"{shape[0]:,} blocks, footers {shape[1] / 1024:.0f} KiB"))
            rows.append(Row(f"S3 get ({label}): bytes per get", byt / 1024, ref_byt / 1024, "KiB/get",
                            byt / ref_byt if ref_byt else None, None, section=section, repetitions=1,
                            reference_name="64 KiB blocks (before)", met=byt <= target_bytes,
                            note=f"target <= {target_bytes / 1024:g} KiB"))

        # ---- latency: cold, warm from the disk cache, local disk -------------------------
        cache_conf = {"kvio.read.cache.dir": str(tmp / "cache"), "kvio.read.cache.bytes": "1GB"}
        lat_keys: list[bytes]
        with KeyValueSystem(storage_options=so).open_store(uris["default"]) as probe:
            lat_keys = _spread_keys(probe, ds, min(gets, 500), seed=13)
        cold = _latency(uris["default"], so, cache_conf, lat_keys)
        warm = _latency(uris["default"], so, cache_conf, lat_keys)
        local_lat = _latency(local, None, {}, lat_keys)
        n = len(lat_keys)
        rows.append(Row("S3 get latency, cold (blocks never read)", cold * 1e3, local_lat * 1e3, "ms/get",
                        cold / local_lat, None, section=section, repetitions=1,
                        reference_name="local disk, fresh reader",
                        note=f"{n} keys of distinct blocks, fresh reader per pass; moto on loopback"))
        rows.append(Row("S3 get latency, warm (disk cache, fresh reader)", warm * 1e3, local_lat * 1e3,
                        "ms/get", warm / local_lat, None, section=section, repetitions=1,
                        reference_name="local disk, fresh reader",
                        note=f"cold/warm = {cold / warm:.1f}x; same {n} keys"))

        # ---- scans ------------------------------------------------------------------------
        new_s, new_req = _scan_seconds(uris["default"], so, {}, reps)
        old_s, old_req = _scan_seconds(uris["reference"], so, {"kvio.read.ahead.bytes": 1}, reps)
        rows.append(Row("S3 full scan throughput", ds.count / new_s / 1e6, ds.count / old_s / 1e6,
                        "M rows/s", old_s / new_s, ">= 0.9", section=section, repetitions=reps,
                        reference_name="64 KiB blocks, a request per block (before)",
                        note=f"{new_req} requests per scan (reference {old_req}); median of {reps}"))
    finally:
        moto.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows
