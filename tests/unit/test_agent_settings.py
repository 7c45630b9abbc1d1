"""The node agent's command line: the seconds options say which option and why when they are wrong."""

from __future__ import annotations

import pytest

from iokit.mqtt_status import DEFAULT_REPORT_INTERVAL
from node_agent.settings import parse_args


def test_defaults_and_explicit_values() -> None:
    assert parse_args(["--node", "n1"]).report_interval == DEFAULT_REPORT_INTERVAL
    parsed = parse_args(["--node", "n1", "--report-interval", "0", "--max-lag", "2.5"])
    assert parsed.report_interval == 0.0 and parsed.max_lag == 2.5


def test_report_interval_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALIKO_REPORT_INTERVAL", "1.5")
    assert parse_args(["--node", "n1"]).report_interval == 1.5


@pytest.mark.parametrize(
    ("option", "value", "reason"),
    [
        ("--report-interval", "-1", "must be a finite number of seconds >= 0"),
        ("--report-interval", "soon", "not a number of seconds"),
        ("--report-interval", "inf", "must be a finite number"),
        ("--max-lag", "nan", "must be a finite number"),
    ],
)
def test_bad_seconds_name_the_option_and_the_reason(
    option: str, value: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        parse_args(["--node", "n1", option, value])
    err = capsys.readouterr().err
    assert option in err and reason in err
