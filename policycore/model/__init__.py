"""Resource models and the one validator (`resources.parse_resource`), plus manifest reading (`loader`)."""

from policycore.model.common import FieldError
from policycore.model.loader import SourcedDocument, load_resources, parse_documents, read_documents
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
    problems_of,
    to_document,
)

__all__ = [
    "KINDS",
    "FieldError",
    "Problem",
    "Resource",
    "ResourceKey",
    "SourcedDocument",
    "ValidationFailed",
    "canonical_kind",
    "is_namespaced",
    "key_of",
    "kind_of",
    "load_resources",
    "parse_documents",
    "parse_resource",
    "problems_of",
    "read_documents",
    "to_document",
]
