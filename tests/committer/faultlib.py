"""Writer scenarios for the fault-injection suite, and the child process that runs one of them
and kills itself with SIGKILL at a chosen step.

Run as a script (``python faultlib.py '<json spec>'``) it executes one scenario against a store.
No product code has hooks: this module wraps kvio's functions *inside the child process only*
so that every call is an event with a number; the event whose number is ``spec["kill"]`` sends
SIGKILL to the process (before the call for "before" events, right after it for "after" ones).
A dry run (``kill`` = None) writes the list of events to ``spec["trace"]`` so the parent can
choose the kill points and knows, for each one, whether the commit record already existed.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading

from kvio import KeyValueSystem, versions
from kvio import rollback as rollback_module
from kvio.committer import Job, JobContext, TaskAttempt
from kvio.format.partition_writer import PartitionWriter
from kvio.fs import FileIO
from kvio.writer import SortedPairWriter

# Small partitions and blocks so that one job writes several files of several blocks each.
# No gc grace: the checks expect gc to remove every superseded version beyond the retention at
# once (versions here are published milliseconds apart).
BASE_CONF = {"kvio.partition.size.max": "8KB", "kvio.block.size": "256B", "kvio.gc.grace": "0"}


def key(i: int) -> bytes:
    return b"k%05d" % i


def pairs(keys, tag: str) -> list[tuple[bytes, bytes]]:
    return [(key(i), b"%s-%05d" % (tag.encode(), i)) for i in keys]


OLD = dict(pairs(range(0, 300), "old"))
PREV = dict(pairs(range(100, 220), "prev"))
TASK0 = pairs(range(0, 200), "new")
TASK1 = pairs(range(200, 400), "new")
NEW = dict(TASK0 + TASK1)
APPENDED = pairs(range(150, 350), "app")


def _write(kvs: KeyValueSystem, uri: str, data, mode: str) -> None:
    with kvs.create_store(uri, mode=mode) as writer:
        for k, v in data:
            writer.put(k, v)


# ---- scenarios: (pre-state builder, the job, expected content before/after its publish) -------
class Scenario:
    name = ""
    conf: dict = {}
    old: dict | None = None   # content before the job (None: no store)
    new: dict = {}            # content after the job published
    rerun_may_refuse = False  # a rerun after a landed publish may raise StoreExistsError

    def kvs(self) -> KeyValueSystem:
        return KeyValueSystem(conf={**BASE_CONF, **self.conf})

    def prepare(self, uri: str) -> None:
        """Build the store the job starts from."""

    def run(self, uri: str) -> None:
        raise NotImplementedError


class CreateWithPythonWriter(Scenario):
    """First create of a store by the Python writer (one task), mode=error."""
    name = "create"
    new = NEW
    rerun_may_refuse = True

    def run(self, uri: str) -> None:
        _write(self.kvs(), uri, sorted(NEW.items()), "error")


class OverwriteWithTasks(Scenario):
    """Overwrite through the task protocol that Spark and MapReduce use: two tasks, a failed
    attempt and a speculative duplicate whose files differ, context and messages shipped as
    JSON, retention 1 so the publish also garbage-collects the previous versions."""
    name = "overwrite"
    conf = {"kvio.versions.retain": "1"}
    old = OLD
    new = NEW

    def prepare(self, uri: str) -> None:
        kvs = self.kvs()
        _write(kvs, uri, sorted(PREV.items()), "error")
        _write(kvs, uri, sorted(OLD.items()), "overwrite")

    def run(self, uri: str) -> None:
        conf = {**BASE_CONF, **self.conf}
        job = Job.setup(uri, mode="overwrite", conf=conf)
        ctx = JobContext.from_json(json.loads(json.dumps(job.ctx.to_json())))
        failed = TaskAttempt(ctx, 0, "attempt-0")  # dies half-way through its first file
        _, handle = failed.new_partition_file()
        handle.write(b"KVIOPART" + b"\0" * 3000)
        handle.close()
        winner0 = SortedPairWriter(TaskAttempt(ctx, 0, "attempt-1"))
        winner0.put_many(TASK0)
        m0 = winner0.close()
        winner1 = SortedPairWriter(TaskAttempt(ctx, 1, "attempt-0"))
        winner1.put_many(TASK1)
        m1 = winner1.close()
        speculative = SortedPairWriter(TaskAttempt(ctx, 1, "attempt-1"))
        speculative.put_many(pairs(range(200, 400), "spec"))
        speculative.close()  # finished too, but the driver already took attempt-0's message
        messages = json.loads(json.dumps([m0, m1]))
        Job(JobContext.from_json(ctx.to_json())).commit(messages, num_tasks=2)


class AppendWithPythonWriter(Scenario):
    """mode=append: the current version's files are hard-linked into the new version and the
    appended pairs win on equal keys."""
    name = "append"
    old = OLD
    new = {**OLD, **dict(APPENDED)}

    def prepare(self, uri: str) -> None:
        _write(self.kvs(), uri, sorted(OLD.items()), "error")

    def run(self, uri: str) -> None:
        _write(self.kvs(), uri, APPENDED, "append")


class Rollback(Scenario):
    """kvio rollback: a new version made of links to the previous version's files."""
    name = "rollback"
    conf = {"kvio.versions.retain": "3"}
    old = OLD
    new = PREV

    def prepare(self, uri: str) -> None:
        kvs = self.kvs()
        _write(kvs, uri, sorted(PREV.items()), "error")
        _write(kvs, uri, sorted(OLD.items()), "overwrite")

    def run(self, uri: str) -> None:
        history = self.kvs().versions(uri)
        prev = [h for h in history if h["available"] and not h["current"]][-1]["version"]
        self.kvs().rollback(uri, prev)

    def rerun(self, uri: str) -> None:
        reader = self.kvs().open_store(uri)
        try:
            if dict(reader.items()) == PREV:
                return  # already rolled back: rolling back again would go elsewhere
        finally:
            reader.close()
        self.run(uri)


