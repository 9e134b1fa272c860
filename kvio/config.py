"""Settings: defaults from conf/kvio-defaults.conf, then $KVIO_CONF, then KVIO_* environment
variables, then explicit ``conf=`` arguments (later wins). Read when a KeyValueSystem is made,
never at import time."""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError

_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "KB": 1 << 10, "KIB": 1 << 10, "M": 1 << 20,
               "MB": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GB": 1 << 30, "GIB": 1 << 30,
               "T": 1 << 40, "TB": 1 << 40, "TIB": 1 << 40}
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
#: What a live store checks in a new version before it swaps it in (kvio.follow.verify).
FOLLOW_VERIFY = ("none", "footers", "full")
#: How a job's commit checks the partition files its tasks describe (kvio.commit.verify).
COMMIT_VERIFY = ("auto", "footers", "sizes")


def parse_size(text: str | int) -> int:
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).upper() not in _SIZE_UNITS:
        raise ConfigError(f"cannot parse size {text!r} (use e.g. 512MB, 64KB, 1048576)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


def parse_duration(text: str | int | float) -> float:
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", str(text))
    if not m:
        raise ConfigError(f"cannot parse duration {text!r} (use e.g. 30s, 15m, 24h, 7d)")
    return float(m.group(1)) * _DURATION_UNITS[m.group(2)]


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    low = str(text).strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"cannot parse boolean {text!r} (use true or false)")


