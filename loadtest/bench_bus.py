"""Benchmark of the diff bus alone: the Kafka hop of engine-shaped bursts, with nothing else running.

Owns a throwaway topic, a publisher that sends the way the controller's engine does (a burst of
one message per affected node, in node order, yielding every `controller.engine.SENDS_PER_TURN`)
and a subscriber process that reads every node with the simulated agents' shared consumer
(`iokit.kafka_multi_node`) and does nothing with the messages. What it measures is the floor under
G7: the hop (producer timestamp → fetch handed over) and each burst's time to acknowledgement
(first send → `flush` returned), with no compile, no agent work and no competing process. Both
processes settle their garbage collector as the controller does once in sync (freeze, fewer young
collections): a full collection of the client's objects otherwise adds 20-40 ms to a burst. It does
not own the adapters' settings beyond ``--linger-ms`` (a knob of `KafkaDiffPublisher`) and does
not measure convergence (`python -m loadtest`). Needs the services (``make services``)::

    .venv/bin/python -m loadtest.bench_bus [--nodes 1000 --burst 500 --period 0.1 --duration 15]
        [--partitions 64 --linger-ms 0 --warm-up 3 --payload 250 --report FILE.json]

The topic is deleted at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import random
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from controller.engine import SENDS_PER_TURN
from iokit.heap import settle_garbage_collector
from iokit.kafka_bus import ensure_topic
from iokit.kafka_multi_node import KafkaMultiNodeSubscriber
from iokit.kafka_publisher import KafkaDiffPublisher
from loadtest.stats import summary

QUANTILES = (50, 90, 99, 99.9)


def node_names(count: int) -> list[str]:
    return [f"bench-node-{i:05d}" for i in range(count)]


async def _read_hops(
    bootstrap: str,
    topic: str,
    nodes: Sequence[str],
    expect: int,
    seconds: float,
    on_ready: Callable[[], None],
) -> list[float]:
    """Every node's hops until ``expect`` arrived or ``seconds`` passed; ``on_ready`` once positioned."""
    subscriber = KafkaMultiNodeSubscriber(bootstrap, nodes, topic, queue_size=10_000)
    await subscriber.start()
    hops: list[float] = []
    done = asyncio.Event()

    async def drain(node: str) -> None:
        async for message in subscriber.subscription(node):
            hops.append(message.received_ms - message.timestamp_ms)
            if len(hops) >= expect:
                done.set()

    readers = [asyncio.create_task(drain(node)) for node in nodes]
    settle_garbage_collector()
    on_ready()
    try:
        async with asyncio.timeout(seconds):
            await done.wait()
    except TimeoutError:
        pass  # the parent reports how many arrived
    for reader in readers:
        reader.cancel()
    await subscriber.stop()
    return hops


def _subscriber_main(
    bootstrap: str, topic: str, nodes: list[str], expect: int, seconds: float, out: Any, ready: Any
) -> None:
    out.send(asyncio.run(_read_hops(bootstrap, topic, nodes, expect, seconds, ready.set)))


async def publish_bursts(
    bootstrap: str,
    topic: str,
    nodes: Sequence[str],
    *,
    burst: int,
    period: float,
    duration: float,
    linger_ms: int,
    payload: int,
    seed: int,
) -> tuple[int, list[float]]:
    """Send bursts for ``duration`` seconds; return (messages sent, per-burst ack ms)."""
    publisher = KafkaDiffPublisher(bootstrap, topic, linger_ms=linger_ms)
    await publisher.start()
    settle_garbage_collector()
    rng = random.Random(seed)
    body, sent, acks = b"\x00" * payload, 0, []
    end = time.monotonic() + duration
    try:
        while time.monotonic() < end:
            began = time.monotonic()
            for index, node in enumerate(sorted(rng.sample(list(nodes), burst)), start=1):
                await publisher.publish(node, body)
                if index % SENDS_PER_TURN == 0:
                    await asyncio.sleep(0)
            await publisher.flush()
            acks.append((time.monotonic() - began) * 1000.0)
            sent += burst
            await asyncio.sleep(max(0.0, period - (time.monotonic() - began)))
    finally:
        await publisher.stop()
    return sent, acks


async def _delete_topic(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.burst > args.nodes:
        raise SystemExit(f"--burst: at most --nodes ({args.nodes}), got {args.burst}")
    topic = f"kaliko.bench-bus-{uuid.uuid4().hex[:8]}"
    nodes = node_names(args.nodes)
    shape = dict(
        burst=args.burst, period=args.period, linger_ms=args.linger_ms, payload=args.payload, seed=args.seed
    )
    bursts = max(1, int(args.duration / args.period))
    asyncio.run(ensure_topic(args.kafka, topic, args.partitions))
    # A new topic's first seconds are not the bus's steady state: its first produce requests are
    # refused (NotLeaderForPartition) while the broker settles leadership, and after that the first
    # bursts took 0.2-1.0 s to be acknowledged (then about 11 ms, as on a topic in use). Those
    # used to be counted as the bus's tail; this warm-up goes before the reader, which starts at
    # the partitions' end.
    asyncio.run(publish_bursts(args.kafka, topic, nodes, **shape, duration=args.warm_up))
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    ready = context.Event()
    reader = context.Process(
        target=_subscriber_main,
        args=(args.kafka, topic, nodes, bursts * args.burst, args.duration + 30, send, ready),
        daemon=True,
    )
    reader.start()
    try:
        if not ready.wait(60):
            raise SystemExit("bench_bus: the subscriber did not start within 60 s")
        time.sleep(1.0)  # let its first fetch reach the broker
        sent, acks = asyncio.run(publish_bursts(args.kafka, topic, nodes, **shape, duration=args.duration))
        hops = receive.recv()
        reader.join(30)
    finally:
        if reader.is_alive():
            reader.kill()
        asyncio.run(_delete_topic(args.kafka, topic))
    params = {
        k: getattr(args, k)
        for k in ("nodes", "burst", "period", "duration", "warm_up", "partitions", "linger_ms", "payload")
    }
    return {
        "benchmark": "bus",
        "params": params,
        "sent": sent,
        "received": len(hops),
        "kafka_hop_ms": summary(hops, QUANTILES),
        "burst_ack_ms": summary(acks, QUANTILES),
    }


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_bus", description=__doc__.splitlines()[0])
    parser.add_argument("--kafka", default="127.0.0.1:9092")
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=500, help="messages per burst (one per node)")
    parser.add_argument("--period", type=float, default=0.1, help="seconds between burst starts")
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--partitions", type=int, default=64)
    parser.add_argument("--linger-ms", type=int, default=0, help="the publisher's (the controller's: 0)")
    parser.add_argument("--warm-up", type=float, default=3.0, help="seconds of unmeasured bursts first")
    parser.add_argument("--payload", type=int, default=250, help="bytes per message")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--report", help="write the JSON here too")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.report:
        with open(args.report, "w") as out:
            out.write(text + "\n")


if __name__ == "__main__":
    main()