class GarbageCollection(Scenario):
    """kvio gc with retention 1 on a store with old versions, a crashed job's staging, an
    orphaned version directory and a stray temporary file."""
    name = "gc"
    conf = {"kvio.versions.retain": "1"}
    old = OLD
    new = OLD

    def prepare(self, uri: str) -> None:
        kvs = KeyValueSystem(conf=BASE_CONF)
        _write(kvs, uri, sorted(PREV.items()), "error")
        _write(kvs, uri, pairs(range(0, 50), "mid"), "overwrite")
        _write(kvs, uri, sorted(OLD.items()), "overwrite")
        crashed = Job.setup(uri, mode="overwrite", conf=BASE_CONF)  # a driver that died
        writer = SortedPairWriter(crashed.task(0))
        writer.put_many(pairs(range(0, 100), "crashed"))
        writer.close()
        orphan = Job.setup(uri, mode="overwrite", conf=BASE_CONF)  # died between rename and publish
        w2 = SortedPairWriter(orphan.task(0))
        w2.put_many(pairs(range(0, 100), "orphan"))
        w2.close()
        orphan.io.rename_dir(f"_staging/{orphan.ctx.job_id}", f"_versions/{orphan.ctx.job_id}")
        with open(os.path.join(uri, "_commits", ".tmp-deadbeef-0000000009.commit"), "wb") as f:
            f.write(b"partial")

    def run(self, uri: str) -> None:
        self.kvs().gc(uri, older_than=0)


SCENARIOS = {s.name: s for s in (CreateWithPythonWriter(), OverwriteWithTasks(),
                                 AppendWithPythonWriter(), Rollback(), GarbageCollection())}


# Filled by test_faults.py, printed by conftest.py at the end of the run.
REPORT: list[dict] = []


# ---- the child: events and kill points ------------------------------------------------------------
_STATE: dict = {"n": 0, "kill": None, "trace": None, "published": False, "phase": "setup"}
_MUTATORS = ("makedirs", "create_dir", "mkdir", "open_output", "write_new_file", "publish_file",
             "rename_dir", "copy_from", "delete_file", "delete_tree", "remove_empty_dir")


_LOCK = threading.Lock()  # remote commits validate files in threads


