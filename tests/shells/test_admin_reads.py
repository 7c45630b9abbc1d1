"""The admin API's reads on a live in-process cluster: list with selectors, get output that applies
back unchanged, WaitConverged timing out with the lagging nodes, NodeStatus, reach/explain equal to
the offline CLI's answers, and a standby that answers UNAVAILABLE and NOT_SERVING.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import pytest
from admin_harness import AdminCluster, allow_from, cluster_manifests, running_cluster
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from controller.controller import Controller
from controller.grpc_server import ControllerServer
from iokit.memory_bus import MemoryBroker, MemoryDiffPublisher
from iokit.memory_status import MemoryMqttBroker, MemoryStatusWatcher
from iokit.memory_store import MemoryStore
from kalikoctl.offline import OfflineCluster
from policycore.model import parse_resource
from policycore.reports import explanation_json, reach_json
from wire.gen.kaliko.v1 import admin_pb2 as pb
from wire.gen.kaliko.v1 import admin_pb2_grpc as pb_grpc

NODES = ["node-1", "node-2", "node-3"]
WEB = allow_from("shop", "web", "app == 'web'", "app == 'client'", 80)


@pytest.fixture
async def cluster() -> AsyncIterator[AdminCluster]:
    async with running_cluster(NODES) as c:
        await c.apply(*cluster_manifests(NODES), WEB)
        await c.agents_ready()
        yield c


async def test_list_filters_by_kind_namespace_and_label_selector(cluster: AdminCluster) -> None:
    web = await cluster.stub.List(pb.ListRequest(kind="Pod", namespace="shop", label_selector="app == 'web'"))
    names = [json.loads(d)["metadata"]["name"] for d in web.documents_json]
    assert names == ["web-1", "web-2", "web-3"]
    assert web.revision >= cluster.store.revision - 1
    other_ns = await cluster.stub.List(pb.ListRequest(kind="Pod", namespace="elsewhere"))
    assert list(other_ns.documents_json) == []
    not_web = await cluster.stub.List(pb.ListRequest(kind="Pod", label_selector="app != 'web'"))
    assert len(not_web.documents_json) == 3
    teams = await cluster.stub.List(pb.ListRequest(label_selector="has(team)"))
    assert [json.loads(d)["kind"] for d in teams.documents_json] == ["Namespace"]
    everything = await cluster.stub.List(pb.ListRequest())
    assert len(everything.documents_json) == 3 + 1 + 6 + 1
    for bad in (pb.ListRequest(kind="Pod", label_selector="app =="), pb.ListRequest(kind="Gadget")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await cluster.stub.List(bad)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_what_get_and_list_return_applies_back_unchanged(cluster: AdminCluster) -> None:
    everything = await cluster.stub.List(pb.ListRequest())
    before = cluster.store.revision
    again = await cluster.stub.Apply(pb.WriteRequest(documents_json=everything.documents_json))
    assert {r.outcome for r in again.results} == {"unchanged"}
    one = await cluster.stub.Get(
        pb.GetRequest(ref=pb.ResourceRef(kind="NetworkPolicy", namespace="shop", name="web"))
    )
    replaced = await cluster.stub.Replace(pb.WriteRequest(documents_json=one.documents_json))
    assert [r.outcome for r in replaced.results] == ["unchanged"]
    assert cluster.store.revision == before
    for document in everything.documents_json:
        parse_resource(json.loads(document))  # each is a valid document as it stands


async def test_wait_converged_times_out_naming_the_lagging_node(cluster: AdminCluster) -> None:
    await cluster.agents["node-3"].stop(graceful=True)
    await cluster.until(lambda: not cluster.controller.status.latest["node-3"].online)
    reply = await cluster.apply(allow_from("shop", "web-8080", "app == 'web'", "all()", 8080))
    started = asyncio.get_running_loop().time()
    done = await cluster.stub.WaitConverged(
        pb.WaitConvergedRequest(revision=reply.revision, timeout_seconds=0.3)
    )
    waited = asyncio.get_running_loop().time() - started
    assert not done.converged and list(done.lagging) == ["node-3"]
    assert 0.3 <= done.seconds < 2.0 and waited < 2.0
    by_node = {n.node: n for n in done.nodes}
    assert by_node["node-3"].online is False and by_node["node-3"].converged is False
    assert by_node["node-3"].revision < reply.revision <= by_node["node-1"].revision
    assert by_node["node-1"].converged and by_node["node-2"].converged
    # a restarted agent catches up (snapshot) and the same revision converges
    cluster.start_agent("node-3")
    done = await cluster.stub.WaitConverged(
        pb.WaitConvergedRequest(revision=reply.revision, timeout_seconds=10)
    )
    assert done.converged and not done.lagging


async def test_node_status_lists_every_node_with_its_position_and_hashes(cluster: AdminCluster) -> None:
    status = await cluster.stub.NodeStatus(pb.NodeStatusRequest())
    assert status.revision == cluster.controller.engine.revision  # type: ignore[union-attr]
    assert [n.name for n in status.nodes] == NODES
    epoch = cluster.controller.engine.epoch  # type: ignore[union-attr]
    for entry in status.nodes:
        assert entry.online and entry.ready and entry.epoch == epoch and entry.seq >= 1
        assert entry.revision == status.revision and entry.last_error == ""
        assert entry.state_hash and entry.state_hash == entry.expected_hash
    await cluster.agents["node-2"].stop(graceful=True)
    await cluster.until(lambda: not cluster.controller.status.latest["node-2"].online)
    after = {n.name: n for n in (await cluster.stub.NodeStatus(pb.NodeStatusRequest())).nodes}
    assert not after["node-2"].online and not after["node-2"].ready and after["node-1"].online


async def test_reach_and_explain_live_equal_the_offline_answers(cluster: AdminCluster) -> None:
    offline = OfflineCluster([parse_resource(d) for d in [*cluster_manifests(NODES), WEB]])
    live_reach = json.loads((await cluster.stub.Reach(pb.ReachRequest(port=80, protocol="tcp"))).json)
    assert live_reach == reach_json(80, "TCP", offline.matrix(80, "TCP"))
    assert live_reach["allowed"]["shop/client-1"]["shop/web-2"] is True
    assert live_reach["allowed"]["shop/web-1"]["shop/web-2"] is False
    for src, dst in (
        ("shop/client-1", "shop/web-3"),
        ("shop/web-1", "shop/web-2"),
        ("shop/web-1", "shop/web-1"),
    ):
        request = pb.ExplainRequest(from_pod=src, to_pod=dst, port=80, protocol="TCP")
        live = json.loads((await cluster.stub.Explain(request)).json)
        assert live == explanation_json(offline.connection(src, dst, 80, "TCP"), "TCP")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cluster.stub.Explain(pb.ExplainRequest(from_pod="shop/nope", to_pod="shop/web-1", port=80))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await cluster.stub.Reach(pb.ReachRequest(port=0, protocol="ICMP"))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_health_serving_and_reflection_on_the_leader(cluster: AdminCluster) -> None:
    health = health_pb2_grpc.HealthStub(cluster.channel)
    for service in ("", "kaliko.v1.AdminService", "kaliko.v1.NodeSync"):
        reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stub = reflection_pb2_grpc.ServerReflectionStub(cluster.channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    async for answer in stub.ServerReflectionInfo(iter([request])):
        names = {s.name for s in answer.list_services_response.service}
        assert {"kaliko.v1.AdminService", "kaliko.v1.NodeSync", "grpc.health.v1.Health"} <= names
        break


class NeverElected:
    async def campaign(self) -> int:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def hold(self) -> None:
        await asyncio.Event().wait()

    async def resign(self) -> None:
        return None


async def test_a_standby_answers_unavailable_and_not_serving() -> None:
    controller = Controller(
        store=MemoryStore(),
        publisher=MemoryDiffPublisher(MemoryBroker()),
        status_watcher=MemoryStatusWatcher(MemoryMqttBroker()),
        election=NeverElected(),
    )
    server = ControllerServer(controller)
    port = await server.start("127.0.0.1:0")
    running = asyncio.create_task(controller.run())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.AdminServiceStub(channel)
            calls = [
                stub.Apply(pb.WriteRequest(documents_json=[json.dumps(WEB)])),
                stub.List(pb.ListRequest(kind="Pod")),
                stub.WaitConverged(pb.WaitConvergedRequest(revision=1)),
                stub.NodeStatus(pb.NodeStatusRequest()),
                stub.Reach(pb.ReachRequest(port=80)),
            ]
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await call
                assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""))
            assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await server.stop(0)
