"""spark_jobs.scan without Spark: turning the core's batches into the Spark schema's."""
from __future__ import annotations

import pyarrow as pa
import pytest

from kvio.errors import KvioError
from kvio.format.partition_reader import SCHEMA
from spark_jobs import scan


def test_output_batches_cast_and_join():
    schema = pa.schema([pa.field("key", pa.string(), False), pa.field("value", pa.binary(), False)])
    small = [pa.RecordBatch.from_arrays([pa.array([b"k%d" % i], pa.large_binary()),
                                         pa.array([b"v"], pa.large_binary())], schema=SCHEMA)
             for i in range(10)]
    out = list(scan.OutputBatches(schema, "s", batch_bytes=1 << 20)(small))
    assert len(out) == 1 and out[0].schema.equals(schema)
    assert out[0].column(0).to_pylist() == [f"k{i}" for i in range(10)]
    bad = pa.RecordBatch.from_arrays([pa.array([b"\xff"], pa.large_binary()),
                                      pa.array([b""], pa.large_binary())], schema=SCHEMA)
    with pytest.raises(KvioError, match="keyType=binary"):
        list(scan.OutputBatches(schema, "s")([bad]))
