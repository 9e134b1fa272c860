"""Point lookups on local, warm stores: kvio StoreReader.get / get_many vs py-lmdb.

Both stores hold the same pairs and were just built (page cache warm). Each side first looks
up its whole sample once (kvio verifies the index pages and blocks it touches then; LMDB faults
its pages in), then the timed repetitions alternate between the two. Times are per key in a
plain Python loop ``for k in keys: get(k)``, loop overhead included on both sides.
"""
from __future__ import annotations

from pathlib import Path
from time import perf_counter

import lmdb

from kvio import KeyValueSystem

from .common import Row, interleaved, load_text, median, ratio
from .datagen import Dataset


def _loop(get, keys) -> float:
    start = perf_counter()
    for k in keys:
        get(k)
    return perf_counter() - start


def run(ds: Dataset, kvio_path: Path, lmdb_path: Path, reps: int, sample: int, *,
        get_many_keys: int = 0, section: str = "core", seed: int = 7) -> tuple[list[Row], dict[str, float]]:
    hits = ds.sample_hits(sample, seed)
    misses = ds.sample_misses(sample, seed + 1)
    reader = KeyValueSystem().open_store(str(kvio_path))
    env = lmdb.open(str(lmdb_path), readonly=True, lock=False)
    rows: list[Row] = []
    out: dict[str, float] = {}
    try:
        with env.begin() as txn:
            kget, lget = reader.get, txn.get
            for k in hits[:2000]:
                if kget(k) != lget(k):
                    raise AssertionError(f"kvio and LMDB disagree on {k!r}")
            for keys in (hits, misses):
                _loop(kget, keys)
                _loop(lget, keys)
            load_before = load_text()
            per: dict[str, list[float]] = {}
            for label, keys in (("hit", hits), ("miss", misses)):
                t = interleaved({"kvio": lambda keys=keys: _loop(kget, keys),
                                 "lmdb": lambda keys=keys: _loop(lget, keys)}, reps)
                for name, values in t.items():
                    per[f"{label}-{name}"] = [v / len(keys) * 1e6 for v in values]
            load = f"{load_before} -> {load_text()}"
            med = {name: median(v) for name, v in per.items()}
            out.update(med)
            rows.append(Row(f"get {ds.name}: random hits, warm", med["hit-kvio"], med["hit-lmdb"], "µs/get",
                            ratio(med["hit-kvio"], med["hit-lmdb"]), "<= 1.5",
                            note=f"{len(hits):,} random keys per repetition", section=section,
                            reference_name="py-lmdb txn.get", repetitions=reps, load=load))
            rows.append(Row(f"get {ds.name}: misses (absent keys inside the key range)", med["miss-kvio"],
                            med["miss-lmdb"], "µs/get", ratio(med["miss-kvio"], med["miss-lmdb"]), "<= 1.0",
                            note=f"{len(misses):,} keys per repetition", section=section,
                            reference_name="py-lmdb txn.get", repetitions=reps, load=load))
            if get_many_keys:
                rows.append(_get_many(ds, reader, txn, get_many_keys, reps, seed + 2, section, out))
    finally:
        reader.close()
        env.close()
    return rows, out


def _get_many(ds: Dataset, reader, txn, count: int, reps: int, seed: int, section: str,
              out: dict[str, float]) -> Row:
    keys = ds.sample_hits(count, seed)
    cursor = txn.cursor()
    lget = txn.get
    expected = [lget(k) for k in keys]
    if reader.get_many(keys) != expected:
        raise AssertionError("kvio get_many disagrees with LMDB")
    reader.get_many(keys)
    cursor.getmulti(keys)
    load_before = load_text()
    t = interleaved({"kvio": lambda: reader.get_many(keys), "getmulti": lambda: cursor.getmulti(keys),
                     "loop": lambda: [lget(k) for k in keys]}, reps)
    load = f"{load_before} -> {load_text()}"
    rate = {name: count / median(v) for name, v in t.items()}
    best = max(rate["getmulti"], rate["loop"])
    out.update({f"get_many-{k}": v for k, v in rate.items()})
    return Row(f"get_many {ds.name}: {count:,} random keys", rate["kvio"], best, "keys/s",
               ratio(rate["kvio"], best), ">= 1.0",
               note=f"reference = faster of LMDB getmulti ({rate['getmulti']:,.0f}/s) and a loop of "
                    f"txn.get ({rate['loop']:,.0f}/s)", section=section,
               reference_name="py-lmdb getmulti / loop of get", repetitions=reps, load=load)
