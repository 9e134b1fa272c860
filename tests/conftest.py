"""Shared fixtures of the core tests."""
from __future__ import annotations

import uuid

import fsspec
import pytest

from kvio import KeyValueSystem
from kvio.config import _defaults_text, _parse_conf_text, env_name

pytest.register_assert_rewrite("tests.helpers")  # plain asserts in helpers report their values


@pytest.fixture(autouse=True)
def _isolated_kvio_environment(monkeypatch):
    """Tests see only the defaults: no $KVIO_CONF and no KVIO_* setting from the caller's shell."""
    monkeypatch.delenv("KVIO_CONF", raising=False)
    for name in _parse_conf_text(_defaults_text(), "defaults"):
        monkeypatch.delenv(env_name(name), raising=False)


@pytest.fixture
def kvs() -> KeyValueSystem:
    return KeyValueSystem()


@pytest.fixture
def make_kvs():
    """``make_kvs(**{"kvio.block.size": "1KB"})``: a KeyValueSystem with overrides."""
    def make(conf=None, **settings):
        return KeyValueSystem(conf={**(conf or {}), **settings})
    return make


@pytest.fixture
def store_uri(tmp_path) -> str:
    return str(tmp_path / "store")


# ---- filesystem-generic tests: the same tests on every backend ---------------------------------
FILESYSTEMS = ["local", "memory"]


@pytest.fixture(params=FILESYSTEMS)
def fs_root(request, tmp_path):
    """A fresh, empty base URI on one filesystem (a local tmp dir, or a unique memory:// path
    that is removed afterwards)."""
    if request.param == "local":
        yield str(tmp_path)
        return
    fs = fsspec.filesystem("memory")
    name = f"kvio-tests/{uuid.uuid4().hex}"
    try:
        yield f"memory://{name}"
    finally:
        if fs.exists(f"/{name}"):
            fs.rm(f"/{name}", recursive=True)
        if fs.exists("/kvio-tests") and not fs.ls("/kvio-tests"):
            fs.rmdir("/kvio-tests")


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server on loopback for the whole session (tests/objectstores.py)."""
    from tests.objectstores import start_s3_server
    server = start_s3_server()
    yield server
    server.server.stop()


@pytest.fixture(scope="session")
def azurite():
    """Azurite's blob service on loopback for the whole session (tests/objectstores.py)."""
    from tests.objectstores import start_azurite
    server = start_azurite()
    yield server
    server.stop()
