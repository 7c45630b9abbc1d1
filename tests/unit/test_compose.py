"""compose.yaml and the Dockerfile agree with the services' settings contract and with pyproject.

Owns: static checks of compose.yaml (parsed with PyYAML, anchors and merge keys resolved), of the
Dockerfile's text, and of pyproject.toml's console scripts. No Docker engine is needed or used.
Does not own: the controller's and agent's settings modules; the table below is the contract they
must accept (flags and environment variables), written down here because compose.yaml relies on it.
Invariants: every published port is bound to 127.0.0.1; the Kafka service is a valid single-node
KRaft broker+controller; agents have distinct node names.
"""

from __future__ import annotations

import base64
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.settings import parse_args as parse_controller
from node_agent.settings import parse_args as parse_agent

ROOT = Path(__file__).resolve().parents[2]
INFRA = {"etcd", "kafka", "mosquitto"}
HOST_PORT = re.compile(r"^[A-Za-z0-9.-]+:\d{1,5}$")

# The settings contract: which flags and env vars each console script accepts, and how to check a value.
CONTRACT: dict[str, dict[str, Any]] = {
    "kaliko-controller": {
        "flags": {"--etcd": "hostport", "--kafka": "hostport", "--mqtt": "hostport", "--listen": "hostport",
                  "--health-port": "port", "--health-host": "anyaddress"},
        "required": {"--etcd", "--kafka", "--mqtt", "--listen", "--health-port", "--health-host"},
        "env": {"KALIKO_ETCD": "--etcd", "KALIKO_KAFKA": "--kafka", "KALIKO_MQTT": "--mqtt"},
    },
    "kaliko-agent": {
        "flags": {"--node": "name", "--etcd": "hostport", "--kafka": "hostport", "--mqtt": "hostport",
                  "--controller": "hostport", "--dataplane": {"memory", "nftables"}, "--health-port": "port",
                  "--health-host": "anyaddress"},
        "required": {"--node", "--etcd", "--kafka", "--mqtt", "--controller", "--dataplane", "--health-port",
                     "--health-host"},
        "env": {"KALIKO_ETCD": "--etcd", "KALIKO_KAFKA": "--kafka", "KALIKO_MQTT": "--mqtt",
                "KALIKO_NODE": "--node"},
    },
}  # fmt: skip


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return document["services"]


@pytest.fixture(scope="module")
def scripts() -> dict[str, str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def parse_flags(command: list[str]) -> dict[str, str]:
    """`--name=value` and `--name value` forms to {name: value}; a flag without a value is an error."""
    flags: dict[str, str] = {}
    args = iter(command)
    for arg in args:
        assert arg.startswith("--"), f"unexpected positional argument {arg!r} in {command}"
        name, eq, value = arg.partition("=")
        if not eq:
            value = next(args, "")
        assert value and not value.startswith("--"), f"flag {name} has no value in {command}"
        assert name not in flags, f"flag {name} given twice in {command}"
        flags[name] = value
    return flags


def check_value(kind: Any, value: str, known_services: set[str]) -> None:
    if kind == "hostport":
        assert HOST_PORT.match(value), f"{value!r} is not HOST:PORT"
        host, port = value.rsplit(":", 1)
        assert host in known_services or host in {"0.0.0.0", "127.0.0.1"}, f"{host!r} is no compose service"
        assert 1 <= int(port) <= 65535
    elif kind == "port":
        assert value.isdigit() and 1 <= int(value) <= 65535, f"{value!r} is not a port"
    elif kind == "anyaddress":  # a loopback bind inside a container is unreachable through a published port
        assert value == "0.0.0.0", f"{value!r}: bind 0.0.0.0 in the container (published on 127.0.0.1)"
    elif kind == "name":
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", value), f"{value!r} is not a DNS label"
    else:
        assert value in kind, f"{value!r} not one of {sorted(kind)}"


def kaliko_services(services: dict[str, dict[str, Any]], script: str) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services.items() if isinstance(s.get("command"), list)
            and s["command"][0] == script}  # fmt: skip


def test_every_service_has_an_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert "image" in service or "build" in service, f"services.{name}: neither image nor build"


def test_every_published_port_is_bound_to_loopback(services: dict[str, dict[str, Any]]) -> None:
    published = [(name, str(p)) for name, s in services.items() for p in s.get("ports", [])]
    assert published, "compose.yaml publishes no port at all"
    for name, port in published:
        assert port.startswith("127.0.0.1:"), f"services.{name}.ports: {port!r} is not bound to 127.0.0.1"
        assert port.count(":") == 2, f"services.{name}.ports: {port!r} must be 127.0.0.1:HOST:CONTAINER"


def test_host_ports_are_unique(services: dict[str, dict[str, Any]]) -> None:
    host_ports = [str(p).split(":")[1] for s in services.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), f"host port published twice: {sorted(host_ports)}"


def test_infra_images_are_the_expected_ones(services: dict[str, dict[str, Any]]) -> None:
    assert re.fullmatch(r"quay\.io/coreos/etcd:v3\.4\.\d+", services["etcd"]["image"])
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["mosquitto"]["image"] == "eclipse-mosquitto:2"
    mounts = services["mosquitto"]["volumes"]
    assert "./deploy/compose/mosquitto.conf:/mosquitto/config/mosquitto.conf:ro" in mounts
    conf = (ROOT / "deploy/compose/mosquitto.conf").read_text().split("\n")
    assert "allow_anonymous true" in conf and "listener 1883" in conf


