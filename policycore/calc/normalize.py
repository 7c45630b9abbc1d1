"""Policy normalisation: Kubernetes and Calico v3 policies lowered to Felix's v1 policy model.

Owns `NormalizedPolicy` / `NormalizedRule` / `NormalizedEntity` (a policy as Felix sees it:
applies-to selector rewritten with the namespace clause, rule selectors combined and rewritten,
ports split into numeric ranges and names), `normalize_policy` for the three policy kinds, policy
order (``sort_key``) and rule ids (`rule_id`, `parse_rule_id`); it re-exports the tier API of
`policycore.calc.tiers` (`TierInfo`, `tier_table`, `tier_of`, `tier_sort_key`). It does not own
the lowering into the rule IR and ip sets (`policycore.calc.lowering`), the Kubernetes rule
expansion (`policycore.calc.k8s_policy`, which this module calls) or which endpoints a policy
selects (the oracle, the graph).

The rewriting is Calico's, done on selector *text* exactly as ``libcalico-go``'s update
processors do it (calico.md 2.6), then parsed, so canonical forms and ip-set ids match Calico's:

* NetworkPolicy: ``(<sel>) && projectcalico.org/namespace == '<ns>'`` (just the clause if the
  selector is empty), then ``(<that>) && <pcsa.-prefixed serviceAccountSelector>``;
* GlobalNetworkPolicy: ``(<sel>) && <pcns.-prefixed namespaceSelector>`` with every ``all()``
  replaced by ``has(projectcalico.org/namespace)``, then the same with ``pcsa.`` and
  ``has(projectcalico.org/serviceaccount)``;
* rule entities (``getEndpointSelector``): namespaceSelector → ``pcns.``-prefixed with ``all()`` →
  ``has(projectcalico.org/namespace)`` and ``global()`` → ``!has(projectcalico.org/namespace)``;
  no namespaceSelector in a namespaced policy → ``projectcalico.org/namespace == '<ns>'``;
  serviceAccounts → ``(<pcsa. selector>) && (projectcalico.org/serviceaccount in {...})``; the
  namespace clause is ANDed in as soon as selector, notSelector or namespaceSelector is used;
  notSelector itself is passed through unchanged.

Policy order: ``sort_key`` is Felix's ``PolKVLess``: order (None = +inf), then the *string*
``"<name>/<namespace>/<kind>"`` (so ``a-b`` sorts before ``a``). A policy whose tier has no Tier
resource is kept; its tier fails closed (see `policycore.calc.tiers`).

GlobalNetworkPolicies with ``doNotTrack`` or ``preDNAT`` apply to host endpoints only, so
``applies_to_workloads`` is False for them. ``types`` holds IR directions (``ingress``/``egress``)
after each kind's defaulting (Kubernetes' ``policyTypes`` rule; Calico's ``types`` rule).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from policycore.calc.endpoints import (
    LABEL_NAMESPACE,
    LABEL_SERVICE_ACCOUNT,
    NAMESPACE_LABEL_PREFIX,
    SERVICE_ACCOUNT_LABEL_PREFIX,
)
from policycore.calc.k8s_policy import k8s_rule_to_calico, k8s_selector
from policycore.calc.tiers import DEFAULT_TIER, TierInfo, tier_of, tier_sort_key, tier_table
from policycore.ir import PROTOCOL_NUMBERS, Action, Direction, IcmpMatch, PortRange
from policycore.model.calico import (
    CalicoNetworkPolicy,
    EntityRule,
    GlobalNetworkPolicy,
    IcmpFields,
    PolicySpecBase,
    Rule,
)
from policycore.model.kube import KubeNetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort
from policycore.selector import Selector, SelectorError, parse

__all__ = [
    "KIND_GNP",
    "KIND_K8S",
    "KIND_NP",
    "NormalizeError",
    "NormalizedEntity",
    "NormalizedPolicy",
    "NormalizedRule",
    "PolicyResource",
    "RuleRef",
    "TierInfo",
    "lower_entity",
    "normalize_policy",
    "parse_rule_id",
    "policy_id",
    "protocol_number",
    "rule_id",
    "tier_of",
    "tier_sort_key",
    "tier_table",
]

PolicyResource = KubeNetworkPolicy | CalicoNetworkPolicy | GlobalNetworkPolicy
KIND_K8S = "KubernetesNetworkPolicy"
KIND_NP = "NetworkPolicy"
KIND_GNP = "GlobalNetworkPolicy"
K8S_POLICY_ORDER = 1000.0
_ACTIONS: Mapping[str, Action] = {"Allow": "allow", "Deny": "deny", "Log": "log", "Pass": "pass"}


class NormalizeError(ValueError):
    """A policy Felix's model cannot represent; names the field and the reason."""