def _parse_conf_text(text: str, source: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "=" not in line:
            raise ConfigError(f"{source}:{lineno}: expected `name = value`, got {raw!r}")
        name, value = (part.strip() for part in line.split("=", 1))
        out[name] = value
    return out


def _defaults_text() -> str:
    # conf/kvio-defaults.conf is the one file to edit; kvio/kvio-defaults.conf links to it in a
    # checkout and is that file itself in a built wheel (tests/test_packaging.py checks both).
    return resources.files("kvio").joinpath("kvio-defaults.conf").read_text()


def env_name(setting: str) -> str:
    return setting.upper().replace(".", "_")


class Config:
    """Typed, validated view of the merged settings."""

    def __init__(self, overrides: Mapping[str, Any] | None = None):
        defaults = _parse_conf_text(_defaults_text(), "kvio-defaults.conf")
        merged: dict[str, Any] = dict(defaults)
        layers: list[tuple[str, Mapping[str, Any]]] = []
        user_file = os.environ.get("KVIO_CONF")
        if user_file:
            try:
                layers.append((user_file, _parse_conf_text(Path(user_file).read_text(), user_file)))
            except OSError as exc:
                raise ConfigError(f"cannot read $KVIO_CONF file {user_file}: {exc}") from exc
        env = {name: os.environ[env_name(name)] for name in defaults if env_name(name) in os.environ}
        layers.append(("environment", env))
        layers.append(("conf= argument", dict(overrides or {})))
        for source, layer in layers:
            for name, value in layer.items():
                if name not in defaults:
                    raise ConfigError(f"unknown setting {name!r} from {source}; known settings: "
                                      + ", ".join(sorted(defaults)))
                merged[name] = value
        self.raw = merged

        def typed(name: str, parse):
            try:
                return parse(merged[name])
            except (ConfigError, ValueError, TypeError) as exc:
                raise ConfigError(f"bad value for {name}: {exc}") from None

        self.partition_size_max = typed("kvio.partition.size.max", parse_size)
        self.block_size = typed("kvio.block.size", parse_size)
        self.block_size_remote = typed("kvio.block.size.remote", parse_size)
        self.compression = str(merged["kvio.block.compression"]).lower()
        self.compression_level = typed("kvio.block.compression.level", int)
        self.index_load_factor = typed("kvio.index.load.factor", float)
        self.write_direct = str(merged["kvio.write.direct"]).strip().lower()
        self.verify_checksums = typed("kvio.read.verify.checksums", parse_bool)
        self.cache_blocks = typed("kvio.read.cache.blocks", int)
        self.open_partitions = typed("kvio.read.open.partitions", int)
        self.merge_bytes = typed("kvio.read.merge.bytes", parse_size)
        self.read_ahead_bytes = typed("kvio.read.ahead.bytes", parse_size)
        self.read_cache_dir = str(merged["kvio.read.cache.dir"]).strip() or None
        self.read_cache_bytes = typed("kvio.read.cache.bytes", parse_size)
        self.overlay_keys = typed("kvio.read.overlay.keys", int)
        self.compact_max_layers = typed("kvio.compact.max.layers", int)
        self.compact_size_ratio = typed("kvio.compact.size.ratio", float)
        self.compact_auto_max_bytes = typed("kvio.compact.auto.max.bytes", parse_size)
        self.versions_retain = typed("kvio.versions.retain", int)
        self.allow_non_atomic = typed("kvio.commit.allow.non.atomic", parse_bool)
        self.commit_verify = str(merged["kvio.commit.verify"]).strip().lower()
        self.staging_max_age = typed("kvio.staging.max.age", parse_duration)
        self.connect_timeout = typed("kvio.fs.connect.timeout", parse_duration)
        self.sort_memory = typed("kvio.sort.memory", parse_size)
        self.sort_spill_dir = str(merged["kvio.sort.spill.dir"]).strip() or None
        self.follow_interval = typed("kvio.follow.interval", parse_duration)
        self.follow_verify = str(merged["kvio.follow.verify"]).strip().lower()
        self.pin_ttl = typed("kvio.pin.ttl", parse_duration)
        self.pin_batch_ttl = typed("kvio.pin.batch.ttl", parse_duration)
        self.gc_grace = typed("kvio.gc.grace", parse_duration)
        self.serve_batch_max_keys = typed("kvio.serve.batch.max.keys", int)
        self.serve_body_max = typed("kvio.serve.body.max", parse_size)
        self.serve_read_through_ttl = typed("kvio.serve.read.through.ttl", parse_duration)
        if self.write_direct not in ("auto", "true", "false"):
            raise ConfigError("kvio.write.direct must be true, false or auto, got "
                              f"{self.write_direct!r}")
        if self.compression not in ("none", "zstd", "lz4"):
            raise ConfigError(f"kvio.block.compression must be none, zstd or lz4, got {self.compression!r}")
        if not 0.1 <= self.index_load_factor <= 0.95:
            raise ConfigError("kvio.index.load.factor must be between 0.1 and 0.95")
        if self.partition_size_max < 1024 or self.block_size < 64:
            raise ConfigError("kvio.partition.size.max must be >= 1KB and kvio.block.size >= 64B")
        if self.block_size_remote and self.block_size_remote < 64:
            raise ConfigError("kvio.block.size.remote must be 0 (use kvio.block.size) or >= 64B")
        if self.read_ahead_bytes < 1 or self.read_cache_bytes < 1:
            raise ConfigError("kvio.read.ahead.bytes and kvio.read.cache.bytes must be at least 1")
        if self.open_partitions < 1 or self.merge_bytes < 1:
            raise ConfigError("kvio.read.open.partitions and kvio.read.merge.bytes must be at least 1")
        if self.overlay_keys < 0 or self.compact_max_layers < 0 or self.compact_size_ratio < 0:
            raise ConfigError("kvio.read.overlay.keys, kvio.compact.max.layers and "
                              "kvio.compact.size.ratio must not be negative")
        if self.sort_memory < 64 * 1024:
            raise ConfigError("kvio.sort.memory must be at least 64KB")
        if self.versions_retain < 1:
            raise ConfigError("kvio.versions.retain must be at least 1")
        if self.connect_timeout <= 0:
            raise ConfigError("kvio.fs.connect.timeout must be more than 0s")
        if self.follow_interval <= 0:
            raise ConfigError("kvio.follow.interval must be more than 0s")
        if self.follow_verify not in FOLLOW_VERIFY:
            raise ConfigError(f"kvio.follow.verify must be one of {', '.join(FOLLOW_VERIFY)}, "
                              f"got {self.follow_verify!r}")
        if self.commit_verify not in COMMIT_VERIFY:
            raise ConfigError(f"kvio.commit.verify must be one of {', '.join(COMMIT_VERIFY)}, "
                              f"got {self.commit_verify!r}")
        if self.pin_ttl <= 0 or self.pin_batch_ttl <= 0:
            raise ConfigError("kvio.pin.ttl and kvio.pin.batch.ttl must be more than 0s")
        if self.serve_batch_max_keys < 1 or self.serve_body_max < 1:
            raise ConfigError("kvio.serve.batch.max.keys and kvio.serve.body.max must be at least 1")
        if self.serve_read_through_ttl < 0:
            raise ConfigError("kvio.serve.read.through.ttl must be 0s or more")

    def block_size_for(self, local: bool) -> int:
        """The block size partitions get on a filesystem.

        Args:
            local: the store is on local disk (else remote: object stores, HDFS, memory).

        Returns:
            ``kvio.block.size`` on local disk; ``kvio.block.size.remote`` elsewhere, unless
            that is 0 (docs/FORMAT.md §3.3).
        """
        return self.block_size if local or not self.block_size_remote else self.block_size_remote

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Config:
        if not overrides:
            return self
        return Config({**self.raw, **overrides})
