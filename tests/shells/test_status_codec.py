"""Status payload codec: what the publisher sends parses back; malformed input names its problem."""

from __future__ import annotations

import pytest

from iokit.status import MalformedStatus, StatusTopics, encode_status, offline_payload, parse_status

TOPICS = StatusTopics()


def test_encode_then_parse_round_trips_and_fills_node() -> None:
    status = {"ready": True, "epoch": 3, "seq": 9, "revision": 120, "last_error": None, "state_hash": "ab"}
    node, parsed = parse_status(TOPICS.topic("n1"), encode_status("n1", status), TOPICS)
    assert node == "n1"
    assert parsed == {**status, "node": "n1", "online": True}
    offline = parse_status(TOPICS.topic("n1"), offline_payload("n1"), TOPICS)
    assert offline == ("n1", {"node": "n1", "online": False})


@pytest.mark.parametrize(
    ("status", "reason"),
    [({"node": "other"}, "status.node"), ({"online": "yes"}, "status.online"), ({"x": {1, 2}}, "JSON")],
)
def test_encode_rejects_bad_statuses(status: dict[str, object], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        encode_status("n1", status)


@pytest.mark.parametrize("node", ["", "a/b", "a+", "#"])
def test_unusable_node_names_are_rejected(node: str) -> None:
    with pytest.raises(ValueError, match="node"):
        TOPICS.topic(node)


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("kaliko/nodes/n1/status", b"\xff", "not JSON"),
        ("kaliko/nodes/n1/status", b"3", "JSON object"),
        ("kaliko/nodes/n1/status", b'{"node": "n2", "online": true}', "does not match"),
        ("kaliko/nodes/n1/status", b'{"node": "n1", "online": 1}', "online"),
        ("kaliko/nodes/n1/extra/status", b'{"node": "n1", "online": true}', "topic"),
        ("lab-b/nodes/n1/status", b'{"node": "n1", "online": true}', "not kaliko/nodes/<node>/status"),
    ],
)
def test_parse_rejects_malformed_messages(topic: str, payload: bytes, reason: str) -> None:
    with pytest.raises(MalformedStatus, match=reason):
        parse_status(topic, payload, TOPICS)


def test_a_clusters_topics_carry_its_name_and_take_no_other_clusters_reports() -> None:
    lab_b = StatusTopics("lab-b")
    assert (TOPICS.topic("n1"), TOPICS.filter) == ("kaliko/nodes/n1/status", "kaliko/nodes/+/status")
    assert (lab_b.topic("n1"), lab_b.filter) == ("lab-b/nodes/n1/status", "lab-b/nodes/+/status")
    payload = encode_status("n1", {"ready": True})
    assert parse_status(lab_b.topic("n1"), payload, lab_b)[0] == "n1"
    with pytest.raises(MalformedStatus, match="lab-b/nodes/<node>/status"):
        parse_status(TOPICS.topic("n1"), payload, lab_b)
