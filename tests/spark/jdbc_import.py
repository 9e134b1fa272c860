"""Child process of tests/spark/test_jdbc.py (and the recipe docs/DATABASES.md shows): read a
PostgreSQL table with Spark's JDBC source, partitioned on a numeric column so that several tasks
read in parallel, and write it as a store with spark_jobs.api.write_store.

    python tests/spark/jdbc_import.py JDBC_URL TABLE STORE_URI

Prints the store summary as one JSON line. The driver jar is Debian's
/usr/share/java/postgresql.jar (no download at run time)."""
from __future__ import annotations

import json
import sys

from pyspark.sql import SparkSession

import spark_jobs
from spark_jobs.api import write_store

JAR = "/usr/share/java/postgresql.jar"


def main(jdbc_url: str, table: str, uri: str) -> None:
    spark = (SparkSession.builder.master("local[2]").appName("kvio-jdbc")
             .config("spark.jars", JAR)
             .config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "4")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    spark_jobs.register(spark)
    df = (spark.read.format("jdbc")
          .option("url", jdbc_url)
          .option("driver", "org.postgresql.Driver")
          .option("dbtable", table)
          .option("partitionColumn", "n").option("lowerBound", "0")
          .option("upperBound", "10000").option("numPartitions", "4")
          .option("fetchsize", "5000")
          .load()
          .select("key", "value"))
    summary = write_store(df, uri, num_partitions=3)
    print(json.dumps({**summary, "jdbc_partitions": df.rdd.getNumPartitions()}, default=str))
    spark.stop()


if __name__ == "__main__":
    main(*sys.argv[1:4])
