"""The ``lab up --backend embedded`` process: `EmbeddedCluster` behind a health server, until stopped.

Owns the command line (``python -m lab.embedded_process``: nodes, listen address, health port,
partitions, cluster name, data plane and each node's network namespace for nftables) and the
process's supervision (`Supervisor`: the cluster's component tasks and the health server; SIGTERM
or SIGINT stops both and then the cluster). It does not own the cluster itself (`lab.embedded`)
or how the lab launches it (`lab.cluster`, `lab.nft_launchers`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable, Mapping

from iokit.cluster_name import DEFAULT_CLUSTER, InvalidClusterName, check_cluster_name
from iokit.health import HealthServer
from iokit.supervise import Supervisor
from lab.embedded import EmbeddedCluster, node_names
from node_agent.dataplane.protocol import DataPlane

log = logging.getLogger("kaliko.lab.embedded")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m lab.embedded_process", description="An embedded Kaliko cluster"
    )
    p.add_argument("--nodes", type=int, default=3, help="number of nodes (node-1..node-N)")
    p.add_argument("--node", action="append", default=[], help="a node name (repeatable; overrides --nodes)")
    p.add_argument("--listen", default="127.0.0.1:50051", help="gRPC address: NodeSync and the admin API")
    p.add_argument("--health-port", type=int, default=0, help="/liveness, /readiness, /metrics on 127.0.0.1")
    p.add_argument("--partitions", type=int, default=8, help="partitions of the in-memory bus")
    p.add_argument("--cluster", default=DEFAULT_CLUSTER, help="the cluster's name (its keys and topics)")
    p.add_argument(
        "--dataplane", choices=("memory", "nftables"), default="memory", help="the agents' data plane"
    )
    p.add_argument(
        "--netns", action="append", default=[], help="nftables: NODE=NETNS, the namespace NODE programs"
    )
    args = p.parse_args(argv)
    try:
        check_cluster_name(args.cluster)
    except InvalidClusterName as err:
        p.error(f"--cluster: {err}")
    if args.nodes < 1 and not args.node:
        p.error("--nodes: must be >= 1")
    args.netns = dict(item.partition("=")[::2] for item in args.netns)
    if args.dataplane == "nftables" and not all(
        args.netns.get(n) for n in node_names(args.node or args.nodes)
    ):
        p.error("--dataplane nftables: give --netns NODE=NETNS for every node")
    return args


async def serve(args: argparse.Namespace) -> None:
    cluster = EmbeddedCluster(
        args.node or args.nodes,
        listen=args.listen,
        partitions=args.partitions,
        dataplanes=_nftables(args.netns) if args.dataplane == "nftables" else None,
        cluster=args.cluster,
    )
    started = time.perf_counter()
    await cluster.start()
    assert cluster.controller is not None
    health = HealthServer(
        liveness=lambda: True,
        readiness=lambda: cluster.ready,
        registry=cluster.controller.metrics.registry,
        port=args.health_port,
    )
    supervisor = Supervisor("lab-embedded")
    supervisor.add("health", health.serve)
    supervisor.add("cluster", cluster.supervise)
    log.info(
        "embedded cluster ready in %.2fs: %d nodes, gRPC (NodeSync, admin) at %s, health port %d",
        time.perf_counter() - started,
        len(cluster.nodes),
        cluster.address,
        args.health_port,
    )
    try:
        await supervisor.run()
    finally:
        await cluster.stop()


def _nftables(netns: Mapping[str, str]) -> Callable[[str], DataPlane]:
    """Each agent programs its node's namespace from this (root-namespace) process; see lab.nft_launchers."""
    from node_agent.dataplane.nft_driver import NftablesDataPlane

    return lambda node: NftablesDataPlane(netns[node])


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(parse_args(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
