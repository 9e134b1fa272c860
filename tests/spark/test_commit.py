"""spark_jobs.commit without Spark: tasks written by kvio.task_writer, published by the
driver-side finish_job (overlapping tasks, duplicates across tasks, empty tasks, ignore)."""
from __future__ import annotations

import pyarrow as pa
import pytest

from kvio import KeyValueSystem
from kvio.committer import Job
from kvio.errors import KeyOrderError
from kvio.task_writer import write_task
from spark_jobs.commit import finish_job


def batch(pairs) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([k for k, _ in pairs], pa.binary()),
                                       pa.array([v for _, v in pairs], pa.binary())],
                                      names=["key", "value"])


def run_job(uri, task_inputs, duplicates="error", mode="overwrite"):
    """What the data source does: setup on the driver, write_task per task, finish_job."""
    job = Job.setup(uri, mode=mode)
    messages = [write_task(job.ctx, task_id, iter(batches), duplicates=duplicates)[0]
                for task_id, batches in enumerate(task_inputs)]
    return finish_job(job, messages, duplicates)


def items(uri):
    with KeyValueSystem().open_store(uri) as r:
        return list(r.items()), r.info()


def test_overlapping_tasks_checked_for_shared_keys(tmp_path):
    uri = str(tmp_path / "s")
    tasks = [[batch([(b"a", b"t0"), (b"m", b"t0"), (b"z", b"t0")])],
             [batch([(b"b", b"t1"), (b"m", b"t1")])]]
    with pytest.raises(KeyOrderError, match="two Spark tasks") as info:
        run_job(uri, tasks)
    assert info.value.key == b"m"
    for mode, winner in (("first", b"t0"), ("last", b"t1")):
        run_job(uri, tasks, duplicates=mode)
        got, info = items(uri)
        assert dict(got)[b"m"] == winner and len(got) == 4
        assert not info["disjoint"]
    record = run_job(uri, [[batch([(b"a", b"1"), (b"c", b"1")])], [batch([(b"b", b"2")])]])
    got, info = items(uri)
    assert info["count"] == 3 and record.version == info["version"]


def test_empty_tasks_publish_an_empty_store(tmp_path):
    uri = str(tmp_path / "s")
    run_job(uri, [[], [batch([])]])
    got, info = items(uri)
    assert got == [] and info["count"] == 0


def test_ignore_mode_writes_nothing(tmp_path):
    uri = str(tmp_path / "s")
    run_job(uri, [[batch([(b"a", b"1")])]])
    before = items(uri)
    assert run_job(uri, [[batch([(b"b", b"2")])]], mode="ignore") is None
    assert items(uri) == before


def test_driver_commit_reads_only_kvstore_task_messages():
    from pyspark.sql.datasource import WriterCommitMessage

    from spark_jobs.datasource import KvStoreCommitMessage, _task_message
    assert _task_message(None) is None  # Spark's entry for a failed task
    assert _task_message(KvStoreCommitMessage({"task_id": 0}, 1)) == {"task_id": 0}
    with pytest.raises(TypeError, match="not a kvstore commit message: WriterCommitMessage"):
        _task_message(WriterCommitMessage())
