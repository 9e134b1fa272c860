"""mrjob input against the model: CloneStore (identity map and reduce) and an aggregating
KVStoreJob (count per value) on mrjob's inline runner (in this process) and local runner
(tasks in subprocesses, Unix sort), for the stores on local disk.

The clone must equal the model, and the counts must be those of the model's values: a mapper
that sees a superseded value of a merged or appended store breaks both.
"""
from __future__ import annotations

import pytest

from kvio import KeyValueSystem
from mr_jobs.clone_store import CloneStore

from .jobs.value_counts import ValueCounts
from .model import value_counts
from .runners import run_kv_job
from .stores import STORES

pytestmark = [pytest.mark.mrjob]

#: the local runner starts a process per task, so it runs on the stores where it adds most:
#: superseded values (merged, appended) and record separators through real pipes and sort
LOCAL_RUNNER_KINDS = ["merged", "appended", "hostile"]
#: ...and the aggregating job, whose pipes and sort the clones already exercise, on the first two
LOCAL_COUNT_KINDS = ["merged", "appended"]


def _runs(local_kinds: list[str]) -> list:
    """(store kind, runner, extra job arguments). 4 KB splits turn partitions into several
    block-range map tasks."""
    out = []
    for kind in STORES:
        marks = [pytest.mark.spark, pytest.mark.slow] if STORES[kind][1] else []
        out.append(pytest.param(kind, "inline", [], id=f"{kind}-inline", marks=marks))
        out.append(pytest.param(kind, "inline", ["--split-size", "4KB"],
                                id=f"{kind}-inline-block-splits", marks=marks))
        if kind in local_kinds:
            out.append(pytest.param(kind, "local", [], id=f"{kind}-local",
                                    marks=[*marks, pytest.mark.slow]))
    return out


def _items(uri: str) -> list[tuple[bytes, bytes]]:
    with KeyValueSystem().open_store(uri) as reader:
        return list(reader.items())


@pytest.mark.parametrize("local_store,runner,extra", _runs(LOCAL_RUNNER_KINDS),
                         indirect=["local_store"])
def test_clone_store(local_store, tmp_path, runner, extra):
    dest = str(tmp_path / "clone")
    result = run_kv_job(CloneStore, runner, [local_store.uri], dest, "--output-partitions", "3",
                        *extra)
    assert _items(dest) == sorted(local_store.model.items())
    assert result["count"] == len(local_store.model)


@pytest.mark.parametrize("local_store,runner,extra", _runs(LOCAL_COUNT_KINDS),
                         indirect=["local_store"])
def test_count_per_value(local_store, tmp_path, runner, extra):
    """One output partition: the counts depend only on what the mappers read."""
    dest = str(tmp_path / "counts")
    run_kv_job(ValueCounts, runner, [local_store.uri], dest, "--output-partitions", "1", *extra)
    assert _items(dest) == value_counts(local_store.model)


def test_count_per_value_with_default_output_partitions(local_store, tmp_path):
    """As a user runs the job: output partitions routed by split points taken from the input
    keys, which the output keys (values) need not fill."""
    dest = str(tmp_path / "counts")
    run_kv_job(ValueCounts, "inline", [local_store.uri], dest)
    assert _items(dest) == value_counts(local_store.model)
