"""Kubernetes kinds Kaliko reads: Namespace, Pod, Node, Service and networking.k8s.io/v1 NetworkPolicy.

Owns their pydantic models and the checks Kubernetes' own validation makes (ports in range,
endPort needs a numeric port at or above it, valid CIDRs without host bits, excepts inside the
CIDR, selector operators). It does not own what they mean for enforcement (`policycore.calc`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from policycore.model.common import (
    CidrText,
    DnsLabel,
    FieldError,
    IpText,
    Labels,
    NamespaceName,
    ObjectMeta,
    ObjectName,
    Strict,
    check_cidr,
    check_dns1123_label,
    check_label_key,
    check_label_value,
)

Protocol = Literal["TCP", "UDP", "SCTP"]
PortNumber = Annotated[int, Field(ge=1, le=65535)]
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
IANA_SVC_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def _port_or_name(value: object) -> int | str:
    """A Kubernetes IntOrString port: 1-65535, or an IANA service name (what named ports use)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"a port must be a number 1-65535 or a port name, not {value!r}")
    if isinstance(value, int):
        if not 1 <= value <= 65535:
            raise ValueError(f"port {value} is out of range 1-65535")
        return value
    if (
        len(value) > 15
        or not IANA_SVC_NAME.match(value)
        or "--" in value
        or not any(c.isalpha() for c in value)
    ):
        raise ValueError(
            f"{value!r} is not a port name (1-15 lower-case letters, digits and '-', with at least one "
            "letter, no '--', alphanumeric at both ends)"
        )
    return value


PortOrName = Annotated[int | str, BeforeValidator(_port_or_name)]


class LabelSelectorRequirement(Strict):
    key: Annotated[str, AfterValidator(check_label_key)]
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        if self.operator in ("In", "NotIn") and not self.values:
            raise FieldError("values", f"must be non-empty for operator {self.operator}")
        if self.operator in ("Exists", "DoesNotExist") and self.values:
            raise FieldError("values", f"must be empty for operator {self.operator}")
        for i, value in enumerate(self.values):
            try:
                check_label_value(self.key, value)
            except ValueError as err:
                raise FieldError(f"values[{i}]", str(err)) from None
        return self


class LabelSelector(Strict):
    match_labels: Labels = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)


class ObjectWithMeta(Strict):
    metadata: ObjectMeta


class Namespace(ObjectWithMeta):
    api_version: Literal["v1"]
    kind: Literal["Namespace"]
    spec: dict[str, object] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _name_is_a_label(self) -> Namespace:
        try:
            check_dns1123_label(self.metadata.name)
        except ValueError as err:
            raise FieldError("metadata.name", str(err)) from None
        return self

    def effective_labels(self) -> dict[str, str]:
        """Labels as Kubernetes stores them: ``kubernetes.io/metadata.name`` is always present."""
        return {**self.metadata.labels, NAMESPACE_NAME_LABEL: self.metadata.name}