def test_kafka_is_a_valid_single_node_kraft_config(services: dict[str, dict[str, Any]]) -> None:
    env = {k: str(v) for k, v in services["kafka"]["environment"].items()}
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16, "CLUSTER_ID is not a base64 UUID"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    node_id = env["KAFKA_NODE_ID"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{node_id}@kafka:9093"

    listeners = dict(item.split("://") for item in env["KAFKA_LISTENERS"].split(","))
    advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
    protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in listeners and controller not in advertised
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    assert set(listeners) == set(protocols), "every listener needs a security protocol"
    assert advertised.get("PLAINTEXT") == "kafka:9092", "containers reach the broker as kafka:9092"
    for key in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
    ):
        assert env[key] == "1", f"{key} must be 1 on a single node"
    assert any(
        topic_flag.startswith("--topic=kaliko.node-diffs") for topic_flag in services["kafka-init"]["command"]
    )


def test_controller_and_agents_depend_on_all_infra(services: dict[str, dict[str, Any]]) -> None:
    dependants = {
        **kaliko_services(services, "kaliko-controller"),
        **kaliko_services(services, "kaliko-agent"),
    }
    assert len(dependants) == 4
    for name, service in dependants.items():
        depends = service.get("depends_on", {})
        missing = INFRA - set(depends)
        assert not missing, f"services.{name}.depends_on lacks {sorted(missing)}"
        for infra in ("etcd", "kafka", "mosquitto"):
            assert depends[infra]["condition"] == "service_healthy", f"services.{name}.depends_on.{infra}"
            assert "healthcheck" in services[infra], f"services.{infra} needs a healthcheck to be waited on"


@pytest.mark.parametrize("script", sorted(CONTRACT))
def test_commands_and_env_follow_the_settings_contract(
    services: dict[str, dict[str, Any]], script: str
) -> None:
    contract = CONTRACT[script]
    matching = kaliko_services(services, script)
    assert matching, f"no service runs {script}"
    for name, service in matching.items():
        flags = parse_flags(service["command"][1:])
        unknown = set(flags) - set(contract["flags"])
        assert not unknown, f"services.{name}.command: {script} accepts no {sorted(unknown)}"
        missing = contract["required"] - set(flags)
        assert not missing, f"services.{name}.command: lacks {sorted(missing)}"
        for flag, value in flags.items():
            check_value(contract["flags"][flag], value, set(services))
        env = service.get("environment", {})
        unknown_env = set(env) - set(contract["env"])
        assert not unknown_env, f"services.{name}.environment: {script} reads no {sorted(unknown_env)}"
        for variable, flag in contract["env"].items():
            assert env.get(variable) == flags.get(flag), f"services.{name}: {variable} disagrees with {flag}"


def test_agents_have_unique_node_names(services: dict[str, dict[str, Any]]) -> None:
    agents = kaliko_services(services, "kaliko-agent")
    nodes = [parse_flags(a["command"][1:])["--node"] for a in agents.values()]
    assert sorted(nodes) == ["node-1", "node-2", "node-3"]
    assert sorted(agents) == nodes, "each agent's service name is its node name"


def test_dockerfile_installs_the_project_and_its_commands(
    services: dict[str, dict[str, Any]], scripts: dict[str, str]
) -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.MULTILINE)
    assert re.search(r"^RUN pip install \.", dockerfile, re.MULTILINE), "the Dockerfile must pip install ."
    assert re.search(r"^COPY pyproject\.toml ", dockerfile, re.MULTILINE)
    commands = {s["command"][0] for s in services.values() if "build" in s}
    assert commands == {"kaliko-controller", "kaliko-agent"}
    for command in commands:
        assert command in scripts, f"{command} is not a [project.scripts] entry of pyproject.toml"
        package = scripts[command].split(".")[0]
        assert re.search(rf"^COPY {package}/ ", dockerfile, re.MULTILINE), (
            f"Dockerfile does not copy {package}/"
        )


def _published(service: dict[str, Any]) -> set[int]:
    """The container ports a service publishes (``127.0.0.1:HOST:CONTAINER``)."""
    return {int(str(p).rsplit(":", 1)[1]) for p in service.get("ports", [])}


def test_the_real_settings_parsers_wire_the_services_together(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each command as the code parses it (its environment applied): agents fetch snapshots from the
    controller service's gRPC port, every endpoint names a service and its port, and each health
    endpoint is the published container port."""
    for variable in [v for v in os.environ if v.startswith("KALIKO_")]:
        monkeypatch.delenv(variable)

    def parsed(name: str, parse: Any) -> Any:
        service = services[name]
        with monkeypatch.context() as scoped:
            for variable, value in service.get("environment", {}).items():
                scoped.setenv(variable, str(value))
            return parse(service["command"][1:])

    controller = parsed("controller", parse_controller)
    listen_port = int(controller.listen.rsplit(":", 1)[1])
    assert {listen_port, controller.health_port} <= _published(services["controller"])
    infra = {"etcd": 2379, "kafka": 9092, "mosquitto": 1883}
    for endpoint in (controller.etcd, controller.kafka, controller.mqtt):
        host, port = endpoint.rsplit(":", 1)
        assert infra.get(host) == int(port), f"controller endpoint {endpoint} is no service port"
    for name in kaliko_services(services, "kaliko-agent"):
        agent = parsed(name, parse_agent)
        assert agent.node == name and agent.controllers == (f"controller:{listen_port}",)
        assert (agent.kafka, agent.mqtt) == (controller.kafka, controller.mqtt)
        assert agent.health_port in _published(services[name]) and agent.health_host == "0.0.0.0"
