"""The Kaliko nftables table as a value, and the nft scripts that create it or move it forward.

Owns `TableModel` (every set, map and chain of ``table ip kaliko`` with its content), `render`
(a `NodeState` → a model, reusing the previous render for every object that did not change) and
the scripts: `create_script` (replace the whole table in one transaction) and `update_script`
(the smallest ordered delta between two models). It does not own rule text (`nft_rules`), reading
the kernel back (`nft_readback`) or running scripts (`nft_driver`). Pure: no I/O.

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
``render(s, prev).model == render(s).model``; `update_script(a, b)` applied to a kernel holding
``a`` yields ``b``, and is empty when ``a == b``; scripts never name another table.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TypeVar

from node_agent.dataplane.nft_rules import (
    FAMILY,
    FORWARD_CHAIN,
    FROM_WL_CHAIN,
    FROM_WL_MAP,
    PORT_PROTOCOLS,
    PORT_PROTOCOLS_SET,
    SOURCES_SET,
    SOURCES_TYPE,
    TABLE,
    TO_WL_CHAIN,
    TO_WL_MAP,
    RenderError,
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

T = TypeVar("T")
FORWARD_HOOK = "type filter hook forward priority filter; policy accept;"
_IFACE = re.compile(rf"{IFACE_PREFIX}[A-Za-z0-9_.-]{{0,{IFACE_MAX - len(IFACE_PREFIX)}}}")
_DIRECTIONS: tuple[Direction, ...] = ("ingress", "egress")
_DISPATCH: tuple[tuple[Direction, str], ...] = (("egress", FROM_WL_MAP), ("ingress", TO_WL_MAP))
_SET_TYPES = {"ip": "ipv4_addr", "net": "ipv4_addr", "ip_port": "ipv4_addr . inet_proto . inet_service"}


@dataclass(frozen=True, slots=True)
class SetSpec:
    """A named set or verdict map. Map elements are ``'"<key>" : <verdict>'`` strings."""

    name: str
    type: str
    elements: frozenset[str] = frozenset()
    interval: bool = False
    is_map: bool = False
    comment: str = ""

    def header(self) -> tuple[str, bool, bool]:
        return (self.type, self.interval, self.is_map)


@dataclass(frozen=True, slots=True)
class ChainSpec:
    """A chain: its rule lines in order; ``hook`` is set for base chains."""

    name: str
    rules: tuple[str, ...]
    comment: str = ""
    hook: str = ""


@dataclass(frozen=True, slots=True)
class TableModel:
    """Everything in our table. Treated as immutable: renders build new dicts."""

    sets: Mapping[str, SetSpec]
    chains: Mapping[str, ChainSpec]


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


EMPTY = Rendered(NodeState(), _base_model())


def ipset_spec(ipset: IpSet) -> SetSpec:
    """The nft set of an IR ip set (members that can never match IPv4 are left out)."""
    if ipset.kind == "net":
        elements = frozenset(collapse_nets(ipset.members, f"ipsets[{ipset.set_id}].members"))
    else:
        elements = frozenset(set_elements(ipset.kind, ipset.members))
    return SetSpec(
        set_name(ipset.set_id),
        _SET_TYPES[ipset.kind],
        elements,
        interval=ipset.kind == "net",
        comment=sanitize(f"{ipset.kind} set {ipset.set_id}"),
    )


def _moved_spec(spec: SetSpec, before: IpSet, after: IpSet) -> SetSpec:
    """``spec`` (the render of ``before``) moved to ``after`` by converting only the delta."""
    if after.kind == "net":
        return ipset_spec(after)
    gone = set_elements(after.kind, before.members - after.members)
    new = set_elements(after.kind, after.members - before.members)
    elements = spec.elements - gone if gone else spec.elements
    if new:
        elements = elements | new
    return SetSpec(spec.name, spec.type, elements, spec.interval, spec.is_map, spec.comment)


def _replaced(new: Mapping[str, T], old: Mapping[str, T]) -> list[str]:
    """The keys of ``new`` whose value is not the very object ``old`` holds, in ``new``'s order.

    Runs in C (no Python-level loop): states are compared on every apply, and unchanged objects
    are shared between consecutive states, so identity is the cheap and exact test.
    """
    return list(itertools.compress(new.keys(), map(operator.is_not, new.values(), map(old.get, new.keys()))))


def _check_iface(endpoint: EndpointProgram, ifaces: Mapping[str, str]) -> None:
    if not _IFACE.fullmatch(endpoint.iface):
        raise RenderError(
            f"endpoints[{endpoint.key}].iface: {endpoint.iface!r} is not {IFACE_PREFIX!r} + up to "
            f"{IFACE_MAX - len(IFACE_PREFIX)} of [A-Za-z0-9_.-]"
        )
    owner = ifaces.get(endpoint.iface)
    if owner is not None and owner != endpoint.key:
        raise RenderError(f"endpoints[{endpoint.key}].iface: {endpoint.iface!r} is already used by {owner}")


def render(state: NodeState, prev: Rendered | None = None) -> Rendered:
    """The model of ``state``; with ``prev``, only objects that changed since it are re-rendered."""
    prev = prev or EMPTY
    old = prev.state
    sets, chains = dict(prev.model.sets), dict(prev.model.chains)
    nets, ifaces = dict(prev.nets), dict(prev.ifaces)

    retyped: set[str] = set(old.ipsets.keys() - state.ipsets.keys())
    for set_id in retyped:
        del sets[set_name(set_id)]
    for set_id in _replaced(state.ipsets, old.ipsets):
        ipset, before = state.ipsets[set_id], old.ipsets.get(set_id)
        if before is None or before.kind != ipset.kind:
            retyped.add(set_id)
            sets[set_name(set_id)] = ipset_spec(ipset)
        elif before.members != ipset.members:
            sets[set_name(set_id)] = _moved_spec(sets[set_name(set_id)], before, ipset)

    removed = old.policies.keys() - state.policies.keys()
    changed = set(_replaced(state.policies, old.policies))
    if retyped:
        changed |= {pid for pid, p in state.policies.items() if not p.ipset_refs().isdisjoint(retyped)}
    presence = set(removed)
    for pid in removed:
        for direction in _DIRECTIONS:
            chains.pop(policy_chain(pid, direction), None)
            nets.pop(policy_chain(pid, direction), None)
    for pid in changed:
        program, before_program = state.policies[pid], old.policies.get(pid)
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
            body = policy_chain_rules(rules, state.ipsets, used, direction)
            chains[name] = ChainSpec(name, body, sanitize(f"{direction} of policy {pid}"))
            nets[name] = used

    removed_eps = old.endpoints.keys() - state.endpoints.keys()
    changed_eps = set(_replaced(state.endpoints, old.endpoints))
    if presence:
        changed_eps |= {k for k, e in state.endpoints.items() if not e.policy_refs().isdisjoint(presence)}
    per_endpoint = (FROM_WL_MAP, TO_WL_MAP, SOURCES_SET)
    entries = {name: set(sets[name].elements) for name in per_endpoint}
    for key in removed_eps | changed_eps:
        before_ep = old.endpoints.get(key)
        if before_ep is not None:
            ifaces.pop(before_ep.iface, None)
            for direction, map_name in _DISPATCH:
                name = endpoint_chain(before_ep.iface, direction)
                chains.pop(name, None)
                entries[map_name].discard(map_entry(before_ep.iface, name))
            entries[SOURCES_SET] -= source_elements(before_ep)
    for key in sorted(changed_eps):
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

    if removed or changed:
        wanted = {name: cidrs for used in nets.values() for name, cidrs in used.items()}
        for name in [n for n in sets if n.startswith("n-") and n not in wanted]:
            del sets[name]
        for name, cidrs in wanted.items():
            if name not in sets:
                sets[name] = SetSpec(name, "ipv4_addr", frozenset(cidrs), interval=True, comment="nets")
    return Rendered(state.copy(), TableModel(sets, chains), nets, ifaces)


def _q(name: str) -> str:
    return f"{FAMILY} {TABLE} {name}"


def _elements(elements: frozenset[str], *, keys: bool = False) -> str:
    items = sorted(e.split(" : ", 1)[0] for e in elements) if keys else sorted(elements)
    return "{ " + ", ".join(items) + " }"


def _add_set(spec: SetSpec, *, elements: bool = True) -> list[str]:
    kind = "map" if spec.is_map else "set"
    flags = " flags interval;" if spec.interval else ""
    comment = f' comment "{spec.comment}";' if spec.comment else ""
    out = [f"add {kind} {_q(spec.name)} {{ type {spec.type};{flags}{comment} }}"]
    if spec.elements and elements:
        out.append(f"add element {_q(spec.name)} {_elements(spec.elements)}")
    return out


def _add_chain(chain: ChainSpec) -> str:
    parts = ([chain.hook] if chain.hook else []) + ([f'comment "{chain.comment}";'] if chain.comment else [])
    return f"add chain {_q(chain.name)}" + (" { " + " ".join(parts) + " }" if parts else "")


def update_script(old: TableModel, new: TableModel) -> str:
    """The nft commands that turn a table holding ``old`` into ``new`` ("" when equal)."""
    out: list[str] = []
    sets = [(n, new.sets[n], old.sets.get(n)) for n in _replaced(new.sets, old.sets)]
    retyped = {n for n, spec, before in sets if before is not None and before.header() != spec.header()}
    removed_sets = sorted(old.sets.keys() - new.sets.keys())
    for _, spec, before in sets:
        if before is None:
            out += _add_set(spec, elements=not spec.is_map)  # map entries name chains: added below
    chains = [(n, new.chains[n], old.chains.get(n)) for n in _replaced(new.chains, old.chains)]
    new_chains = [c for _, c, before in chains if before is None]
    out += [_add_chain(c) for c in new_chains]
    for name, spec, before in sets:
        if before is None and spec.is_map:
            before = SetSpec(name, spec.type)
        if before is None or name in retyped:
            continue
        gone, added = before.elements - spec.elements, spec.elements - before.elements
        if gone:
            out.append(f"delete element {_q(name)} {_elements(gone, keys=spec.is_map)}")
        if added:
            out.append(f"add element {_q(name)} {_elements(added)}")
    changed = [c for _, c, before in chains if before is not None and before.rules != c.rules]
    removed_chains = sorted(old.chains.keys() - new.chains.keys())
    out += [f"flush chain {_q(name)}" for name in [c.name for c in changed] + removed_chains]
    out += [
        f"delete {'map' if old.sets[n].is_map else 'set'} {_q(n)}" for n in removed_sets + sorted(retyped)
    ]
    for name in sorted(retyped):
        out += _add_set(new.sets[name])  # a map's header never changes: only plain sets get here
    for chain in new_chains + changed:
        out += [f"add rule {_q(chain.name)} {rule}" for rule in chain.rules]
    out += [f"delete chain {_q(name)}" for name in removed_chains]
    return "\n".join(out) + "\n" if out else ""


def create_script(model: TableModel) -> str:
    """One transaction that replaces whatever our table holds with ``model``."""
    head = f"add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\nadd table {FAMILY} {TABLE}\n"
    return head + update_script(TableModel({}, {}), model)


def delete_script() -> str:
    """One transaction that removes our table (and nothing else)."""
    return f"add table {FAMILY} {TABLE}\ndelete table {FAMILY} {TABLE}\n"
