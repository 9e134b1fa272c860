"""The same jobs with mrjob's local runner: real subprocesses per task, Unix sort, the code
shipped to tasks as a zip (py_files), real files."""
from __future__ import annotations

import pytest
from mrjob.step import StepFailedException

from mr_jobs.clone_store import CloneStore

from .conftest import assert_disjoint_ranges, build_store, hostile_pairs, run_kv_job, store_files, store_items
from .jobs.failing_reducer import FailingReducer
from .jobs.text_word_count import TextWordCount

pytestmark = [pytest.mark.slow, pytest.mark.mrjob]


def test_local_clone_of_hostile_bytes_in_many_partitions_and_one_huge_value(tmp_path):
    pairs = hostile_pairs(1200, seed=11)
    huge = (b"\xff\xfe\n\thuge", bytes(range(256)) * (8 << 12))  # 8 MiB of every byte value
    build_store(tmp_path / "src", pairs, {"kvio.partition.size.max": "16KB", "kvio.block.size": "512B"})
    build_store(tmp_path / "huge", [huge])  # a second input store
    result = run_kv_job(CloneStore, "local", [tmp_path / "src", tmp_path / "huge"], tmp_path / "dst",
                        "--output-partitions", "5", "--split-size", "16KB")
    pairs = sorted(pairs + [huge])
    assert result["map_tasks"] >= 8 and result["output_partitions"] == 5
    assert result["pairs_written_counter"] == len(pairs)
    assert store_items(tmp_path / "dst") == pairs
    assert_disjoint_ranges(tmp_path / "dst")


def test_local_clone_of_an_empty_store(tmp_path):
    build_store(tmp_path / "src", [])
    assert run_kv_job(CloneStore, "local", [tmp_path / "src"], tmp_path / "dst")["count"] == 0
    assert store_items(tmp_path / "dst") == []


def test_local_failing_reducer_publishes_nothing_then_a_rerun_converges(tmp_path, monkeypatch):
    pairs = hostile_pairs(400, seed=2)
    build_store(tmp_path / "src", pairs, {"kvio.partition.size.max": "12KB"})
    monkeypatch.setenv("KVIO_TEST_FAIL_AT", pairs[200][0].hex())
    with pytest.raises(StepFailedException):
        run_kv_job(FailingReducer, "local", [tmp_path / "src"], tmp_path / "dst",
                   "--output-partitions", "3")
    assert store_files(tmp_path / "dst") == []
    monkeypatch.delenv("KVIO_TEST_FAIL_AT")
    run_kv_job(FailingReducer, "local", [tmp_path / "src"], tmp_path / "dst", "--output-partitions", "3")
    assert store_items(tmp_path / "dst") == pairs


def test_local_text_input(tmp_path):
    text = tmp_path / "words.txt"
    text.write_text("b a\tc\nc c a\n" * 50)
    run_kv_job(TextWordCount, "local", [text], tmp_path / "counts")
    assert store_items(tmp_path / "counts") == [(b"a", b"100"), (b"b", b"50"), (b"c", b"150")]
