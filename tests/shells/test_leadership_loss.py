"""A leader that loses its term stops answering at once: waiters wake up, health goes NOT_SERVING.

Proves, on the in-process admin cluster (LocalElection, memory twins): a `wait_converged` blocked
on a node that cannot converge returns UNAVAILABLE as soon as leadership is lost, not at its
30-second deadline; the gRPC health of the former leader turns NOT_SERVING and its admin reads
answer UNAVAILABLE (so a client moves to the next controller).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from admin_harness import AdminCluster, allow_from, cluster_manifests, running_cluster
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controller import admin_reads
from controller.admin_input import AdminError
from controller.leader import LeadershipLost
from wire.gen.kaliko.v1 import admin_pb2 as pb

NODES = ["node-1", "node-2"]


@pytest.fixture
async def cluster() -> AsyncIterator[AdminCluster]:
    async with running_cluster(NODES) as c:
        await c.apply(*cluster_manifests(NODES))
        await c.agents_ready()
        yield c


async def test_lost_leadership_wakes_convergence_waiters_and_health(cluster: AdminCluster) -> None:
    await cluster.agents["node-1"].stop(graceful=False)  # node-1 can no longer converge
    written = await cluster.apply(allow_from("shop", "web", "app == 'web'", "app == 'client'", 80))
    waiter = asyncio.create_task(admin_reads.wait_converged(cluster.controller, written.revision, 30.0))
    await asyncio.sleep(0)  # the waiter checks (not converged) and blocks on Controller.changed
    assert not waiter.done()

    leader_task = next(t for t in cluster._tasks if t.get_name() == "controller")
    await cluster.controller.election.resign()
    with pytest.raises(LeadershipLost):
        await asyncio.wait_for(leader_task, 5)

    with pytest.raises(AdminError) as caught:
        await asyncio.wait_for(waiter, 5)  # long before the waiter's own 30 s deadline
    assert caught.value.code is grpc.StatusCode.UNAVAILABLE

    assert cluster.channel is not None
    health = health_pb2_grpc.HealthStub(cluster.channel)

    async def not_serving() -> None:
        request = health_pb2.HealthCheckRequest(service="kaliko.v1.AdminService")
        async for reply in health.Watch(request):
            if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                return

    await asyncio.wait_for(not_serving(), 5)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await cluster.stub.NodeStatus(pb.NodeStatusRequest())
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