@dataclass(frozen=True, slots=True)
class NormalizedEntity:
    """One side of a rule. ``None`` selectors mean "no selector constraint"; lists keep source order."""

    selector: Selector | None = None
    not_selector: Selector | None = None
    nets: tuple[str, ...] = ()
    not_nets: tuple[str, ...] = ()
    ports: tuple[PortRange, ...] = ()
    named_ports: tuple[str, ...] = ()
    not_ports: tuple[PortRange, ...] = ()
    not_named_ports: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NormalizedRule:
    """A rule in Felix's model; ``rule_id`` is ``<policy id>/<direction>/<index>[.<n>]``."""

    rule_id: str
    action: Action
    ip_version: int | None = None
    protocol: int | None = None
    not_protocol: int | None = None
    icmp: IcmpMatch | None = None
    not_icmp: IcmpMatch | None = None
    source: NormalizedEntity = field(default_factory=NormalizedEntity)
    destination: NormalizedEntity = field(default_factory=NormalizedEntity)


@dataclass(frozen=True, slots=True)
class NormalizedPolicy:
    """A policy after lowering; ``policy_id`` is ``<tier>/<kind>/<namespace>/<name>``."""

    policy_id: str
    kind: str
    namespace: str
    name: str
    tier: str
    order: float | None
    selector: Selector
    types: frozenset[Direction]
    ingress: tuple[NormalizedRule, ...] = ()
    egress: tuple[NormalizedRule, ...] = ()
    applies_to_workloads: bool = True

    @property
    def sort_key(self) -> tuple[float, str]:
        """Felix's ``PolKVLess``: order (None = +inf), then ``"<name>/<namespace>/<kind>"``."""
        return (math.inf if self.order is None else self.order, f"{self.name}/{self.namespace}/{self.kind}")


@dataclass(frozen=True, slots=True)
class RuleRef:
    """A parsed rule id: the policy, direction, source rule index and expansion index (or None)."""

    policy_id: str
    direction: str
    index: int
    sub: int | None

    @property
    def policy_name(self) -> str:
        return self.policy_id.rsplit("/", 1)[-1]


def policy_id(tier: str, kind: str, namespace: str, name: str) -> str:
    return f"{tier}/{kind}/{namespace}/{name}"


def rule_id(policy: str, direction: Direction, index: int, sub: int | None = None) -> str:
    return f"{policy}/{direction}/{index}" if sub is None else f"{policy}/{direction}/{index}.{sub}"


def parse_rule_id(text: str) -> RuleRef:
    """Split a rule id made by `rule_id` (raises `ValueError` for anything else)."""
    policy, direction, index = text.rsplit("/", 2)
    first, _, sub = index.partition(".")
    if direction not in ("ingress", "egress") or policy.count("/") != 3:
        raise ValueError(f"{text!r} is not a rule id")
    return RuleRef(policy, direction, int(first), int(sub) if sub else None)


def normalize_policy(resource: PolicyResource) -> NormalizedPolicy:
    """Lower any of the three policy kinds (raises `NormalizeError` naming the field)."""
    if isinstance(resource, KubeNetworkPolicy):
        return _k8s_policy(resource)
    spec: PolicySpecBase = resource.spec
    if isinstance(resource, GlobalNetworkPolicy):
        gspec = resource.spec
        text = gspec.selector
        if gspec.namespace_selector:
            text = _prefix_and_append(text, gspec.namespace_selector, NAMESPACE_LABEL_PREFIX)
            text = text.replace("all()", f"has({LABEL_NAMESPACE})")
        if gspec.service_account_selector:
            text = _prefix_and_append(text, gspec.service_account_selector, SERVICE_ACCOUNT_LABEL_PREFIX)
            text = text.replace("all()", f"has({LABEL_SERVICE_ACCOUNT})")
        kind, namespace = KIND_GNP, ""
        workloads = not (gspec.do_not_track or gspec.pre_dnat)
    else:
        namespace = resource.metadata.namespace or "default"
        clause = f"{LABEL_NAMESPACE} == '{namespace}'"
        text = clause if not spec.selector else f"({spec.selector}) && {clause}"
        text = _prefix_and_append(text, spec.service_account_selector, SERVICE_ACCOUNT_LABEL_PREFIX)
        kind, workloads = KIND_NP, True
    name = resource.metadata.name
    pid = policy_id(spec.tier, kind, namespace, name)
    return NormalizedPolicy(
        policy_id=pid,
        kind=kind,
        namespace=namespace,
        name=name,
        tier=spec.tier,
        order=spec.order,
        selector=_parse(text, "spec.selector"),
        types=_directions(spec.effective_types()),
        ingress=tuple(_calico_rule(r, pid, "ingress", i, namespace) for i, r in enumerate(spec.ingress)),
        egress=tuple(_calico_rule(r, pid, "egress", i, namespace) for i, r in enumerate(spec.egress)),
        applies_to_workloads=workloads,
    )