class ContainerPort(Strict):
    name: str | None = Field(default=None, max_length=15, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    container_port: PortNumber
    protocol: Protocol = "TCP"
    host_port: PortNumber | None = None


class Container(Strict):
    name: DnsLabel = "main"
    image: str | None = None
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    ports: list[ContainerPort] = Field(default_factory=list)


class PodSpec(Strict):
    node_name: ObjectName | None = None
    service_account_name: ObjectName = "default"
    containers: list[Container] = Field(default_factory=list)


class PodIP(Strict):
    ip: IpText


class PodStatus(Strict):
    pod_ip: IpText | None = Field(default=None, alias="podIP")
    pod_ips: list[PodIP] = Field(default_factory=list, alias="podIPs")
    phase: str | None = None


class Pod(ObjectWithMeta):
    api_version: Literal["v1"]
    kind: Literal["Pod"]
    spec: PodSpec = Field(default_factory=PodSpec)
    status: PodStatus = Field(default_factory=PodStatus)

    def ips(self) -> tuple[str, ...]:
        """The pod's IPs: ``status.podIP`` first, then ``status.podIPs``, de-duplicated, in order."""
        seen = [p.ip for p in self.status.pod_ips]
        if self.status.pod_ip and self.status.pod_ip not in seen:
            seen.insert(0, self.status.pod_ip)
        return tuple(dict.fromkeys(seen))


class Node(ObjectWithMeta):
    api_version: Literal["v1"]
    kind: Literal["Node"]
    spec: dict[str, object] = Field(default_factory=dict)


class ServicePort(Strict):
    name: str | None = None
    port: PortNumber
    target_port: PortOrName | None = None
    node_port: PortNumber | None = None
    protocol: Protocol = "TCP"


class ServiceSpec(Strict):
    selector: Labels = Field(default_factory=dict)
    ports: list[ServicePort] = Field(default_factory=list)
    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"


class Service(ObjectWithMeta):
    api_version: Literal["v1"]
    kind: Literal["Service"]
    spec: ServiceSpec = Field(default_factory=ServiceSpec)


class IPBlock(Strict):
    cidr: CidrText
    except_: list[CidrText] = Field(default_factory=list, alias="except")

    @model_validator(mode="after")
    def _excepts_inside(self) -> IPBlock:
        outer = ipaddress.ip_network(self.cidr)
        for i, value in enumerate(self.except_):
            inner = ipaddress.ip_network(value)
            if inner.version != outer.version or not inner.subnet_of(outer):  # type: ignore[arg-type]
                raise FieldError(f"except[{i}]", f"{value} is not inside cidr {self.cidr}")
        return self


class NetworkPolicyPeer(Strict):
    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: IPBlock | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> NetworkPolicyPeer:
        if self.ip_block is not None and (
            self.pod_selector is not None or self.namespace_selector is not None
        ):
            raise FieldError(
                "ipBlock", "cannot be combined with podSelector or namespaceSelector in one peer"
            )
        if self.ip_block is None and self.pod_selector is None and self.namespace_selector is None:
            raise ValueError("a peer needs podSelector, namespaceSelector or ipBlock")
        return self


class NetworkPolicyPort(Strict):
    protocol: Protocol = "TCP"
    port: PortOrName | None = None
    end_port: PortNumber | None = None

    @model_validator(mode="after")
    def _end_port(self) -> NetworkPolicyPort:
        if self.end_port is not None:
            if self.port is None or isinstance(self.port, str):
                raise FieldError("endPort", "requires a numeric port")
            if self.end_port < self.port:
                raise FieldError("endPort", f"{self.end_port} is below port {self.port}")
        return self


class IngressRule(Strict):
    from_: list[NetworkPolicyPeer] = Field(default_factory=list, alias="from")
    ports: list[NetworkPolicyPort] = Field(default_factory=list)


class EgressRule(Strict):
    to: list[NetworkPolicyPeer] = Field(default_factory=list)
    ports: list[NetworkPolicyPort] = Field(default_factory=list)


class KubeNetworkPolicySpec(Strict):
    pod_selector: LabelSelector
    policy_types: list[Literal["Ingress", "Egress"]] | None = None
    ingress: list[IngressRule] = Field(default_factory=list, max_length=1024)
    egress: list[EgressRule] = Field(default_factory=list, max_length=1024)

    @model_validator(mode="after")
    def _types_once(self) -> KubeNetworkPolicySpec:
        for i, kind in enumerate(self.policy_types or ()):
            if kind in (self.policy_types or [])[:i]:
                raise FieldError(f"policyTypes[{i}]", f"{kind!r} is listed more than once")
        return self

    def effective_types(self) -> tuple[str, ...]:
        """Kubernetes' defaulting: no policyTypes → Ingress, plus Egress if there are egress rules."""
        if self.policy_types:
            return tuple(t for t in ("Ingress", "Egress") if t in self.policy_types)
        return ("Ingress", "Egress") if self.egress else ("Ingress",)


class KubeNetworkPolicy(ObjectWithMeta):
    api_version: Literal["networking.k8s.io/v1"]
    kind: Literal["NetworkPolicy"]
    spec: KubeNetworkPolicySpec


__all__ = [
    "NAMESPACE_NAME_LABEL",
    "Container",
    "ContainerPort",
    "KubeNetworkPolicy",
    "LabelSelector",
    "Labels",
    "Namespace",
    "NamespaceName",
    "Node",
    "Pod",
    "Service",
    "check_cidr",
]
