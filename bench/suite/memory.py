"""Writer peak memory: build a store of a given size in this process and report its RSS.

Run as ``python -m bench.suite.memory --bytes N --out DIR --json-out FILE`` (the runner starts
one process per size, so imports and allocator state do not carry over). Pairs arrive as Arrow
tables of 16 MiB made on the fly, so the input never accumulates; RSS is sampled every 10 ms
with psutil. (``ru_maxrss`` is not used: Linux carries it over from the parent across exec.)
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from kvio import KeyValueSystem  # noqa: E402

CHUNK_BYTES = 16 << 20


class PeakRSS:
    def __init__(self, interval: float = 0.01):
        self.proc = psutil.Process()
        self.interval = interval
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def chunks(total: int, value_size: int, seed: int = 5):
    """Arrow tables of sorted (16-byte key, value) pairs adding up to ``total`` bytes."""
    rng = np.random.default_rng(seed)
    rows = max(1, CHUNK_BYTES // (value_size + 16))
    start, made = 0, 0
    while made < total:
        n = rows
        ids = np.arange(start, start + n, dtype=">u8")
        keys = np.zeros((n, 16), dtype=np.uint8)
        keys[:, 8:] = ids.view(np.uint8).reshape(n, 8)
        key_arr = pa.FixedSizeBinaryArray.from_buffers(pa.binary(16), n, [None, pa.py_buffer(keys.tobytes())])
        offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * value_size).tobytes())
        data = pa.py_buffer(rng.bytes(n * value_size))
        values = pa.Array.from_buffers(pa.binary(), n, [None, offsets, data])
        yield pa.table({"key": key_arr.cast(pa.binary()), "value": values})
        start += n
        made += n * (16 + value_size)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bytes", type=int, required=True, help="pair bytes to write")
    ap.add_argument("--value-size", type=int, default=4096)
    ap.add_argument("--out", required=True, help="store directory (removed afterwards)")
    ap.add_argument("--json-out", required=True)
    args = ap.parse_args()
    import shutil
    baseline = psutil.Process().memory_info().rss
    start = time.perf_counter()
    try:
        with PeakRSS() as peak:
            with KeyValueSystem().create_store(args.out) as writer:
                for table in chunks(args.bytes, args.value_size):
                    writer.put_many(table)
                count = writer.count
        elapsed = time.perf_counter() - start
        store_bytes = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    finally:
        shutil.rmtree(args.out, ignore_errors=True)
    doc = {"pairs": count, "store_bytes": store_bytes, "seconds": elapsed, "baseline_rss": baseline,
           "peak_rss": peak.peak}
    Path(args.json_out).write_text(json.dumps(doc))


if __name__ == "__main__":
    main()
