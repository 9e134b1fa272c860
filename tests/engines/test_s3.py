"""The engines on an S3 store (moto's S3 server on loopback): kvio's reader, the ``kvio``
command (in this process and as a real process) and mrjob's CloneStore, against the model.

One store kind, ``merged`` (overlapping partitions with superseded values), is built on S3; the
full matrix of kinds runs on local disk and memory:// in the other modules. Every client here
reaches the server through the standard AWS environment (``AWS_ENDPOINT_URL``, the keys), as a
user's jobs and commands do: no storage options anywhere.
"""
from __future__ import annotations

import pytest

from kvio import KeyValueSystem
from mr_jobs.clone_store import CloneStore

from .conftest import BuiltStore
from .model import RANGE_NAMES, absent_keys, expected_range, range_bounds
from .runners import encoder, parse_tsv, run_cli, run_kv_job
from .stores import STORES

KIND = "merged"


@pytest.fixture(scope="module")
def s3_store(s3_server):
    """The ``merged`` store on a fresh bucket; the AWS environment points at the server for
    the whole module (and for the processes it starts)."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in s3_server.env.items():
            patch.setenv(name, value)
        bucket = s3_server.new_bucket("kvio-engines")
        uri = f"s3://{bucket}/{KIND}/store"
        builder, _ = STORES[KIND]
        model = builder(uri, None)
        yield BuiltStore(KIND, "s3", uri, model)


@pytest.fixture
def store(s3_store) -> BuiltStore:
    return BuiltStore(s3_store.kind, s3_store.fs, s3_store.uri, dict(s3_store.model))


def test_the_reader_agrees_with_the_model(store):
    with KeyValueSystem().open_store(store.uri) as reader:
        info = reader.info()
        live = [p for p in info["partitions"] if p["count"]]
        assert not info["disjoint"] and len(live) > 5  # the shape the suite relies on
        assert list(reader.items()) == sorted(store.model.items())
        assert reader.get_many(list(store.model)) == list(store.model.values())
        assert all(reader.get(k) is None for k in absent_keys(store.model))
        for name in RANGE_NAMES:
            start, stop, prefix = range_bounds(name, store.model)
            assert list(reader.items(start=start, stop=stop, prefix=prefix)) == \
                expected_range(store.model, start, stop, prefix), name
        reader.verify()


@pytest.mark.parametrize("process", [False, True], ids=["in-process", "process"])
def test_kvio_scan_agrees_with_the_model(store, process):
    text = run_cli(["scan", store.uri, "--hex"], process)
    assert parse_tsv(text, "hex") == sorted(store.model.items())
    start, stop, prefix = range_bounds("prefix-and-bounds", store.model)
    args = [f"--{o}={encoder('hex')(v)}" for o, v in (("start", start), ("stop", stop),
                                                       ("prefix", prefix)) if v is not None]
    text = run_cli(["scan", store.uri, "--hex", *args], process)
    assert parse_tsv(text, "hex") == expected_range(store.model, start, stop, prefix)


@pytest.mark.mrjob
def test_mrjob_clone_store_from_s3_to_s3(store):
    """CloneStore reads the S3 store in block-range splits and publishes its output on S3 (the
    job's commit is the create-only put there)."""
    dest = store.uri.rsplit("/", 2)[0] + "/clone/store"
    result = run_kv_job(CloneStore, "inline", [store.uri], dest, "--output-partitions", "3",
                        "--split-size", "16KB")
    assert result["count"] == len(store.model)
    with KeyValueSystem().open_store(dest) as reader:
        assert list(reader.items()) == sorted(store.model.items())
