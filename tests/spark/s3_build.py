"""Child process of the S3 end-to-end test: a fresh Spark session (its Python workers inherit
this process's AWS_* environment, which points at the test's S3 server) builds a store at the
s3:// URI given on the command line with spark_jobs.api.write_store."""
from __future__ import annotations

import json
import sys

from pyspark.sql import SparkSession

import spark_jobs
from spark_jobs.api import write_store

uri, count = sys.argv[1], int(sys.argv[2])
spark = (SparkSession.builder.master("local[2]").appName("kvio-s3-e2e")
         .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "4")
         .config("spark.driver.memory", "1g").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
spark_jobs.register(spark)
rows = [(b"k%06d" % i, b"v%d" % (i * 7)) for i in range(count)]
df = spark.createDataFrame(rows, "key binary, value binary")
record = write_store(df, uri, num_partitions=4)
print(json.dumps({"record": record}, default=str))
spark.stop()
