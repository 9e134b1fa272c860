"""A clone whose reducer deletes the keys whose value is b"del" (yields (key, None))."""
from mr_jobs import KVStoreJob


class DeletingReducer(KVStoreJob):
    def reducer(self, key, values):
        for value in values:
            yield key, None if value == b"del" else value


if __name__ == "__main__":
    DeletingReducer.run()
