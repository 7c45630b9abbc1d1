"""Wait until the local Kafka broker serves metadata, then make sure the project's topics exist.

Owns: the readiness check of the Kafka broker that `services.sh up` starts, and the idempotent
creation of `kaliko.node-diffs` (partition count from KALIKO_DIFF_PARTITIONS, default 64).
Does not own: starting or stopping the broker (services.sh), topic settings beyond the partition
count and replication factor 1 (a single-node broker).
Invariants: never deletes or alters an existing topic; an existing topic with a different partition
count is reported on stderr, not changed. Exit 0 only once the broker answered and the topic exists;
exit 1 with a message naming Kafka and the reason otherwise.

Usage: python kafka_ready.py [--bootstrap 127.0.0.1:9092] [--timeout 90] [--pid PID]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code

DIFF_TOPIC = "kaliko.node-diffs"
DEFAULT_PARTITIONS = 64


def diff_partitions() -> int:
    """The partition count for the diff topic, from KALIKO_DIFF_PARTITIONS."""
    raw = os.environ.get("KALIKO_DIFF_PARTITIONS", str(DEFAULT_PARTITIONS))
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"KALIKO_DIFF_PARTITIONS: not an integer: {raw!r}") from None
    if not 1 <= value <= 10_000:
        raise SystemExit(f"KALIKO_DIFF_PARTITIONS: must be within 1..10000, got {value}")
    return value


def broker_alive(pid: int | None) -> bool:
    """True unless a broker pid was given and that process is gone."""
    if pid is None:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def port_open(host: str, port: int) -> bool:
    """True if a TCP connection to host:port succeeds (so aiokafka is not asked too early)."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    await writer.wait_closed()
    return True


async def ensure_topic(admin: AIOKafkaAdminClient, name: str, partitions: int) -> str:
    """Create the topic if absent; return a one-line account of what was found or done."""
    # list_topics asks for all topics; describing one by name would let the broker auto-create it
    # (auto.create.topics.enable is on) with num.partitions=1.
    if name in await admin.list_topics():
        described = await admin.describe_topics([name])
        have = len(described[0].get("partitions", []))
        if have != partitions:
            print(
                f"kafka: topic {name} exists with {have} partitions (wanted {partitions}); left as is",
                file=sys.stderr,
            )
        return f"topic {name} exists ({have} partitions)"
    response = await admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])
    for entry in response.to_object()["topic_errors"]:
        error = for_code(entry["error_code"])
        if error is TopicAlreadyExistsError:
            return f"topic {name} exists"
        if entry["error_code"] != 0:
            raise error(entry.get("error_message") or name)
    return f"topic {name} created ({partitions} partitions)"


async def wait_ready(bootstrap: str, timeout: float, pid: int | None, partitions: int) -> str:
    """Poll the broker until it serves metadata and the topic exists, or the deadline passes."""
    deadline = time.monotonic() + timeout
    host, _, port = bootstrap.rpartition(":")
    last_error = "no answer yet"
    while time.monotonic() < deadline:
        if not broker_alive(pid):
            raise SystemExit(f"kafka: broker process {pid} exited during startup")
        if not await port_open(host, int(port)):
            last_error = f"nothing listens on {bootstrap}"
            await asyncio.sleep(0.3)
            continue
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            brokers = (await admin.describe_cluster()).get("brokers", [])
            if brokers:
                return await ensure_topic(admin, DIFF_TOPIC, partitions)
            last_error = "metadata lists no broker"
        except (KafkaError, OSError) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        finally:
            await admin.close()
        await asyncio.sleep(0.5)
    raise SystemExit(f"kafka: not ready at {bootstrap} after {timeout:.0f}s ({last_error})")


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # retries below report the last error
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092")
    parser.add_argument("--timeout", type=float, default=90.0)
    parser.add_argument("--pid", type=int, default=None, help="fail fast if this process exits")
    args = parser.parse_args()
    print(f"kafka: {asyncio.run(wait_ready(args.bootstrap, args.timeout, args.pid, diff_partitions()))}")


if __name__ == "__main__":
    main()
