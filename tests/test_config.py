"""Settings: the defaults file, then $KVIO_CONF, then KVIO_* variables, then conf= (later wins)."""
from __future__ import annotations

from pathlib import Path

import pytest

from kvio import ConfigError, KeyValueSystem
from kvio.config import Config, _defaults_text, _parse_conf_text, env_name, parse_duration, parse_size

DEFAULT_NAMES = sorted(_parse_conf_text(_defaults_text(), "defaults"))


def test_defaults_file_is_parsed():
    cfg = Config()
    assert cfg.partition_size_max == 512 << 20
    assert cfg.block_size == 64 << 10
    assert cfg.compression == "none"
    assert cfg.compression_level == 0
    assert cfg.index_load_factor == 0.7
    assert cfg.verify_checksums is True
    assert cfg.cache_blocks == 256
    assert cfg.versions_retain == 2
    assert cfg.allow_non_atomic is False
    assert cfg.staging_max_age == 24 * 3600
    assert cfg.connect_timeout == 20
    assert sorted(cfg.raw) == DEFAULT_NAMES
    assert "kvio.partition.size.max" in DEFAULT_NAMES and len(DEFAULT_NAMES) == 33
    assert cfg.commit_verify == "auto"
    assert cfg.write_direct == "auto"


def test_conf_file_syntax():
    parsed = _parse_conf_text("# comment\n\n a.b = 1  # trailing\nc.d=x=y\n", "t")
    assert parsed == {"a.b": "1", "c.d": "x=y"}
    with pytest.raises(ConfigError, match="t:2"):
        _parse_conf_text("a = 1\njust words\n", "t")


def _write(path: Path, **settings) -> str:
    path.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
    return str(path)


def test_override_order_file_then_environment_then_arguments(tmp_path, monkeypatch):
    block, part, codec = "kvio.block.size", "kvio.partition.size.max", "kvio.block.compression"
    user_conf = _write(tmp_path / "user.conf", **{block: "1KB", part: "2MB", codec: "lz4"})
    monkeypatch.setenv("KVIO_CONF", user_conf)
    cfg = Config()
    assert (cfg.block_size, cfg.partition_size_max, cfg.compression) == (1024, 2 << 20, "lz4")
    monkeypatch.setenv(env_name(part), "3MB")
    monkeypatch.setenv(env_name(codec), "zstd")
    assert env_name(part) == "KVIO_PARTITION_SIZE_MAX"
    cfg = Config()
    assert (cfg.block_size, cfg.partition_size_max, cfg.compression) == (1024, 3 << 20, "zstd")
    cfg = Config({codec: "none"})
    assert (cfg.block_size, cfg.partition_size_max, cfg.compression) == (1024, 3 << 20, "none")
    # with_overrides layers on top of everything
    assert cfg.with_overrides({block: "2KB"}).block_size == 2048
    assert cfg.with_overrides(None) is cfg


def test_settings_are_read_when_a_system_is_made(tmp_path, monkeypatch):
    before = KeyValueSystem()
    monkeypatch.setenv("KVIO_BLOCK_COMPRESSION", "zstd")
    after = KeyValueSystem()
    assert before.conf.compression == "none" and after.conf.compression == "zstd"
    with after.create_store(str(tmp_path / "s")) as w:
        w.put(b"a", b"1")
    with after.open_store(str(tmp_path / "s")) as reader:
        assert reader.info()["options"]["compression"] == "zstd"


def test_unknown_setting_names_the_known_ones(tmp_path, monkeypatch):
    with pytest.raises(ConfigError) as exc:
        Config({"kvio.partition.max": "1MB"})
    message = str(exc.value)
    assert "kvio.partition.max" in message and "conf=" in message
    for name in DEFAULT_NAMES:
        assert name in message
    monkeypatch.setenv("KVIO_CONF", _write(tmp_path / "bad.conf", **{"kvio.typo": "1"}))
    with pytest.raises(ConfigError, match="kvio.typo.*known settings"):
        Config()


def test_missing_conf_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KVIO_CONF", str(tmp_path / "nope.conf"))
    with pytest.raises(ConfigError, match="nope.conf"):
        KeyValueSystem()


@pytest.mark.parametrize("text, expected", [
    ("0", 0), ("1048576", 1 << 20), ("64KB", 64 << 10), ("64kb", 64 << 10), ("64 KiB", 64 << 10),
    ("512MB", 512 << 20), ("1.5K", 1536), ("2G", 2 << 30), ("1TB", 1 << 40), ("10B", 10), (" 3 MB ", 3 << 20),
    (4096, 4096),
])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "MB", "-1KB", "12 parsecs", "1e6", "1,024", "5 KB B", "0x10"])
def test_bad_sizes_are_config_errors(text):
    with pytest.raises(ConfigError, match="size"):
        parse_size(text)
    with pytest.raises(ConfigError):
        Config({"kvio.block.size": text})


def test_parse_duration():
    assert parse_duration("30s") == 30 and parse_duration("15m") == 900
    assert parse_duration("24h") == 86400 and parse_duration("7d") == 7 * 86400 and parse_duration(5) == 5.0
    for bad in ("", "1w", "-3s", "soon"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


@pytest.mark.parametrize("name, value", [
    ("kvio.partition.size.max", "512B"),       # below the 1KB minimum
    ("kvio.block.size", "32B"),                 # below the 64B minimum
    ("kvio.block.compression", "gzip"),
    ("kvio.index.load.factor", "0.99"),
    ("kvio.index.load.factor", "0.05"),
    ("kvio.index.load.factor", "high"),
    ("kvio.block.compression.level", "max"),
    ("kvio.read.cache.blocks", "lots"),
    ("kvio.read.verify.checksums", "maybe"),
    ("kvio.versions.retain", "0"),
    ("kvio.versions.retain", "two"),
    ("kvio.commit.allow.non.atomic", "2"),
    ("kvio.staging.max.age", "a while"),
])
def test_bad_values_are_config_errors(name, value, monkeypatch):
    with pytest.raises(ConfigError) as exc:
        Config({name: value})
    assert name in str(exc.value)
    monkeypatch.setenv(env_name(name), value)
    with pytest.raises(ConfigError):
        KeyValueSystem()


def test_typed_values_in_conf_arguments():
    cfg = Config({"kvio.partition.size.max": 4096, "kvio.read.verify.checksums": False,
                  "kvio.index.load.factor": 0.95, "kvio.staging.max.age": 60,
                  "kvio.block.compression": "ZSTD"})
    assert cfg.partition_size_max == 4096 and cfg.verify_checksums is False
    assert cfg.index_load_factor == 0.95 and cfg.staging_max_age == 60.0 and cfg.compression == "zstd"
