"""Spark side of kvio: the ``kvstore`` data source (:mod:`spark_jobs.datasource`) and the
spark-submit jobs ``build_store.py``, ``clone_store.py`` and ``export_store.py``.

:mod:`spark_jobs.scan` and :mod:`spark_jobs.sorting` hold the parts that need only pyarrow
(input splits, key ranges, external sort), so they are tested without Spark.
"""
