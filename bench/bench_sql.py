"""kvio and PostgreSQL through ADBC (issue 13), each figure against the driver's bare operation
measured in the same run:

* import: ``kvio.sql.import_table`` of a table (fetch, sort, write a store, publish) vs the
  driver's bare ``fetch_arrow_table`` of the same table (rows/s; target >= 0.7x);
* export: ``kvio.sql.export_store`` of a store into a new table (one transaction, primary key
  included) vs a bare ``adbc_ingest`` of the same Arrow table (rows/s; target >= 0.8x);
* sync: ``kvio.sql.sync_store`` after an update of 1% of the keys (half set, half deleted) vs a
  full export of the store (time; target <= 0.05); a second sync after an untimed CHECKPOINT
  is reported without a target (it writes every page it changes whole to the WAL); and the
  sync against the driver's bare execution of the same change (a connection, the statement kvio
  sends, commit) on a copy of the mirror: how much of a sync is PostgreSQL's own work.

    .venv/bin/python bench/bench_sql.py [--rows 1000000] [--repeat 3] [--quick] [--json-out PATH]

Rows have 22-byte keys and 100-byte random values. kvio and its reference alternate repetition
by repetition (the export's after an untimed CHECKPOINT each, when the user may run one), and
every row records the load average. Every table the script creates has a random name and is
dropped at the end (also on failure); the stores live in a temp dir.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import kvio  # noqa: E402
from kvio.errors import KvioError  # noqa: E402
from kvio.sql import connect, export_store, import_table, parse_table_name, sync_store  # noqa: E402
from kvio.sql.sync import STATE_TABLE  # noqa: E402

URL = os.environ.get("KVIO_BENCH_PG_URL", "postgresql://root@127.0.0.1:5432/test")
NO_COMPACT = {"kvio.compact.max.layers": "0", "kvio.compact.size.ratio": "0"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="repetitions per figure (median)")
    ap.add_argument("--quick", action="store_true", help="100k rows, 1 repetition")
    ap.add_argument("--json-out", help="write rows in bench/README.md's format")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.repeat = 100_000, 1
    return args


def data(rows: int) -> pa.Table:
    keys = pa.array([b"key-%018d" % i for i in range(rows)], pa.binary())  # 22 bytes
    blob = os.urandom(rows * 100)
    values = pa.array([blob[i * 100:(i + 1) * 100] for i in range(rows)], pa.binary())
    return pa.table({"key": keys, "value": values})


def load_text() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path):
        self.args = args
        self.tmp = tmp
        self.tables: list[str] = []
        self.kvs = kvio.KeyValueSystem(conf=NO_COMPACT)
        self.can_checkpoint = True

    def table(self) -> str:
        name = f"kvbench_{uuid.uuid4().hex[:10]}"
        self.tables.append(name)
        return name

    def drop(self, name: str) -> None:
        with connect(URL) as db:
            db.execute(f'DROP TABLE IF EXISTS "{name}"')
            db.commit()

    def cleanup(self) -> None:
        with connect(URL) as db:
            for name in self.tables:
                db.execute(f'DROP TABLE IF EXISTS "{name}"')
            if self.tables and db.table_exists(parse_table_name(STATE_TABLE)):
                db.execute(f"DELETE FROM {STATE_TABLE} WHERE table_name IN "
                           f"({db.placeholders(len(self.tables))})", self.tables)
            db.commit()

    def checkpoint(self) -> None:
        """An untimed CHECKPOINT (the export section, before each repetition): each 1M-row
        load writes ~200 MB of WAL, so otherwise a checkpoint forced by one repetition
        (max_wal_size) lands on whichever comes next. Not before the sync the target is about:
        right after a checkpoint every page a sync changes is first written whole to the WAL;
        that case has a row of its own. Needs superuser or pg_checkpoint; skipped without."""
        if not self.can_checkpoint:
            return
        try:
            with connect(URL) as db:
                db.execute("CHECKPOINT")
        except KvioError:
            self.can_checkpoint = False
            print("  (no CHECKPOINT privilege: repetitions run without one)", flush=True)

    def timed(self, what: Callable[[], object]) -> float:
        begin = time.perf_counter()
        what()
        return time.perf_counter() - begin

    def alternating(self, runs: dict[str, tuple[Callable[[], object], Callable[[], object]]],
                    checkpoint: bool = False) -> dict[str, float]:
        """Median time of each (setup, timed) pair, the pairs alternating repetition by
        repetition so that load from other processes falls on kvio and its reference alike
        (bench/README.md, "Method"); with ``checkpoint``, each after an untimed CHECKPOINT."""
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(self.args.repeat):
            for name, (setup, what) in runs.items():
                setup()
                if checkpoint:
                    self.checkpoint()
                times[name].append(self.timed(what))
        for name, values in times.items():
            print(f"  {name}: {', '.join(f'{v:.3f}' for v in values)} s", flush=True)
        return {name: statistics.median(values) for name, values in times.items()}

    def run(self) -> list[dict]:
        n = self.args.rows
        print(f"data: {n:,} rows (22-byte keys, 100-byte values), PostgreSQL at {URL}", flush=True)
        arrow = data(n)
        source = self.table()
        with connect(URL) as db:
            db.ingest(parse_table_name(source), arrow, mode="create")
            db.commit()
        rows = []

        # ---- import vs bare fetch ----
        def fetch() -> None:
            with connect(URL) as db:
                db.cursor.execute(f'SELECT "key", "value" FROM "{source}"')
                assert db.cursor.fetch_arrow_table().num_rows == n

        store = str(self.tmp / "imported")

        def clear_store() -> None:
            shutil.rmtree(store, ignore_errors=True)

        load = load_text()
        t = self.alternating({
            "fetch": (lambda: None, fetch),
            "import": (clear_store, lambda: import_table(self.kvs, URL, store, table=source))})
        load += " -> " + load_text()
        rows.append(self.row(f"import {n:,} rows from PostgreSQL into a store", n / t["import"],
                             n / t["fetch"], "rows/s", ">= 0.7", "ADBC fetch_arrow_table",
                             "kvio: fetch 8 MB batches (a thread reads ahead), check order (the "
                             "heap returns insertion order, sorted here), write, fsync, publish",
                             load))

        # ---- export vs bare ingest ----
        targets: list[str] = []

        def fresh() -> None:
            for name in targets:
                self.drop(name)
            targets[:] = [self.table()]

        def ingest() -> None:
            with connect(URL) as db:
                db.ingest(parse_table_name(targets[0]), arrow, mode="create")
                db.commit()

        def export() -> None:
            export_store(self.kvs, store, URL, targets[0])

        def ingest_keyed() -> None:
            with connect(URL) as db:
                name = parse_table_name(targets[0])
                db.ingest(name, arrow, mode="create")
                db.execute(f'ALTER TABLE {name.quoted} ADD PRIMARY KEY ("key")')
                db.commit()

        load = load_text()
        t = self.alternating({"ingest": (fresh, ingest), "ingest + key": (fresh, ingest_keyed),
                              "export": (fresh, export)}, checkpoint=True)
        load += " -> " + load_text()
        fresh()
        rows.append(self.row(f"export a {n:,}-pair store into a new PostgreSQL table",
                             n / t["export"], n / t["ingest"], "rows/s", ">= 0.8",
                             "ADBC adbc_ingest (no key)",
                             "kvio: one transaction, CREATE TABLE, COPY, then ADD PRIMARY KEY "
                             "with maintenance_work_mem raised for the transaction (the kvstore "
                             "shape); the reference builds no key", load))
        rows.append(self.row(f"export a {n:,}-pair store into a new PostgreSQL table (same shape)",
                             n / t["export"], n / t["ingest + key"], "rows/s", ">= 0.8",
                             "ADBC adbc_ingest + ADD PRIMARY KEY",
                             "both build the primary key the kvstore shape has (the reference "
                             "with the server's maintenance_work_mem)", load))

        # ---- sync of a 1% change vs a full export ----
        # Each repetition: a full export, a sync right after it (the figure, as measured since
        # the first run of this script), then an untimed CHECKPOINT and a sync after it. After
        # a checkpoint the first change to a page writes the whole page to the WAL, so the
        # second sync shows what a sync costs when a checkpoint has passed since the one
        # before (checkpoint_timeout is 5 minutes by default: usual for a periodic sync), as
        # a row with no target.
        mirror = self.table()
        sync_store(self.kvs, store, URL, mirror)
        changed = n // 100
        rounds = iter(range(4 * self.args.repeat))

        def change() -> None:
            change_to(next(rounds))

        def round_change(r: int) -> tuple[list[bytes], list[bytes], bytes]:
            """Round r's change: (keys deleted, keys set, the value they are set to)."""
            keys = range(r, n, 100)
            return ([b"key-%018d" % i for i in keys if (i // 100) % 2],
                    [b"key-%018d" % i for i in keys if not (i // 100) % 2], b"round-%d" % r)

        def change_to(r: int) -> None:
            gone, kept, value = round_change(r)
            with self.kvs.update_store(store) as u:
                u.delete_many(gone)
                u.set_many((key, value) for key in kept)

        def change_and_checkpoint() -> None:
            change()
            self.checkpoint()

        def sync() -> None:
            result = sync_store(self.kvs, store, URL, mirror)
            assert result.method == "incremental", result

        load = load_text()
        t = self.alternating({"full export": (fresh, export), "sync": (change, sync),
                              "sync after a checkpoint": (change_and_checkpoint, sync)})
        load += " -> " + load_text()
        fresh()
        what = f"kvio sync of a 1% change ({changed:,} keys: half set, half deleted) on {n:,} keys"
        rows.append(self.row(what, t["sync"], t["full export"], "s", "<= 0.05",
                             "full export of the store",
                             "time; incremental path (new layers only, one statement per chunk); "
                             "each sync opens its own connection and follows a full export",
                             load))
        rows.append(self.row(what + ", after a CHECKPOINT", t["sync after a checkpoint"],
                             t["full export"], "s", "", "full export of the store",
                             "time; every page the sync changes is first written whole to the "
                             "WAL (full_page_writes); no target: the row above is the figure",
                             load))

        # ---- the same sync against PostgreSQL's own execution of the change ----
        # A copy of the mirror gets each change from the driver alone: a connection, the
        # statement kvio sends (the DELETE a data-modifying WITH of the upsert, keys and values
        # as sorted array parameters), commit. What a statement costs depends on what ran just
        # before it (the second of two applies in a row finds shared buffers dirty: 140-160 ms
        # against 75-95 ms for the first, measured), so each repetition applies two changes,
        # kvio first for one and the driver first for the other.
        copy = self.table()
        export_store(self.kvs, store, URL, copy)

        def bare_apply(r: int) -> None:
            import adbc_driver_postgresql.dbapi as pg
            gone, kept, value = round_change(r)
            columns = [gone, kept, [value] * len(kept)]
            params = pa.record_batch(
                [pa.ListArray.from_arrays(pa.array([0, len(col)], pa.int32()),
                                          pa.array(col, pa.large_binary())) for col in columns],
                names=["p0", "p1", "p2"])
            sql = (f'WITH deleted AS (DELETE FROM "{copy}" WHERE "key" = ANY($1::BYTEA[])) '
                   f'INSERT INTO "{copy}" ("key", "value") SELECT * FROM unnest($2::BYTEA[], '
                   f'$3::BYTEA[]) ON CONFLICT ("key") DO UPDATE SET "value" = excluded."value"')
            begin = time.perf_counter()
            with pg.connect(URL, db_kwargs={"adbc.postgresql.type_resolver_mode": "builtin"}) \
                    as conn, conn.cursor() as cur:
                cur.execute(sql, params)
                conn.commit()
            times["bare"].append(time.perf_counter() - begin)

        times: dict[str, list[float]] = {"kvio": [], "bare": []}
        load = load_text()
        for _ in range(self.args.repeat):
            for kvio_first in (True, False):
                r = next(rounds)
                change_to(r)
                if kvio_first:
                    times["kvio"].append(self.timed(sync))
                    bare_apply(r)
                else:
                    bare_apply(r)
                    times["kvio"].append(self.timed(sync))
        load += " -> " + load_text()
        for name, values in times.items():
            print(f"  {name} (sync / bare apply): {', '.join(f'{v:.3f}' for v in values)} s",
                  flush=True)
        with connect(URL) as db:  # the reference did the same work: the copy is the mirror
            differ = db.rows(f'SELECT count(*) FROM "{copy}" c FULL JOIN "{mirror}" m '
                             f'USING ("key") WHERE c."value" IS DISTINCT FROM m."value"')[0][0]
        if differ:
            raise RuntimeError(f"the driver's copy differs from the mirror in {differ} keys")
        self.drop(copy)
        self.drop(mirror)
        rows.append(self.row(what + ", against PostgreSQL's own execution of it",
                             statistics.median(times["kvio"]), statistics.median(times["bare"]),
                             "s", "", "ADBC: connect, kvio's statement, commit",
                             "time; kvio first for half of the changes; the reference sends the "
                             "statement kvio sends for the same 10,000 changes straight from "
                             "the driver to a copy of the mirror holding the same rows; no "
                             "target", load, 2 * self.args.repeat))
        return rows

    def row(self, what: str, kvio_value: float, reference: float, unit: str, target: str,
            reference_name: str, note: str, load: str, repetitions: int | None = None) -> dict:
        reps = repetitions or self.args.repeat
        ratio = kvio_value / reference
        met: bool | None = None
        if target:
            op, bound = target.split()
            met = ratio >= float(bound) if op == ">=" else ratio <= float(bound)
        doc = {"measurement": what, "kvio": round(kvio_value, 4), "reference": round(reference, 4),
               "unit": unit, "ratio": round(ratio, 3), "target": target or None, "met": met,
               "reference_name": reference_name, "repetitions": reps,
               "load": load, "note": f"median of {reps}; {note}"}
        verdict = f"target {target}: {'met' if met else 'NOT met'}" if target else "no target"
        print(f"{what}: kvio {kvio_value:,.3f} {unit}, {reference_name} {reference:,.3f} {unit}, "
              f"ratio {ratio:.3f} ({verdict}; load {load})",
              flush=True)
        return doc


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="kvio-bench-sql-"))
    bench = Bench(args, tmp)
    try:
        rows = bench.run()
    finally:
        bench.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
