"""Decoding a stored value gives exactly `parse_resource`'s verdict on its JSON document.

`controller.resource_store.decode` validates values straight from their bytes (by the model of
the key's kind) and falls back to the full check for anything that path does not accept. Proves
that this changes nothing: for every kind, the key's model accepts exactly the (apiVersion, kind)
pairs `parse_resource` maps to that kind; and for valid documents of every kind, under their own
key and under other keys, and for Hypothesis-mutated ones (fields dropped or replaced by arbitrary
JSON, namespaces defaulted or added, stored resourceVersions, other encodings), `decode` returns
what the reference — ``json.loads``, resourceVersion set, `parse_resource`, key check — returns:
an equal resource with the same set fields, or `InvalidEntry` with the same reason.
"""

from __future__ import annotations

import copy
import json
import typing
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.resource_store import InvalidEntry, KeyLayout, _from_document, decode, encode
from loadtest.bench_core import Shape, generate
from loadtest.workload import Workload, WorkloadSpec
from policycore.model import KINDS, Resource, ResourceKey, ValidationFailed, key_of, parse_resource
from policycore.model.resources import canonical_kind

LAYOUT = KeyLayout()
REVISION = 41

SERVICE = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web", "namespace": "shop"},
    "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}], "type": "NodePort"},
}


def _documents() -> list[dict[str, Any]]:
    """A few valid documents of every kind, as a datastore holds them."""
    resources: list[Resource] = generate(Shape(pods=40, policies=300, namespaces=20, nodes=4))
    resources += [parse_resource(d) for d in Workload(WorkloadSpec(4, 40, 60, 6)).initial_documents()]
    resources.append(parse_resource(SERVICE))
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for resource in resources:
        by_kind.setdefault(key_of(resource).kind, []).append(json.loads(encode(resource)))
    assert by_kind.keys() == KINDS.keys(), "every kind is covered"
    return [doc for docs in by_kind.values() for doc in docs[:6]]


DOCUMENTS = _documents()
KEYS = [key_of(parse_resource(d)) for d in DOCUMENTS]


def reference(etcd: str, value: bytes) -> Resource | InvalidEntry:
    """What decoding meant before the fast path (and still means when it declines): the full
    check, `_from_document` — ``json.loads``, resourceVersion set, `parse_resource`, key check."""
    key = LAYOUT.resource_key(etcd)
    assert key is not None
    return _from_document(key, etcd, value, REVISION)


def assert_same_verdict(etcd: str, value: bytes) -> Resource | InvalidEntry:
    got, want = decode(LAYOUT, etcd, value, REVISION), reference(etcd, value)
    assert type(got) is type(want), (value, got, want)
    assert got == want, value
    if not isinstance(got, InvalidEntry):
        assert not isinstance(want, InvalidEntry)
        assert got.metadata.resource_version == str(REVISION)
        assert got.model_fields_set == want.model_fields_set
        assert got.metadata.model_fields_set == want.metadata.model_fields_set
        assert encode(got) == encode(want)
    return got


def _literals(model: type, field: str) -> set[str]:
    return set(typing.get_args(model.model_fields[field].annotation))  # type: ignore[attr-defined]


def _canonical(api_version: str, kind: str) -> str | None:
    try:
        return canonical_kind(api_version, kind)
    except ValidationFailed:
        return None


def test_each_kinds_model_accepts_exactly_the_api_kind_pairs_of_that_kind() -> None:
    accepts = {
        kind: {(a, k) for a in _literals(model, "api_version") for k in _literals(model, "kind")}
        for kind, (model, _) in KINDS.items()
    }
    pairs = set().union(*accepts.values())
    for kind, accepted in accepts.items():
        assert accepted == {pair for pair in pairs if _canonical(*pair) == kind}, kind


def test_valid_documents_decode_as_parse_resource_reads_them() -> None:
    for doc, key in zip(DOCUMENTS, KEYS, strict=True):
        decoded = assert_same_verdict(LAYOUT.etcd_key(key), json.dumps(doc).encode())
        assert not isinstance(decoded, InvalidEntry) and key_of(decoded) == key


