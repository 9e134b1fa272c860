"""What SET/DEL updates cost (issue 12): gets and scans over stacked delta layers against the
compacted store, and an update against a full rebuild.

    .venv/bin/python bench/bench_updates.py [--keys N] [--big-keys N] [--quick] [--json-out PATH]

1. **Layers.** A store of ``--keys`` pairs (16-byte keys, 100-byte values) gets 1, 10 and 50
   updates of 1,000 operations each (900 sets, 100 deletes; the compaction policy off), then is
   compacted. Random-hit get latency and full-scan throughput of the layered version are
   compared with the compacted one (same content, same run), with the layer key index
   (default) and without it (``kvio.read.overlay.keys=0``: every layer asked, as before).
2. **Update vs rebuild.** A store of ``--big-keys`` pairs is built from Arrow batches, then an
   update of 1,000 keys is published; time and bytes written of each.

Prints one line per figure and, with ``--json-out``, writes rows in bench/README.md's format.
Data lives in a temporary directory under bench/data/, removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kvio  # noqa: E402

VALUE = b"v" * 100
NO_POLICY = {"kvio.compact.max.layers": "0"}


def key(i: int) -> bytes:
    return b"key-%012d" % i


def build(kvs: kvio.KeyValueSystem, uri: str, n: int, batch: int = 200_000) -> float:
    """Build a store of n pairs from Arrow batches; seconds taken."""
    start = time.perf_counter()
    with kvs.create_store(uri, mode="overwrite") as w:
        for lo in range(0, n, batch):
            hi = min(n, lo + batch)
            keys = pa.array([key(i) for i in range(lo, hi)], pa.binary())
            values = pa.array([VALUE] * (hi - lo), pa.binary())
            w.put_many(pa.record_batch([keys, values], names=["key", "value"]))
    return time.perf_counter() - start


def update(kvs: kvio.KeyValueSystem, uri: str, n: int, rng: random.Random, ops: int = 1000) -> None:
    with kvs.update_store(uri) as u:
        for _ in range(ops * 9 // 10):
            u.set(key(rng.randrange(n)), b"new-%d" % rng.randrange(1 << 30))
        for _ in range(ops // 10):
            u.delete(key(rng.randrange(n)))


def get_latency(reader, sample: list[bytes], reps: int) -> float:
    """Median over reps of the mean time of one get, in microseconds."""
    for k in sample:  # warm: every block touched once
        reader.get(k)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for k in sample:
            reader.get(k)
        times.append((time.perf_counter() - start) / len(sample) * 1e6)
    return statistics.median(times)


def scan_rate(reader, reps: int) -> float:
    """Median over reps of full-scan throughput, pairs per second."""
    rates = []
    for _ in range(reps):
        start = time.perf_counter()
        rows = sum(b.num_rows for b in reader.batches())
        rates.append(rows / (time.perf_counter() - start))
    return statistics.median(rates)


def load_note() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}"


def layers_rows(work: Path, n: int, reps: int, sample_size: int) -> list[dict]:
    rows = []
    kvs = kvio.KeyValueSystem(conf=NO_POLICY)
    probing = kvio.KeyValueSystem(conf={**NO_POLICY, "kvio.read.overlay.keys": "0"})
    rng = random.Random(7)
    sample = [key(rng.randrange(n)) for _ in range(sample_size)]
    done = 0
    for layers in (1, 10, 50):
        uri = str(work / f"layers-{layers}")
        build(kvs, uri, n)
        for _ in range(layers):
            update(kvs, uri, n, rng)
        done = layers
        compacted_uri = str(work / f"compacted-{layers}")
        shutil.copytree(uri, compacted_uri)
        kvs.compact(compacted_uri)
        with kvs.open_store(uri) as layered, probing.open_store(uri) as plain, \
                kvs.open_store(compacted_uri) as flat:
            assert layered.get_many(sample) == flat.get_many(sample) == plain.get_many(sample)
            deltas = len(layered.manifest.partitions) - len(flat.manifest.partitions)
            indexed = layered._layers is not None
            g_flat, g_layer, g_plain = [], [], []
            for _ in range(reps):  # alternate, so load from other processes falls on all three
                g_flat.append(get_latency(flat, sample, 1))
                g_layer.append(get_latency(layered, sample, 1))
                g_plain.append(get_latency(plain, sample, 1))
            s_flat, s_layer = [], []
            for _ in range(max(1, reps // 2)):
                s_flat.append(scan_rate(flat, 1))
                s_layer.append(scan_rate(layered, 1))
        f, lay, pl = (statistics.median(x) for x in (g_flat, g_layer, g_plain))
        note = (f"{n:,} keys, {layers} updates of 1,000 ops (900 set, 100 del) = "
                f"{deltas} delta partitions; {sample_size:,} random-hit gets, median of {reps}; "
                f"{load_note()}")
        rows.append({"measurement": f"get with {layers} update(s) stacked (layer key index"
                                    f"{'' if indexed else ': over budget, not used'})",
                     "kvio": round(lay, 2), "reference": round(f, 2), "unit": "µs",
                     "ratio": round(lay / f, 2), "target": "<= 1.3" if layers == 10 else None,
                     "reference_name": "the same content compacted", "repetitions": reps,
                     "note": note})
        rows.append({"measurement": f"get with {layers} update(s) stacked, every layer asked "
                                    "(kvio.read.overlay.keys=0)",
                     "kvio": round(pl, 2), "reference": round(f, 2), "unit": "µs",
                     "ratio": round(pl / f, 2), "target": None,
                     "reference_name": "the same content compacted", "repetitions": reps,
                     "note": note})
        sf, sl = statistics.median(s_flat), statistics.median(s_layer)
        rows.append({"measurement": f"full scan with {layers} update(s) stacked",
                     "kvio": round(sl), "reference": round(sf), "unit": "pairs/s",
                     "ratio": round(sl / sf, 2), "target": None,
                     "reference_name": "the same content compacted",
                     "repetitions": max(1, reps // 2), "note": note})
        for r in rows[-3:]:
            print(f"{r['measurement']}: {r['kvio']} vs {r['reference']} {r['unit']} "
                  f"= {r['ratio']}x", flush=True)
        shutil.rmtree(uri)
        shutil.rmtree(compacted_uri)
    assert done == 50
    return rows


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def rebuild_rows(work: Path, n: int) -> list[dict]:
    kvs = kvio.KeyValueSystem(conf=NO_POLICY)
    uri = work / "big"
    build_s = build(kvs, str(uri), n)
    store_bytes = directory_bytes(uri / "_versions")
    before = {p for p in uri.rglob("*") if p.is_file()}
    rng = random.Random(11)
    start = time.perf_counter()
    update(kvs, str(uri), n, rng)
    update_s = time.perf_counter() - start
    # bytes the update wrote: new files that are not hard links to carried partitions
    new_files = [p for p in uri.rglob("*") if p.is_file() and p not in before]
    written = sum(p.stat().st_size for p in new_files if p.stat().st_nlink == 1)
    note = (f"{n:,} keys x 100-byte values ({store_bytes / 1e6:,.0f} MB of partitions); update "
            f"of 1,000 ops; one run each; {load_note()}")
    rows = [{"measurement": "update of 1,000 keys vs full rebuild: time",
             "kvio": round(update_s, 3), "reference": round(build_s, 2), "unit": "s",
             "ratio": round(update_s / build_s, 4), "target": "<= 0.01",
             "reference_name": "building the whole store again", "repetitions": 1, "note": note},
            {"measurement": "update of 1,000 keys vs full rebuild: bytes written",
             "kvio": written, "reference": store_bytes, "unit": "bytes",
             "ratio": round(written / store_bytes, 6), "target": None,
             "reference_name": "building the whole store again", "repetitions": 1,
             "note": "new files that are not hard links of carried partitions (manifest, delta, "
                     "tombstones, commit record)"}]
    for r in rows:
        print(f"{r['measurement']}: {r['kvio']} vs {r['reference']} {r['unit']} = {r['ratio']}x",
              flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    ap.add_argument("--keys", type=int, help="keys of the layered stores (default 1,000,000; quick 100,000)")
    ap.add_argument("--big-keys", type=int, help="keys of the rebuild comparison (default 10,000,000; "
                    "quick 1,000,000)")
    ap.add_argument("--reps", type=int, help="repetitions (default 5; quick 3)")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args(argv)
    n = args.keys or (100_000 if args.quick else 1_000_000)
    big = args.big_keys or (1_000_000 if args.quick else 10_000_000)
    reps = args.reps or (3 if args.quick else 5)
    (ROOT / "bench" / "data").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="updates-", dir=ROOT / "bench" / "data"))
    try:
        rows = layers_rows(work, n, reps, 20_000 if args.quick else 100_000)
        rows += rebuild_rows(work, big)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json_out:
        args.json_out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
