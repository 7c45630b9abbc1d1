"""The diff vocabulary: what the controller sends one node, and how a diff changes a `NodeState`.

Owns the op types, `NodeDiff` (a stream position plus ordered ops) and `apply_ops`, the one pure
function both sides use to move a state forward. It does not own sequencing (which ops a change
produces: `policycore.calc.sequencer`), stream checks (`policycore.desired`) or encoding (`wire`).

Order inside a diff is the dependency order Felix uses: ip-set adds/updates → policy updates →
endpoint updates → endpoint removals → policy removals → ip-set removals, so a data plane that
applies ops in order never references something missing.

A diff with ``snapshot=True`` replaces the whole state: its ops describe the full desired state
(ip sets, policies, endpoints, in that order) and anything not named is removed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from policycore.ir import EndpointProgram, IpSet, NodeState, PolicyProgram


@dataclass(frozen=True, slots=True)
class IpSetReplace:
    """Create an ip set or replace all its members."""

    ipset: IpSet


@dataclass(frozen=True, slots=True)
class IpSetDelta:
    """Add and remove members of an existing ip set."""

    set_id: str
    added: frozenset[str]
    removed: frozenset[str]


@dataclass(frozen=True, slots=True)
class IpSetRemove:
    set_id: str


@dataclass(frozen=True, slots=True)
class PolicyUpdate:
    program: PolicyProgram


@dataclass(frozen=True, slots=True)
class PolicyRemove:
    policy_id: str


@dataclass(frozen=True, slots=True)
class EndpointUpdate:
    program: EndpointProgram


@dataclass(frozen=True, slots=True)
class EndpointRemove:
    key: str


Op = IpSetReplace | IpSetDelta | IpSetRemove | PolicyUpdate | PolicyRemove | EndpointUpdate | EndpointRemove


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a message sits in a node's stream: the controller's epoch and the node's sequence.

    ``revision`` is the datastore revision the state reflects once this message is applied.
    """

    epoch: int
    seq: int
    revision: int


@dataclass(frozen=True, slots=True)
class NodeDiff:
    """One message for one node: a position and ordered ops (or a full snapshot)."""

    node: str
    position: StreamPosition
    ops: tuple[Op, ...]
    snapshot: bool = False


class DiffError(ValueError):
    """An op that cannot apply to the state it was given (a delta to a missing set, ...)."""


def apply_ops(state: NodeState, ops: Iterable[Op], *, snapshot: bool = False) -> NodeState:
    """Return a new state: ``state`` with ``ops`` applied (or, for a snapshot, ``ops`` alone).

    Raises `DiffError` for an op that does not fit the state; the input is never modified.
    Successive deltas to one set (several diffs of a batch applied as one, `DesiredState.offer_run`)
    are composed first and cost one copy of the set, not one each: the copy of a large set is what
    dominates a delta.
    """
    new = NodeState() if snapshot else state.copy()
    deltas: dict[str, tuple[frozenset[str], frozenset[str]]] = {}  # set id → (added, removed), pending
    for op in ops:
        if isinstance(op, IpSetDelta):
            if op.set_id in deltas:
                # (added, removed) then op == (added - op.removed) | op.added, removed | op.removed
                added, removed = deltas[op.set_id]
                deltas[op.set_id] = ((added - op.removed) | op.added, removed | op.removed)
            elif op.set_id in new.ipsets:
                deltas[op.set_id] = (op.added, op.removed)
            else:
                raise DiffError(f"ip set {op.set_id}: delta for a set that is not programmed")
        elif isinstance(op, IpSetReplace):
            deltas.pop(op.ipset.set_id, None)  # replaced: its pending delta no longer matters
            new.ipsets[op.ipset.set_id] = op.ipset
        elif isinstance(op, IpSetRemove):
            deltas.pop(op.set_id, None)
            new.ipsets.pop(op.set_id, None)
        elif isinstance(op, PolicyUpdate):
            new.policies[op.program.policy_id] = op.program
        elif isinstance(op, PolicyRemove):
            new.policies.pop(op.policy_id, None)
        elif isinstance(op, EndpointUpdate):
            new.endpoints[op.program.key] = op.program
        else:
            new.endpoints.pop(op.key, None)
    for set_id, (added, removed) in deltas.items():
        current = new.ipsets[set_id]
        members = current.members - removed if removed else current.members
        new.ipsets[set_id] = IpSet(set_id, current.kind, members | added if added else members)
    return new


def snapshot_ops(state: NodeState) -> tuple[Op, ...]:
    """The ops of a snapshot diff that reproduces ``state`` exactly, in dependency order."""
    ops: list[Op] = [IpSetReplace(s) for _, s in sorted(state.ipsets.items())]
    ops += [PolicyUpdate(p) for _, p in sorted(state.policies.items())]
    ops += [EndpointUpdate(e) for _, e in sorted(state.endpoints.items())]
    return tuple(ops)


def diff_states(old: NodeState, new: NodeState) -> tuple[Op, ...]:
    """The smallest ops, in dependency order, that turn ``old`` into ``new`` (used by the oracle
    and by tests; the incremental graph produces the same ops without comparing whole states)."""
    ops: list[Op] = []
    for set_id, s in sorted(new.ipsets.items()):
        before = old.ipsets.get(set_id)
        if before is None or before.kind != s.kind:
            ops.append(IpSetReplace(s))
        elif before.members != s.members:
            ops.append(IpSetDelta(set_id, s.members - before.members, before.members - s.members))
    ops += [PolicyUpdate(p) for k, p in sorted(new.policies.items()) if old.policies.get(k) != p]
    ops += [EndpointUpdate(e) for k, e in sorted(new.endpoints.items()) if old.endpoints.get(k) != e]
    ops += [EndpointRemove(k) for k in sorted(old.endpoints) if k not in new.endpoints]
    ops += [PolicyRemove(k) for k in sorted(old.policies) if k not in new.policies]
    ops += [IpSetRemove(k) for k in sorted(old.ipsets) if k not in new.ipsets]
    return tuple(ops)
