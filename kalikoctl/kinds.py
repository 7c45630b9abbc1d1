"""Kind names on the command line: case-insensitive names, plurals and short aliases → canonical kinds.

Owns the alias table of the online commands (``get``, ``delete``, ``label``): calicoctl's and
kubectl's spellings, where ``networkpolicy`` / ``netpol`` / ``np`` mean Kaliko's (Calico-style)
``NetworkPolicy`` and the Kubernetes one is ``kubernetesnetworkpolicy`` / ``k8snetworkpolicy`` /
``knp``. It does not own the kinds themselves (`policycore.model.KINDS`).

Invariant: every canonical kind is reachable by its own name in any case, singular or plural.
"""

from __future__ import annotations

import typer

from policycore.model import KINDS

_ALIASES: dict[str, tuple[str, ...]] = {
    "Namespace": ("ns",),
    "Node": ("no",),
    "Pod": ("po",),
    "Service": ("svc",),
    "KubernetesNetworkPolicy": ("k8snetworkpolicy", "k8snetworkpolicies", "knp", "knps"),
    "NetworkPolicy": ("netpol", "netpols", "np", "nps", "policy", "policies"),
    "GlobalNetworkPolicy": ("gnp", "gnps"),
    "Tier": (),
}


def _plural(name: str) -> str:
    return name[:-1] + "ies" if name.endswith("y") else name + "s"


ALIASES: dict[str, str] = {
    alias: kind for kind, extra in _ALIASES.items() for alias in (kind.lower(), _plural(kind.lower()), *extra)
}
assert set(ALIASES.values()) == set(KINDS), "every kind needs aliases"


def resolve_kind(name: str) -> str:
    """The canonical kind ``name`` stands for; a usage error (exit 2) listing the kinds otherwise."""
    found = ALIASES.get(name.lower())
    if found is None:
        known = ", ".join(
            f"{kind} ({'/'.join(a for a, k in ALIASES.items() if k == kind)})" for kind in KINDS
        )
        raise typer.BadParameter(f"unknown kind {name!r}; known: {known}", param_hint="KIND")
    return found
