"""The bus benchmark on the real Kafka (fv): every burst message arrives and is timed.

A small run of `loadtest.bench_bus` (its own topic, deleted afterwards): the report counts every
message sent as received, its hop and ack summaries cover them, and the topic is gone at the end.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from loadtest import bench_bus

pytestmark = pytest.mark.fv


async def _topics(bootstrap: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


def test_every_burst_message_is_received_and_timed(kafka_bootstrap: str) -> None:
    before = asyncio.run(_topics(kafka_bootstrap))
    args = ["--kafka", kafka_bootstrap, "--nodes", "40", "--burst", "25", "--period", "0.1"]
    args += ["--warm-up", "0.3"]
    report = bench_bus.run(bench_bus.parse([*args, "--duration", "1", "--partitions", "4"]))
    assert report["sent"] == 250 and report["received"] == 250
    assert report["kafka_hop_ms"]["count"] == 250 and report["burst_ack_ms"]["count"] == 10
    assert 0 < report["kafka_hop_ms"]["p50"] <= report["kafka_hop_ms"]["p99"] < 5000
    assert {t for t in asyncio.run(_topics(kafka_bootstrap)) if t.startswith("kaliko.bench-bus-")} <= {
        t for t in before if t.startswith("kaliko.bench-bus-")
    }


def test_a_burst_larger_than_the_node_count_is_refused() -> None:
    with pytest.raises(SystemExit, match="--burst"):
        bench_bus.run(bench_bus.parse(["--nodes", "10", "--burst", "11"]))
