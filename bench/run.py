#!/usr/bin/env python
"""The kvio benchmark suite, one command: ``python bench/run.py [--quick] [--keys N]``.

Generates the data, runs every measurement against its reference in the same process, runs
bench/bench_spark.py and bench/bench_mrjob.py when present (JSON contract in bench/README.md),
and writes docs/benchmarks.md plus bench/results/latest.json. Data lives under bench/data/ and
is removed at the end, also on failure or Ctrl-C (unless --keep-data).
"""
from __future__ import annotations

import argparse
import gc
import json
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # measure this checkout's kvio (or --kvio-path's, see below)
if "--kvio-path" in sys.argv[:-1]:  # must win before anything imports kvio
    sys.path.insert(0, str(Path(sys.argv[sys.argv.index("--kvio-path") + 1]).resolve()))

from bench.suite import build, common, datagen, lookups, remote, report, scan  # noqa: E402
from bench.suite.common import Row, log  # noqa: E402

PARTS = ("core", "values-4k", "scaling", "remote", "memory", "spark", "mrjob", "serve", "follow",
         "sql", "updates")
EXTERNAL = {"spark": "bench_spark.py", "mrjob": "bench_mrjob.py", "serve": "bench_serve.py",
            "follow": "bench_follow.py", "sql": "bench_sql.py", "updates": "bench_updates.py"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes, fewer repetitions (under 2 minutes)")
    ap.add_argument("--keys", type=int, help="keys in the main dataset (default 1,000,000; quick 100,000)")
    ap.add_argument("--scale-keys", type=int, help="keys in the scaling dataset (default 10 x --keys)")
    ap.add_argument("--reps", type=int,
                    help="repetitions per measurement (default 5 for reads, 3 for builds)")
    ap.add_argument("--only", help="comma-separated parts to run: " + ",".join(PARTS))
    ap.add_argument("--skip", help="comma-separated parts to leave out")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    ap.add_argument("--json-out", type=Path, default=common.RESULTS_ROOT / "latest.json")
    ap.add_argument("--keep-data", action="store_true", help="leave bench/data/<run> in place")
    ap.add_argument("--profile", action="store_true",
                    help="also write pyinstrument profiles of get, build and scan to bench/results/")
    ap.add_argument("--spark-timeout", type=float, help="seconds (default 540; quick 60)")
    ap.add_argument("--mrjob-timeout", type=float, help="seconds (default 240; quick 40)")
    ap.add_argument("--serve-timeout", type=float, help="seconds (default 600; quick 150)")
    ap.add_argument("--follow-timeout", type=float, help="seconds (default 180; quick 60)")
    ap.add_argument("--sql-timeout", type=float, help="seconds (default 900; quick 120)")
    ap.add_argument("--updates-timeout", type=float, help="seconds (default 1800; quick 300)")
    ap.add_argument("--kvio-path", help="import kvio from this directory instead (e.g. an older "
                    "checkout, for before/after figures; in-process parts only)")
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="run nothing: rewrite --out from a results file (after editing bench/NOTES.md)")
    return ap.parse_args(argv)


