"""kvio serve against Redis, in one run (issue 11, "Benchmarks"; contract in bench/README.md).

    python bench/bench_serve.py --json-out PATH [--quick]

The same pairs (16-byte keys, 100-byte values) are written to a kvio store and to the
redis-server at 127.0.0.1:6379 under a key prefix this run owns (removed afterwards, key by key;
nothing else in Redis is touched). ``kvio serve`` runs with ``--workers 1`` and ``--workers 2``.
The load comes from a separate process (this script with ``--loadgen``), the same kind of client
for both sides: an asyncio HTTP/1.1 client with one keep-alive connection per concurrent caller
for kvio, redis-py's asyncio client (hiredis parser) with one connection per caller for Redis.
kvio and Redis alternate repetition by repetition; figures are medians.

Rows: single-get throughput and p50/p99 latency at concurrency 1, 16, 64; batch get of 100 and
1,000 random keys in keys/s (kvio.connect get_many: Arrow IPC and JSON/base64; Redis MGET);
near-cache hit time (kvio.connect with cache_bytes, and cached(reader)).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REDIS = ("127.0.0.1", 6379)
VALUE = b"v" * 100


def key_of(i: int) -> bytes:
    return b"key-%012d" % i  # 16 bytes


# ---- the load generator (a separate process) -------------------------------------------------
async def _http_worker(port: int, paths: list[bytes], until: float, lat: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    i = random.randrange(len(paths))
    try:
        while time.perf_counter() < until:
            path = paths[i % len(paths)]
            i += 1
            t0 = time.perf_counter()
            writer.write(b"GET " + path + b" HTTP/1.1\r\nHost: b\r\n\r\n")
            head = await reader.readuntil(b"\r\n\r\n")
            status = head[9:12]
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            lat.append(time.perf_counter() - t0)
            if status != b"200":
                raise RuntimeError(f"kvio serve answered {status!r} for {path!r}")
    finally:
        writer.close()


async def _redis_worker(client: Any, keys: list[bytes], until: float, lat: list[float]) -> None:
    i = random.randrange(len(keys))
    while time.perf_counter() < until:
        key = keys[i % len(keys)]
        i += 1
        t0 = time.perf_counter()
        value = await client.get(key)
        lat.append(time.perf_counter() - t0)
        if value is None:
            raise RuntimeError(f"redis has no {key!r}")


async def _single(spec: dict[str, Any]) -> dict[str, float]:
    conc, seconds, n = spec["concurrency"], spec["seconds"], spec["n"]
    prefix = spec["prefix"].encode()
    rng = random.Random(spec["seed"])
    sample = [key_of(rng.randrange(n)) for _ in range(20_000)]
    lat: list[float] = []
    if spec["side"] == "kvio":
        paths = [f"/v1/stores/b/keys/{k.decode()}".encode() for k in sample]
        until = time.perf_counter() + seconds
        t0 = time.perf_counter()
        await asyncio.gather(*(_http_worker(spec["port"], paths, until, lat) for _ in range(conc)))
    else:
        import redis.asyncio as aioredis
        pool = aioredis.ConnectionPool(host=REDIS[0], port=REDIS[1], max_connections=conc)
        client = aioredis.Redis(connection_pool=pool)
        keys = [prefix + k for k in sample]
        await asyncio.gather(*(client.ping() for _ in range(conc)))  # open the connections
        until = time.perf_counter() + seconds
        t0 = time.perf_counter()
        await asyncio.gather(*(_redis_worker(client, keys, until, lat) for _ in range(conc)))
        await client.aclose()
        await pool.disconnect()
    elapsed = time.perf_counter() - t0
    lat.sort()
    return {"rps": len(lat) / elapsed, "p50_ms": lat[len(lat) // 2] * 1e3,
            "p99_ms": lat[int(len(lat) * 0.99)] * 1e3, "requests": len(lat)}


def _batch(spec: dict[str, Any]) -> dict[str, float]:
    size, rounds, n = spec["size"], spec["rounds"], spec["n"]
    prefix = spec["prefix"].encode()
    rng = random.Random(spec["seed"])
    batches = [[key_of(rng.randrange(n)) for _ in range(size)] for _ in range(rounds)]
    if spec["side"] == "kvio":
        from kvio.client import RemoteStore
        with RemoteStore(f"http://127.0.0.1:{spec['port']}", "b",
                         batch_format=spec["format"]) as store:
            store.get_many(batches[0])  # warm
            t0 = time.perf_counter()
            for keys in batches:
                values = store.get_many(keys)
            elapsed = time.perf_counter() - t0
    else:
        import redis
        client = redis.Redis(host=REDIS[0], port=REDIS[1])
        batches = [[prefix + k for k in keys] for keys in batches]
        client.mget(batches[0])
        t0 = time.perf_counter()
        for keys in batches:
            values = client.mget(keys)
        elapsed = time.perf_counter() - t0
        client.close()
    if values[0] != VALUE:
        raise RuntimeError("batch answered a wrong value")
    return {"keys_per_s": size * rounds / elapsed, "ms_per_batch": elapsed / rounds * 1e3}


def loadgen(spec: dict[str, Any]) -> dict[str, float]:
    if spec["kind"] == "single":
        return asyncio.run(_single(spec))
    return _batch(spec)


# ---- the driver ------------------------------------------------------------------------------
def run_loadgen(spec: dict[str, Any]) -> dict[str, float]:
    done = subprocess.run([sys.executable, __file__, "--loadgen", json.dumps(spec)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout)
    return result


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_server(uri: str, workers: int, log: Path) -> tuple[subprocess.Popen, int]:
    import urllib.request
    port = free_port()
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "kvio", "serve", f"b={uri}", "--port",
                                 str(port), "--workers", str(workers)], stdout=out,
                                stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.monotonic() + 90
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"kvio serve exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return proc, port
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("kvio serve was not ready in 90 s")
        time.sleep(0.1)


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def median_of(runs: list[dict[str, float]], field: str) -> float:
    return statistics.median(r[field] for r in runs)


def load_avg() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load {one:.1f}/{five:.1f}/{fifteen:.1f}"


def near_cache_rows(uri: str, port: int, reps: int) -> list[dict[str, Any]]:
    import kvio
    from kvio.near_cache import cached
    rows = []
    hot = [key_of(i) for i in range(1000)]
    loops = 200_000
    with kvio.connect(f"http://127.0.0.1:{port}", "b", cache_bytes=64 << 20,
                      conf={"kvio.follow.interval": "3600s"}) as remote:
        remote.get_many(hot)  # fill the cache
        times = []
        for _ in range(reps):
            get = remote.get
            t0 = time.perf_counter()
            for i in range(loops):
                get(hot[i % 1000])
            times.append((time.perf_counter() - t0) / loops * 1e6)
        stats = remote.cache_stats()
    rows.append({"measurement": "near cache hit: kvio.connect(cache_bytes=...).get",
                 "kvio": round(statistics.median(times), 3), "reference": None, "unit": "µs",
                 "ratio": None, "target": None, "repetitions": reps,
                 "met": statistics.median(times) <= 2.0,
                 "note": f"target <= 2 µs per hit; {loops} gets of 1,000 hot keys per repetition "
                         f"(hits {stats.hits}, misses {stats.misses}); {load_avg()}"})
    with cached(kvio.KeyValueSystem().open_store(uri), 64 << 20) as reader:
        reader.get_many(hot)
        times = []
        for _ in range(reps):
            get = reader.get
            t0 = time.perf_counter()
            for i in range(loops):
                get(hot[i % 1000])
            times.append((time.perf_counter() - t0) / loops * 1e6)
    rows.append({"measurement": "near cache hit: cached(StoreReader).get",
                 "kvio": round(statistics.median(times), 3), "reference": None, "unit": "µs",
                 "ratio": None, "target": None, "repetitions": reps,
                 "met": statistics.median(times) <= 2.0,
                 "note": f"target <= 2 µs per hit (for remote stores; a local StoreReader.get is "
                         f"~1.4 µs without it); {load_avg()}"})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json-out")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                    help="kvio serve --workers values to measure (default: 1 2)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64],
                    help="single-get concurrencies (default: 1 16 64)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000],
                    help="batch-get sizes in keys (default: 100 1000)")
    ap.add_argument("--parts", default="single,batch,near",
                    help="comma-separated: single, batch, near (default: all)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions per row (default: 3)")
    ap.add_argument("--loadgen", help=argparse.SUPPRESS)
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if args.loadgen:
        print(json.dumps(loadgen(json.loads(args.loadgen))))
        return 0
    if not args.json_out:
        ap.error("--json-out is required")

    import redis

    import kvio
    n = 100_000 if args.quick else 1_000_000
    seconds = 0.7 if args.quick else 3.0
    reps = args.reps
    rounds = {100: 30, 1000: 10} if args.quick else {100: 200, 1000: 50}
    batch_rounds = {size: rounds.get(size, max(10, 50_000 // size)) for size in args.sizes}
    prefix = f"kviobench:{os.getpid()}:".encode()
    data = ROOT / "bench" / "data"
    data.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="serve-", dir=data))
    client = redis.Redis(host=REDIS[0], port=REDIS[1])
    client.ping()
    rows: list[dict[str, Any]] = []
    written: list[bytes] = []
    try:
        uri = str(tmp / "b.kv")
        keys = [key_of(i) for i in range(n)]
        with kvio.KeyValueSystem().create_store(uri) as w:
            w.put_many((k, VALUE) for k in keys)
        for lo in range(0, n, 10_000):
            chunk = {prefix + k: VALUE for k in keys[lo:lo + 10_000]}
            client.mset(chunk)
            written.extend(chunk)
        common = {"n": n, "prefix": prefix.decode(), "seed": 7}
        for workers in args.workers:
            proc, port = start_server(uri, workers, tmp / "serve.log")
            try:
                for conc in args.concurrency if "single" in parts else ():
                    runs: dict[str, list[dict[str, float]]] = {"kvio": [], "redis": []}
                    for _ in range(reps):
                        for side in ("kvio", "redis"):
                            runs[side].append(run_loadgen({
                                **common, "kind": "single", "side": side, "port": port,
                                "concurrency": conc, "seconds": seconds}))
                    k_rps, r_rps = median_of(runs["kvio"], "rps"), median_of(runs["redis"], "rps")
                    k99, r99 = median_of(runs["kvio"], "p99_ms"), median_of(runs["redis"], "p99_ms")
                    k50, r50 = median_of(runs["kvio"], "p50_ms"), median_of(runs["redis"], "p50_ms")
                    rows.append({
                        "measurement": f"single get, concurrency {conc}, --workers {workers}: "
                                       "throughput",
                        "kvio": round(k_rps), "reference": round(r_rps), "unit": "requests/s",
                        "ratio": round(k_rps / r_rps, 3), "target": None,
                        "reference_name": "redis-server GET", "repetitions": reps,
                        "note": f"{seconds} s per repetition, random hits over {n:,} keys; "
                                f"asyncio load generator in another process; {load_avg()}"})
                    rows.append({
                        "measurement": f"single get, concurrency {conc}, --workers {workers}: "
                                       "p99 latency",
                        "kvio": round(k99, 3), "reference": round(r99, 3), "unit": "ms",
                        "ratio": round(k99 / r99, 3), "target": None,
                        "met": (k99 <= 2.0) if conc == 16 else None,
                        "reference_name": "redis-server GET", "repetitions": reps,
                        "note": f"p50 kvio {k50:.3f} ms, redis {r50:.3f} ms"
                                + ("; issue target: kvio p99 <= 2 ms at concurrency 16"
                                   if conc == 16 else "")})
                for size in args.sizes if "batch" in parts else ():
                    batch: dict[str, list[dict[str, float]]] = {"arrow": [], "json": [],
                                                                "redis": []}
                    for _ in range(reps):
                        for side in ("arrow", "json", "redis"):
                            batch[side].append(run_loadgen({
                                **common, "kind": "batch", "side": "redis" if side == "redis"
                                else "kvio", "format": side, "port": port, "size": size,
                                "rounds": batch_rounds[size]}))
                    r = median_of(batch["redis"], "keys_per_s")
                    for fmt in ("arrow", "json"):
                        k = median_of(batch[fmt], "keys_per_s")
                        rows.append({
                            "measurement": f"batch get of {size:,} keys ({fmt}), --workers "
                                           f"{workers}",
                            "kvio": round(k), "reference": round(r), "unit": "keys/s",
                            "ratio": round(k / r, 3), "target": ">= 1.0" if size == 1000 else None,
                            "reference_name": "redis-server MGET", "repetitions": reps,
                            "note": f"kvio.connect get_many ({fmt} body), redis-py mget; "
                                    f"{batch_rounds[size]} batches per repetition, concurrency 1; "
                                    f"{median_of(batch[fmt], 'ms_per_batch'):.2f} ms vs "
                                    f"{median_of(batch['redis'], 'ms_per_batch'):.2f} ms per batch;"
                                    f" {load_avg()}"})
                if workers == 1 and "near" in parts:
                    rows += near_cache_rows(uri, port, reps)
            finally:
                stop_server(proc)
    finally:
        for lo in range(0, len(written), 10_000):
            client.delete(*written[lo:lo + 10_000])
        client.close()
        shutil.rmtree(tmp, ignore_errors=True)
    Path(args.json_out).write_text(json.dumps(rows, indent=1))
    for row in rows:
        print(f"{row['measurement']}: kvio {row['kvio']} {row['unit']}, "
              f"reference {row['reference']}, ratio {row['ratio']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