def _event(kind: str, detail: str = "") -> None:
    with _LOCK:
        _numbered(kind, detail)


def _numbered(kind: str, detail: str) -> None:
    _STATE["n"] += 1
    if _STATE["trace"] is not None:
        _STATE["trace"].append({"n": _STATE["n"], "kind": kind, "detail": detail,
                                "phase": _STATE["phase"], "published": _STATE["published"]})
    if _STATE["n"] == _STATE["kill"]:
        expect = _STATE.get("expect")
        if expect and expect != kind:  # the run diverged from the dry run: say so, don't guess
            sys.stderr.write(f"event {_STATE['n']} is {kind!r}, the dry run had {expect!r}\n")
            os._exit(3)
        os.kill(os.getpid(), signal.SIGKILL)


def _wrap(owner, name: str, before: str | None = None, after: str | None = None,
          phase: str | None = None, phase_after: str | None = None, detail=None) -> None:
    """Replace ``owner.name`` in this process by a wrapper that numbers events around it.
    Phases are sticky labels for the kill-point table (the protocol only moves forward)."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if phase:
            _STATE["phase"] = phase
        text = detail(*args, **kwargs) if detail else ""
        if before:
            _event(before, text)
        result = original(*args, **kwargs)
        if after:
            _event(after, text)
        if phase_after:
            _STATE["phase"] = phase_after
        return result
    setattr(owner, name, wrapper)


def _rel(self, *args, **kwargs) -> str:
    return next((a for a in args if isinstance(a, str)), "")


def install_kill_points() -> None:
    # Every filesystem mutation kvio makes goes through FileIO: kill before each one.
    for name in _MUTATORS:
        after = f"after {name}" if name in ("write_new_file", "rename_dir") else None
        _wrap(FileIO, name, before=f"before {name}", after=after, detail=_rel)
    # Inside FileIO's atomic steps: after os.link made the new name (the commit point for a
    # commit record), and after the mkdir claim, before os.rename.
    real_link, real_rename = os.link, os.rename

    def link(src, dst, *a, **k):
        real_link(src, dst, *a, **k)
        if "/_commits/" in str(dst) and str(dst).endswith(".commit"):
            _STATE["published"] = True
        _event("after os.link", os.path.basename(str(dst)))

    def rename(src, dst, *a, **k):
        _event("before os.rename (target claimed)", os.path.basename(str(dst)))
        real_rename(src, dst, *a, **k)
    os.link, os.rename = link, rename
    # On object stores the commit point is a create-only put of the record (one request):
    # kills right after it must show the new version.
    real_create = FileIO._create_object

    def create(self, rel, data):
        real_create(self, rel, data)
        if rel.startswith("_commits/") and rel.endswith(".commit"):
            _STATE["published"] = True
        _event("after create-only put", os.path.basename(rel))
    FileIO._create_object = create
    # Protocol steps (they also set the phase names of the kill-point table).
    _wrap(Job, "setup", phase="job setup")
    _wrap(TaskAttempt, "__init__", phase="task write")
    _wrap(PartitionWriter, "_write_block", before="before block write")
    _wrap(PartitionWriter, "finish", after="after partition finish")
    _wrap(TaskAttempt, "commit", after="after task commit", phase="task commit")
    _wrap(Job, "commit", phase="job commit")
    _wrap(Job, "_check_file", before="before validating a file", phase="job commit")
    _wrap(Job, "carry", phase="job commit (carry)")
    _wrap(versions, "publish_commit", before="before publish_commit", after="after publish_commit",
          phase="pointer swap", phase_after="after publish")
    _wrap(versions, "collect_garbage", phase="garbage collection")
    _wrap(rollback_module, "rollback", phase="rollback")


def main() -> None:
    spec = json.loads(sys.argv[1])
    _STATE["kill"] = spec.get("kill")
    _STATE["expect"] = spec.get("expect")
    if spec.get("trace"):
        _STATE["trace"] = []
    install_kill_points()
    SCENARIOS[spec["scenario"]].run(spec["uri"])
    if spec.get("trace"):
        with open(spec["trace"], "w") as f:
            json.dump(_STATE["trace"], f)


if __name__ == "__main__":
    main()
