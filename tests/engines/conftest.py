"""Fixtures of the cross-engine agreement suite: the stores of :mod:`.stores`, built once per
session on each filesystem, with their models.

``store`` gives every (kind, filesystem) pair, for the paths that read any fsspec URL (the
reader and the CLI). ``local_store`` gives every kind on local disk, for Spark and mrjob, whose
tasks run in other processes and so cannot see a ``memory://`` filesystem.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec
import pytest

# The Spark tests' session (local[2], pushdown enabled, kvstore registered) and their
# pushdown on/off switch, reused rather than copied.
from tests.spark.conftest import pushdown, spark  # noqa: F401

from .model import Model
from .stores import OVERLAPPING, STORES

FILESYSTEMS = ["local", "memory"]


@dataclass(frozen=True)
class BuiltStore:
    kind: str
    fs: str
    uri: str
    model: Model

    @property
    def root(self) -> str:
        """A directory next to the store, on the same filesystem, for outputs."""
        return self.uri.rsplit("/", 1)[0]


class StoreFarm:
    """Builds each (kind, filesystem) store on first use and keeps it for the session."""

    def __init__(self, local_root: str):
        self.local_root = local_root
        self.memory_root = f"memory://kvio-engines-{uuid.uuid4().hex}"
        self._built: dict[tuple[str, str], BuiltStore] = {}

    def get(self, kind: str, fs: str, spark_session: Any = None) -> BuiltStore:
        if (kind, fs) not in self._built:
            builder, _ = STORES[kind]
            if fs == "local":
                uri = os.path.join(self.local_root, kind, "store")
                os.makedirs(os.path.dirname(uri))
                model = builder(uri, spark_session)
            elif kind == "appended":
                # Spark writes local files only: copy the store it wrote, byte for byte.
                local = self.get(kind, "local", spark_session)
                uri = f"{self.memory_root}/{kind}/store"
                _copy_tree(os.path.dirname(local.uri), f"{self.memory_root}/{kind}")
                model = local.model
            else:
                uri = f"{self.memory_root}/{kind}/store"
                model = builder(uri, spark_session)
            self._built[(kind, fs)] = BuiltStore(kind, fs, uri, model)
        built = self._built[(kind, fs)]
        # A copy of the model: a test that alters it cannot break the next ones.
        return BuiltStore(built.kind, built.fs, built.uri, dict(built.model))

    def cleanup(self) -> None:
        memory = fsspec.filesystem("memory")
        path = self.memory_root.removeprefix("memory://")
        if memory.exists(path):
            memory.rm(path, recursive=True)


def _copy_tree(local_dir: str, memory_dir: str) -> None:
    memory = fsspec.filesystem("memory")
    for folder, _, files in os.walk(local_dir):
        for name in files:
            src = os.path.join(folder, name)
            rel = os.path.relpath(src, local_dir)
            with open(src, "rb") as handle:
                memory.pipe(f"{memory_dir.removeprefix('memory://')}/{rel}", handle.read())


@pytest.fixture(scope="session")
def store_farm(tmp_path_factory):
    farm = StoreFarm(str(tmp_path_factory.mktemp("engines")))
    yield farm
    farm.cleanup()


def _needs_spark(kind: str) -> list:
    return [pytest.mark.spark, pytest.mark.slow] if STORES[kind][1] else []


def _get(request, farm: StoreFarm, kind: str, fs: str) -> BuiltStore:
    spark_session = request.getfixturevalue("spark") if STORES[kind][1] else None
    return farm.get(kind, fs, spark_session)


@pytest.fixture(params=[pytest.param((kind, fs), id=f"{kind}-{fs}", marks=_needs_spark(kind))
                        for kind in STORES for fs in FILESYSTEMS])
def store(request, store_farm) -> BuiltStore:
    """Every store kind on every filesystem the reader and the CLI support."""
    kind, fs = request.param
    return _get(request, store_farm, kind, fs)


@pytest.fixture(params=[pytest.param(kind, id=kind, marks=_needs_spark(kind)) for kind in STORES])
def local_store(request, store_farm) -> BuiltStore:
    """Every store kind on local disk (for Spark and mrjob)."""
    return _get(request, store_farm, request.param, "local")


@pytest.fixture(params=[pytest.param(kind, id=kind, marks=_needs_spark(kind))
                        for kind in OVERLAPPING])
def overlapping_local_store(request, store_farm) -> BuiltStore:
    """The local stores where keys have superseded values in older partitions."""
    return _get(request, store_farm, request.param, "local")


@pytest.fixture(autouse=True)
def _no_user_mrjob_conf(monkeypatch):
    monkeypatch.delenv("MRJOB_CONF", raising=False)
