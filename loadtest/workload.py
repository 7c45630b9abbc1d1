"""Seeded workload: a realistic cluster (namespaces, apps, pods, policies) and the churn on it.

Owns the model of what the harness has written — namespaces with ``team``/``env``/``monitoring``
labels, apps (``role`` + replicas) whose pods are spread uniformly over the nodes, Kubernetes
NetworkPolicies per namespace (a default deny, app-to-app allows, namespaceSelector peers by team
and for monitoring, egress to databases, ipBlock peers) and a few Calico GlobalNetworkPolicies —
and the generators of churn on it (create/edit/delete policy, create/delete/relabel pod). Every
choice comes from one ``random.Random(seed)`` and iteration is over lists and dicts only, so the
same spec and seed give the same documents in any process. It does not submit anything
(`loadtest.runner`) or pick which task runs (`loadtest.scenarios`).

Policies use numeric ports: a named port in a Kubernetes ingress rule compiles (as in Calico) to
an ``ip_port`` set over every endpoint exposing that name, i.e. a cluster-wide set on every node.

Invariants: every document parses with `policycore.model.parse_resource`; a key being written
(``busy``) is never chosen again until `settle` releases it, so concurrent writes never race on
one resource; policy counts stay near the target because create and delete have equal weights.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, Literal, TypeVar

ROLES = ("web", "api", "worker", "cache", "db")
ENVS = (("prod", 5), ("staging", 3), ("dev", 2))
TEAMS = 20
APP_PORT = 8080
DB_PORT = 5432
METRICS_PORT = 9090
K8S_API = "networking.k8s.io/v1"
CALICO_API = "projectcalico.org/v3"
NP_SHAPES = (("app", 50), ("team", 15), ("monitoring", 10), ("egress-db", 15), ("ipblock", 10))

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    nodes: int
    pods: int
    policies: int
    namespaces: int
    seed: int = 1
    gnps: int = 5

    def __post_init__(self) -> None:
        for name in ("nodes", "namespaces"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("pods", "policies", "gnps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Change:
    """One write: apply ``document`` or delete the resource ``kind namespace/name``."""

    action: Literal["apply", "delete"]
    kind: str
    namespace: str
    name: str
    document: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)


class Bag(Generic[T]):
    """A list with O(1) add, remove and seeded random choice (deterministic order)."""

    def __init__(self) -> None:
        self._items: list[T] = []
        self._index: dict[T, int] = {}

    def add(self, item: T) -> None:
        if item not in self._index:
            self._index[item] = len(self._items)
            self._items.append(item)

    def remove(self, item: T) -> None:
        index = self._index.pop(item)
        last = self._items.pop()
        if index < len(self._items):
            self._items[index] = last
            self._index[last] = index

    def choice(self, rng: random.Random) -> T | None:
        return self._items[rng.randrange(len(self._items))] if self._items else None

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[T]:
        return iter(list(self._items))


@dataclass(slots=True)
class App:
    namespace: str
    name: str
    role: str


@dataclass(slots=True)
class PodModel:
    namespace: str
    name: str
    app: App
    node: str
    ip: str
    version: int = 1
    web: bool = False

    def document(self) -> dict[str, Any]:
        port_name, port = ("sql", DB_PORT) if self.app.role == "db" else ("http", APP_PORT)
        labels = {
            "app": self.app.name,
            "role": "web" if self.web else self.app.role,
            "version": f"v{self.version}",
        }
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": self.name, "namespace": self.namespace, "labels": labels},
            "spec": {
                "nodeName": self.node,
                "containers": [
                    {
                        "name": "main",
                        "ports": [
                            {"name": port_name, "containerPort": port},
                            {"name": "metrics", "containerPort": METRICS_PORT},
                        ],
                    }
                ],
            },
            "status": {"podIP": self.ip, "phase": "Running"},
        }


@dataclass(slots=True)
class NamespaceModel:
    name: str
    labels: dict[str, str]
    apps: list[App] = field(default_factory=list)

    def document(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": self.name, "labels": self.labels},
        }


@dataclass(slots=True)
class PolicyModel:
    """A policy's parameters; `document` renders it (edits change parameters, then re-render)."""

    kind: str
    namespace: str
    name: str
    shape: str
    app: str = ""
    peer: str = ""
    port: int = APP_PORT

    def key(self) -> tuple[str, str, str]:
        return (self.kind, self.namespace, self.name)

    def document(self) -> dict[str, Any]:
        if self.kind == "GlobalNetworkPolicy":
            return _gnp_document(self)
        return {
            "apiVersion": K8S_API,
            "kind": "NetworkPolicy",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": _np_spec(self),
        }


