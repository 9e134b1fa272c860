"""An aggregating KVStoreJob: how many keys hold each value (value -> decimal count). Its
output is only right if every mapper sees each key once, with the value that won. (No
combiner: mrjob's local runner would start another process per map task for it.)"""
from mr_jobs import KVStoreJob


class ValueCounts(KVStoreJob):
    def mapper_kv(self, key, value):
        yield value, b"1"

    def reducer(self, key, values):
        yield key, b"%d" % sum(int(v) for v in values)


if __name__ == "__main__":
    ValueCounts.run()
