"""The lab's IPAM: /26 blocks per node, lowest free address, Calico's ipAddrs annotation, borrowing."""

from __future__ import annotations

import pytest

from lab.ipam import IP_ADDRS_ANNOTATION, Ipam, IpamError, block_of, requested_address


def test_a_node_claims_the_lowest_free_block_and_hands_out_its_lowest_free_address() -> None:
    ipam = Ipam()
    assert ipam.assign("ns/a", "node-1") == "198.18.0.1"  # the pool's network address is never used
    assert ipam.assign("ns/b", "node-2") == "198.18.0.64"
    assert ipam.assign("ns/c", "node-1") == "198.18.0.2"
    assert ipam.node_blocks("node-1") == ["198.18.0.0/26"]
    assert ipam.affine_node("198.18.0.70") == "node-2"
    assert ipam.affine_node("198.18.7.1") is None


def test_a_pod_keeps_its_address_and_a_released_address_is_reused() -> None:
    ipam = Ipam()
    first = ipam.assign("ns/a", "node-1")
    assert ipam.assign("ns/a", "node-1") == first
    ipam.assign("ns/b", "node-1")
    assert ipam.release("ns/a") == first
    assert ipam.release("ns/a") is None
    assert ipam.assign("ns/c", "node-1") == first


def test_a_full_block_makes_the_node_claim_another() -> None:
    ipam = Ipam(blocks={"198.18.0.0/26": "node-1"})
    for i in range(63):
        ipam.assign(f"ns/p{i}", "node-1")
    assert ipam.assign("ns/next", "node-1") == "198.18.0.64"
    assert ipam.node_blocks("node-1") == ["198.18.0.0/26", "198.18.0.64/26"]


def test_reserved_ranges_are_never_handed_out_or_granted() -> None:
    ipam = Ipam(reserved=("198.18.0.0/25",))
    assert ipam.assign("ns/a", "node-1") == "198.18.0.128"
    with pytest.raises(IpamError, match=r"ipAddrs\]\[0\]: 198.18.0.5 is reserved"):
        ipam.assign("ns/b", "node-1", "198.18.0.5")


def test_a_requested_address_works_on_any_node_once() -> None:
    ipam = Ipam(blocks={"198.18.0.0/26": "node-1"})
    assert ipam.assign("ns/a", "node-2", "198.18.0.9") == "198.18.0.9"
    assert ipam.affine_node("198.18.0.9") == "node-1"  # borrowed: the lab routes it with a /32
    with pytest.raises(IpamError, match="already held by pod ns/a"):
        ipam.assign("ns/b", "node-1", "198.18.0.9")
    with pytest.raises(IpamError, match=r"already holds 198\.18\.0\.9"):
        ipam.assign("ns/a", "node-2", "198.18.0.10")
    assert ipam.allocations == {"198.18.0.9": "ns/a"}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("198.18.1.1", "is not a JSON list"),
        ('["198.18.1.1", "198.18.1.2"]', "exactly one IPv4 address"),
        ('["fd00::1"]', r"\[0\]: 'fd00::1' is not an IPv4 address"),
        ('["10.0.0.1"]', r"\[0\]: 10.0.0.1 is not a usable address of the pool"),
        ('["198.18.255.255"]', "is not a usable address"),
    ],
)
def test_bad_annotations_name_the_field(value: str, message: str) -> None:
    with pytest.raises(IpamError, match=rf"metadata\.annotations\[{IP_ADDRS_ANNOTATION}\].*{message}"):
        requested_address({IP_ADDRS_ANNOTATION: value})


def test_the_annotation_is_optional() -> None:
    assert requested_address(None) is None
    assert requested_address({"other": "x"}) is None
    assert requested_address({IP_ADDRS_ANNOTATION: '["198.18.1.1"]'}) == "198.18.1.1"


def test_the_state_round_trips_through_json() -> None:
    ipam = Ipam(reserved=("198.18.255.0/24",))
    ipam.assign("ns/a", "node-1")
    ipam.assign("ns/b", "node-2", "198.18.3.3")
    again = Ipam.from_json(ipam.to_json())
    assert again == ipam
    assert block_of("198.18.3.3") == "198.18.3.0/26"