class Suite:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.quick = args.quick
        self.keys = args.keys or (100_000 if args.quick else 1_000_000)
        self.scale_keys = args.scale_keys or 10 * self.keys
        self.read_reps = args.reps or (3 if args.quick else 5)
        self.build_reps = args.reps or 3
        self.sample = 50_000 if args.quick else 200_000
        self.get_many = 20_000 if args.quick else 100_000
        self.run_dir = common.DATA_ROOT / f"run-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
        self.rows: list[Row] = []
        self.skipped: list[str] = []
        self.timings: dict[str, float] = {}
        self.scaling: dict[str, dict[str, float]] = {}
        parts = set(args.only.split(",")) if args.only else set(PARTS)
        if args.skip:
            parts -= set(args.skip.split(","))
        unknown = parts - set(PARTS)
        if unknown:
            raise SystemExit(f"unknown part(s) {sorted(unknown)}; parts are {', '.join(PARTS)}")
        self.parts = [p for p in PARTS if p in parts]

    # ---- parts -------------------------------------------------------------------------
    def core(self) -> None:
        ds = datagen.dataset(self.keys, 100)
        root = self.run_dir / "core"
        log(f"core: building {ds.name} (kvio, LMDB, Parquet) x{self.build_reps}")
        rows, paths, med = build.run(ds, root, self.build_reps)
        self.rows += rows
        self.scaling["small"] = {"build-kvio": med["kvio"] / ds.count, "build-lmdb": med["lmdb"] / ds.count}
        log("core: gets")
        rows, out = lookups.run(ds, paths["kvio"], paths["lmdb"], self.read_reps, self.sample,
                                get_many_keys=self.get_many)
        self.rows += rows
        self.scaling["small"].update(out)
        log("core: scan")
        self.rows += scan.run(ds, paths["kvio"], paths["parquet"], self.read_reps)
        if self.args.profile:
            self._profiles(ds, paths)
        shutil.rmtree(root, ignore_errors=True)

    def values_4k(self) -> None:
        ds = datagen.dataset(max(1000, self.keys // 10), 4096)
        root = self.run_dir / "values-4k"
        log(f"values-4k: building {ds.name} x{self.build_reps}")
        rows, paths, _ = build.run(ds, root, self.build_reps, section="values-4k")
        self.rows += rows
        log("values-4k: gets and scan")
        self.rows += lookups.run(ds, paths["kvio"], paths["lmdb"], self.read_reps, min(self.sample, ds.count),
                                 section="values-4k")[0]
        self.rows += scan.run(ds, paths["kvio"], paths["parquet"], self.read_reps, section="values-4k")
        shutil.rmtree(root, ignore_errors=True)

    def scaling_part(self) -> None:
        need = 6 * self.scale_keys * 160
        if common.free_bytes(common.DATA_ROOT) < need:
            self.skipped.append(f"scaling: needs ~{need / 2**30:.1f} GiB free disk")
            return
        gc.collect()
        ds = datagen.dataset(self.scale_keys, 100)
        root = self.run_dir / "scaling"
        reps = 2 if self.quick else self.build_reps
        log(f"scaling: building {ds.name} (kvio, LMDB) x{reps}")
        rows, paths, med = build.run(ds, root, reps, parquet=False, arrow=False, section="scaling")
        self.rows += rows
        log("scaling: gets")
        rows, out = lookups.run(ds, paths["kvio"], paths["lmdb"], self.read_reps, self.sample,
                                section="scaling")
        self.rows += rows
        big = {"build-kvio": med["kvio"] / ds.count, "build-lmdb": med["lmdb"] / ds.count, **out}
        small = self.scaling.get("small")
        if small:
            label = f"{self.keys:,} -> {self.scale_keys:,} keys"
            for what, unit, kvio_key, ref_key in (
                    ("get hit time", "growth ×", "hit-kvio", "hit-lmdb"),
                    ("get miss time", "growth ×", "miss-kvio", "miss-lmdb"),
                    ("build time per pair", "growth ×", "build-kvio", "build-lmdb")):
                if kvio_key in small and kvio_key in big:
                    k = big[kvio_key] / small[kvio_key]
                    r = big[ref_key] / small[ref_key]
                    self.rows.append(Row(
                        f"scaling {label}: {what}", k, r, unit, None, None,
                        note=f"kvio {small[kvio_key] * 1e6 if 'build' in what else small[kvio_key]:.3g} -> "
                             f"{big[kvio_key] * 1e6 if 'build' in what else big[kvio_key]:.3g} "
                             f"{'µs/pair' if 'build' in what else 'µs/get'}; LMDB "
                             f"{small[ref_key] * 1e6 if 'build' in what else small[ref_key]:.3g} -> "
                             f"{big[ref_key] * 1e6 if 'build' in what else big[ref_key]:.3g}; "
                             "1.0 = flat per operation (build time linear in size)",
                        section="scaling", reference_name="LMDB's growth, same run"))
        del ds
        shutil.rmtree(root, ignore_errors=True)

    def remote_part(self) -> None:
        ds = datagen.dataset(min(self.keys, 200_000), 100)
        log(f"remote: {ds.name} on moto's S3 server")
        self.rows += remote.run(ds, gets=500 if self.quick else 2000, reps=self.read_reps)

    def memory_part(self) -> None:
        sizes = [500_000_000] if self.quick else [500_000_000, 5_000_000_000]
        results = {}
        for size in sizes:
            if common.free_bytes(common.DATA_ROOT) < size * 1.3 + (1 << 30):
                self.skipped.append(f"memory: {size / 1e9:.1f} GB build needs that much free disk")
                continue
            log(f"memory: building {size / 1e9:.1f} GB in a subprocess")
            out = self.run_dir / f"mem-{size}.json"
            subprocess.run([sys.executable, "-m", "bench.suite.memory", "--bytes", str(size),
                            "--out", str(self.run_dir / f"mem-store-{size}"), "--json-out", str(out)],
                           cwd=ROOT, check=True, timeout=1200)
            results[size] = json.loads(out.read_text())
        for size, doc in results.items():
            self.rows.append(Row(
                f"writer peak RSS building a {size / 1e9:.1f} GB store", doc["peak_rss"] / 2**20, None, "MiB",
                None, None, note=f"{doc['pairs']:,} pairs of 16 B keys and 4 KiB values fed as 16 MiB "
                                 f"Arrow tables; {doc['store_bytes'] / 2**30:.2f} GiB written in "
                                 f"{doc['seconds']:.1f} s; "
                                 f"RSS after imports {doc['baseline_rss'] / 2**20:.0f} MiB; psutil "
                                 "samples every 10 ms",
                section="memory", repetitions=1))
        if len(results) == 2:
            small, big = (results[s]["peak_rss"] for s in sizes)
            self.rows.append(Row("writer peak RSS, 5 GB store / 0.5 GB store", big / small, None, "ratio",
                                 big / small, "<= 1.1", note="flat in store size means about 1.0",
                                 section="memory"))
        elif self.quick:
            self.skipped.append("memory: the 5 GB build is skipped in --quick")

    def external(self, name: str) -> None:
        script = ROOT / "bench" / EXTERNAL[name]
        if not script.exists():
            self.skipped.append(f"{name}: {script.relative_to(ROOT)} is not there yet")
            return
        default_timeout = {"spark": (540, 60), "mrjob": (240, 40), "serve": (600, 150),
                           "follow": (180, 60), "sql": (900, 120), "updates": (1800, 300)}[name]
        timeout = getattr(self.args, f"{name}_timeout") or default_timeout[1 if self.quick else 0]
        out = self.run_dir / f"{name}.json"
        log_path = common.RESULTS_ROOT / f"{name}.log"
        cmd = [sys.executable, str(script), "--json-out", str(out)] + (["--quick"] if self.quick else [])
        log(f"{name}: {' '.join(cmd[1:])} (timeout {timeout:.0f} s)")
        common.RESULTS_ROOT.mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            log_path.write_text(f"$ {' '.join(cmd)}\n(timed out after {timeout} s)\n"
                                f"{exc.stdout or ''}{exc.stderr or ''}")
            self.skipped.append(f"{name}: timed out after {timeout:.0f} s "
                                f"(log: {log_path.relative_to(ROOT)})")
            return
        log_path.write_text(f"$ {' '.join(cmd)}\nexit {proc.returncode}\n"
                            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
        if proc.returncode != 0 or not out.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            self.skipped.append(f"{name}: exit {proc.returncode}: {tail[0][:200]} "
                                f"(log: {log_path.relative_to(ROOT)})")
            return
        try:
            docs = json.loads(out.read_text())
            self.rows += [common.row_from_json(d, name) for d in docs]
        except (ValueError, TypeError, AttributeError) as exc:
            self.skipped.append(f"{name}: unreadable --json-out ({exc})")

    # ---- profiles ----------------------------------------------------------------------
    def _profiles(self, ds: datagen.Dataset, paths: dict[str, Path]) -> None:
        try:
            from pyinstrument import Profiler
        except ImportError:
            self.skipped.append("profiles: pyinstrument is not installed")
            return
        from kvio import KeyValueSystem
        common.RESULTS_ROOT.mkdir(parents=True, exist_ok=True)
        hits = ds.sample_hits(self.sample, 3)

        def gets() -> None:
            with KeyValueSystem().open_store(str(paths["kvio"])) as reader:
                get = reader.get
                for k in hits:
                    get(k)
                for k in hits:
                    get(k)
        jobs = {"get": gets,
                "build-pairs": lambda: build.build_kvio_pairs(ds, self.run_dir / "profile-build"),
                "scan": lambda: scan.scan_kvio(paths["kvio"])}
        for name, fn in jobs.items():
            prof = Profiler(interval=0.0005)
            prof.start()
            fn()
            prof.stop()
            (common.RESULTS_ROOT / f"profile-{name}.txt").write_text(
                prof.output_text(unicode=False, color=False, show_all=False))
        shutil.rmtree(self.run_dir / "profile-build", ignore_errors=True)

    # ---- driver ------------------------------------------------------------------------
    def run(self) -> int:
        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        t0 = time.perf_counter()
        load_start = common.load_text()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        runners = {"core": self.core, "values-4k": self.values_4k, "scaling": self.scaling_part,
                   "remote": self.remote_part, "memory": self.memory_part,
                   "spark": lambda: self.external("spark"), "mrjob": lambda: self.external("mrjob"),
                   "serve": lambda: self.external("serve"),
                   "follow": lambda: self.external("follow"), "sql": lambda: self.external("sql"),
                   "updates": lambda: self.external("updates")}
        try:
            for part in self.parts:
                start = time.perf_counter()
                runners[part]()
                self.timings[part] = time.perf_counter() - start
                log(f"{part}: done in {self.timings[part]:.0f} s")
                gc.collect()
        finally:
            if not self.args.keep_data:
                shutil.rmtree(self.run_dir, ignore_errors=True)
        elapsed = time.perf_counter() - t0
        argv = " ".join(sys.argv[1:])
        meta = {"command": f"python bench/run.py {argv}".strip(), "started": started,
                "elapsed_min": elapsed / 60, "quick": self.quick, "load_start": load_start,
                "load_end": common.load_text(), "machine": common.machine(), "versions": common.versions(),
                "dataset": f"main {self.keys:,} keys x 100 B values, {max(1000, self.keys // 10):,} keys x "
                           f"4 KiB values, scaling {self.scale_keys:,} keys x 100 B",
                "parts": self.parts, "part_seconds": self.timings, "skipped": self.skipped}
        common.write_json(self.args.json_out, {"meta": meta, "rows": [r.to_json() for r in self.rows]})
        report.write(self.args.out, self.rows, meta, ROOT / "bench" / "NOTES.md")
        print(report.table(self.rows) and "\n".join(report.table(self.rows)))
        log(f"wrote {self.args.out} and {self.args.json_out} in {elapsed / 60:.1f} min")
        return 0


def render(args: argparse.Namespace) -> int:
    doc = json.loads(args.render.read_text())
    rows = [Row(**{k: v for k, v in r.items() if k in Row.__dataclass_fields__}) for r in doc["rows"]]
    report.write(args.out, rows, doc["meta"], ROOT / "bench" / "NOTES.md")
    log(f"wrote {args.out} from {args.render}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return render(args) if args.render else Suite(args).run()


if __name__ == "__main__":
    sys.exit(main())
