"""Tiers: which tiers exist, how they sort and what they do at their end (calico.md 2.4, 2.8).

Owns `TierInfo`, the implicit tiers, `tier_table` (implicit tiers overlaid with Tier resources),
`tier_of` and `tier_sort_key` (Felix's ``TierLess``). It does not own policies or their order
within a tier (`policycore.calc.normalize`).

``default`` (order 1 000 000, Deny), ``kube-admin`` (1 000, Pass) and ``kube-baseline``
(10 000 000, Pass) exist implicitly with Calico's reserved values unless a Tier resource
overrides them. A tier with no Tier resource is **invalid**: it is kept (Felix keeps such tiers),
sorts after every valid tier and denies at its end, so its policies fail closed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from policycore.ir import TierDefault
from policycore.model.calico import Tier

DEFAULT_TIER = "default"
IMPLICIT_TIERS: Mapping[str, tuple[float, TierDefault]] = {
    "kube-admin": (1_000.0, "pass"),
    DEFAULT_TIER: (1_000_000.0, "deny"),
    "kube-baseline": (10_000_000.0, "pass"),
}


@dataclass(frozen=True, slots=True)
class TierInfo:
    """A tier as evaluation needs it; ``valid`` is False when no Tier resource (or implicit tier) exists."""

    name: str
    order: float | None
    default_action: TierDefault
    valid: bool = True

    @property
    def sort_key(self) -> tuple[bool, bool, float, str]:
        return tier_sort_key(self.name, self.order, self.valid)


def tier_sort_key(name: str, order: float | None, valid: bool = True) -> tuple[bool, bool, float, str]:
    """Felix's ``TierLess``: valid first, None order last, then ascending order, then name."""
    return (not valid, order is None, 0.0 if order is None else order, name)


def tier_table(tiers: Iterable[Tier]) -> dict[str, TierInfo]:
    """The implicit tiers overlaid with the Tier resources."""
    table = {name: TierInfo(name, order, action) for name, (order, action) in IMPLICIT_TIERS.items()}
    for tier in tiers:
        action: TierDefault = "pass" if tier.spec.default_action == "Pass" else "deny"
        table[tier.metadata.name] = TierInfo(tier.metadata.name, tier.spec.order, action)
    return table


def tier_of(name: str, table: Mapping[str, TierInfo]) -> TierInfo:
    """The tier called `name`, or an invalid (fail-closed: last, Deny) tier if there is none."""
    return table.get(name) or TierInfo(name, None, "deny", valid=False)
