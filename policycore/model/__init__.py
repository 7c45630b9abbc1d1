"""Resource models and the one validator (see `resources`)."""

from policycore.model.resources import (
    KINDS,
    Problem,
    Resource,
    ResourceKey,
    ValidationFailed,
    canonical_kind,
    is_namespaced,
    key_of,
    kind_of,
    parse_resource,
    to_document,
)

__all__ = [
    "KINDS",
    "Problem",
    "Resource",
    "ResourceKey",
    "ValidationFailed",
    "canonical_kind",
    "is_namespaced",
    "key_of",
    "kind_of",
    "parse_resource",
    "to_document",
]