def test_documents_under_another_key_are_refused_with_the_same_reason() -> None:
    others = [
        ResourceKey("Pod", "default", "pod-0"),
        ResourceKey("Pod", "", "pod-0"),  # a namespaced kind's "_" segment
        ResourceKey("Namespace", "ns-0000", "ns-0000"),  # a cluster-scoped kind with a namespace
        ResourceKey("NetworkPolicy", "ns-0000", "default-deny"),  # the other NetworkPolicy kind
        ResourceKey("KubernetesNetworkPolicy", "ns-0000", "default-deny"),
        ResourceKey("GlobalNetworkPolicy", "", "team-0"),
    ]
    for doc in DOCUMENTS:
        for key in others:
            assert_same_verdict(LAYOUT.etcd_key(key), json.dumps(doc).encode())


def test_a_namespaced_document_without_namespace_is_defaulted_as_parse_resource_does() -> None:
    doc = copy.deepcopy(next(d for d in DOCUMENTS if d["kind"] == "Pod"))
    del doc["metadata"]["namespace"]
    key = ResourceKey("Pod", "default", doc["metadata"]["name"])
    decoded = assert_same_verdict(LAYOUT.etcd_key(key), json.dumps(doc).encode())
    assert not isinstance(decoded, InvalidEntry) and decoded.metadata.namespace == "default"


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
FIELD_NAMES = st.sampled_from(
    ["namespace", "name", "labels", "resourceVersion", "spec", "metadata", "apiVersion", "kind", "ports"]
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


META_VALUES: dict[str, list[Any]] = {
    "namespace": ["", "default", "ns-0000", None, 3],
    "resourceVersion": ["7", "", "x", 7, None],
    "labels": [{}, {"app": "web"}, {"bad key!": "v"}, {"a": 1}],
    "annotations": [{}, {"note": "\u00e9"}, {"a": None}],
    "uid": ["u-1", 1],
    "generation": [1, 1.5, True, "1"],
}


def _mutate_meta(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    """A change that often keeps the document valid (namespaces, stored resourceVersions, ...)."""
    field = draw(st.sampled_from(sorted(META_VALUES)))
    if draw(st.booleans()):
        doc["metadata"].pop(field, None)
    else:
        doc["metadata"][field] = copy.deepcopy(draw(st.sampled_from(META_VALUES[field])))


def _mutate_anywhere(draw: st.DrawFn, doc: dict[str, Any]) -> None:
    path = draw(st.sampled_from(_paths(doc)[1:]))
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    action = draw(st.sampled_from(["drop", "replace", "add"]))
    if action == "drop" and isinstance(parent, dict):
        del parent[path[-1]]
    elif action == "add" and isinstance(parent, dict):
        parent[draw(FIELD_NAMES)] = copy.deepcopy(draw(JSON_VALUES))
    else:
        parent[path[-1]] = copy.deepcopy(draw(JSON_VALUES))


@st.composite
def mutated(draw: st.DrawFn) -> tuple[str, bytes]:
    index = draw(st.integers(0, len(DOCUMENTS) - 1))
    doc = copy.deepcopy(DOCUMENTS[index])
    for _ in range(draw(st.integers(0, 3))):
        if isinstance(doc.get("metadata"), dict) and draw(st.booleans()):
            _mutate_meta(draw, doc)
        else:
            _mutate_anywhere(draw, doc)
    key = draw(st.sampled_from([KEYS[index], ResourceKey(KEYS[index].kind, "default", KEYS[index].name)]))
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1])))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "utf-8-sig", "utf-16"]))
    return LAYOUT.etcd_key(key), text.encode(encoding)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_documents_get_parse_resources_verdict(case: tuple[str, bytes]) -> None:
    assert_same_verdict(*case)


@given(st.sampled_from(DOCUMENTS), st.sampled_from(["\\ud800", "\\u0000", "\u00e9", "\\u00e9"]))
def test_odd_strings_get_parse_resources_verdict(doc: dict[str, Any], text: str) -> None:
    raw = json.dumps({**doc, "metadata": {**doc["metadata"], "annotations": {"a": "X"}}})
    key = key_of(parse_resource(doc))
    assert_same_verdict(LAYOUT.etcd_key(key), raw.replace('"X"', f'"{text}"').encode())
