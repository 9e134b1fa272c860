"""Build from sorted pairs: kvio put_many vs py-lmdb putmulti(append=True) vs pyarrow Parquet.

Every build ends durable, as each system's normal commit: kvio fsyncs its partition files and
publishes; LMDB commits its write transaction (default sync=True: fdatasync); the Parquet
file gets an explicit fsync after ``write_table``. Inputs are prepared before the clock
starts: one list of (key, value) tuples of bytes for kvio and LMDB, one Arrow table for kvio's
Arrow path and Parquet.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import lmdb
import pyarrow as pa
import pyarrow.parquet as pq

from kvio import KeyValueSystem

from .common import Row, dir_bytes, fresh_dir, fsync_path, interleaved, load_text, median, ratio
from .datagen import Dataset


def lmdb_map_size(ds: Dataset) -> int:
    return max(1 << 30, 4 * (ds.raw_bytes + 64 * ds.count))


def build_kvio_pairs(ds: Dataset, path: Path) -> None:
    with KeyValueSystem().create_store(str(path)) as writer:
        writer.put_many(ds.pairs)


def build_kvio_arrow(table: pa.Table, path: Path) -> None:
    with KeyValueSystem().create_store(str(path)) as writer:
        writer.put_many(table)


def build_lmdb(ds: Dataset, path: Path) -> None:
    env = lmdb.open(str(path), map_size=lmdb_map_size(ds))
    try:
        with env.begin(write=True) as txn:
            txn.cursor().putmulti(ds.pairs, append=True)
    finally:
        env.close()


def build_parquet(table: pa.Table, path: Path) -> None:
    pq.write_table(table, path)  # pyarrow defaults: snappy, dictionary attempted
    fsync_path(path)


def run(ds: Dataset, root: Path, reps: int, *, parquet: bool = True, arrow: bool = True,
        section: str = "core") -> tuple[list[Row], dict[str, Path], dict[str, float]]:
    """Build each store ``reps`` times (interleaved); the last builds stay for the read
    benchmarks. Returns rows, store paths and median seconds per system."""
    paths = {"kvio": root / "kvio", "kvio-arrow": root / "kvio-arrow", "lmdb": root / "lmdb",
             "parquet": root / "data.parquet"}
    table = ds.table() if (parquet or arrow) else None
    fns: dict[str, Callable[[], None]] = {
        "kvio": lambda: build_kvio_pairs(ds, paths["kvio"]),
        "lmdb": lambda: build_lmdb(ds, paths["lmdb"]),
    }
    if arrow:
        fns["kvio-arrow"] = lambda: build_kvio_arrow(table, paths["kvio-arrow"])
    if parquet:
        fns["parquet"] = lambda: build_parquet(table, paths["parquet"])
    load_before = load_text()
    times = interleaved(fns, reps, before={name: (lambda p=paths[name]: fresh_dir(p)) for name in fns})
    load = f"{load_before} -> {load_text()}"
    med = {name: median(t) for name, t in times.items()}
    rate = {name: ds.count / t for name, t in med.items()}
    sizes = {name: dir_bytes(paths[name]) for name in fns}
    rows = [Row(f"build {ds.name}: put_many(pairs) vs putmulti(append=True)", rate["kvio"], rate["lmdb"],
                "pairs/s", ratio(rate["kvio"], rate["lmdb"]), ">= 1.0",
                note=f"kvio {med['kvio']:.2f} s, LMDB {med['lmdb']:.2f} s; sizes kvio "
                     f"{sizes['kvio'] / 2**20:.0f} MiB, LMDB {sizes['lmdb'] / 2**20:.0f} MiB",
                section=section, reference_name="py-lmdb putmulti(append=True)", repetitions=reps,
                load=load)]
    if arrow:
        rows.append(Row(f"build {ds.name}: put_many(Arrow table) vs putmulti(append=True)",
                        rate["kvio-arrow"], rate["lmdb"], "pairs/s",
                        ratio(rate["kvio-arrow"], rate["lmdb"]), ">= 1.0",
                        note=f"kvio {med['kvio-arrow']:.2f} s", section=section,
                        reference_name="py-lmdb putmulti(append=True)", repetitions=reps, load=load))
    if parquet:
        rows.append(Row(f"build {ds.name}: put_many(Arrow table) vs Parquet write_table",
                        rate["kvio-arrow"], rate["parquet"], "pairs/s",
                        ratio(rate["kvio-arrow"], rate["parquet"]), ">= 0.5",
                        note=f"kvio {med['kvio-arrow']:.2f} s, Parquet {med['parquet']:.2f} s "
                             f"({sizes['parquet'] / 2**20:.0f} MiB, snappy)",
                        section=section, reference_name="pyarrow.parquet.write_table + fsync",
                        repetitions=reps, load=load))
        rows.append(Row(f"build {ds.name}: put_many(pairs) vs Parquet write_table",
                        rate["kvio"], rate["parquet"], "pairs/s", ratio(rate["kvio"], rate["parquet"]),
                        ">= 0.5", note="kvio from Python pairs, Parquet from a ready Arrow table",
                        section=section, reference_name="pyarrow.parquet.write_table + fsync",
                        repetitions=reps, load=load))
    for name in ("kvio-arrow",):
        if name in fns and os.path.exists(paths[name]):
            fresh_dir(paths[name])  # same bytes as "kvio"; keep disk use down
    return rows, paths, med
