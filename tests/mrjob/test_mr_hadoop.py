"""``-r hadoop`` through a stand-in ``hadoop`` executable (tests/mrjob/hadoop_standin.py).

What is checked: the streaming command mrjob builds for a kvio job, and that the job is
correct under Hadoop's shuffle contract — map output hash-partitioned over reducers, each
reducer's input sorted, no order across reducers (reducers even run in reverse) — rather than
the local runner's total order. Nothing here talks to a real cluster.
"""
from __future__ import annotations

import json

import pytest

from kvio import KeyValueSystem
from mr_jobs.clone_store import CloneStore

from .conftest import assert_disjoint_ranges, build_store, hostile_pairs, run_kv_job, store_items
from .jobs.country_counts import MRCountryCounts

pytestmark = [pytest.mark.slow, pytest.mark.mrjob]


def _jar_commands(log) -> list[list[str]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


def _option(cmd: list[str], flag: str) -> list[str]:
    return [cmd[i + 1] for i, arg in enumerate(cmd) if arg == flag]


def test_clone_through_hadoop_streaming_shuffle(tmp_path, hadoop_standin):
    args, log = hadoop_standin
    pairs = hostile_pairs(600, seed=21)
    build_store(tmp_path / "src", pairs, {"kvio.partition.size.max": "24KB"})
    with KeyValueSystem().open_store(str(tmp_path / "src")) as reader:
        assert len(reader.manifest.partitions) == 2
    # 5 output partitions over 2 reducers: reducers handle several partitions each, in hash
    # order, and the stand-in runs reducer 1 before reducer 0.
    result = run_kv_job(CloneStore, "hadoop", [tmp_path / "src"], tmp_path / "dst",
                        "--output-partitions", "5", "-D", "mapreduce.job.reduces=2", *args)
    assert store_items(tmp_path / "dst") == pairs
    assert_disjoint_ranges(tmp_path / "dst")
    assert result["output_partitions"] == 5 and result["pairs_written_counter"] == len(pairs)

    [cmd] = _jar_commands(log)
    jobconf = dict(d.split("=", 1) for d in _option(cmd, "-D"))
    assert jobconf["mapreduce.job.reduces"] == "2"  # the user's -D wins over the default (5)
    assert jobconf["stream.num.map.output.key.fields"] == "2"  # key = partition TAB hex key
    assert jobconf["mapreduce.partition.keypartitioner.options"] == "-k1,1"  # route on partition
    assert _option(cmd, "-partitioner") == ["org.apache.hadoop.mapred.lib.KeyFieldBasedPartitioner"]
    assert _option(cmd, "-inputformat") == ["org.apache.hadoop.mapred.lib.NLineInputFormat"]
    files = {f.split("#")[1] for f in _option(cmd, "-files")[0].split(",")}
    assert {"kvio-plan.json", "kvio-mr-code.zip", "mrjob.zip", "clone_store.py"} <= files
    [mapper] = _option(cmd, "-mapper")
    [reducer] = _option(cmd, "-reducer")
    assert "manifest-setup.sh" in mapper and "--mapper" in mapper and "--kvio-plan kvio-plan.json" in mapper
    assert "--reducer" in reducer and "--kvio-plan kvio-plan.json" in reducer
    assert "--output-store" not in mapper + reducer  # driver-only options stay on the driver


def test_aggregation_with_combiner_through_hadoop_streaming(tmp_path, hadoop_standin):
    args, _ = hadoop_standin
    countries = [b"BR", b"IN", b"JP", b"NG", b"US", b"\t\n"]
    users = [(b"u%05d" % i, countries[i * 5 % 6]) for i in range(900)]
    build_store(tmp_path / "users", users)
    run_kv_job(MRCountryCounts, "hadoop", [tmp_path / "users"], tmp_path / "counts",
               "--output-partitions", "3", "--split-points", str(_points(tmp_path)), *args)
    assert store_items(tmp_path / "counts") == sorted((c, b"150") for c in countries)


def _points(tmp_path):
    path = tmp_path / "points.txt"
    path.write_text("\n".join(k.hex() for k in (b"JP", b"US")))
    return path
