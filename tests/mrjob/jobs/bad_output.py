"""Jobs that break the output contract: a reducer leaving its key range, a mapper yielding str."""
from mr_jobs import KVStoreJob


class OutOfRangeReducer(KVStoreJob):
    def reducer(self, key, values):
        for value in values:
            yield b"\xff\xff" + key, value


class StrKeyMapper(KVStoreJob):
    def mapper_kv(self, key, value):
        yield key.decode("latin-1"), value


class WithReducerFinal(KVStoreJob):
    def reducer_final(self):
        yield b"late", b"pair"
