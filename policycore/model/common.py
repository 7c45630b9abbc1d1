"""Shared pieces of every resource model: strict pydantic config, names, labels, IPs, CIDRs.

Owns the base model (unknown fields rejected, no type coercion, immutable, camelCase aliases
only), `FieldError` (a check's reason plus the sub-path it is about), DNS-1123 name, label,
IP and CIDR checks and `ObjectMeta`. It does not own any kind (see `kube`, `calico`) nor how
problems are reported (`policycore.model.resources`).

Invariants:

* documents are read by alias only (``notNets``, never ``not_nets``), in strict mode: ``"80"`` is
  not a number and ``true`` is not a port;
* a CIDR is accepted only with an explicit prefix length and no host bits set (the message
  names the network it would have been).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?)$")


class FieldError(ValueError):
    """A check that failed on a part of the value: ``path`` (e.g. ``"ports[1].endPort"``) is
    relative to where the validator runs; the problem reporter appends it to the location."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


class Strict(BaseModel):
    """Base of every model: unknown fields are errors, no coercion, immutable, camelCase aliases."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
    )


def check_dns1123_subdomain(value: str) -> str:
    if len(value) > 253:
        raise ValueError(f"{value!r} is longer than 253 characters")
    if not DNS1123_SUBDOMAIN.match(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit)"
        )
    return value


def check_dns1123_label(value: str) -> str:
    if len(value) > 63:
        raise ValueError(f"{value!r} is longer than 63 characters")
    if not DNS1123_LABEL.match(value):
        raise ValueError(
            f"{value!r} is not a DNS-1123 label (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit)"
        )
    return value


def check_label_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not DNS1123_SUBDOMAIN.match(prefix)):
        raise ValueError(f"label key {key!r}: prefix {prefix!r} is not a DNS-1123 subdomain")
    if not name or len(name) > 63 or not LABEL_NAME.match(name):
        raise ValueError(
            f"label key {key!r}: name part must be 1-63 characters of [A-Za-z0-9_.-], "
            "alphanumeric at both ends"
        )
    return key


def check_label_value(key: str, value: str) -> str:
    if len(value) > 63 or not LABEL_VALUE.match(value):
        raise ValueError(
            f"label {key!r}: value {value!r} must be at most 63 characters of [A-Za-z0-9_.-], "
            "alphanumeric at both ends"
        )
    return value


def _labels(labels: dict[str, str]) -> dict[str, str]:
    for key, value in labels.items():
        check_label_key(key)
        check_label_value(key, value)
    return labels


def check_ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IP address") from None
    return value


def check_cidr(value: str) -> str:
    """A CIDR as Kubernetes and Calico accept it: valid, and no host bits set (says which)."""
    address, slash, _ = value.partition("/")
    try:
        net = ipaddress.ip_network(value, strict=False)
    except ValueError as err:
        raise ValueError(f"{value!r} is not a valid CIDR: {err}") from None
    if not slash:
        raise ValueError(f"{value!r} is not a CIDR: a prefix length is required (e.g. {net.with_prefixlen})")
    if ipaddress.ip_address(address) != net.network_address:
        raise ValueError(f"{value!r} has host bits set: the network is {net.with_prefixlen}")
    return value


ObjectName = Annotated[str, AfterValidator(check_dns1123_subdomain)]
DnsLabel = Annotated[str, AfterValidator(check_dns1123_label)]
NamespaceName = DnsLabel
Labels = Annotated[dict[str, str], AfterValidator(_labels)]
IpText = Annotated[str, AfterValidator(check_ip)]
CidrText = Annotated[str, AfterValidator(check_cidr)]


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
