"""The one validator: documents in, typed resources (or every problem, with its field path) out.

Owns the kind registry (apiVersion + kind → model), `ResourceKey`, `Problem` / `ValidationFailed`
and the conversion back to documents. CLI, admin API and the controller's input filter all call
`parse_resource`; nothing partial is ever returned. It does not read files (`loader`) or decide
what resources mean (`policycore.calc`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from policycore.model.calico import CALICO_API, KALIKO_API, CalicoNetworkPolicy, GlobalNetworkPolicy, Tier
from policycore.model.kube import KubeNetworkPolicy, Namespace, Node, Pod, Service

Resource = Namespace | Pod | Node | Service | KubeNetworkPolicy | CalicoNetworkPolicy | GlobalNetworkPolicy | Tier

#: canonical kind name → (model, namespaced)
KINDS: dict[str, tuple[type[BaseModel], bool]] = {
    "Namespace": (Namespace, False),
    "Node": (Node, False),
    "Pod": (Pod, True),
    "Service": (Service, True),
    "KubernetesNetworkPolicy": (KubeNetworkPolicy, True),
    "NetworkPolicy": (CalicoNetworkPolicy, True),
    "GlobalNetworkPolicy": (GlobalNetworkPolicy, False),
    "Tier": (Tier, False),
}

_BY_API_KIND: dict[tuple[str, str], str] = {
    ("v1", "Namespace"): "Namespace",
    ("v1", "Node"): "Node",
    ("v1", "Pod"): "Pod",
    ("v1", "Service"): "Service",
    ("networking.k8s.io/v1", "NetworkPolicy"): "KubernetesNetworkPolicy",
    **{(api, k): k for api in (KALIKO_API, CALICO_API) for k in ("NetworkPolicy", "GlobalNetworkPolicy", "Tier")},
}

_UNION_BRANCH = re.compile(r"^(int|str|float|bool|list\[.*\]|dict\[.*\]|function-.*|constrained-.*|literal\[.*\])$")
_LEADING_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9]*(\[\d+\])?): (.*)$", re.S)


@dataclass(frozen=True, slots=True, order=True)
class ResourceKey:
    """Identity of a resource: canonical kind, namespace ("" when cluster-scoped), name."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class ValidationFailed(ValueError):
    """A document that is not a valid resource; ``problems`` lists every one found."""

    def __init__(self, problems: list[Problem], source: str = "") -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "; ".join(str(p) for p in problems))


def canonical_kind(api_version: object, kind: object) -> str:
    """The canonical kind for an (apiVersion, kind) pair, or raise `ValidationFailed`."""
    found = _BY_API_KIND.get((str(api_version), str(kind)))
    if found is None:
        known = ", ".join(f"{a} {k}" for a, k in _BY_API_KIND)
        raise ValidationFailed([Problem("kind", f"unknown apiVersion/kind {api_version}/{kind} (known: {known})")])
    return found


def parse_resource(doc: Mapping[str, Any], *, default_namespace: str | None = None) -> Resource:
    """Validate one document into a resource; raise `ValidationFailed` with every problem."""
    if not isinstance(doc, Mapping):
        raise ValidationFailed([Problem("", f"a resource must be a mapping, not {type(doc).__name__}")])
    kind = canonical_kind(doc.get("apiVersion"), doc.get("kind"))
    model, namespaced = KINDS[kind]
    data = dict(doc)
    meta = data.get("metadata")
    problems: list[Problem] = []
    if isinstance(meta, Mapping):
        meta = dict(meta)
        if namespaced and not meta.get("namespace"):
            meta["namespace"] = default_namespace or "default"
        elif not namespaced and meta.get("namespace"):
            problems.append(Problem("metadata.namespace", f"{kind} is cluster-scoped and takes no namespace"))
        data["metadata"] = meta
    try:
        resource = model.model_validate(data)
    except ValidationError as err:
        problems.extend(_problems(err))
    if problems:
        raise ValidationFailed(problems)
    return resource  # type: ignore[return-value]


def _problems(err: ValidationError) -> list[Problem]:
    seen: dict[str, Problem] = {}
    for e in err.errors(include_url=False):
        parts = [p for p in e["loc"] if not (isinstance(p, str) and _UNION_BRANCH.match(p))]
        path = ""
        for part in parts:
            path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
        message = str(e["msg"]).removeprefix("Value error, ")
        lead = _LEADING_FIELD.match(message)
        if lead and e["type"] == "value_error":
            path = f"{path}.{lead.group(1)}" if path else lead.group(1)
            message = lead.group(3)
        if e["type"] == "extra_forbidden":
            message = "unknown field"
        if e["type"] == "literal_error":
            message = f"{e['input']!r} is not allowed: {message.removeprefix('Input should be ')}"
        seen.setdefault(path, Problem(path, message))
    return list(seen.values())


def key_of(resource: Resource) -> ResourceKey:
    kind = kind_of(resource)
    return ResourceKey(kind, resource.metadata.namespace or "", resource.metadata.name)


def kind_of(resource: Resource) -> str:
    for kind, (model, _) in KINDS.items():
        if type(resource) is model:
            return kind
    raise TypeError(f"not a resource: {type(resource).__name__}")


def is_namespaced(kind: str) -> bool:
    return KINDS[kind][1]


def to_document(resource: Resource) -> dict[str, Any]:
    """The resource as a document that `parse_resource` accepts back unchanged."""
    return resource.model_dump(by_alias=True, exclude_none=True, mode="json")
