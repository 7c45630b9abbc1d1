"""Kaliko's own policy kinds (``kaliko.io/v1``, alias ``projectcalico.org/v3``) with Calico's semantics.

Owns the models of `CalicoNetworkPolicy` (namespaced), `GlobalNetworkPolicy`, `Tier` (named by a
DNS-1123 label, as ``spec.tier`` is) and their `Rule` / `EntityRule`, with Calico's validation:
actions, protocols, ICMP only with ICMP protocols, ports only with TCP/UDP/SCTP, port ranges
``"a:b"`` with a <= b, named ports, CIDRs without host bits, selectors that parse, and Calico's
size limits (1024 rules per direction, selectors <= 1024 characters, <= 256 nets and <= 50 ports
per entity rule). It does not own defaulting of ``types`` into effect or selector rewriting
(`policycore.calc.normalize`).
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
    ObjectMeta,
    ObjectName,
    Strict,
    check_dns1123_label,
)
from policycore.selector import SelectorError, parse

KALIKO_API = "kaliko.io/v1"
CALICO_API = "projectcalico.org/v3"
ApiVersion = Literal["kaliko.io/v1", "projectcalico.org/v3"]
MAX_RULES = 1024
MAX_SELECTOR_LENGTH = 1024
MAX_NETS = 256
MAX_PORTS = 50
NAMED_PORT = re.compile(r"^[a-zA-Z0-9_.-]{1,128}$")
PROTOCOL_NAMES = ("TCP", "UDP", "ICMP", "ICMPv6", "SCTP", "UDPLite")
PORT_PROTOCOLS = ("TCP", "UDP", "SCTP", 6, 17, 132)
ICMP_PROTOCOLS = ("ICMP", "ICMPv6", 1, 58)


def _selector(value: str) -> str:
    if len(value) > MAX_SELECTOR_LENGTH:
        raise ValueError(f"selector is {len(value)} characters, more than the limit of {MAX_SELECTOR_LENGTH}")
    try:
        parse(value)
    except SelectorError as err:
        raise ValueError(str(err)) from None
    return value


def _no_global(value: str) -> str:
    if parse(value).uses_global():
        raise ValueError(f"selector {value!r}: global() is only allowed in a rule's namespaceSelector")
    return value


def _port(value: object) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"a port must be a number, a range 'min:max' or a name, not {value!r}")
    if isinstance(value, int):
        if not 0 <= value <= 65535:
            raise ValueError(f"port {value} is out of range 0-65535")
        return value
    if ":" in value:
        first, _, last = value.partition(":")
        if not (first.isdigit() and last.isdigit()):
            raise ValueError(f"port range {value!r} must be 'min:max' with numbers")
        lo, hi = int(first), int(last)
        if hi > 65535:
            raise ValueError(f"port range {value!r}: {hi} is out of range 0-65535")
        if lo > hi:
            raise ValueError(f"port range {value!r}: min {lo} is above max {hi}")
        return value
    if value.isdigit():
        return _port(int(value))
    if not NAMED_PORT.match(value):
        raise ValueError(
            f"{value!r} is not a port number, a range or a valid port name ([a-zA-Z0-9_.-]{{1,128}})"
        )
    return value


def _protocol(value: object) -> int | str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"protocol must be a name or a number 1-255, not {value!r}")
    if isinstance(value, int):
        if not 1 <= value <= 255:
            raise ValueError(f"protocol {value} is out of range 1-255")
        return value
    if value not in PROTOCOL_NAMES:
        raise ValueError(f"protocol {value!r} is not one of {', '.join(PROTOCOL_NAMES)} or a number 1-255")
    return value


def _global_alone(value: str) -> str:
    selector = parse(value)
    if selector.uses_global() and selector.canonical != "global()":
        raise ValueError(f"selector {value!r}: global() must be the whole namespaceSelector")
    return value


SelectorText = Annotated[str, AfterValidator(_selector)]
NamespaceSelectorText = Annotated[str, AfterValidator(_selector), AfterValidator(_global_alone)]
PolicySelectorText = Annotated[str, AfterValidator(_selector), AfterValidator(_no_global)]
Port = Annotated[int | str, BeforeValidator(_port)]
ProtocolValue = Annotated[int | str, BeforeValidator(_protocol)]


class ServiceAccountMatch(Strict):
    names: list[ObjectName] = Field(default_factory=list)
    selector: SelectorText = ""


class EntityRule(Strict):
    nets: list[CidrText] = Field(default_factory=list, max_length=MAX_NETS)
    not_nets: list[CidrText] = Field(default_factory=list, max_length=MAX_NETS)
    selector: PolicySelectorText = ""
    not_selector: PolicySelectorText = ""
    namespace_selector: NamespaceSelectorText = ""
    service_accounts: ServiceAccountMatch | None = None
    ports: list[Port] = Field(default_factory=list, max_length=MAX_PORTS)
    not_ports: list[Port] = Field(default_factory=list, max_length=MAX_PORTS)


class IcmpFields(Strict):
    type: Annotated[int, Field(ge=0, le=254)] | None = None
    code: Annotated[int, Field(ge=0, le=255)] | None = None

    @model_validator(mode="after")
    def _code_needs_type(self) -> IcmpFields:
        if self.code is not None and self.type is None:
            raise FieldError("code", "an ICMP code requires a type")
        return self


class Rule(Strict):
    action: Literal["Allow", "Deny", "Log", "Pass"]
    ip_version: Literal[4, 6] | None = None
    protocol: ProtocolValue | None = None
    not_protocol: ProtocolValue | None = None
    icmp: IcmpFields | None = None
    not_icmp: IcmpFields | None = Field(default=None, alias="notICMP")
    source: EntityRule = Field(default_factory=EntityRule)
    destination: EntityRule = Field(default_factory=EntityRule)
    metadata: dict[str, dict[str, str]] | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        for alias, protocol in (("protocol", self.protocol), ("notProtocol", self.not_protocol)):
            if protocol in ("ICMP", 1) and self.ip_version == 6:
                raise FieldError(alias, "ICMP requires ipVersion 4 (use ICMPv6)")
            if protocol in ("ICMPv6", 58) and self.ip_version == 4:
                raise FieldError(alias, "ICMPv6 requires ipVersion 6 (use ICMP)")
        for alias, icmp in (("icmp", self.icmp), ("notICMP", self.not_icmp)):
            if icmp is not None and self.protocol not in ICMP_PROTOCOLS:
                raise FieldError(alias, "ICMP matches require protocol ICMP or ICMPv6")
        for side, entity in (("source", self.source), ("destination", self.destination)):
            for alias, ports in (("ports", entity.ports), ("notPorts", entity.not_ports)):
                if ports and self.protocol not in PORT_PROTOCOLS:
                    raise FieldError(f"{side}.{alias}", "ports require protocol TCP, UDP or SCTP")
        self._one_ip_family()
        return self

    def _one_ip_family(self) -> None:
        """Calico's ``scanNets``: every CIDR of a rule has one IP family, the ``ipVersion`` if set."""
        first: tuple[str, int] | None = None
        for side, entity in (("source", self.source), ("destination", self.destination)):
            for alias, nets in (("nets", entity.nets), ("notNets", entity.not_nets)):
                for i, net in enumerate(nets):
                    path, version = f"{side}.{alias}[{i}]", ipaddress.ip_network(net).version
                    if self.ip_version is not None and version != self.ip_version:
                        raise FieldError(path, f"{net} is IPv{version} but ipVersion is {self.ip_version}")
                    if first is not None and version != first[1]:
                        raise FieldError(
                            path,
                            f"{net} is IPv{version} but {first[0]} is IPv{first[1]}: a rule's "
                            "CIDRs must all be IPv4 or all IPv6",
                        )
                    first = first or (path, version)


