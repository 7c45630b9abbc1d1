"""Shared test fixtures: where the real services are, for tests marked ``fv``.

`etcd_endpoint`, `kafka_bootstrap` and `mqtt_endpoint` return ``"host:port"`` from the environment
(``KALIKO_ETCD``, ``KALIKO_KAFKA``, ``KALIKO_MQTT``; defaults 127.0.0.1:2379, :9092, :1883) after
checking that something answers there. A service that does not answer *fails* the test with a
message saying to run ``make services``: an fv test that silently skips would count as passing.
"""

from __future__ import annotations

import os
import socket
import urllib.request

import pytest


def _endpoint(variable: str, default: str) -> tuple[str, int]:
    value = os.environ.get(variable, default)
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        pytest.fail(f"{variable}={value!r}: expected host:port")
    return host, int(port)


def _require_tcp(service: str, variable: str, host: str, port: int) -> None:
    try:
        with socket.create_connection((host, port), timeout=2.0):
            return
    except OSError as error:
        pytest.fail(
            f"{service} at {host}:{port} ({variable}) does not answer ({error}); run `make services`",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def etcd_endpoint() -> str:
    host, port = _endpoint("KALIKO_ETCD", "127.0.0.1:2379")
    _require_tcp("etcd", "KALIKO_ETCD", host, port)
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{host}:{port}/health", timeout=2.0) as response:
            healthy = b'"health":"true"' in response.read()
    except OSError as error:
        pytest.fail(f"etcd at {host}:{port} /health failed ({error}); run `make services`", pytrace=False)
    if not healthy:
        pytest.fail(f"etcd at {host}:{port} reports unhealthy; run `make services`", pytrace=False)
    return f"{host}:{port}"


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    host, port = _endpoint("KALIKO_KAFKA", "127.0.0.1:9092")
    _require_tcp("Kafka", "KALIKO_KAFKA", host, port)
    return f"{host}:{port}"


@pytest.fixture(scope="session")
def mqtt_endpoint() -> str:
    host, port = _endpoint("KALIKO_MQTT", "127.0.0.1:1883")
    _require_tcp("Mosquitto", "KALIKO_MQTT", host, port)
    return f"{host}:{port}"
