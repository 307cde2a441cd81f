"""Configuration: upstream's keys from YAML, environment and flags, in that precedence."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dtm.server import config


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "conf.yml"
    path.write_text(text)
    return str(path)


def test_defaults_equal_upstreams() -> None:
    conf = config.load(env={})
    assert (conf.TransCronInterval, conf.TimeoutToFail, conf.RetryInterval) == (3, 35, 10)
    assert (conf.RequestTimeout, conf.HttpPort, conf.GrpcPort) == (3, 36789, 36790)
    assert (conf.AlertRetryLimit, conf.Store.MaxOpenConns, conf.Store.RedisPrefix) == (
        3,
        500,
        "{a}",
    )
    assert conf.Store.Driver == "sqlite"


def test_yaml_then_env_then_flags(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "HttpPort: 1000\nRetryInterval: 12\nTimeoutToFail: 40\nStore:\n  Driver: boltdb\n"
        "  MaxOpenConns: 7\n",
    )
    conf = config.load(path, env={"RETRY_INTERVAL": "15", "STORE_MAX_OPEN_CONNS": "9"})
    assert conf.HttpPort == 1000
    assert conf.RetryInterval == 15
    assert conf.Store.MaxOpenConns == 9
    assert conf.Store.Driver == "boltdb"
    flagged = config.load(path, env={"HTTP_PORT": "2000"}, overrides={"HttpPort": 3000})
    assert flagged.HttpPort == 3000


def test_upstream_only_keys_are_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "MicroService:\n  Driver: default\nLog:\n  Outputs: stderr\n")
    assert config.load(path, env={}).HttpPort == 36789


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("RetryInterval: 0\n", {}, "RetryInterval"),
        ("TimeoutToFail: 5\n", {}, "TimeoutToFail should not be less than RetryInterval"),
        ("Store:\n  Driver: oracle\n", {}, "unknown driver"),
        ("Store:\n  Driver: mysql\n", {}, "Store.Host is required"),
        ("HttpPrt: 1\n", {}, "unknown configuration key HttpPrt"),
        ("", {"HTTP_PORT": "eighty"}, "HTTP_PORT: expected int"),
        ("RetryJitter: 2\n", {}, "RetryJitter"),
        ("- a\n- b\n", {}, "should hold a mapping"),
        ("a: [\n", {}, "not valid YAML"),
    ],
)
def test_wrong_values_are_clear_errors(
    tmp_path: Path, text: str, env: dict[str, str], message: str
) -> None:
    with pytest.raises(config.ConfigError, match=message):
        config.load(write(tmp_path, text), env=env)


def test_env_names_follow_upstream() -> None:
    assert config.env_name("Store.MaxOpenConns") == "STORE_MAX_OPEN_CONNS"
    assert config.env_name("TransCronInterval") == "TRANS_CRON_INTERVAL"
    assert config.env_name("HttpPort") == "HTTP_PORT"
    assert config.env_name("Store.DataExpire") == "STORE_DATA_EXPIRE"


def test_serve_refuses_a_bad_config_at_start(tmp_path: Path) -> None:
    path = write(tmp_path, "RetryInterval: -1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "dtm", "serve", "-c", path],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "configuration error: RetryInterval" in proc.stderr