class PolicySpecBase(Strict):
    tier: DnsLabel = "default"
    order: float | None = None
    selector: PolicySelectorText = ""
    service_account_selector: PolicySelectorText = ""
    types: list[Literal["Ingress", "Egress"]] | None = None
    ingress: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)
    egress: list[Rule] = Field(default_factory=list, max_length=MAX_RULES)
    performance_hints: list[Literal["AssumeNeededOnEveryNode"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _types_once(self) -> PolicySpecBase:
        for i, kind in enumerate(self.types or ()):
            if kind in (self.types or [])[:i]:
                raise FieldError(f"types[{i}]", f"{kind!r} is listed more than once")
        return self

    def effective_types(self) -> tuple[str, ...]:
        """Calico's defaulting: no types → Ingress if no egress rules, Egress if only egress, else both."""
        if self.types:
            return tuple(t for t in ("Ingress", "Egress") if t in self.types)
        if self.egress and not self.ingress:
            return ("Egress",)
        if self.egress:
            return ("Ingress", "Egress")
        return ("Ingress",)


class NetworkPolicySpec(PolicySpecBase):
    pass


class GlobalNetworkPolicySpec(PolicySpecBase):
    namespace_selector: PolicySelectorText = ""
    do_not_track: bool = False
    pre_dnat: bool = Field(default=False, alias="preDNAT")
    apply_on_forward: bool = False

    @model_validator(mode="after")
    def _untracked_and_pre_dnat(self) -> GlobalNetworkPolicySpec:
        if self.do_not_track and self.pre_dnat:
            raise FieldError("preDNAT", "cannot be combined with doNotTrack")
        if self.pre_dnat and self.egress:
            raise FieldError("egress", "a preDNAT policy cannot have egress rules")
        if self.pre_dnat and "Egress" in (self.types or ()):
            raise FieldError("types", "a preDNAT policy cannot have the Egress type")
        if (self.do_not_track or self.pre_dnat) and not self.apply_on_forward:
            raise FieldError("applyOnForward", "must be true when doNotTrack or preDNAT is set")
        return self


class CalicoNetworkPolicy(Strict):
    api_version: ApiVersion
    kind: Literal["NetworkPolicy"]
    metadata: ObjectMeta
    spec: NetworkPolicySpec


class GlobalNetworkPolicy(Strict):
    api_version: ApiVersion
    kind: Literal["GlobalNetworkPolicy"]
    metadata: ObjectMeta
    spec: GlobalNetworkPolicySpec


class TierSpec(Strict):
    order: float | None = None
    default_action: Literal["Deny", "Pass"] = "Deny"


class Tier(Strict):
    api_version: ApiVersion
    kind: Literal["Tier"]
    metadata: ObjectMeta
    spec: TierSpec = Field(default_factory=TierSpec)

    @model_validator(mode="after")
    def _name_is_a_label(self) -> Tier:
        """A policy's ``spec.tier`` is a DNS-1123 label, so a Tier named otherwise could hold nothing."""
        try:
            check_dns1123_label(self.metadata.name)
        except ValueError as err:
            raise FieldError("metadata.name", str(err)) from None
        return self
