"""Spark-side reading helpers. Planning and merging are the core's (:mod:`kvio.plan`,
:mod:`kvio.keyranges`); this module only turns the core's large-binary batches into batches of
exactly the Spark schema."""
from __future__ import annotations

from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from kvio.errors import KvioError


class OutputBatches:
    """Turns large-binary key/value batches into batches of exactly ``schema`` (the Arrow form
    of the Spark schema: binary or string columns), joining small ones to about ``batch_bytes``.
    Casting large_binary to binary rewrites only the offsets; to string it also checks UTF-8."""

    def __init__(self, schema: pa.Schema, store: str, batch_bytes: int = 4 << 20):
        self.schema = schema
        self.store = store
        self.batch_bytes = batch_bytes

    def __call__(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        group: list[pa.RecordBatch] = []
        size = 0
        for batch in batches:
            group.append(batch)
            size += batch.nbytes
            if size >= self.batch_bytes:
                yield self._convert(group)
                group, size = [], 0
        if group:
            yield self._convert(group)

    def _convert(self, group: list[pa.RecordBatch]) -> pa.RecordBatch:
        columns = []
        for i, target in enumerate(self.schema):
            chunks = [b.column(i) for b in group]
            col = chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)
            try:
                columns.append(pc.cast(col, target.type))
            except pa.ArrowInvalid as exc:
                what = "key" if i == 0 else "value"
                raise KvioError(f"a {what} is not valid UTF-8, so it cannot be read as "
                                f"{target.type} ({exc}); read with {what}Type=binary and decode "
                                "in Spark", store=self.store) from None
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)
