"""Lets Spark find the ``kvstore`` data source without registering it.

When a session first resolves a Python data source, pyspark (4.1+) imports every top-level
module on its workers' path whose name starts with ``pyspark_`` and registers its
``DefaultSource`` under ``DefaultSource.name()``. Installing kvio (this module included) is
therefore enough for ``spark.read.format("kvstore")`` to work; ``spark_jobs.register(spark)``
does the same explicitly.

Spark imports this module in every application of the environment, kvio's or not, and one
module that raises makes the lookup of every Python data source fail. So importing it never
raises: if kvio's source cannot be imported here, ``DefaultSource`` is a stand-in named
``kvstore`` whose use raises an error that carries the original import problem (and nothing
at all is registered if even pyspark's data source API is missing).
"""
from __future__ import annotations

__all__ = ["DefaultSource"]

try:
    from spark_jobs.datasource import KvStoreDataSource as DefaultSource
except Exception as _exc:  # noqa: BLE001 - see the module docstring: never raise from here
    _PROBLEM = f"{type(_exc).__name__}: {_exc}"
    del _exc
    try:
        import sys as _sys

        from pyspark.sql.datasource import DataSource as _DataSource

        class DefaultSource(_DataSource):  # type: ignore[no-redef]
            """Stand-in for kvio's ``kvstore`` source when it cannot be imported."""

            @classmethod
            def name(cls) -> str:
                return "kvstore"

            def _fail(self, *args: object, **kwargs: object) -> None:
                raise ImportError(
                    f"the kvstore data source (kvio) could not be imported by Spark's Python "
                    f"worker {_sys.executable}: {_PROBLEM}. Install kvio[spark] into that "
                    "Python, or set PYSPARK_PYTHON to a Python that has it")

            schema = reader = writer = streamReader = streamWriter = _fail  # type: ignore[assignment]

    except Exception:  # noqa: BLE001 - no Python data source API: nothing to register
        __all__ = []
