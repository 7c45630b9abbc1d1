"""The controller's settings accept what compose.yaml passes, read ``KALIKO_*`` under the flags,
and reject a malformed value naming the flag."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from controller.settings import parse_args

ROOT = Path(__file__).resolve().parents[2]


def test_the_compose_controller_command_parses() -> None:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    command = services["controller"]["command"]
    assert command[0] == "kaliko-controller"
    settings = parse_args(command[1:])
    assert (settings.etcd, settings.kafka, settings.mqtt) == ("etcd:2379", "kafka:9092", "mosquitto:1883")
    assert settings.listen == "0.0.0.0:50051" and settings.health_port == 9100


def test_environment_under_flags_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KALIKO_ETCD", "KALIKO_KAFKA", "KALIKO_MQTT", "KALIKO_LISTEN", "KALIKO_HEALTH_PORT"):
        monkeypatch.delenv(name, raising=False)
    defaults = parse_args([])
    assert defaults.listen == "127.0.0.1:50051" and defaults.etcd == "127.0.0.1:2379"
    assert defaults.lease_ttl == 3 and defaults.flush_interval == 0.005 and defaults.identity
    monkeypatch.setenv("KALIKO_ETCD", "db:2379")
    monkeypatch.setenv("KALIKO_LISTEN", "127.0.0.1:6000")
    from_env = parse_args([])
    assert from_env.etcd == "db:2379" and from_env.listen == "127.0.0.1:6000"
    flagged = parse_args(
        ["--etcd", "other:1", "--identity", "c1", "--lease-ttl", "5", "--flush-interval", "0.02"]
    )
    assert flagged.etcd == "other:1" and flagged.listen == "127.0.0.1:6000"
    assert (flagged.identity, flagged.lease_ttl, flagged.flush_interval) == ("c1", 5, 0.02)


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--etcd", "no-port"], "--etcd"),
        (["--listen", "127.0.0.1:99999"], "--listen"),
        (["--health-port", "http"], "--health-port"),
        (["--lease-ttl", "0"], "--lease-ttl"),
        (["--flush-interval", "-1"], "--flush-interval"),
    ],
)
def test_bad_values_fail_naming_the_flag(
    argv: list[str], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert flag in capsys.readouterr().err
