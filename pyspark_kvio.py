"""Lets Spark find the ``kvstore`` data source without registering it.

When a session first resolves a Python data source, pyspark (4.1+) imports every top-level
module whose name starts with ``pyspark_`` and registers its ``DefaultSource`` under
``DefaultSource.name()``. Installing kvio (this module included) is therefore enough for
``spark.read.format("kvstore")`` to work; ``kvio.spark.register(spark)`` does the same
explicitly.
"""
from spark_jobs.datasource import KvStoreDataSource as DefaultSource

__all__ = ["DefaultSource"]
