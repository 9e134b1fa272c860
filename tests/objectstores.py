"""Real object-store servers on loopback for the tests: moto's S3 server and Azurite.

Both run as real servers (HTTP on 127.0.0.1, a free port) that the real clients (s3fs with
aiobotocore, adlfs with the Azure SDK) talk to, as s3fs's and adlfs's own test suites do. Use
the session fixtures in ``tests/conftest.py`` (``s3_server``, ``azurite``); each test makes its
own bucket or container (``s3_server.new_bucket()``), so tests never see each other's objects.

Outside CI a server that cannot start (moto or azurite not installed) skips the test; with
``CI=true`` it fails the run: scripts/test installs moto (the ``dev`` extra) and Azurite
(scripts/services), so a missing server in CI is a defect, never a skip.
"""
from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: moto accepts any credentials; these make botocore sign requests without looking further
S3_KEY, S3_SECRET, S3_REGION = "kvio-test", "kvio-test-secret", "us-east-1"
#: Azurite's well-known development account (public, documented by Microsoft)
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw"
               "==")


def unavailable(reason: str) -> None:
    """Skip the test outside CI, fail it with ``CI=true``."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: a missing server is a failure)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


@dataclass
class S3Server:
    """A running moto S3 server and what clients need to reach it."""

    endpoint: str
    server: Any = field(repr=False)

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec ``storage_options`` for s3fs (``open_store(uri, storage_options=...)``)."""
        return {"key": S3_KEY, "secret": S3_SECRET, "endpoint_url": self.endpoint,
                "client_kwargs": {"region_name": S3_REGION}}

    @property
    def env(self) -> dict[str, str]:
        """The standard AWS environment that points CLI tools and jobs at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": S3_KEY,
                "AWS_SECRET_ACCESS_KEY": S3_SECRET, "AWS_DEFAULT_REGION": S3_REGION}

    def client(self) -> Any:
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=S3_KEY,
                            aws_secret_access_key=S3_SECRET, region_name=S3_REGION)

    def new_bucket(self, prefix: str = "kvio") -> str:
        """Create a fresh bucket (boto3: s3fs's mkdir sends a location constraint that moto
        refuses for us-east-1) and return its name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


def start_s3_server() -> S3Server:
    """Start moto's ThreadedMotoServer on a free loopback port (skip/fail when moto is absent)."""
    try:
        from moto.server import ThreadedMotoServer
    except ImportError as exc:
        unavailable(f"moto's S3 server is not installed (pip install 'moto[server]'): {exc}")
    # One INFO line per request from moto's web server would bury a failing test's output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    if not _wait_for_port(port, 30):
        server.stop()
        unavailable(f"moto's S3 server did not listen on 127.0.0.1:{port}")
    return S3Server(endpoint=f"http://127.0.0.1:{port}", server=server)


@dataclass
class AzuriteServer:
    """A running Azurite blob service and what adlfs needs to reach it."""

    port: int
    process: subprocess.Popen = field(repr=False)
    location: str = field(repr=False)

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
                f"AccountKey={AZURITE_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZURITE_ACCOUNT};")

    @property
    def storage_options(self) -> dict[str, Any]:
        """fsspec ``storage_options`` for adlfs."""
        return {"connection_string": self.connection_string}

    @property
    def env(self) -> dict[str, str]:
        """The environment adlfs reads when no options are given (CLI tools and jobs)."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def new_container(self, prefix: str = "kvio") -> str:
        from azure.storage.blob import BlobServiceClient
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        BlobServiceClient.from_connection_string(self.connection_string).create_container(name)
        return name

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.location, ignore_errors=True)


def azurite_binary() -> str | None:
    """Azurite's blob server: the copy scripts/services installs into .tools/, else PATH."""
    local = ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"
    if local.exists():
        return str(local)
    return shutil.which("azurite-blob")


def start_azurite() -> AzuriteServer:
    """Start Azurite's blob service on a free loopback port, keeping its data in a temporary
    directory removed at stop (skip/fail when Azurite is not installed)."""
    binary = azurite_binary()
    if binary is None:
        unavailable("Azurite is not installed (scripts/services installs it with npm into .tools/)")
    location = tempfile.mkdtemp(prefix="kvio-azurite-")
    port = free_port()
    log = Path(location) / "azurite.log"
    with open(log, "wb") as sink:  # a file, not a pipe nobody reads (a full pipe blocks Azurite)
        process = subprocess.Popen(
            [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port),
             "--location", location, "--silent", "--skipApiVersionCheck", "--loose"],
            stdout=subprocess.DEVNULL, stderr=sink)
    if not _wait_for_port(port, 60, process):
        process.kill()
        process.wait()
        err = log.read_text(errors="replace")[-2000:]
        shutil.rmtree(location, ignore_errors=True)
        unavailable(f"Azurite did not start on 127.0.0.1:{port}: {err}")
    return AzuriteServer(port=port, process=process, location=location)
