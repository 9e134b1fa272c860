"""The issue's example: input users -> country, output country -> number of users."""
from mr_jobs import KVStoreJob


class MRCountryCounts(KVStoreJob):
    def mapper_kv(self, key, value):
        yield value, b"1"

    def combiner(self, key, values):
        yield key, b"%d" % sum(int(v) for v in values)

    def reducer(self, key, values):
        yield key, b"%d" % sum(int(v) for v in values)


if __name__ == "__main__":
    MRCountryCounts.run()
