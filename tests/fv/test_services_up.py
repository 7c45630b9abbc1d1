"""The services `make services` starts answer real client calls: Kafka, etcd and Mosquitto.

Owns: a smoke check of each service with the client library the project uses (aiokafka with an
idempotent producer, aetcd, aiomqtt), and of the topic the startup script creates.
Does not own: the project's adapters (tests/fv/test_adapters_*.py test those).
Invariants: every name used here (topic, key, MQTT topic) is unique per run and removed afterwards,
so the tests can run while others use the same services.
"""

from __future__ import annotations

import asyncio
import os
import uuid

import aetcd
import aiomqtt
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.fv

DIFF_TOPIC = "kaliko.node-diffs"


def _host_port(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


async def test_diff_topic_exists_with_configured_partitions(kafka_bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert DIFF_TOPIC in await admin.list_topics()
        (described,) = await admin.describe_topics([DIFF_TOPIC])
    finally:
        await admin.close()
    assert described["error_code"] == 0
    assert len(described["partitions"]) == int(os.environ.get("KALIKO_DIFF_PARTITIONS", "64"))


async def test_kafka_idempotent_produce_then_consume_in_order(kafka_bootstrap: str) -> None:
    topic = f"kaliko.test.smoke.{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            sent = [f"diff-{i}".encode() for i in range(20)]
            offsets = [(await producer.send_and_wait(topic, v, key=b"node-1")).offset for v in sent]
        finally:
            await producer.stop()
        assert offsets == list(range(20))

        partition = TopicPartition(topic, 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([partition])
            await consumer.seek_to_beginning(partition)
            received: list[bytes] = []
            async with asyncio.timeout(20):
                while len(received) < len(sent):
                    batches = await consumer.getmany(partition, timeout_ms=1000)
                    received.extend(record.value for record in batches.get(partition, []))
        finally:
            await consumer.stop()
        assert received == sent
    finally:
        await admin.delete_topics([topic])
        await admin.close()


async def test_kafka_consumer_group_joins_and_commits(kafka_bootstrap: str) -> None:
    topic = f"kaliko.test.smoke.{uuid.uuid4().hex[:12]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"only", partition=1)
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=kafka_bootstrap,
            group_id=f"kaliko-test-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            async with asyncio.timeout(30):
                record = await consumer.getone()
            await consumer.commit()
            committed = await consumer.committed(TopicPartition(topic, 1))
            assignment = consumer.assignment()
        finally:
            await consumer.stop()
        assert record.value == b"only"
        assert committed == record.offset + 1
        assert assignment == {TopicPartition(topic, 0), TopicPartition(topic, 1)}
    finally:
        await admin.delete_topics([topic])
        await admin.close()


async def test_etcd_put_get_delete(etcd_endpoint: str) -> None:
    host, port = _host_port(etcd_endpoint)
    key = f"/kaliko-test/smoke/{uuid.uuid4().hex}".encode()
    async with aetcd.Client(host, port, timeout=5) as client:
        first = await client.put(key, b"v1")
        second = await client.put(key, b"v2")
        got = await client.get(key)
        await client.delete(key)
        gone = await client.get(key)
    assert got is not None
    assert got.value == b"v2"
    assert got.version == 2
    assert got.mod_revision == second.header.revision > first.header.revision
    assert gone is None


async def test_mqtt_publish_reaches_subscriber_and_retains(mqtt_endpoint: str) -> None:
    host, port = _host_port(mqtt_endpoint)
    topic = f"kaliko-test/smoke/{uuid.uuid4().hex}"
    async with aiomqtt.Client(host, port, identifier=f"sub-{uuid.uuid4().hex[:8]}") as subscriber:
        await subscriber.subscribe(topic, qos=1)
        async with aiomqtt.Client(host, port, identifier=f"pub-{uuid.uuid4().hex[:8]}") as publisher:
            await publisher.publish(topic, b"online", qos=1, retain=True)
        async with asyncio.timeout(10):
            live = await anext(aiter(subscriber.messages))
    assert (live.payload, live.retain) == (b"online", False)

    async with aiomqtt.Client(host, port, identifier=f"late-{uuid.uuid4().hex[:8]}") as late:
        await late.subscribe(topic, qos=1)
        async with asyncio.timeout(10):
            retained = await anext(aiter(late.messages))
        await late.publish(topic, b"", qos=1, retain=True)  # clear the retained message
    assert (retained.payload, retained.retain) == (b"online", True)
