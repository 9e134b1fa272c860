"""What following a store costs (issue 11): the follower thread's CPU at the default 1 s
interval, one check, a lookup through a live store against a plain reader, and taking a pin.

    .venv/bin/python bench/bench_follow.py [--seconds 30] [--quick] [--json-out PATH]

Prints one line per figure and, with ``--json-out``, writes rows in bench/README.md's format.
The follower's CPU is measured twice: the operating system's account of the thread (psutil,
user + system, 10 ms clock ticks) and the thread's own CPU clock summed over its checks
(``time.thread_time`` around each check, microseconds).
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

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kvio  # noqa: E402
from kvio import pins  # noqa: E402

KEYS = 100_000


def thread_cpu(native_id: int) -> float:
    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return thread.user_time + thread.system_time
    raise RuntimeError("follower thread not found")


def build(uri: str) -> list[bytes]:
    keys = [b"key%08d" % i for i in range(KEYS)]
    with kvio.KeyValueSystem().create_store(uri) as writer:
        writer.put_many([(k, b"v" * 100) for k in keys])
    return keys


def follower_cpu(uri: str, seconds: float) -> dict:
    """The follower of a live store at the default interval, over ``seconds`` of wall time."""
    live = kvio.KeyValueSystem().open_store(uri, follow=True)
    spent = [0.0, 0]
    tick = live._tick

    def timed_tick() -> None:
        begin = time.thread_time()
        try:
            tick()
        finally:
            spent[0] += time.thread_time() - begin
            spent[1] += 1

    live._tick = timed_tick  # type: ignore[method-assign]  # the thread looks it up each time
    native = live.follower_thread.native_id
    assert native is not None
    cpu0, wall0 = thread_cpu(native), time.monotonic()
    time.sleep(seconds)
    cpu1, wall1 = thread_cpu(native), time.monotonic()
    live.close()
    wall = wall1 - wall0
    return {"wall": wall, "os_cpu": cpu1 - cpu0, "ticks": spent[1], "tick_cpu": spent[0],
            "interval": live.interval}


def per_check(uri: str, n: int) -> float:
    """Microseconds of one check (does the next commit record exist?), median of 5."""
    live = kvio.KeyValueSystem(conf={"kvio.follow.interval": "1h"}).open_store(uri, follow=True)
    runs = []
    for _ in range(5):
        begin = time.perf_counter()
        for _ in range(n):
            live._changed(False)
        runs.append((time.perf_counter() - begin) / n * 1e6)
    live.close()
    return statistics.median(runs)


def lookups(uri: str, keys: list[bytes], n: int) -> tuple[float, float]:
    """Microseconds per get: StoreReader against LiveStore, alternating, median of 5."""
    kvs = kvio.KeyValueSystem(conf={"kvio.follow.interval": "1h"})
    sample = random.Random(7).choices(keys, k=n)
    reader, live = kvs.open_store(uri), kvs.open_store(uri, follow=True)
    plain, followed = [], []
    for target in (reader, live):
        for k in sample:
            target.get(k)  # warm
    for _ in range(5):
        for target, runs in ((reader, plain), (live, followed)):
            get = target.get
            begin = time.perf_counter()
            for k in sample:
                get(k)
            runs.append((time.perf_counter() - begin) / n * 1e6)
    reader.close()
    live.close()
    return statistics.median(plain), statistics.median(followed)


def pin_cost(uri: str, n: int) -> float:
    """Microseconds to take and release a pin (what opening a reader adds), median of 5."""
    kvs = kvio.KeyValueSystem()
    with kvs.open_store(uri) as reader:
        io, version = reader.io, reader.version
    runs = []
    for _ in range(5):
        begin = time.perf_counter()
        for _ in range(n):
            pin = pins.acquire(io, version, kvs.conf)
            assert pin is not None
            pin.release()
        runs.append((time.perf_counter() - begin) / n * 1e6)
    return statistics.median(runs)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=None,
                        help="wall time of the follower measurement (default 30, --quick 10)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    seconds = args.seconds or (10.0 if args.quick else 30.0)
    work = tempfile.mkdtemp(prefix="kvio-bench-follow-", dir=ROOT / "bench" / "data"
                            if (ROOT / "bench" / "data").is_dir() else None)
    try:
        uri = os.path.join(work, "store")
        keys = build(uri)
        load = os.getloadavg()[0]
        follow = follower_cpu(uri, seconds)
        check_us = per_check(uri, 2_000 if args.quick else 20_000)
        plain_us, live_us = lookups(uri, keys, 20_000 if args.quick else 100_000)
        pin_us = pin_cost(uri, 50 if args.quick else 200)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os_share = follow["os_cpu"] / follow["wall"] * 100
    tick_share = follow["tick_cpu"] / follow["wall"] * 100
    per_tick_us = follow["tick_cpu"] / max(1, follow["ticks"]) * 1e6
    print(f"follower at {follow['interval']:g} s interval over {follow['wall']:.1f} s: "
          f"{follow['ticks']} checks; thread CPU {follow['os_cpu'] * 1e3:.1f} ms by the OS "
          f"({os_share:.4f} % of one core; 10 ms ticks), {follow['tick_cpu'] * 1e6:.0f} us by its "
          f"own clock ({tick_share:.5f} %, {per_tick_us:.0f} us per check); target < 1 %")
    print(f"one check (local disk, one stat of _commits/<seq+1>.commit): {check_us:.1f} us")
    print(f"get: StoreReader {plain_us:.2f} us, LiveStore {live_us:.2f} us "
          f"(+{live_us - plain_us:.2f} us, x{live_us / plain_us:.2f}); {KEYS} keys, warm")
    print(f"taking and releasing a pin (local disk; once per reader open): {pin_us:.0f} us")
    print(f"load average at start: {load:.2f}")
    rows = [
        {"measurement": "follower thread CPU at 1 s interval (share of one core)",
         "kvio": round(max(os_share, tick_share), 5), "reference": None, "unit": "%",
         "ratio": None, "target": "< 1 %", "met": max(os_share, tick_share) < 1.0,
         "note": f"{follow['wall']:.0f} s, {follow['ticks']} checks; OS account {os_share:.4f} %, "
                 f"own clock {tick_share:.5f} %; load {load:.2f}", "repetitions": 1},
        {"measurement": "one follow check (local disk)", "kvio": round(check_us, 2),
         "reference": None, "unit": "us", "ratio": None, "target": None,
         "note": "median of 5", "repetitions": 5},
        {"measurement": "get through LiveStore vs StoreReader", "kvio": round(live_us, 3),
         "reference": round(plain_us, 3), "reference_name": "StoreReader.get", "unit": "us",
         "ratio": round(live_us / plain_us, 3), "target": None,
         "note": f"{KEYS} keys, warm, median of 5", "repetitions": 5},
        {"measurement": "take and release a pin (local disk)", "kvio": round(pin_us, 1),
         "reference": None, "unit": "us", "ratio": None, "target": None,
         "note": "once per reader open; median of 5", "repetitions": 5},
    ]
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
