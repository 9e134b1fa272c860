"""Builds a store from text: word -> count (ordinary text input with a protocol)."""
from mrjob.protocol import RawValueProtocol

from mr_jobs import KVStoreJob


class TextWordCount(KVStoreJob):
    INPUT_PROTOCOL = RawValueProtocol

    def mapper(self, _, line):
        for word in line.split():
            yield word.encode("utf-8"), b"1"

    def reducer(self, key, values):
        yield key, b"%d" % sum(int(v) for v in values)


if __name__ == "__main__":
    TextWordCount.run()
