"""Spark side of kvio: the ``kvstore`` data source (:mod:`spark_jobs.datasource`), the helpers
that register, read and write it (:mod:`spark_jobs.api`, exported here) and the spark-submit
jobs ``build_store.py``, ``clone_store.py`` and ``export_store.py``.

:mod:`spark_jobs.scan` (Arrow output conversion) and :mod:`spark_jobs.commit` (the driver's
publish) need only pyarrow, so they are tested without Spark; planning, merging and the
bounded external sort of a task's rows are the core's (:mod:`kvio.plan`,
:mod:`kvio.task_writer`). Importing this package does not import pyspark.
"""
from .api import (
    FORMAT,
    WRITE_MODES,
    SparkSetupError,
    check_worker_python,
    existing_store,
    read_store,
    register,
    store_summary,
    write_store,
)

__all__ = ["FORMAT", "WRITE_MODES", "SparkSetupError", "check_worker_python", "existing_store",
           "read_store", "register", "store_summary", "write_store"]
