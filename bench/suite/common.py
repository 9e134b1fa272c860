"""Shared pieces of the suite: result rows, timing, load, machine and version description."""
from __future__ import annotations

import gc
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DATA_ROOT = ROOT / "bench" / "data"
RESULTS_ROOT = ROOT / "bench" / "results"


@dataclass
class Row:
    """One line of the results table; the first seven fields are the JSON contract of
    bench/README.md (scripts run by the runner emit lists of them)."""

    measurement: str
    kvio: float | None
    reference: float | None
    unit: str
    ratio: float | None
    target: str | None  # "<= 1.5" or ">= 0.8", compared with ``ratio``; None: no target
    note: str = ""
    section: str = "core"
    reference_name: str = ""
    repetitions: int | None = None
    met: bool | None = None
    load: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.met is None:
            self.met = target_met(self.ratio, self.target)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def target_met(ratio: float | None, target: str | None) -> bool | None:
    """Whether ``ratio`` satisfies ``target`` ("<= x" / ">= x"); None when either is missing."""
    if ratio is None or not target:
        return None
    text = target.replace("≤", "<=").replace("≥", ">=").replace("×", "").replace("x", "").strip()
    for op in ("<=", ">="):
        if text.startswith(op):
            try:
                bound = float(text[len(op):].strip())
            except ValueError:
                return None
            return ratio <= bound if op == "<=" else ratio >= bound
    return None


def row_from_json(doc: dict[str, Any], section: str) -> Row:
    """A row written by an external script (tolerates missing or extra keys)."""
    known = {k: doc.get(k) for k in ("measurement", "kvio", "reference", "unit", "ratio", "target")}
    known["measurement"] = str(known["measurement"] or "?")
    known["unit"] = str(known["unit"] or "")
    extra = {k: v for k, v in doc.items() if k not in Row.__dataclass_fields__}
    return Row(**known, note=str(doc.get("note") or ""), section=section,
               reference_name=str(doc.get("reference_name") or ""),
               repetitions=doc.get("repetitions"), met=doc.get("met"),
               load=str(doc.get("load") or ""), extra=extra)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def load_text() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f}/{five:.2f}"


def timed(fn: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], Any]], reps: int,
                before: dict[str, Callable[[], Any]] | None = None) -> dict[str, list[float]]:
    """Run each function ``reps`` times, alternating between them so that load from other
    processes falls on all of them alike; returns the wall times. ``before[name]`` runs
    untimed ahead of each timed call (e.g. removing the previous build)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            if before and name in before:
                before[name]()
            times[name].append(timed(fn))
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def fresh_dir(path: Path) -> Path:
    """Remove ``path`` (a directory or file) so a build starts from nothing."""
    if path.is_file():
        path.unlink()
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def free_bytes(path: Path) -> int:
    path.mkdir(parents=True, exist_ok=True)
    return shutil.disk_usage(path).free


def dir_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fs_type(path: Path) -> str:
    try:
        out = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[1].split()[1]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def machine() -> dict[str, Any]:
    import psutil
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "data_fs": _fs_type(DATA_ROOT if DATA_ROOT.exists() else ROOT),
    }


def versions() -> dict[str, str]:
    out = {}
    for dist in ("pyarrow", "numpy", "xxhash", "lmdb", "fsspec", "psutil", "pyspark", "mrjob"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    import kvio
    out["kvio"] = kvio.__version__
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "kvio"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        out["kvio_git"] = head + (" (+ uncommitted changes in kvio/)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        out["kvio_git"] = "unknown"
    return out


def write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=str) + "\n")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {load_text()}] {message}", file=sys.stderr, flush=True)
