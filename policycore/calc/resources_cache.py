"""`ResourceCache`: the graph's input stage — current resources, deduplicated and dispatched.

Owns the current value of every resource the graph reads (pods, namespaces, nodes, tiers and the
three policy kinds; Services are ignored), the pods of each namespace, namespace labels and the
tier table, and the count of rejected (invalid) policies. It turns each resource update into the
derived updates the calculators consume — an endpoint (or its absence) per pod, a normalised
policy (or absence) per policy resource, a tier or node change — and sends them to a
`CacheListener`. It does not own what follows from them (the graph's calculators).

Rules (calico.md 1.1 ValidationFilter, GUIDE 2.3 "existence from values"):

* ``None`` means absent; an update equal to the stored value does nothing at all;
* a namespace change re-derives the endpoint of every pod in it (its ``pcns.`` labels);
* a policy that does not normalise is treated as absent, logged and counted in ``rejected``;
* a value whose own key differs from the key it was sent under raises `ValueError` before any
  change is made.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from policycore.calc.endpoints import WorkloadEndpoint, workload_endpoint
from policycore.calc.normalize import (
    NormalizedPolicy,
    NormalizeError,
    PolicyResource,
    TierInfo,
    normalize_policy,
    tier_of,
    tier_table,
)
from policycore.model.calico import CalicoNetworkPolicy, GlobalNetworkPolicy, Tier
from policycore.model.kube import KubeNetworkPolicy, Namespace, Node, Pod
from policycore.model.resources import Resource, ResourceKey, key_of
from policycore.naming import endpoint_key

log = logging.getLogger(__name__)

POLICY_KINDS = frozenset({"KubernetesNetworkPolicy", "NetworkPolicy", "GlobalNetworkPolicy"})
READ_KINDS = POLICY_KINDS | {"Pod", "Namespace", "Node", "Tier"}


class CacheListener(Protocol):
    """What the cache tells the graph."""

    def endpoint_changed(self, key: str, endpoint: WorkloadEndpoint | None) -> None: ...

    def policy_changed(self, key: ResourceKey, policy: NormalizedPolicy | None) -> None: ...

    def tier_changed(self, name: str) -> None: ...

    def node_changed(self, name: str, present: bool) -> None: ...


class ResourceCache:
    """Current resources and their dispatch; see the module docstring."""

    def __init__(self, listener: CacheListener) -> None:
        self._listener = listener
        self._resources: dict[ResourceKey, Resource] = {}
        self._pods: dict[str, dict[str, Pod]] = {}
        self._namespaces: dict[str, dict[str, str]] = {}
        self._tier_resources: dict[str, Tier] = {}
        self._tiers: dict[str, TierInfo] = tier_table(())
        self.rejected = 0
        """Policies treated as absent because they did not normalise."""

    def get(self, key: ResourceKey) -> Resource | None:
        """The stored value under `key` (``None`` if absent or of an ignored kind)."""
        return self._resources.get(key)

    def tier(self, name: str) -> TierInfo:
        """The tier called `name` (implicit, from a Tier resource, or invalid: fail closed)."""
        return tier_of(name, self._tiers)

    @property
    def resources(self) -> Mapping[ResourceKey, Resource]:
        """Every stored resource (a live, read-only view)."""
        return self._resources

    @staticmethod
    def check(key: ResourceKey, resource: Resource | None) -> None:
        """Raise `ValueError` if `resource` does not belong under `key`."""
        if resource is not None and key_of(resource) != key:
            raise ValueError(f"{key}: the value's own key is {key_of(resource)}")

    def update(self, key: ResourceKey, resource: Resource | None) -> None:
        """Store the new value of `key` and dispatch what it changes (see the module docstring)."""
        self.check(key, resource)
        if key.kind not in READ_KINDS or self._resources.get(key) == resource:
            return
        if resource is None:
            del self._resources[key]
        else:
            self._resources[key] = resource
        if key.kind == "Pod":
            self._pod(key, resource if isinstance(resource, Pod) else None)
        elif key.kind == "Namespace":
            self._namespace(key.name, resource if isinstance(resource, Namespace) else None)
        elif key.kind in POLICY_KINDS:
            self._policy(key, resource)
        elif key.kind == "Tier":
            self._tier(key.name, resource if isinstance(resource, Tier) else None)
        else:
            self._listener.node_changed(key.name, isinstance(resource, Node))

    def _pod(self, key: ResourceKey, pod: Pod | None) -> None:
        pods = self._pods.setdefault(key.namespace, {})
        if pod is None:
            pods.pop(key.name, None)
            if not pods:
                del self._pods[key.namespace]
            self._listener.endpoint_changed(endpoint_key(key.namespace, key.name), None)
            return
        pods[key.name] = pod
        labels = self._namespaces.get(key.namespace)
        self._listener.endpoint_changed(endpoint_key(key.namespace, key.name), workload_endpoint(pod, labels))

    def _namespace(self, name: str, namespace: Namespace | None) -> None:
        labels = namespace.effective_labels() if namespace is not None else None
        if labels is None:
            self._namespaces.pop(name, None)
        else:
            self._namespaces[name] = labels
        for pod_name, pod in sorted(self._pods.get(name, {}).items()):
            self._listener.endpoint_changed(endpoint_key(name, pod_name), workload_endpoint(pod, labels))

    def _policy(self, key: ResourceKey, resource: Resource | None) -> None:
        policy: NormalizedPolicy | None = None
        if isinstance(resource, KubeNetworkPolicy | CalicoNetworkPolicy | GlobalNetworkPolicy):
            policy = self._normalize(key, resource)
        self._listener.policy_changed(key, policy)

    def _normalize(self, key: ResourceKey, resource: PolicyResource) -> NormalizedPolicy | None:
        try:
            return normalize_policy(resource)
        except NormalizeError as err:
            self.rejected += 1
            log.warning("%s: treated as absent: %s", key, err)
            return None

    def _tier(self, name: str, tier: Tier | None) -> None:
        if tier is None:
            self._tier_resources.pop(name, None)
        else:
            self._tier_resources[name] = tier
        before = self.tier(name)
        self._tiers = tier_table(self._tier_resources.values())
        if self.tier(name) != before:
            self._listener.tier_changed(name)