def _labels(app: str) -> dict[str, Any]:
    return {"matchLabels": {"app": app}} if app else {}


def _np_spec(p: PolicyModel) -> dict[str, Any]:
    ports = [{"protocol": "TCP", "port": p.port}]
    if p.shape == "default-deny":
        return {"podSelector": {}, "policyTypes": ["Ingress"]}
    if p.shape == "default-deny-all":
        return {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    if p.shape == "app":
        peers = [{"podSelector": _labels(p.peer)}]
    elif p.shape == "team":
        peers = [{"namespaceSelector": {"matchLabels": {"team": p.peer}}, "podSelector": _role("web")}]
    elif p.shape == "monitoring":
        peers = [
            {"namespaceSelector": {"matchLabels": {"monitoring": "enabled"}}, "podSelector": _role("api")}
        ]
        ports = [{"protocol": "TCP", "port": METRICS_PORT}]
    elif p.shape == "ipblock":
        peers = [{"ipBlock": {"cidr": "172.16.0.0/12", "except": ["172.16.1.0/24"]}}]
    else:  # egress-db
        return {
            "podSelector": _labels(p.app),
            "policyTypes": ["Egress"],
            "egress": [
                {"to": [{"podSelector": _labels(p.peer)}], "ports": [{"protocol": "TCP", "port": p.port}]}
            ],
        }
    return {
        "podSelector": _labels(p.app),
        "policyTypes": ["Ingress"],
        "ingress": [{"from": peers, "ports": ports}],
    }


def _role(role: str) -> dict[str, Any]:
    return {"matchLabels": {"role": role}}


def _gnp_document(p: PolicyModel) -> dict[str, Any]:
    if p.shape == "gnp-deny-metadata":
        spec: dict[str, Any] = {
            "order": 10,
            "selector": "all()",
            "types": ["Egress"],
            "egress": [
                {
                    "action": "Deny",
                    "protocol": "TCP",
                    "destination": {"nets": ["169.254.169.254/32"], "ports": [p.port]},
                },
                {"action": "Allow"},
            ],
        }
    elif p.shape == "gnp-dns":
        spec = {
            "order": 20,
            "selector": "all()",
            "types": ["Egress"],
            "egress": [
                {"action": "Allow", "protocol": "UDP", "destination": {"ports": [53, p.port]}},
                {"action": "Pass"},
            ],
        }
    else:  # gnp-prod-monitoring
        spec = {
            "order": 30,
            "selector": "has(app)",
            "namespaceSelector": "env == 'prod'",
            "types": ["Ingress"],
            "ingress": [
                {
                    "action": "Allow",
                    "protocol": "TCP",
                    "source": {"namespaceSelector": "monitoring == 'enabled'", "selector": "role == 'api'"},
                    "destination": {"ports": [p.port]},
                },
                {"action": "Pass"},
            ],
        }
    return {
        "apiVersion": CALICO_API,
        "kind": "GlobalNetworkPolicy",
        "metadata": {"name": p.name},
        "spec": spec,
    }


def _same(key: tuple[str, str, str]) -> tuple[str, str, str]:
    return key


def _pod_key(key: tuple[str, str]) -> tuple[str, str, str]:
    return ("Pod", *key)


def _any(_: object) -> bool:
    return True


GNP_SHAPES = (("gnp-deny-metadata", 80), ("gnp-dns", 5353), ("gnp-prod-monitoring", METRICS_PORT))


class Workload:
    """The cluster model and its churn; see the module docstring."""

    def __init__(self, spec: WorkloadSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        width = len(str(spec.nodes))
        self.nodes = [f"node-{i:0{width}d}" for i in range(1, spec.nodes + 1)]
        self.namespaces: list[NamespaceModel] = []
        self.pods: dict[tuple[str, str], PodModel] = {}
        self.pod_bag: Bag[tuple[str, str]] = Bag()
        self.policies: dict[tuple[str, str, str], PolicyModel] = {}
        self.policy_bag: Bag[tuple[str, str, str]] = Bag()
        self.busy: set[tuple[str, str, str]] = set()
        self._ips = 0
        self._names = 0
        self._build()

    # -- initial cluster ------------------------------------------------------------------------

    def _build(self) -> None:
        spec, rng = self.spec, self.rng
        env_names = [e for e, _ in ENVS]
        env_weights = [w for _, w in ENVS]
        per_ns = spec.pods // spec.namespaces
        for i in range(spec.namespaces):
            labels = {"team": f"team-{i % TEAMS:02d}", "env": rng.choices(env_names, env_weights)[0]}
            if i % 10 == 0:
                labels["monitoring"] = "enabled"
            ns = NamespaceModel(f"ns-{i:04d}", labels)
            apps = max(2, round(per_ns / 10))
            ns.apps = [
                App(ns.name, f"{ROLES[a % len(ROLES)]}-{a:02d}", ROLES[a % len(ROLES)]) for a in range(apps)
            ]
            self.namespaces.append(ns)
        for i in range(spec.pods):
            ns = self.namespaces[i % spec.namespaces]
            self._add_pod(ns.apps[(i // spec.namespaces) % len(ns.apps)])
        for i in range(min(spec.gnps, spec.policies)):
            shape, port = GNP_SHAPES[i % len(GNP_SHAPES)]
            self._add_policy(
                PolicyModel("GlobalNetworkPolicy", "", f"gnp-{i:03d}-{shape[4:]}", shape, port=port)
            )
        remaining = spec.policies - len(self.policies)
        for i in range(remaining):
            ns = self.namespaces[i % spec.namespaces]
            if i < spec.namespaces:
                self._add_policy(
                    PolicyModel("KubernetesNetworkPolicy", ns.name, "default-deny", "default-deny")
                )
            else:
                self._add_policy(self._new_np(ns))

    def initial_documents(self) -> list[dict[str, Any]]:
        """Nodes, namespaces, pods, then policies (the order a cluster is usually built in)."""
        docs: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": node}} for node in self.nodes
        ]
        docs += [ns.document() for ns in self.namespaces]
        docs += [pod.document() for pod in self.pods.values()]
        docs += [policy.document() for policy in self.policies.values()]
        return docs

    def _next_ip(self) -> str:
        self._ips += 1
        n = self._ips
        return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"

    def _next_name(self) -> str:
        self._names += 1
        return format(self._names, "x").rjust(5, "0")

    def _add_pod(self, app: App) -> PodModel:
        node = self.nodes[self.rng.randrange(len(self.nodes))]
        pod = PodModel(app.namespace, f"{app.name}-{self._next_name()}", app, node, self._next_ip())
        self.pods[(pod.namespace, pod.name)] = pod
        self.pod_bag.add((pod.namespace, pod.name))
        return pod

    def _add_policy(self, policy: PolicyModel) -> PolicyModel:
        self.policies[policy.key()] = policy
        self.policy_bag.add(policy.key())
        return policy

    def _new_np(self, ns: NamespaceModel) -> PolicyModel:
        rng = self.rng
        shape = rng.choices([s for s, _ in NP_SHAPES], [w for _, w in NP_SHAPES])[0]
        app = ns.apps[rng.randrange(len(ns.apps))]
        policy = PolicyModel(
            "KubernetesNetworkPolicy", ns.name, f"np-{self._next_name()}", shape, app=app.name
        )
        if shape == "app":
            policy.peer = ns.apps[rng.randrange(len(ns.apps))].name
        elif shape == "team":
            policy.peer = f"team-{rng.randrange(TEAMS):02d}"
        elif shape == "egress-db":
            dbs = [a for a in ns.apps if a.role == "db"] or ns.apps
            policy.peer = dbs[rng.randrange(len(dbs))].name
            policy.port = DB_PORT
        return policy

    # -- churn ----------------------------------------------------------------------------------

    def _pick(
        self, bag: Bag[T], busy_key: Callable[[T], tuple[str, str, str]], accept: Callable[[T], bool]
    ) -> T | None:
        """A random item that is not being written and that ``accept``s (a few tries, else None)."""
        for _ in range(8):
            item = bag.choice(self.rng)
            if item is None:
                return None
            if busy_key(item) not in self.busy and accept(item):
                return item
        return None

    def _claim(self, change: Change) -> Change:
        self.busy.add(change.key)
        return change

    def settle(self, change: Change) -> None:
        """The write of ``change`` finished (accepted or not): its key may be chosen again."""
        self.busy.discard(change.key)

    def create_policy(self) -> Change | None:
        ns = self.namespaces[self.rng.randrange(len(self.namespaces))]
        policy = self._add_policy(self._new_np(ns))
        return self._claim(Change("apply", policy.kind, policy.namespace, policy.name, policy.document()))

    def edit_policy(self) -> Change | None:
        key = self._pick(self.policy_bag, _same, _any)
        if key is None:
            return None
        policy = self.policies[key]
        if policy.shape in ("app", "egress-db") and self.rng.random() < 0.5:
            apps = next(ns for ns in self.namespaces if ns.name == policy.namespace).apps
            policy.peer = apps[self.rng.randrange(len(apps))].name
        elif policy.shape == "team" and self.rng.random() < 0.5:
            policy.peer = f"team-{self.rng.randrange(TEAMS):02d}"
        elif policy.shape in ("default-deny", "default-deny-all"):
            policy.shape = "default-deny-all" if policy.shape == "default-deny" else "default-deny"
        else:
            policy.port = policy.port + 1 if policy.port < 65000 else 1024
        return self._claim(Change("apply", policy.kind, policy.namespace, policy.name, policy.document()))

    def delete_policy(self) -> Change | None:
        key = self._pick(self.policy_bag, _same, lambda k: k[0] != "GlobalNetworkPolicy")
        if key is None:
            return None
        policy = self.policies.pop(key)
        self.policy_bag.remove(key)
        return self._claim(Change("delete", policy.kind, policy.namespace, policy.name))

    def create_pod(self) -> Change | None:
        ns = self.namespaces[self.rng.randrange(len(self.namespaces))]
        pod = self._add_pod(ns.apps[self.rng.randrange(len(ns.apps))])
        return self._claim(Change("apply", "Pod", pod.namespace, pod.name, pod.document()))

    def delete_pod(self) -> Change | None:
        key = self._pick(self.pod_bag, _pod_key, _any)
        if key is None:
            return None
        pod = self.pods.pop(key)
        self.pod_bag.remove(key)
        return self._claim(Change("delete", "Pod", pod.namespace, pod.name))

    def relabel_pod(self) -> Change | None:
        """Half bump ``version`` (selected by nothing: must cost 0 bytes), half toggle ``role=web``."""
        key = self._pick(self.pod_bag, _pod_key, _any)
        if key is None:
            return None
        pod = self.pods[key]
        if self.rng.random() < 0.5:
            pod.version = pod.version % 9 + 1
        else:
            pod.web = not pod.web
        return self._claim(Change("apply", "Pod", pod.namespace, pod.name, pod.document()))
