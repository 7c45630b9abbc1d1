"""A cluster's name namespaces every key and topic; the default cluster keeps today's names exactly.

Proves: a cluster name must be a DNS-1123 label (the error says why); `KeyLayout` puts every key
under ``/<cluster>/v1/`` — for ``kaliko`` exactly the documented ``/kaliko/v1/...`` — and a key of
another cluster names no resource (so decoding it gives `InvalidEntry`, never a resource); the diff
topic is ``<cluster>.node-diffs`` and status topics ``<cluster>/nodes/<node>/status``; the
controller's and agent's ``--cluster`` / ``KALIKO_CLUSTER`` default to ``kaliko``, flag over
environment, and a bad name exits 2 naming the flag; a lab's default cluster is ``kaliko`` for the
default run directory and ``k<hash>`` for any other, and a bad ``ClusterSpec.cluster`` is refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from controller.resource_store import InvalidEntry, KeyLayout, ResourceStore, decode, encode
from controller.settings import parse_args as parse_controller
from iokit.bus import DEFAULT_TOPIC
from iokit.cluster_name import DEFAULT_CLUSTER, InvalidClusterName, check_cluster_name, diff_topic
from iokit.memory_store import MemoryStore
from iokit.status import StatusTopics
from lab.cluster import RUN_DIR, ClusterSpec, LabError, run_dir_name
from node_agent.settings import parse_args as parse_agent
from policycore.model import ResourceKey, parse_resource

BAD_NAMES = ["", "Kaliko", "lab_b", "lab.b", "lab/b", "-lab", "lab-", "lab b", "x" * 64, "ünï"]
POLICY = {
    "apiVersion": "kaliko.io/v1",
    "kind": "NetworkPolicy",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {"selector": "app == 'web'", "types": ["Ingress"]},
}


@pytest.mark.parametrize("name", ["kaliko", "a", "lab-b", "k0123abcd", "0lab", "x" * 63])
def test_dns_labels_are_cluster_names(name: str) -> None:
    assert check_cluster_name(name) == name


@pytest.mark.parametrize("name", BAD_NAMES)
def test_other_names_are_refused_with_the_reason(name: str) -> None:
    with pytest.raises(InvalidClusterName, match=r"DNS-1123|empty|at most 63"):
        check_cluster_name(name)
    with pytest.raises(InvalidClusterName):
        KeyLayout(name)
    with pytest.raises(InvalidClusterName):
        StatusTopics(name)
    with pytest.raises(InvalidClusterName):
        diff_topic(name)


def test_the_default_clusters_keys_and_topics_are_the_documented_ones() -> None:
    layout = KeyLayout()
    assert DEFAULT_CLUSTER == layout.cluster == "kaliko"
    assert layout.resources == "/kaliko/v1/resources/"
    assert (layout.leader, layout.epoch) == ("/kaliko/v1/leader", "/kaliko/v1/epoch")
    assert layout.etcd_key(ResourceKey("NetworkPolicy", "shop", "web")) == (
        "/kaliko/v1/resources/NetworkPolicy/shop/web"
    )
    assert layout.etcd_key(ResourceKey("Node", "", "node-1")) == "/kaliko/v1/resources/Node/_/node-1"
    assert layout.kind_prefix("Pod", "shop") == "/kaliko/v1/resources/Pod/shop/"
    assert DEFAULT_TOPIC == diff_topic("kaliko") == "kaliko.node-diffs"
    assert StatusTopics().topic("node-1") == "kaliko/nodes/node-1/status"


def test_another_clusters_keys_and_topics_carry_its_name() -> None:
    layout = KeyLayout("lab-b")
    assert layout.resources == "/lab-b/v1/resources/"
    assert (layout.leader, layout.epoch) == ("/lab-b/v1/leader", "/lab-b/v1/epoch")
    assert layout.kind_prefix("Node") == "/lab-b/v1/resources/Node/"
    assert diff_topic("lab-b") == "lab-b.node-diffs"
    assert StatusTopics("lab-b").filter == "lab-b/nodes/+/status"


def test_a_key_round_trips_in_its_own_layout_only() -> None:
    key = ResourceKey("NetworkPolicy", "shop", "web")
    ours, theirs = KeyLayout("lab-a"), KeyLayout("lab-b")
    assert ours.resource_key(ours.etcd_key(key)) == key
    assert theirs.resource_key(ours.etcd_key(key)) is None
    assert KeyLayout("lab").resource_key(KeyLayout("lab-a").etcd_key(key)) is None  # a prefix, not a parent
    value = encode(parse_resource(POLICY))
    assert not isinstance(decode(ours, ours.etcd_key(key), value, 5), InvalidEntry)
    refused = decode(theirs, ours.etcd_key(key), value, 5)
    assert isinstance(refused, InvalidEntry) and "/lab-b/v1/resources/" in refused.reason


async def test_two_resource_stores_on_one_store_keep_apart() -> None:
    kv = MemoryStore()
    a, b = ResourceStore(kv, KeyLayout("lab-a")), ResourceStore(kv, KeyLayout("lab-b"))
    await a.apply(parse_resource(POLICY))
    assert (await a.list("NetworkPolicy", "shop"))[0] and (await b.list("NetworkPolicy", "shop"))[0] == []
    assert await b.get(ResourceKey("NetworkPolicy", "shop", "web")) is None
    entries, _ = await kv.list("/")
    assert [e.key for e in entries] == ["/lab-a/v1/resources/NetworkPolicy/shop/web"]


@pytest.mark.parametrize("parse", [parse_controller, parse_agent], ids=["controller", "agent"])
def test_cluster_setting_defaults_reads_the_environment_and_the_flag_wins(
    parse: Callable[[list[str]], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    base = ["--node", "n1"] if parse is parse_agent else []
    monkeypatch.delenv("KALIKO_CLUSTER", raising=False)
    assert parse(base).cluster == "kaliko"
    monkeypatch.setenv("KALIKO_CLUSTER", "lab-env")
    assert parse(base).cluster == "lab-env"
    assert parse([*base, "--cluster", "lab-flag"]).cluster == "lab-flag"


@pytest.mark.parametrize("parse", [parse_controller, parse_agent], ids=["controller", "agent"])
@pytest.mark.parametrize("source", ["flag", "env"])
def test_a_bad_cluster_name_exits_2_naming_the_flag(
    parse: Callable[[list[str]], Any],
    source: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["--node", "n1"] if parse is parse_agent else []
    if source == "flag":
        argv += ["--cluster", "Lab_B"]
    else:
        monkeypatch.setenv("KALIKO_CLUSTER", "Lab_B")
    with pytest.raises(SystemExit) as exited:
        parse(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "--cluster" in err and "'Lab_B' is not a DNS-1123 label" in err and "KALIKO_CLUSTER" in err


def test_the_controller_creates_its_topic_with_the_configured_partitions(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("KALIKO_DIFF_PARTITIONS", raising=False)
    assert parse_controller([]).partitions == 64
    monkeypatch.setenv("KALIKO_DIFF_PARTITIONS", "12")
    assert parse_controller([]).partitions == 12
    assert parse_controller(["--partitions", "3"]).partitions == 3
    with pytest.raises(SystemExit):
        parse_controller(["--partitions", "0"])
    assert "--partitions" in capsys.readouterr().err


def test_a_labs_default_cluster_comes_from_its_run_directory(tmp_path: Path) -> None:
    assert run_dir_name(RUN_DIR) == "kaliko" == ClusterSpec().cluster
    one, other = tmp_path / "one", tmp_path / "other"
    assert re.fullmatch(r"k[0-9a-f]{8}", run_dir_name(one))
    assert run_dir_name(one) == run_dir_name(tmp_path / "x" / ".." / "one") != run_dir_name(other)
    assert ClusterSpec(run_dir=str(one)).cluster == run_dir_name(one)
    assert ClusterSpec(run_dir=str(one), cluster="lab-b").cluster == "lab-b"


def test_a_lab_refuses_a_bad_cluster_name() -> None:
    with pytest.raises(LabError, match="--cluster: 'lab_b' is not a DNS-1123 label"):
        ClusterSpec(cluster="lab_b")
