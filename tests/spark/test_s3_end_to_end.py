"""End to end on S3 (moto's server on loopback): Spark builds a store at s3://bucket/path (its
Python workers write through fsspec), mrjob's CloneStore reads it and writes another S3 store,
``kvio verify`` and ``kvio diff`` pass, and ``kvio serve`` answers a GET of one key. Every
part reaches the server through the standard AWS environment only."""
from __future__ import annotations

import subprocess
import sys
import time
import urllib.request

import pytest

from kvio import KeyValueSystem
from kvio.cli import main
from mr_jobs.clone_store import CloneStore
from tests.objectstores import free_port

from .conftest import HERE, ROOT, child_env, last_json

pytestmark = [pytest.mark.spark, pytest.mark.slow]
COUNT = 2000


def test_spark_builds_on_s3_mrjob_clones_verify_diff_and_serve(s3_server, monkeypatch, capsys):
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.new_bucket("kvio-e2e")
    built, cloned = f"s3://{bucket}/built", f"s3://{bucket}/cloned"
    run = subprocess.run([sys.executable, str(HERE / "s3_build.py"), built, str(COUNT)], cwd=ROOT,
                         env=child_env(**s3_server.env), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert last_json(run.stdout)["record"]["partitions"] == 4
    expected = [(b"k%06d" % i, b"v%d" % (i * 7)) for i in range(COUNT)]
    with KeyValueSystem().open_store(built) as reader:
        assert list(reader.items()) == expected

    result = CloneStore(["-r", "inline", "--no-conf", built, "--output-store", cloned,
                         "--output-partitions", "3"]).run_kv_job()
    assert result["count"] == COUNT
    capsys.readouterr()
    assert main(["verify", built]) == 0
    assert main(["verify", cloned]) == 0
    assert main(["diff", built, cloned]) == 0, capsys.readouterr()

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "kvio", "serve", f"e2e={cloned}", "--port",
                               str(port)], cwd=ROOT, env=child_env(**s3_server.env),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/v1/stores/e2e/keys/k001234"
        deadline, body, status = time.monotonic() + 120, None, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                with urllib.request.urlopen(url, timeout=10) as response:
                    status, body = response.status, response.read()
                break
            except OSError:
                time.sleep(0.5)
        assert status == 200, server.stderr.read() if server.poll() is not None else "no answer"
        assert body == b"v%d" % (1234 * 7)
    finally:
        server.terminate()
        server.communicate(timeout=30)
