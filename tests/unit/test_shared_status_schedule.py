"""The shared status connection's schedule: per-node spacing, the newest wins, resends, stop."""

import pytest

from iokit.status import StatusTopics, parse_status
from loadtest.shared_status import ReportSchedule


def status_of(node: str, payload: bytes) -> dict[str, object]:
    return parse_status(f"kaliko/nodes/{node}/status", payload, StatusTopics())[1]


def seqs(taken: list[tuple[str, bytes]]) -> dict[str, object]:
    return {node: status_of(node, payload)["seq"] for node, payload in taken}


def test_the_first_report_after_a_quiet_spell_goes_at_once_then_reports_are_spaced_per_node() -> None:
    schedule = ReportSchedule(min_interval=0.2)
    assert schedule.wait_for(10.0) is None  # nothing to send
    schedule.offer("a", {"online": True, "seq": 1})
    assert schedule.wait_for(10.0) == 0.0
    assert seqs(schedule.take_due(10.0)) == {"a": 1}
    schedule.offer("a", {"online": True, "seq": 2})
    schedule.offer("b", {"online": True, "seq": 1})  # another node is not held back by a's interval
    assert seqs(schedule.take_due(10.05)) == {"b": 1}
    assert schedule.wait_for(10.05) == pytest.approx(0.15)
    schedule.offer("a", {"online": True, "seq": 3})  # within a's interval: replaces seq 2
    assert schedule.take_due(10.1) == []
    assert seqs(schedule.take_due(10.2)) == {"a": 3}
    assert schedule.wait_for(10.2) is None


def test_a_reconnect_resends_every_nodes_newest_and_stop_sends_what_is_left_regardless() -> None:
    schedule = ReportSchedule(min_interval=1.0)
    schedule.offer("a", {"online": True, "seq": 1})
    schedule.offer("b", {"online": True, "seq": 4})
    assert seqs(schedule.take_due(0.0)) == {"a": 1, "b": 4}
    schedule.resend_all()
    assert seqs(schedule.take_due(1.0)) == {"a": 1, "b": 4}
    schedule.offer("a", {"online": False})
    assert schedule.take_due(1.5) == []
    taken = schedule.take_due(1.5, all_unsent=True)
    assert [node for node, _ in taken] == ["a"]
    assert status_of("a", taken[0][1]) == {"node": "a", "online": False}


def test_the_interval_must_be_a_finite_non_negative_number() -> None:
    for bad in (-0.1, float("inf")):
        with pytest.raises(ValueError, match="min_interval"):
            ReportSchedule(bad)
