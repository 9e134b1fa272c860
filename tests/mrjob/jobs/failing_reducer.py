"""A clone whose reducer raises once it reaches a chosen key (hex in $KVIO_TEST_FAIL_AT)."""
import os

from mr_jobs import KVStoreJob


class FailingReducer(KVStoreJob):
    def reducer(self, key, values):
        target = os.environ.get("KVIO_TEST_FAIL_AT")
        if target is not None and key == bytes.fromhex(target):
            raise RuntimeError(f"reducer failed on purpose at {key!r}")
        for value in values:
            yield key, value


if __name__ == "__main__":
    FailingReducer.run()
