"""Reading manifests: multi-document YAML and JSON, directories, ``-``, and all-or-nothing loading."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policycore.model import Problem, ValidationFailed, load_resources, read_documents
from policycore.model.kube import Namespace, Pod

NS = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"
POD = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: shop\n"


def names(resources: list[object]) -> list[str]:
    return [r.metadata.name for r in resources]  # type: ignore[attr-defined]


def test_multi_document_yaml_with_empty_documents(tmp_path: Path) -> None:
    f = tmp_path / "all.yaml"
    f.write_text("---\n" + NS.format(name="a") + "---\n---\n" + POD.format(name="p") + "---\n")
    resources = load_resources([str(f)])
    assert names(resources) == ["a", "p"]
    assert [type(r) for r in resources] == [Namespace, Pod]
    assert [d.source for d in read_documents([str(f)])] == [f"{f}#0", f"{f}#1"]


def test_json_object_array_and_stream(tmp_path: Path) -> None:
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}}
    one, array, stream = tmp_path / "one.json", tmp_path / "array.json", tmp_path / "stream.json"
    one.write_text(json.dumps(ns))
    array.write_text(json.dumps([ns, {**ns, "metadata": {"name": "b"}}]))
    stream.write_text(json.dumps(ns) + "\n" + json.dumps({**ns, "metadata": {"name": "c"}}) + "\n")
    assert names(load_resources([str(one)])) == ["a"]
    assert names(load_resources([str(array)])) == ["a", "b"]
    assert [d.source for d in read_documents([str(array)])] == [f"{array}[0]", f"{array}[1]"]
    assert names(load_resources([str(stream)])) == ["a", "c"]


def test_list_kind_is_flattened(tmp_path: Path) -> None:
    f = tmp_path / "list.yaml"
    f.write_text(
        "apiVersion: v1\nkind: List\nitems:\n"
        "- {apiVersion: v1, kind: Namespace, metadata: {name: x}}\n"
        "- {apiVersion: v1, kind: Namespace, metadata: {name: y}}\n"
    )
    assert names(load_resources([str(f)])) == ["x", "y"]
    assert [d.source for d in read_documents([str(f)])] == [f"{f}.items[0]", f"{f}.items[1]"]


def test_directory_sorted_manifests_only_and_recursion(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text(NS.format(name="b"))
    (tmp_path / "a.yaml").write_text(NS.format(name="a"))
    (tmp_path / "c.json").write_text(
        json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "c"}})
    )
    (tmp_path / "notes.txt").write_text("not a manifest")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "d.yaml").write_text(NS.format(name="d"))
    assert names(load_resources([str(tmp_path)])) == ["a", "b", "c"]
    assert names(load_resources([str(tmp_path)], recursive=True)) == ["a", "b", "c", "d"]


def test_stdin_dash_reads_the_given_text(tmp_path: Path) -> None:
    f = tmp_path / "f.yaml"
    f.write_text(NS.format(name="from-file"))
    resources = load_resources([str(f), "-"], stdin_text=NS.format(name="from-stdin"))
    assert names(resources) == ["from-file", "from-stdin"]
    assert read_documents(["-"], NS.format(name="x"))[0].source == "<stdin>"


def test_every_problem_of_every_document_and_nothing_partial(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(NS.format(name="fine"))
    bad = tmp_path / "bad.yaml"
    bad.write_text(NS.format(name="Bad") + "---\n" + NS.format(name="ok") + "---\n" + POD.format(name="p_1"))
    with pytest.raises(ValidationFailed) as err:
        load_resources([str(good), str(bad)])
    assert [(p.source, p.path) for p in err.value.problems] == [
        (f"{bad}#0", "metadata.name"),
        (f"{bad}#2", "metadata.name"),
    ]
    assert str(err.value.problems[0]).startswith(f"{bad}#0: metadata.name: 'Bad' is not a DNS-1123 subdomain")


def test_missing_paths_and_unparsable_files_are_all_reported(tmp_path: Path) -> None:
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("a: [1, 2\n")
    broken_json = tmp_path / "broken.json"
    broken_json.write_text('{"a": 1,}')
    missing = str(tmp_path / "missing.yaml")
    with pytest.raises(ValidationFailed) as err:
        load_resources([missing, str(broken_yaml), str(broken_json)])
    found = err.value.problems
    assert found[0] == Problem("", "no such file or directory", source=missing)
    assert found[1].source == str(broken_yaml) and found[1].reason.startswith("not valid YAML: ")
    assert "line 2" in found[1].reason
    assert found[2].source == str(broken_json) and found[2].reason.startswith("not valid JSON: ")
    assert "line 1 column 9" in found[2].reason
    assert len(found) == 3


def test_timestamps_stay_strings(tmp_path: Path) -> None:
    f = tmp_path / "ns.yaml"
    f.write_text(NS.format(name="a") + "  creationTimestamp: 2024-01-02T03:04:05Z\n")
    (ns,) = load_resources([str(f)])
    assert ns.metadata.creation_timestamp == "2024-01-02T03:04:05Z"


def test_default_namespace_applies_to_namespaced_kinds(tmp_path: Path) -> None:
    f = tmp_path / "pod.yaml"
    f.write_text("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n")
    (pod,) = load_resources([str(f)], default_namespace="stars")
    assert pod.metadata.namespace == "stars"


def test_a_scalar_document_is_a_problem(tmp_path: Path) -> None:
    f = tmp_path / "scalar.yaml"
    f.write_text("just a string\n")
    with pytest.raises(ValidationFailed) as err:
        load_resources([str(f)])
    assert err.value.problems == [Problem("", "a resource must be a mapping, not str", source=str(f))]
