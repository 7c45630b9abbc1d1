"""A node state as Kaliko's nftables table: `render`, moved forward from the previous render.

Owns the layout of ``table ip kaliko`` (the base chains and maps below), `render` (a `NodeState`
→ a `TableModel`, reusing the previous render for every object that did not change, and noting
the element deltas it already knows) and `Rendered`, what one render leaves for the next. It does
not own the model type or scripts (`nft_model`), rule text (`nft_rules`), reading the kernel back
(`nft_readback`) or running scripts (`nft_driver`). Pure: no I/O.

Layout (Calico's nftables mode, one table we own)::

    forward (hook forward, priority filter, policy accept)
      iifname "kal*" iifname . ip saddr != @wl-sources drop       (anti-spoofing, before conntrack)
      ct state established,related accept; ct state invalid drop
      iifname "kal*" jump kaliko-from-wl  ->  iifname vmap @from-wl  (goto kaliko-fw-<iface>)
                                              else drop "unknown workload interface"
      oifname "kal*" jump kaliko-to-wl    ->  oifname vmap @to-wl    (goto kaliko-tw-<iface>)
                                              else drop "unknown workload interface"
      (anything else, e.g. the agent's own traffic, falls through to policy accept)

An egress chain returns when the policy allows (so the packet goes on to the destination's
ingress chain); an ingress chain accepts. Workload interfaces not in the maps are dropped (Felix's
fail-closed dispatch); non-workload traffic is never touched.

Anti-spoofing: a workload may only send from its own addresses (`EndpointProgram.ips`). The
``wl-sources`` set holds ``"<iface>" . <ip>`` for each IPv4 address of each local endpoint, and the
first rule of ``forward`` drops a packet from a workload interface whose (interface, source) pair
is not in it. It comes before the conntrack accept, as Felix's RPF check sits in the raw table
before conntrack, so a spoofed packet cannot ride on another workload's established connection.
A pod change only adds or deletes elements of that set (no rule changes).

Invariants: `render` is a pure function of the state (the previous render only saves work), so
``render(s, prev).model == render(s).model``; ``render(s, prev).moves`` are exactly the element
changes of the ip sets it moved; a render that changes no chain shares ``prev``'s chain mapping.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from node_agent.dataplane.nft_model import (
    ChainSpec,
    ElementMoves,
    SetSpec,
    TableModel,
    removed_keys,
    replaced_keys,
)
from node_agent.dataplane.nft_rules import (
    FORWARD_CHAIN,
    FROM_WL_CHAIN,
    FROM_WL_MAP,
    PORT_PROTOCOLS,
    PORT_PROTOCOLS_SET,
    SOURCES_SET,
    SOURCES_TYPE,
    TO_WL_CHAIN,
    TO_WL_MAP,
    RenderError,
    SideMemo,
    collapse_nets,
    endpoint_chain,
    endpoint_chain_rules,
    line,
    map_entry,
    policy_chain,
    policy_chain_rules,
    sanitize,
    set_elements,
    set_name,
    source_elements,
)
from policycore.ir import Direction, EndpointProgram, IpSet, NodeState
from policycore.naming import IFACE_MAX, IFACE_PREFIX

FORWARD_HOOK = "type filter hook forward priority filter; policy accept;"
_IFACE = re.compile(rf"{IFACE_PREFIX}[A-Za-z0-9_.-]{{0,{IFACE_MAX - len(IFACE_PREFIX)}}}")
_DIRECTIONS: tuple[Direction, ...] = ("ingress", "egress")
_DISPATCH: tuple[tuple[Direction, str], ...] = (("egress", FROM_WL_MAP), ("ingress", TO_WL_MAP))
_SET_TYPES = {"ip": "ipv4_addr", "net": "ipv4_addr", "ip_port": "ipv4_addr . inet_proto . inet_service"}


def _base_model() -> TableModel:
    prefix = f'"{IFACE_PREFIX}*"'
    chains = [
        ChainSpec(
            FORWARD_CHAIN,
            (
                line(
                    f"iifname {prefix} iifname . ip saddr != @{SOURCES_SET} counter drop",
                    "anti-spoofing: not the workload's own address",
                ),
                line("ct state established,related counter accept", "conntrack: established"),
                line("ct state invalid counter drop", "conntrack: invalid"),
                line(f"iifname {prefix} counter jump {FROM_WL_CHAIN}", "from workloads"),
                line(f"oifname {prefix} counter jump {TO_WL_CHAIN}", "to workloads"),
            ),
            "kaliko: workload dispatch",
            FORWARD_HOOK,
        ),
        ChainSpec(
            FROM_WL_CHAIN,
            (
                line(f"iifname vmap @{FROM_WL_MAP}", "dispatch to kaliko-fw-<iface>"),
                line("counter drop", "unknown workload interface"),
            ),
        ),
        ChainSpec(
            TO_WL_CHAIN,
            (
                line(f"oifname vmap @{TO_WL_MAP}", "dispatch to kaliko-tw-<iface>"),
                line("counter drop", "unknown workload interface"),
            ),
        ),
    ]
    sets = [
        SetSpec(PORT_PROTOCOLS_SET, "inet_proto", frozenset(str(p) for p in PORT_PROTOCOLS)),
        SetSpec(FROM_WL_MAP, "ifname : verdict", is_map=True),
        SetSpec(TO_WL_MAP, "ifname : verdict", is_map=True),
        SetSpec(SOURCES_SET, SOURCES_TYPE),
    ]
    return TableModel({s.name: s for s in sets}, {c.name: c for c in chains})


@dataclass(frozen=True, slots=True)
class Rendered:
    """A state, its model, and what `render` needs to move on from it cheaply."""

    state: NodeState
    model: TableModel
    nets: Mapping[str, Mapping[str, tuple[str, ...]]] = field(default_factory=dict)
    """Policy chain name → the inline CIDR sets its rules use."""
    ifaces: Mapping[str, str] = field(default_factory=dict)
    """Interface → endpoint key."""
    moves: ElementMoves = field(default_factory=dict)
    """Set name → (elements gone, elements added) since the render this one was moved from, for
    the ip sets whose members changed (so `update_script` need not diff them again)."""


EMPTY = Rendered(NodeState(), _base_model())


def ipset_spec(ipset: IpSet) -> SetSpec:
    """The nft set of an IR ip set (members that can never match IPv4 are left out)."""
    if ipset.kind == "net":
        elements = frozenset(collapse_nets(ipset.members, f"ipsets[{ipset.set_id}].members"))
    else:
        valid = set_elements(ipset.kind, ipset.members)
        same = ipset.kind == "ip" and len(valid) == len(ipset.members)  # then valid == members
        elements = ipset.members if same else frozenset(valid)
    return SetSpec(
        set_name(ipset.set_id),
        _SET_TYPES[ipset.kind],
        elements,
        interval=ipset.kind == "net",
        comment=sanitize(f"{ipset.kind} set {ipset.set_id}"),
    )


def _moved_spec(
    spec: SetSpec, before: IpSet, after: IpSet
) -> tuple[SetSpec, tuple[frozenset[str], frozenset[str]] | None]:
    """``spec`` (the render of ``before``) moved to ``after`` by converting only the delta, and
    the delta in elements (None for interval sets, which are rebuilt).

    Exact because a member maps to at most one element and no two members to the same one.
    """
    if after.kind == "net":
        return ipset_spec(after), None
    gone_members, added_members = before.members - after.members, after.members - before.members
    if not gone_members and not added_members:
        return spec, None
    gone = frozenset(set_elements(after.kind, gone_members))
    added = frozenset(set_elements(after.kind, added_members))
    if spec.elements is before.members and after.kind == "ip" and len(added) == len(added_members):
        elements = after.members  # every member is its own element: share the IR's frozenset
    else:
        elements = (spec.elements - gone) | added
    moved = SetSpec(spec.name, spec.type, elements, spec.interval, spec.is_map, spec.comment)
    return moved, (gone, added)


def _check_iface(endpoint: EndpointProgram, ifaces: Mapping[str, str]) -> None:
    if not _IFACE.fullmatch(endpoint.iface):
        raise RenderError(
            f"endpoints[{endpoint.key}].iface: {endpoint.iface!r} is not {IFACE_PREFIX!r} + up to "
            f"{IFACE_MAX - len(IFACE_PREFIX)} of [A-Za-z0-9_.-]"
        )
    owner = ifaces.get(endpoint.iface)
    if owner is not None and owner != endpoint.key:
        raise RenderError(f"endpoints[{endpoint.key}].iface: {endpoint.iface!r} is already used by {owner}")


@dataclass(slots=True)
class _Move:
    """One render's working copies and what changed (the state of `render` between its steps)."""

    state: NodeState
    old: NodeState
    sets: dict[str, SetSpec]
    chains: dict[str, ChainSpec]
    nets: dict[str, Mapping[str, tuple[str, ...]]]
    ifaces: dict[str, str]


