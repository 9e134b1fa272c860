"""Full ordered scan: every pair in key order as Arrow, kvio vs pyarrow reading Parquet.

Each repetition opens the store or file afresh (so kvio verifies every block checksum again),
reads all rows into Arrow, and computes count and sum(length(value)).
"""
from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from kvio import KeyValueSystem

from .common import Row, interleaved, load_text, median, ratio
from .datagen import Dataset


def scan_kvio(path: Path) -> tuple[int, int]:
    with KeyValueSystem().open_store(str(path)) as reader:
        table = reader.to_table()
        return table.num_rows, pc.sum(pc.binary_length(table.column("value"))).as_py() or 0


def scan_parquet(path: Path) -> tuple[int, int]:
    table = pq.read_table(path)
    return table.num_rows, pc.sum(pc.binary_length(table.column("value"))).as_py() or 0


def run(ds: Dataset, kvio_path: Path, parquet_path: Path, reps: int, section: str = "core") -> list[Row]:
    expected = (ds.count, ds.count * ds.value_size)
    for fn, path in ((scan_kvio, kvio_path), (scan_parquet, parquet_path)):
        got = fn(path)
        if got != expected:
            raise AssertionError(f"{fn.__name__} read {got}, expected {expected}")
    load_before = load_text()
    t = interleaved({"kvio": lambda: scan_kvio(kvio_path), "parquet": lambda: scan_parquet(parquet_path)},
                    reps)
    load = f"{load_before} -> {load_text()}"
    med = {k: median(v) for k, v in t.items()}
    rate = {k: ds.count / v for k, v in med.items()}
    return [Row(f"full ordered scan {ds.name}", rate["kvio"], rate["parquet"], "pairs/s",
                ratio(rate["kvio"], rate["parquet"]), ">= 0.8",
                note=f"kvio {med['kvio'] * 1e3:.0f} ms, Parquet {med['parquet'] * 1e3:.0f} ms "
                     "(open + read all + count, sum(length(value)))",
                section=section, reference_name="pyarrow.parquet.read_table", repetitions=reps, load=load)]
