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
from pydantic_core import ErrorDetails

from policycore.model.calico import CALICO_API, KALIKO_API, CalicoNetworkPolicy, GlobalNetworkPolicy, Tier
from policycore.model.common import FieldError
from policycore.model.kube import KubeNetworkPolicy, Namespace, Node, Pod, Service

Resource = (
    Namespace | Pod | Node | Service | KubeNetworkPolicy | CalicoNetworkPolicy | GlobalNetworkPolicy | Tier
)

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
    **{
        (api, k): k
        for api in (KALIKO_API, CALICO_API)
        for k in ("NetworkPolicy", "GlobalNetworkPolicy", "Tier")
    },
}

_API_VERSIONS = tuple(dict.fromkeys(api for api, _ in _BY_API_KIND))
_UNION_BRANCH = re.compile(
    r"^[a-z]+(-[a-z]+)*\[.*\]$|^(constrained-(int|str|float)|lax-or-strict|json-or-python)$"
)
"""pydantic's union and validator tags in an error location. Bare names are never stripped: they
can be dict keys (labels called ``int`` or ``a-b``)."""
_TYPE_NOUNS = {
    "int_type": "an integer",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


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
    """One thing wrong: the field ``path`` in the document (``spec.ingress[0].action``, "" for the
    whole document), why, and the ``source`` document (``file.yaml#1``, "" when not from a file)."""

    path: str
    reason: str
    source: str = ""

    def __str__(self) -> str:
        return ": ".join(part for part in (self.source, self.path, self.reason) if part)


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
    if found is not None:
        return found
    if api_version is None:
        raise ValidationFailed([Problem("apiVersion", "required field is missing")])
    if api_version not in _API_VERSIONS:
        known = ", ".join(_API_VERSIONS)
        raise ValidationFailed(
            [Problem("apiVersion", f"unknown apiVersion {api_version!r} (known: {known})")]
        )
    if kind is None:
        raise ValidationFailed([Problem("kind", "required field is missing")])
    kinds = ", ".join(k for a, k in _BY_API_KIND if a == api_version)
    raise ValidationFailed(
        [Problem("kind", f"unknown kind {kind!r} for apiVersion {api_version} (known: {kinds})")]
    )


def parse_resource(doc: Mapping[str, Any], *, default_namespace: str | None = None) -> Resource:
    """Validate one document into a resource; raise `ValidationFailed` with every problem.

    A namespaced kind without ``metadata.namespace`` gets ``default_namespace`` (or ``default``);
    a cluster-scoped kind with a namespace is a problem. The input is never modified.
    """
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
        problems.extend(problems_of(err))
    if problems:
        raise ValidationFailed(problems)
    return resource  # type: ignore[return-value]


def problems_of(err: ValidationError) -> list[Problem]:
    """Pydantic's errors as `Problem`s: document paths (aliases, ``[i]`` indexes), plain reasons."""
    seen: dict[str, Problem] = {}
    for e in err.errors(include_url=False):
        path = _path(e["loc"])
        reason = _reason(e)
        found = e.get("ctx", {}).get("error")
        if isinstance(found, FieldError):
            path = _join(path, found.path)
            reason = found.reason
        seen.setdefault(path, Problem(path, reason))
    return list(seen.values())


def _path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not _UNION_BRANCH.match(part):
            path = _join(path, part)
    return path


def _join(path: str, sub: str) -> str:
    if not path or not sub:
        return path or sub
    return f"{path}{sub}" if sub.startswith("[") else f"{path}.{sub}"


def _reason(e: ErrorDetails) -> str:
    kind, ctx, value = e["type"], e.get("ctx", {}), e.get("input")
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "required field is missing"
    if kind == "literal_error":
        return f"{value!r} is not allowed: expected {ctx.get('expected')}"
    if kind in _TYPE_NOUNS:
        return f"expected {_TYPE_NOUNS[kind]}, not {type(value).__name__} {value!r}"
    if kind == "too_long" and isinstance(value, list | dict):
        return f"{ctx.get('actual_length')} entries, more than the limit of {ctx.get('max_length')}"
    if kind == "string_too_long":
        return f"{value!r} is longer than {ctx.get('max_length')} characters"
    if kind == "greater_than_equal":
        return f"{value!r} is below the minimum {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"{value!r} is above the maximum {ctx.get('le')}"
    if kind == "string_pattern_mismatch":
        return f"{value!r} does not match {ctx.get('pattern')}"
    return str(e["msg"]).removeprefix("Value error, ")


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