def _k8s_policy(resource: KubeNetworkPolicy) -> NormalizedPolicy:
    spec = resource.spec
    namespace = resource.metadata.namespace or "default"
    name = resource.metadata.name
    pid = policy_id(DEFAULT_TIER, KIND_K8S, namespace, name)
    text = f"({k8s_selector(spec.pod_selector, pod=True)}) && {LABEL_NAMESPACE} == '{namespace}'"
    ingress = [(r.from_, r.ports) for r in spec.ingress]
    egress = [(r.to, r.ports) for r in spec.egress]
    return NormalizedPolicy(
        policy_id=pid,
        kind=KIND_K8S,
        namespace=namespace,
        name=name,
        tier=DEFAULT_TIER,
        order=K8S_POLICY_ORDER,
        selector=_parse(text, "spec.podSelector"),
        types=_directions(spec.effective_types()),
        ingress=_k8s_rules(ingress, pid, "ingress", namespace),
        egress=_k8s_rules(egress, pid, "egress", namespace),
    )


def _k8s_rules(
    rules: Sequence[tuple[Sequence[NetworkPolicyPeer], Sequence[NetworkPolicyPort]]],
    pid: str,
    direction: Direction,
    namespace: str,
) -> tuple[NormalizedRule, ...]:
    out: list[NormalizedRule] = []
    for index, (k8s_peers, k8s_ports) in enumerate(rules):
        expanded = k8s_rule_to_calico(k8s_peers, k8s_ports)
        path = f"spec.{direction}[{index}]"
        for sub, rule in enumerate(expanded):
            peer = lower_entity(
                namespace=namespace,
                path=f"{path}.{'from' if direction == 'ingress' else 'to'}",
                selector=rule.peer.selector,
                namespace_selector=rule.peer.namespace_selector,
                nets=rule.peer.nets,
                not_nets=rule.peer.not_nets,
            )
            ports = tuple(p for p in rule.ports if isinstance(p, PortRange))
            names = tuple(p for p in rule.ports if isinstance(p, str))
            if direction == "ingress":
                source, destination = peer, NormalizedEntity(ports=ports, named_ports=names)
            else:
                source, destination = NormalizedEntity(), replace(peer, ports=ports, named_ports=names)
            out.append(
                NormalizedRule(
                    rule_id=rule_id(pid, direction, index, sub if len(expanded) > 1 else None),
                    action="allow",
                    protocol=protocol_number(rule.protocol),
                    source=source,
                    destination=destination,
                )
            )
    return tuple(out)


def _directions(types: Iterable[str]) -> frozenset[Direction]:
    return frozenset(d for d in ("ingress", "egress") if d.capitalize() in types)


def _calico_rule(rule: Rule, pid: str, direction: Direction, index: int, namespace: str) -> NormalizedRule:
    path = f"spec.{direction}[{index}]"
    return NormalizedRule(
        rule_id=rule_id(pid, direction, index),
        action=_ACTIONS[rule.action],
        ip_version=rule.ip_version,
        protocol=protocol_number(rule.protocol),
        not_protocol=protocol_number(rule.not_protocol),
        icmp=_icmp(rule.icmp),
        not_icmp=_icmp(rule.not_icmp),
        source=_calico_entity(rule.source, namespace, f"{path}.source"),
        destination=_calico_entity(rule.destination, namespace, f"{path}.destination"),
    )


