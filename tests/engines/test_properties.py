"""Property-based agreement: random stores built by random sequences of writes, merges and
appends (hostile bytes, overlapping keys, tiny partitions and blocks) read through the reader
and ``kvio scan`` equal the model, on local disk and memory://."""
from __future__ import annotations

import os
import tempfile
import uuid

import fsspec
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kvio import KeyValueSystem

from .model import Model, apply, expected_range
from .runners import parse_tsv, run_cli

# Stores are small and many: on a RAM-backed directory when there is one, since every partition
# file is fsynced at commit and the disk's sync latency would dominate the run time.
_SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None

# A small pool of keys shared by all layers makes overlaps likely; the rest are random bytes.
POOL = [b"", b"\x00", b"\t", b"\n", b"\r", b"\xff", b"\xff\xff", b"\\", b"a", b"a\x00", b"a\xff",
        b"k\tv", b"k\nv", b"\x00\xff\x00"]
keys = st.one_of(st.sampled_from(POOL), st.binary(min_size=0, max_size=6),
                 st.binary(min_size=200, max_size=700))
values = st.one_of(st.just(b""), st.binary(max_size=24),
                   st.sampled_from([b"\t\n\r\x00\xff", b"\\n"]))
layers = st.lists(st.tuples(st.sampled_from(["merge", "append", "merge", "append", "overwrite"]),
                            st.dictionaries(keys, values, max_size=150)),
                  min_size=1, max_size=4)
confs = st.fixed_dictionaries({
    "kvio.partition.size.max": st.sampled_from(["9KB", "9KB", "12KB", "1MB"]),
    "kvio.block.size": st.sampled_from(["64B", "300B", "4KB"]),
})
bounds = st.one_of(st.none(), keys)


def _build(uri: str, first: dict[bytes, bytes], later, conf: dict[str, str]) -> Model:
    """Apply the writes to the store and to the model alike."""
    kvs = KeyValueSystem(conf=conf)
    with kvs.create_store(uri) as writer:
        writer.put_many(sorted(first.items()))
    model = dict(first)
    for i, (op, pairs) in enumerate(later):
        ordered = sorted(pairs.items())
        if op == "merge":
            src = f"{uri}-src{i}"
            with kvs.create_store(src) as writer:
                writer.put_many(ordered)
            kvs.merge_store(src, uri)
            apply(model, pairs)
        else:
            with kvs.create_store(uri, mode=op) as writer:
                writer.put_many(ordered)
            model = apply({} if op == "overwrite" else model, pairs)
    return model


@pytest.mark.parametrize("fs", ["local", "memory"])
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(first=st.dictionaries(keys, values, max_size=300), later=layers, conf=confs,
       start=bounds, stop=bounds)
def test_random_merges_read_like_the_model(fs, first, later, conf, start, stop):
    with tempfile.TemporaryDirectory(prefix="kvio-engines-", dir=_SCRATCH) as tmp:
        root = tmp if fs == "local" else f"memory://kvio-engines-prop-{uuid.uuid4().hex}"
        try:
            uri = f"{root}/store"
            model = _build(uri, first, later, conf)
            with KeyValueSystem().open_store(uri) as reader:
                info = reader.info()
                event(f"overlapping partitions: {not info['disjoint']}")
                count = len(info["partitions"])
                event(f"partitions: {count if count < 10 else '10+'}")
                assert list(reader.items()) == sorted(model.items())
                assert len(reader) == len(model)
                probes = sorted(model) + [k + b"\x00" for k in model] + POOL
                assert reader.get_many(probes) == [model.get(k) for k in probes]
                assert list(reader.items(start, stop)) == expected_range(model, start, stop)
            args = ["scan", uri, "--hex"]
            args += [f"--start={start.hex()}"] if start is not None else []
            args += [f"--stop={stop.hex()}"] if stop is not None else []
            # In-process: a process per example would dominate; test_cli runs the real command.
            scanned = parse_tsv(run_cli(args, process=False), "hex")
            assert scanned == expected_range(model, start, stop)
        finally:
            if fs == "memory":
                memory = fsspec.filesystem("memory")
                path = root.removeprefix("memory://")
                if memory.exists(path):
                    memory.rm(path, recursive=True)
