"""Labs on the nftables data plane: the `lab.cluster` launchers that add a real pod network.

Owns ``lab up --dataplane nftables`` for both backends. Before any agent starts, the lab's CNI
daemon (`lab.cni`) is started and builds the node namespaces and the fabric; then the backend's
processes start as usual, with every agent programming ``table ip kaliko`` in its node's
namespace:

* ``services``: ``kaliko-agent --dataplane=nftables --netns=<prefix>-node-i`` per node;
* ``embedded``: ``python -m lab.embedded_process --dataplane nftables --netns node-i=<prefix>-node-i ...``.

Where the agents run: in the **root** namespace, entering their node's namespace only for
netlink and libnftables calls (`NetnsThread`). Inside a node namespace, 127.0.0.1 is that
namespace's own loopback, not the host's, so an agent started there could not reach Kafka, MQTT
or the controller; from the root namespace it reaches them as every other component does, and
its nftables transactions still land in its node's namespace.

`down` stops the processes newest first (agents and controller, then the CNI daemon, which tears
down pods, nodes and fabric on SIGTERM); `teardown` then removes whatever a crashed run left
behind (`lab.cni.cleanup_leftovers`: processes in our namespaces, the namespaces with their veths,
routes and nft tables, /etc/netns entries). The namespace prefix is ``kaliko`` for the default
run directory and ``k<hash of the run directory>`` for others (`lab.cluster.run_dir_name`,
which also names the lab's default cluster), so a test's lab and the user's never touch each
other's namespaces.
"""

from __future__ import annotations

from pathlib import Path

from lab.cluster import (
    EmbeddedLauncher,
    LabError,
    LabState,
    Launcher,
    ServicesLauncher,
    run_dir_name,
)
from lab.cni import CniClient, CniError, cleanup_leftovers
from lab.processes import ManagedProcess, free_port, venv_bin

CNI_PROCESS = "cni"
CNI_READY_TIMEOUT = 60.0


def lab_prefix(run_dir: str | Path) -> str:
    """The namespace prefix of the lab whose state lives in ``run_dir``."""
    return run_dir_name(run_dir)


def cni_client(state: LabState) -> CniClient | None:
    """The CNI daemon of a running lab with a pod network (None for labs without one)."""
    for process in state.processes.processes:
        if process.name == CNI_PROCESS:
            return CniClient(f"http://127.0.0.1:{process.health_port}")
    return None


class _PodNetwork(Launcher):
    """What both nftables launchers add to their backend: the CNI daemon and the namespaces."""

    @property
    def prefix(self) -> str:
        return lab_prefix(self.spec.run_dir)

    def start_cni(self) -> ManagedProcess:
        port = free_port()
        argv = [venv_bin("python"), "-m", "lab.cni", f"--prefix={self.prefix}"]
        argv += [f"--admin={self.state.admin}", f"--port={port}", f"--run-dir={self.spec.run_dir}"]
        argv += [f"--node={node}" for node in self.spec.node_names]
        process = self.processes.spawn(CNI_PROCESS, argv, health_port=port)
        self.state.save()
        self.processes.wait_ready([process], CNI_READY_TIMEOUT)
        return process

    def node_netns(self) -> dict[str, str]:
        client = cni_client(self.state)
        assert client is not None, "start_cni() first"
        try:
            return {node["name"]: node["netns"] for node in client.lab()["nodes"]}
        except CniError as err:
            raise LabError(f"the lab's CNI daemon: {err}") from None

    def teardown(self) -> None:
        super().teardown()
        cleanup_leftovers(self.prefix)


class NftEmbeddedLauncher(_PodNetwork, EmbeddedLauncher):
    def start(self) -> list[ManagedProcess]:
        cni = self.start_cni()
        port = free_port()
        argv = [venv_bin("python"), "-m", "lab.embedded_process"]
        argv += ["--listen", self.spec.listen, "--health-port", str(port), "--dataplane", "nftables"]
        argv += ["--cluster", self.spec.cluster]
        for node, netns in self.node_netns().items():
            argv += ["--node", node, "--netns", f"{node}={netns}"]
        return [cni, self.processes.spawn("embedded", argv, health_port=port)]


class NftServicesLauncher(_PodNetwork, ServicesLauncher):
    def start(self) -> list[ManagedProcess]:
        cni = self.start_cni()
        self._netns = self.node_netns()
        return [cni, *super().start()]

    def agent_argv(self, node: str, health_port: int, grpc_port: int) -> list[str]:
        return [*super().agent_argv(node, health_port, grpc_port), f"--netns={self._netns[node]}"]


NFT_LAUNCHERS: dict[str, type[Launcher]] = {"embedded": NftEmbeddedLauncher, "services": NftServicesLauncher}
