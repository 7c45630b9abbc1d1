"""Admin API input: JSON documents, resource refs and selectors checked into typed values, or rejected.

Owns `AdminError` (a gRPC status code, a message and every problem found, each naming the
document index and field path) and the checks every admin method runs on its request before
touching the datastore: `parse_batch` (every document validated by the one validator, duplicates
refused), `ref_key` (a `ResourceRef` to a `ResourceKey`), `parse_label_selector`. It does not
own what is done with the values (`admin_writes`, `admin_reads`) or the gRPC mapping (`admin`).

Invariants: a check either returns values for the whole request or raises one `AdminError`
listing every problem (never the first only); problems name ``document`` = the index in the
request's documents (or refs), -1 for the request as a whole.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from controller.resource_store import expected_revision
from policycore.model import (
    KINDS,
    Resource,
    ResourceKey,
    ValidationFailed,
    is_namespaced,
    key_of,
    parse_resource,
)
from policycore.selector import Selector, SelectorError, parse

PROBLEMS_METADATA = "kaliko-problems"
REQUEST = -1


@dataclass(frozen=True, slots=True)
class BatchProblem:
    """One problem of one item of a request: ``collection[document]`` (``document`` = -1: the
    request itself), the field ``path`` inside it and why."""

    document: int
    path: str
    reason: str
    collection: str = "documents"

    def __str__(self) -> str:
        where = f"{self.collection}[{self.document}]" if self.document >= 0 else ""
        return ": ".join(part for part in (where, self.path, self.reason) if part)

    def to_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "document": self.document,
            "path": self.path,
            "reason": self.reason,
        }


@dataclass
class AdminError(Exception):
    """A request the admin API refuses: ``code`` for gRPC, a message, and the problems behind it."""

    code: grpc.StatusCode
    message: str
    problems: list[BatchProblem] = field(default_factory=list)

    def __str__(self) -> str:
        return self.message

    def details(self) -> str:
        """The message, then one line per problem (what a client prints)."""
        return "\n".join([self.message, *(str(p) for p in self.problems)])

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        if not self.problems:
            return ()
        return ((PROBLEMS_METADATA, json.dumps([p.to_json() for p in self.problems])),)


def invalid(problems: list[BatchProblem], what: str = "request") -> AdminError:
    return AdminError(
        grpc.StatusCode.INVALID_ARGUMENT, f"invalid {what}: {len(problems)} problem(s)", problems
    )


def parse_batch(documents_json: Sequence[str]) -> list[Resource]:
    """Every document as a resource, or `AdminError` (INVALID_ARGUMENT) listing every problem.

    Two documents naming the same resource are a problem: a batch changes each resource once."""
    if not documents_json:
        raise invalid([BatchProblem(REQUEST, "documents_json", "at least one document is required")])
    problems: list[BatchProblem] = []
    resources: list[Resource] = []
    first_index: dict[ResourceKey, int] = {}
    for index, text in enumerate(documents_json):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            problems.append(BatchProblem(index, "", f"not valid JSON: {err}"))
            continue
        try:
            resource = parse_resource(doc)
        except ValidationFailed as err:
            problems += [BatchProblem(index, p.path, p.reason) for p in err.problems]
            continue
        key = key_of(resource)
        if key in first_index:
            reason = f"{key} is also documents[{first_index[key]}]; a batch may change a resource once"
            problems.append(BatchProblem(index, "metadata.name", reason))
            continue
        first_index[key] = index
        resources.append(resource)
    if problems:
        raise invalid(problems, "documents")
    return resources


def delete_targets(documents_json: Sequence[str]) -> list[tuple[ResourceKey, int | None]]:
    """What ``delete -f`` names: each document's key and the resourceVersion it must still have."""
    targets: list[tuple[ResourceKey, int | None]] = []
    problems: list[BatchProblem] = []
    for index, resource in enumerate(parse_batch(documents_json)):
        try:
            targets.append((key_of(resource), expected_revision(resource)))
        except ValidationFailed as err:
            problems += [BatchProblem(index, p.path, p.reason) for p in err.problems]
    if problems:
        raise invalid(problems, "documents")
    return targets


def kind_problem(kind: str) -> str | None:
    """Why ``kind`` is not a canonical kind name, or None."""
    if kind in KINDS:
        return None
    return f"unknown kind {kind!r} (known: {', '.join(KINDS)})"


def ref_key(kind: str, namespace: str, name: str, *, index: int = REQUEST) -> ResourceKey:
    """The key a ref names (``index``: its place in a request's refs, -1 for the request's one
    ``ref``); a namespaced kind without a namespace is in ``default``."""
    problems: list[BatchProblem] = []
    prefix = "ref." if index == REQUEST else ""

    def problem(name: str, reason: str) -> None:
        problems.append(BatchProblem(index, prefix + name, reason, collection="refs"))

    wrong_kind = kind_problem(kind)
    if wrong_kind is not None:
        problem("kind", wrong_kind)
    if not name:
        problem("name", "required field is missing")
    if wrong_kind is None and not is_namespaced(kind) and namespace:
        problem("namespace", f"{kind} is cluster-scoped and takes no namespace")
    if problems:
        raise invalid(problems)
    return ResourceKey(kind, (namespace or "default") if is_namespaced(kind) else "", name)


def ref_keys(refs: Sequence[Any]) -> list[ResourceKey]:
    """Keys of every `ResourceRef` in a request, or `AdminError` listing every problem."""
    problems: list[BatchProblem] = []
    keys: list[ResourceKey] = []
    for index, ref in enumerate(refs):
        try:
            keys.append(ref_key(ref.kind, ref.namespace, ref.name, index=index))
        except AdminError as err:
            problems += err.problems
    if problems:
        raise invalid(problems)
    return keys


def parse_label_selector(text: str) -> Selector:
    try:
        return parse(text)
    except SelectorError as err:
        raise invalid([BatchProblem(REQUEST, "label_selector", str(err))]) from None


def not_leader() -> AdminError:
    return AdminError(
        grpc.StatusCode.UNAVAILABLE, "this controller is not the leader or not in sync with the datastore yet"
    )