def _calico_entity(entity: EntityRule, namespace: str, path: str) -> NormalizedEntity:
    accounts = entity.service_accounts
    return lower_entity(
        namespace=namespace,
        path=path,
        selector=entity.selector,
        not_selector=entity.not_selector,
        namespace_selector=entity.namespace_selector,
        account_names=tuple(accounts.names) if accounts else (),
        account_selector=accounts.selector if accounts else "",
        nets=entity.nets,
        not_nets=entity.not_nets,
        ports=[_port(p) for p in entity.ports],
        not_ports=[_port(p) for p in entity.not_ports],
    )


def lower_entity(
    *,
    namespace: str,
    path: str,
    selector: str = "",
    not_selector: str = "",
    namespace_selector: str = "",
    account_names: Sequence[str] = (),
    account_selector: str = "",
    nets: Sequence[str] = (),
    not_nets: Sequence[str] = (),
    ports: Sequence[PortRange | str] = (),
    not_ports: Sequence[PortRange | str] = (),
) -> NormalizedEntity:
    """One v3 EntityRule in Felix's model (``GetEntityRuleSelector`` + net normalisation)."""
    accounts = _service_accounts(account_names, account_selector)
    text = _endpoint_selector(namespace, selector, not_selector, namespace_selector, accounts)
    return NormalizedEntity(
        selector=_parse(text, f"{path}.selector") if text else None,
        not_selector=_parse(not_selector, f"{path}.notSelector") if not_selector else None,
        nets=tuple(_net(n) for n in nets),
        not_nets=tuple(_net(n) for n in not_nets),
        ports=tuple(p for p in ports if isinstance(p, PortRange)),
        named_ports=tuple(p for p in ports if isinstance(p, str)),
        not_ports=tuple(p for p in not_ports if isinstance(p, PortRange)),
        not_named_ports=tuple(p for p in not_ports if isinstance(p, str)),
    )


def _endpoint_selector(
    namespace: str,
    selector: str,
    not_selector: str,
    namespace_selector: str,
    accounts: str,
) -> str:
    if namespace_selector:
        ns_text = parse(namespace_selector).with_label_prefix(NAMESPACE_LABEL_PREFIX).canonical
        ns_text = ns_text.replace("all()", f"has({LABEL_NAMESPACE})")
        ns_text = ns_text.replace("global()", f"!has({LABEL_NAMESPACE})")
    elif namespace:
        ns_text = f"{LABEL_NAMESPACE} == '{namespace}'"
    else:
        ns_text = ""
    parts = [p for p in (accounts, selector) if p]
    combined = " && ".join(f"({p})" for p in parts) if len(parts) > 1 else "".join(parts)
    if ns_text and (combined or not_selector or namespace_selector):
        combined = f"({ns_text}) && ({combined})" if combined else ns_text
    return combined


def _service_accounts(names: Sequence[str], selector: str) -> str:
    prefixed = parse(selector).with_label_prefix(SERVICE_ACCOUNT_LABEL_PREFIX).canonical if selector else ""
    if not names:
        return prefixed
    quoted = "', '".join(names)
    names_text = _parse(f"{LABEL_SERVICE_ACCOUNT} in {{ '{quoted}' }}", "serviceAccounts.names").canonical
    return f"({prefixed}) && ({names_text})" if prefixed else names_text


def _prefix_and_append(current: str, new: str, prefix: str) -> str:
    if not new:
        return current
    prefixed = parse(new).with_label_prefix(prefix).canonical
    return f"({current}) && {prefixed}" if current else prefixed


def _parse(text: str, path: str) -> Selector:
    try:
        return parse(text)
    except SelectorError as err:
        raise NormalizeError(f"{path}: {err}") from None


def _net(cidr: str) -> str:
    return str(ipaddress.ip_network(cidr, strict=False))


def _port(value: int | str) -> PortRange | str:
    """A v3 port (number, ``"a:b"`` range, digits, or a name) as a range or a name."""
    if isinstance(value, int):
        return PortRange(value, value)
    if ":" in value:
        first, _, last = value.partition(":")
        return PortRange(int(first), int(last))
    if value.isdigit():
        return PortRange(int(value), int(value))
    return value


def protocol_number(value: int | str | None) -> int | None:
    """A v3 protocol (name or number) as its IP protocol number."""
    if value is None:
        return None
    return value if isinstance(value, int) else PROTOCOL_NUMBERS[value]


def _icmp(value: IcmpFields | None) -> IcmpMatch | None:
    return IcmpMatch(value.type, value.code) if value is not None and value.type is not None else None
