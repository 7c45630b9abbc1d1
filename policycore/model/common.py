"""Shared pieces of every resource model: strict pydantic config, names, labels, metadata.

Owns the base model (unknown fields rejected, immutable, camelCase aliases), DNS-1123 name and
label-key checks and `ObjectMeta`. It does not own any kind (see `kube`, `calico`) nor how
problems are reported (`policycore.model.resources`).
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?)$")


class Strict(BaseModel):
    """Base of every model: unknown fields are errors, values are immutable, JSON uses camelCase."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, alias_generator=to_camel, str_strip_whitespace=False
    )


def _dns1123_subdomain(value: str) -> str:
    if len(value) > 253:
        raise ValueError(f"{value!r} is longer than 253 characters")
    if not DNS1123_SUBDOMAIN.match(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit)"
        )
    return value


def _dns1123_label(value: str) -> str:
    if len(value) > 63:
        raise ValueError(f"{value!r} is longer than 63 characters")
    if not DNS1123_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit)"
        )
    return value


def _label_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if prefix:
        _dns1123_subdomain(prefix)
    if not name or len(name) > 63 or not LABEL_NAME.match(name):
        raise ValueError(f"label key {key!r}: name part must be 1-63 characters of [A-Za-z0-9_.-], alphanumeric at both ends")
    return key


def _labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        _label_key(key)
        if len(value) > 63 or not LABEL_VALUE.match(value):
            raise ValueError(f"label {key!r}: value {value!r} must be at most 63 characters of [A-Za-z0-9_.-]")
    return labels


ObjectName = Annotated[str, AfterValidator(_dns1123_subdomain)]
NamespaceName = Annotated[str, AfterValidator(_dns1123_label)]
Labels = Annotated[dict[str, str], AfterValidator(_labels)]


class ObjectMeta(Strict):
    """The part of Kubernetes' metadata Kaliko uses. ``resourceVersion`` is etcd's mod_revision."""

    name: ObjectName
    namespace: NamespaceName | None = None
    labels: Labels = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    resource_version: str | None = None
    uid: str | None = None
    creation_timestamp: str | None = None
    generation: int | None = None
