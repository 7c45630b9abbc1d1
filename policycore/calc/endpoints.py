"""`WorkloadEndpoint`: what a Kubernetes pod is to policy — its labels, addresses and named ports.

Owns the pod → workload-endpoint conversion Calico performs in
``libcalico-go/lib/backend/k8s/conversion/workload_endpoint_default.go`` and the syncer's
``workloadendpointprocessor.go`` (calico.md 2.4): which pods are endpoints at all, the label
vocabulary policies select on, and the named ports ``ip_port`` ip sets are built from. It does
not own which policies select an endpoint (`policycore.calc.oracle`, the graph) nor ip-set
membership (`policycore.calc.lowering`).

Labels, in Calico's precedence (an endpoint's own labels win over inherited profile labels):

* inherited from the namespace profile ``kns.<ns>``: ``pcns.<k>=<v>`` for every namespace label
  (which always includes ``kubernetes.io/metadata.name``) plus ``pcns.projectcalico.org/name=<ns>``;
* inherited from the service-account profile ``ksa.<ns>.<sa>``: ``pcsa.projectcalico.org/name=<sa>``
  (Kaliko has no ServiceAccount resource, so no other ``pcsa.`` labels exist);
* the pod's labels, minus any starting with ``pcns.`` or ``pcsa.`` (the syncer strips them so a pod
  cannot pretend to be in another namespace);
* ``projectcalico.org/namespace=<ns>``, ``projectcalico.org/orchestrator=k8s`` and
  ``projectcalico.org/serviceaccount=<sa>``. The current syncer sets the service-account label
  whatever the name's length (calico issue 4529); the 63-character limit of older converters no
  longer applies.

A pod whose Namespace resource is absent (``namespace_labels=None``) has a **missing profile**,
as in Calico, where its ``kns.<ns>`` profile would not exist:

* it inherits no labels from the namespace profile: it keeps its own labels and the
  ``projectcalico.org/*`` labels above, so it is still selected by ``projectcalico.org/namespace
  == '<ns>'`` clauses but by no namespaceSelector;
* where the profile would decide (no policy applies in a direction, or a ``Pass`` left the last
  tier) it is **denied** in both directions: Felix replaces an active profile it does not know
  with ``DummyDropRules`` (one deny rule each way) and so fails closed. Kaliko lowers this to a
  last tier ``kns.<ns>`` with no policies and a deny default (`missing_profile_tier`); policies
  that allow still allow. There are no implicit namespaces (not even ``default``): a pod's
  Namespace must be applied for the pod to be reachable without an allowing policy.

Invariants: a pod is an endpoint iff it is scheduled (``spec.nodeName``), has at least one IP and
has not finished (phase ``Succeeded``/``Failed``/``Completed``), as Calico's ``IsReadyCalicoPod`` /
``IsFinished``; IPs are normalised (``ipaddress`` text form) so ip-set members compare exactly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from policycore.ir import TierProgram
from policycore.model.kube import Pod
from policycore.naming import endpoint_key, iface_name

LABEL_NAMESPACE = "projectcalico.org/namespace"
LABEL_ORCHESTRATOR = "projectcalico.org/orchestrator"
LABEL_SERVICE_ACCOUNT = "projectcalico.org/serviceaccount"
ORCHESTRATOR_K8S = "k8s"
NAMESPACE_LABEL_PREFIX = "pcns."
SERVICE_ACCOUNT_LABEL_PREFIX = "pcsa."
NAME_LABEL = "projectcalico.org/name"
NAMESPACE_PROFILE_PREFIX = "kns."
FINISHED_PHASES = frozenset({"Succeeded", "Failed", "Completed"})


@dataclass(frozen=True, slots=True)
class NamedPort:
    """A container port with a name: ``protocol`` is lower-case (``tcp``, ``udp``, ``sctp``)."""

    name: str
    protocol: str
    port: int


@dataclass(frozen=True, slots=True)
class WorkloadEndpoint:
    """A pod as policy sees it. ``labels`` is read-only; ``ips`` are normalised; ``has_profile`` is
    whether its namespace profile exists (its Namespace resource does)."""

    key: str
    namespace: str
    name: str
    node: str
    iface: str
    ips: tuple[str, ...]
    labels: Mapping[str, str]
    ports: tuple[NamedPort, ...]
    has_profile: bool = True

    def profile_tiers(self) -> tuple[TierProgram, ...]:
        """What follows the policy tiers in each direction: nothing, or the missing-profile deny."""
        return () if self.has_profile else (missing_profile_tier(self.namespace),)


def missing_profile_tier(namespace: str) -> TierProgram:
    """The stand-in for a missing ``kns.<namespace>`` profile: a last tier that denies."""
    return TierProgram(NAMESPACE_PROFILE_PREFIX + namespace, (), "deny")


def missing_profile(tier: str) -> str | None:
    """The profile a tier name stands in for (``kns.<ns>``), or None for a policy tier."""
    return tier if tier.startswith(NAMESPACE_PROFILE_PREFIX) else None


def endpoint_labels(pod: Pod, namespace_labels: Mapping[str, str] | None) -> dict[str, str]:
    """The labels policies and rule selectors match a pod on (see the module docstring)."""
    namespace = pod.metadata.namespace or "default"
    account = pod.spec.service_account_name
    labels: dict[str, str] = {}
    if namespace_labels is not None:
        labels.update({NAMESPACE_LABEL_PREFIX + k: v for k, v in namespace_labels.items()})
        labels[NAMESPACE_LABEL_PREFIX + NAME_LABEL] = namespace
    if account:
        labels[SERVICE_ACCOUNT_LABEL_PREFIX + NAME_LABEL] = account
    labels.update(
        {
            k: v
            for k, v in pod.metadata.labels.items()
            if not k.startswith((NAMESPACE_LABEL_PREFIX, SERVICE_ACCOUNT_LABEL_PREFIX))
        }
    )
    labels[LABEL_NAMESPACE] = namespace
    labels[LABEL_ORCHESTRATOR] = ORCHESTRATOR_K8S
    if account:
        labels[LABEL_SERVICE_ACCOUNT] = account
    return labels


def is_endpoint(pod: Pod) -> bool:
    """Whether Calico would make a workload endpoint of this pod (scheduled, addressed, running)."""
    return bool(pod.spec.node_name) and bool(pod.ips()) and pod.status.phase not in FINISHED_PHASES


def named_ports(pod: Pod) -> tuple[NamedPort, ...]:
    """The pod's named container ports, in container then port order (unnamed ports are skipped)."""
    return tuple(
        NamedPort(port.name, port.protocol.lower(), port.container_port)
        for container in pod.spec.containers
        for port in container.ports
        if port.name
    )


def workload_endpoint(pod: Pod, namespace_labels: Mapping[str, str] | None) -> WorkloadEndpoint | None:
    """The pod's endpoint, or ``None`` if the pod is not (yet, or any more) an endpoint."""
    if not is_endpoint(pod):
        return None
    namespace = pod.metadata.namespace or "default"
    return WorkloadEndpoint(
        key=endpoint_key(namespace, pod.metadata.name),
        namespace=namespace,
        name=pod.metadata.name,
        node=pod.spec.node_name or "",
        iface=iface_name(namespace, pod.metadata.name),
        ips=tuple(dict.fromkeys(str(ipaddress.ip_address(ip)) for ip in pod.ips())),
        labels=MappingProxyType(endpoint_labels(pod, namespace_labels)),
        ports=named_ports(pod),
        has_profile=namespace_labels is not None,
    )