def render(state: NodeState, prev: Rendered | None = None) -> Rendered:
    """The model of ``state``; with ``prev``, only objects that changed since it are re-rendered."""
    prev = prev or EMPTY
    old = prev.state
    sets = dict(prev.model.sets)
    moves: dict[str, tuple[frozenset[str], frozenset[str]]] = {}
    replaced = replaced_keys(state.ipsets, old.ipsets)
    retyped = removed_keys(state.ipsets, old.ipsets, replaced)
    for set_id in retyped:
        del sets[set_name(set_id)]
    for set_id in replaced:
        ipset, before, name = state.ipsets[set_id], old.ipsets.get(set_id), set_name(set_id)
        if before is None or before.kind != ipset.kind:
            retyped.add(set_id)
            sets[name] = ipset_spec(ipset)
        else:
            sets[name], delta = _moved_spec(sets[name], before, ipset)
            if delta is not None:
                moves[name] = delta

    changed = replaced_keys(state.policies, old.policies)
    removed = removed_keys(state.policies, old.policies, changed)
    if retyped:
        changed += [pid for pid, p in state.policies.items() if not p.ipset_refs().isdisjoint(retyped)]
    changed_eps = replaced_keys(state.endpoints, old.endpoints)
    removed_eps = removed_keys(state.endpoints, old.endpoints, changed_eps)
    if not (removed or changed or removed_eps or changed_eps):  # ip-set members only: chains stay
        return Rendered(state.copy(), TableModel(sets, prev.model.chains), prev.nets, prev.ifaces, moves)
    work = _Move(state, old, sets, dict(prev.model.chains), dict(prev.nets), dict(prev.ifaces))
    presence = _move_policies(work, removed, set(changed))
    _move_endpoints(work, removed_eps, set(changed_eps), presence)
    if removed or changed:
        wanted = {name: cidrs for used in work.nets.values() for name, cidrs in used.items()}
        for name in [n for n in sets if n.startswith("n-") and n not in wanted]:
            del sets[name]
        for name, cidrs in wanted.items():
            if name not in sets:
                sets[name] = SetSpec(name, "ipv4_addr", frozenset(cidrs), interval=True, comment="nets")
    return Rendered(state.copy(), TableModel(sets, work.chains), work.nets, work.ifaces, moves)


