"""``kalikoctl validate`` and ``kalikoctl selector``: exit codes and exact output shapes."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from kalikoctl.main import app, build_app
from policycore.selector import parse

runner = CliRunner()

GOOD = """\
apiVersion: kaliko.io/v1
kind: GlobalNetworkPolicy
metadata:
  name: allow-web
spec:
  selector: app == 'web'
  ingress:
    - action: Allow
      protocol: TCP
      destination:
        ports: [80]
"""
BAD = """\
apiVersion: kaliko.io/v1
kind: GlobalNetworkPolicy
metadata:
  name: Bad_Name
spec:
  ingress:
    - action: allow
      source:
        nets: [10.0.0.1/8]
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_validate_success_says_what_it_validated(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "-f", write(tmp_path, "good.yaml", GOOD)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "Successfully validated 1 'GlobalNetworkPolicy' resource(s)\n"


def test_validate_mixed_kinds_and_directories(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", GOOD)
    write(tmp_path, "b.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: web}\n")
    result = runner.invoke(app, ["validate", "-f", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "Successfully validated 2 resource(s)\n"


def test_validate_lists_every_problem_and_exits_1(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", BAD)
    good = write(tmp_path, "good.yaml", GOOD)
    result = runner.invoke(app, ["validate", "-f", good, "-f", bad])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"error: {bad}: metadata.name: 'Bad_Name' is not a DNS-1123 subdomain")
    assert lines[1] == f"error: {bad}: spec.ingress[0].action: 'allow' is not allowed: " + (
        "expected 'Allow', 'Deny', 'Log' or 'Pass'"
    )
    assert lines[2] == f"error: {bad}: spec.ingress[0].source.nets[0]: '10.0.0.1/8' has host bits set: " + (
        "the network is 10.0.0.0/8"
    )
    assert lines[3] == "3 problem(s) found; nothing is valid until all are fixed."


def test_validate_json_shape(tmp_path: Path) -> None:
    bad = write(tmp_path, "bad.yaml", BAD)
    result = runner.invoke(app, ["validate", "-o", "json", "-f", bad])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["valid"] is False and doc["resources"] == 0
    assert [(p["source"], p["path"]) for p in doc["problems"]] == [
        (bad, "metadata.name"),
        (bad, "spec.ingress[0].action"),
        (bad, "spec.ingress[0].source.nets[0]"),
    ]
    assert set(doc["problems"][0]) == {"source", "path", "reason"}
    ok = runner.invoke(app, ["validate", "-o", "json", "-f", write(tmp_path, "good.yaml", GOOD)])
    assert (ok.exit_code, json.loads(ok.stdout)) == (0, {"valid": True, "resources": 1, "problems": []})


def test_validate_reads_stdin(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "-f", "-"], input=GOOD)
    assert result.exit_code == 0, result.output
    bad = runner.invoke(app, ["validate", "-f", "-"], input=BAD)
    assert bad.exit_code == 1
    assert bad.stdout.startswith("error: <stdin>: metadata.name: ")


def test_validate_missing_file_and_missing_option(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    result = runner.invoke(app, ["validate", "-f", missing])
    assert result.exit_code == 1
    assert result.stdout.splitlines()[0] == f"error: {missing}: no such file or directory"
    assert runner.invoke(app, ["validate"]).exit_code == 2  # -f is required: a usage error


def test_selector_json_valid_without_labels() -> None:
    result = runner.invoke(app, ["selector", "-o", "json", "app == 'web'"])
    assert result.exit_code == 0
    expected = parse("app == 'web'")
    assert json.loads(result.stdout) == {
        "valid": True,
        "canonical": expected.canonical,
        "id": expected.unique_id,
        "matches": None,
    }


def test_selector_json_matches_labels() -> None:
    args = ["selector", "-o", "json", "app == 'web' && has(tier)"]
    yes = runner.invoke(app, [*args, "--labels", '{"app": "web", "tier": "1"}'])
    no = runner.invoke(app, [*args, "--labels", '{"app": "web"}'])
    assert (yes.exit_code, json.loads(yes.stdout)["matches"]) == (0, True)
    assert (no.exit_code, json.loads(no.stdout)["matches"]) == (0, False)


def test_selector_json_invalid_exits_1_with_the_position() -> None:
    result = runner.invoke(app, ["selector", "-o", "json", "app == "])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "valid": False,
        "error": "selector 'app == ': at position 7: expected a string literal after '==', "
        "found the end of the selector",
    }


def test_selector_text_output() -> None:
    expected = parse("a in {'x','y'}")
    result = runner.invoke(app, ["selector", "a in {'x','y'}", "--labels", '{"a": "y"}'])
    assert result.exit_code == 0
    assert (
        result.stdout == f"canonical: {expected.canonical}\nid:        {expected.unique_id}\nmatches:   yes\n"
    )
    bad = runner.invoke(app, ["selector", "has(a"])
    assert bad.exit_code == 1
    assert bad.stdout.splitlines()[1:] == ["has(a", "     ^"]


def test_selector_bad_labels_is_a_usage_error() -> None:
    for labels in ("not json", "[1]", '{"a": 1}'):
        result = runner.invoke(app, ["selector", "a == 'b'", "--labels", labels])
        assert result.exit_code == 2, labels
        assert "--labels" in result.stderr


def test_every_command_group_is_registered() -> None:
    names = {command.name for command in build_app().registered_commands}
    assert {"validate", "selector", "reach", "explain", "demo"} <= names
