"""A copy job whose first map call publishes two new versions of its input store and runs gc
(no grace, retain 1), as a busy writer and a cron gc would while the job runs. The input
version the driver planned must still be readable by every later map task."""
import os

from kvio import KeyValueSystem
from mr_jobs import KVStoreJob

#: the input store's URI (set by the test; the inline runner runs tasks in the test process)
INPUT_ENV = "KVIO_TEST_REPUBLISH"


class RepublishingMapper(KVStoreJob):
    published = False

    def mapper_kv(self, key, value):
        if not RepublishingMapper.published:
            RepublishingMapper.published = True
            kvs = KeyValueSystem(conf={"kvio.gc.grace": "0", "kvio.versions.retain": "1"})
            uri = os.environ[INPUT_ENV]
            for tag in (b"new1", b"new2"):
                with kvs.create_store(uri, mode="overwrite") as writer:
                    writer.put(b"only", tag)
            kvs.gc(uri, older_than=0)
        yield key, value