def _move_policies(move: _Move, removed: set[str], changed: set[str]) -> set[str]:
    """Re-render the chains of changed policies; return the policies whose chains appeared or went."""
    chains, nets = move.chains, move.nets
    memo: SideMemo = {}
    presence = set(removed)
    for pid in removed:
        for direction in _DIRECTIONS:
            chains.pop(policy_chain(pid, direction), None)
            nets.pop(policy_chain(pid, direction), None)
    for pid in changed:
        program, before_program = move.state.policies[pid], move.old.policies.get(pid)
        for direction in _DIRECTIONS:
            rules = program.ingress if direction == "ingress" else program.egress
            name = policy_chain(pid, direction)
            had = before_program is not None and bool(getattr(before_program, direction))
            if before_program is None or had != bool(rules):
                presence.add(pid)
            if not rules:
                chains.pop(name, None)
                nets.pop(name, None)
                continue
            used: dict[str, tuple[str, ...]] = {}
            body = policy_chain_rules(rules, move.state.ipsets, used, direction, memo)
            chains[name] = ChainSpec(name, body, sanitize(f"{direction} of policy {pid}"))
            nets[name] = used
    return presence


def _move_endpoints(move: _Move, removed: set[str], changed: set[str], presence: set[str]) -> None:
    """Re-render endpoint chains and their map and anti-spoofing elements (also for endpoints
    that jump to a policy whose chain appeared or went)."""
    state, old, sets, chains, ifaces = move.state, move.old, move.sets, move.chains, move.ifaces
    if presence:
        changed |= {k for k, e in state.endpoints.items() if not e.policy_refs().isdisjoint(presence)}
    if not (removed or changed):
        return
    per_endpoint = (FROM_WL_MAP, TO_WL_MAP, SOURCES_SET)
    entries = {name: set(sets[name].elements) for name in per_endpoint}
    for key in removed | changed:
        before_ep = old.endpoints.get(key)
        if before_ep is not None:
            ifaces.pop(before_ep.iface, None)
            for direction, map_name in _DISPATCH:
                name = endpoint_chain(before_ep.iface, direction)
                chains.pop(name, None)
                entries[map_name].discard(map_entry(before_ep.iface, name))
            entries[SOURCES_SET] -= source_elements(before_ep)
    for key in sorted(changed):
        endpoint = state.endpoints[key]
        _check_iface(endpoint, ifaces)
        ifaces[endpoint.iface] = key
        for direction, map_name in _DISPATCH:
            name = endpoint_chain(endpoint.iface, direction)
            body = endpoint_chain_rules(endpoint, direction, state.policies)
            chains[name] = ChainSpec(name, body, sanitize(f"{direction} of endpoint {key}"))
            entries[map_name].add(map_entry(endpoint.iface, name))
        entries[SOURCES_SET] |= source_elements(endpoint)
    for name in per_endpoint:
        if entries[name] != sets[name].elements:
            sets[name] = replace(sets[name], elements=frozenset(entries[name]))
