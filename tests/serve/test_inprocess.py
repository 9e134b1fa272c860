"""The app on a store that is not on local disk (``memory://``, as object stores and HDFS):
readers are then used from worker threads under a per-store lock, never on the event loop.
uvicorn runs in a thread of the test process, since a memory store lives in one process."""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import fsspec
import pyarrow as pa
import pytest

import kvio
from tests.helpers import require_module

from .conftest import HOSTILE_KEYS, Server, free_port, pkey

uvicorn = require_module("uvicorn", "the server extra (kvio[serve]) is not installed")


@pytest.fixture
def memory_store() -> Iterator[tuple[str, dict[bytes, bytes]]]:
    root = f"kvio-tests/{uuid.uuid4().hex}"
    uri = f"memory://{root}/m.kv"
    kvs = kvio.KeyValueSystem(conf={"kvio.partition.size.max": "4KB"})  # many partitions
    model = {b"k%05d" % i: b"v%d" % i for i in range(3000)}
    model.update({k: b"h" + k for k in HOSTILE_KEYS})
    with kvs.create_store(uri) as w:
        w.put_many(sorted(model.items()))
    try:
        yield uri, model
    finally:
        fsspec.filesystem("memory").rm(f"/{root}", recursive=True)


def test_remote_store_answers_from_worker_threads(memory_store):
    from kvio.serve.app import build_app
    from kvio.serve.options import ServeOptions
    from kvio.serve.stores import StoreSet

    uri, model = memory_store
    options = ServeOptions(stores=(("m", uri),))
    stores = StoreSet.open(options)
    assert stores.get("m").inline is False
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(build_app(options, stores), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.02)
    client = Server(proc=None, port=port, log=None)  # type: ignore[arg-type]
    try:
        for key in HOSTILE_KEYS + [b"k00000", b"k02999"]:
            assert client.get(f"/v1/stores/m/keys/{pkey(key)}").body == model[key]
        keys = [b"k%05d" % i for i in range(0, 3200, 7)]
        table = pa.table({"key": pa.array(keys, pa.binary())})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        answer = client.request("POST", "/v1/stores/m/get", sink.getvalue().to_pybytes(),
                                {"Content-Type": "application/vnd.apache.arrow.stream"})
        got = pa.ipc.open_stream(answer.body).read_all().column("value").to_pylist()
        assert got == [model.get(k) for k in keys]
        scanned = client.get("/v1/stores/m/scan?start=k01000&stop=k02000&encoding=base64")
        assert len(scanned.body.splitlines()) == 1000
        assert client.get("/v1/stores/m").json()["pairs"] == len(model)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert not thread.is_alive()
    with pytest.raises(kvio.ReaderClosedError):  # the app closed its stores on shutdown
        with stores.get("m").snapshot() as reader:
            reader.get(b"k00000")
