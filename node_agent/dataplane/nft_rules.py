"""nft rule text for Kaliko's table: one IR rule, one policy chain, one endpoint chain.

Owns the names of everything in ``table ip kaliko`` (sets, chains, maps, marks) and the translation
of `policycore.ir` rules, policies and endpoints into nft rule lines, and of ip-set members and
endpoint addresses into set elements (as nft lists them). It does not own the table as a
whole (`nft_render`) or scripts (`nft_model`), reading the kernel back (`nft_readback`) or I/O (`nft_driver`).
Pure: no I/O, no clock.

Theory of operation (Felix's mark protocol, `felix/rules/endpoints.go`):

* an endpoint chain (``kaliko-fw-<iface>`` for egress, ``kaliko-tw-<iface>`` for ingress) clears the
  accept and pass marks, then walks its tiers. Per tier: clear the pass mark ("Start of tier X"),
  jump to each policy chain while the pass mark is clear, (egress) return as soon as the accept
  mark is set, and at the end of a ``deny`` tier drop unless a policy passed. After the last tier
  the profile allows. No tiers: the profile allows at once.
* a policy chain (``kaliko-pi-<hash>`` / ``kaliko-po-<hash>``) holds its rules in order: ``allow``
  accepts (ingress: the packet's last decision, so it is final at once) or sets the accept mark
  and returns (egress: the destination's ingress chain still has its say), ``pass`` sets the pass
  mark and returns, ``deny`` drops, ``log`` logs and goes on. Accepting in place saves three
  expressions per ingress allow and the mark test after each ingress jump: the kernel's load and
  per-transaction validation cost is per expression. A policy with no rules in a direction gets
  no chain and no jump (it can never decide anything).
* a rule is the AND of its criteria; a criterion is an OR of alternatives (``src_ipsets`` entries,
  port ranges ORed with named-port sets, ...). nft cannot OR two lookups in one rule, so a rule
  becomes one nft rule per combination of alternatives (almost always exactly one). Port lists are
  never anonymous sets: every anonymous set is a kernel set, and nft's cache (fetched by every
  transaction) and its load time grow with the number of sets.
* missing references fail closed, as `policycore.evaluate` does: a tier naming a policy that is
  not in the state drops there; a rule naming a missing ip set drops (after its protocol checks).

Invariants: every rule line ends with ``comment "<fingerprint> <label>"``, where the fingerprint is
12 hex digits of a hash of the rule body; `nft_readback` compares chains by these comments. Names
are deterministic functions of ids, so they survive restarts. IPv4 only: IPv6 members never match.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import itertools
import operator
import re
import socket
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeAlias

from policycore.ir import (
    Direction,
    EndpointProgram,
    IcmpMatch,
    IpSet,
    IpSetKind,
    PolicyProgram,
    PortRange,
    Rule,
    TierProgram,
)

FAMILY = "ip"
TABLE = "kaliko"
FORWARD_CHAIN = "forward"
FROM_WL_CHAIN = "kaliko-from-wl"
TO_WL_CHAIN = "kaliko-to-wl"
FROM_WL_MAP = "from-wl"
TO_WL_MAP = "to-wl"
SOURCES_SET = "wl-sources"
"""``"<iface>" . <ip>`` for every IPv4 address of every local endpoint: the only sources allowed in."""
SOURCES_TYPE = "ifname . ipv4_addr"
PORT_PROTOCOLS_SET = "port-protocols"
PORT_PROTOCOLS = (6, 17, 132, 136)
"""Protocols whose packets carry ports (TCP, UDP, SCTP, UDPLite): port criteria need one."""
_PORT_PROTOCOL_NUMBERS = {"tcp": 6, "udp": 17, "sctp": 132}

ACCEPT_MARK = 0x10000
PASS_MARK = 0x20000
_MASK32 = 0xFFFFFFFF
_CLEAR_MARKS = f"meta mark set meta mark & {~(ACCEPT_MARK | PASS_MARK) & _MASK32:#x}"
_CLEAR_PASS = f"meta mark set meta mark & {~PASS_MARK & _MASK32:#x}"
_ACCEPTED = f"meta mark & {ACCEPT_MARK:#x} == {ACCEPT_MARK:#x}"
_NOT_PASSED = f"meta mark & {PASS_MARK:#x} == 0"
COMMENT_MAX = 120
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:/=,#()<>+@ -]")

Alternative = tuple[str, ...]
"""nft match expressions that must all hold."""
Criterion = list[Alternative]
"""Alternatives of which one must hold."""


class RenderError(ValueError):
    """A state that cannot be rendered (bad interface name, bad CIDR); names the field path."""


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


@functools.lru_cache(maxsize=65536)
def set_name(set_id: str) -> str:
    """The nft name of an IR ip set: ``s-`` + 20 hex digits of a hash of its id."""
    return "s-" + _digest(set_id, 20)


def nets_set_name(cidrs: Sequence[str]) -> str:
    """The nft name of an inline CIDR list (a rule's nets): content-addressed."""
    return "n-" + _digest(",".join(cidrs), 20)


@functools.lru_cache(maxsize=65536)
def policy_chain(policy_id: str, direction: Direction) -> str:
    return ("kaliko-pi-" if direction == "ingress" else "kaliko-po-") + _digest(policy_id, 16)


def endpoint_chain(iface: str, direction: Direction) -> str:
    return ("kaliko-tw-" if direction == "ingress" else "kaliko-fw-") + iface


def sanitize(text: str, limit: int = COMMENT_MAX) -> str:
    """Text that is safe inside an nft double-quoted string, at most ``limit`` characters."""
    return _UNSAFE.sub("_", text)[:limit]


def line(body: str, label: str) -> str:
    """A full rule line: the body, then the fingerprint comment."""
    return f'{body} comment "{_digest(body, 12)} {sanitize(label, COMMENT_MAX - 13)}"'


def collapse_nets(cidrs: Sequence[str] | frozenset[str], field: str) -> tuple[str, ...]:
    """IPv4 CIDRs merged so that no two overlap (interval sets refuse overlaps), sorted; IPv6 dropped."""
    nets: list[ipaddress.IPv4Network] = []
    for cidr in cidrs:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError as err:
            raise RenderError(f"{field}: {cidr!r} is not a CIDR ({err})") from None
        if isinstance(net, ipaddress.IPv4Network):
            nets.append(net)
    return tuple(str(n) for n in ipaddress.collapse_addresses(nets))


def _ipv4(text: str) -> str | None:
    """``text`` when it is an IPv4 address in canonical dotted-quad form (what nft prints), else None."""
    try:
        socket.inet_pton(socket.AF_INET, text)  # strict: four decimal octets, no leading zeros
    except OSError:
        return None
    return text


def _element(kind: str, member: str) -> str | None:
    if kind == "ip":
        return _ipv4(member)
    ip, _, proto_port = member.partition(",")
    proto, _, port = proto_port.partition(":")
    number = _PORT_PROTOCOL_NUMBERS.get(proto)
    canonical = port.isdigit() and str(int(port)) == port and int(port) <= 0xFFFF
    if number is None or not canonical or _ipv4(ip) is None:
        return None  # canonical forms only, so no two members make the same element
    return f"{ip} . {number} . {port}"


def set_elements(kind: IpSetKind, members: Iterable[str]) -> set[str]:
    """The nft elements of ``ip`` / ``ip_port`` members; members that can never match IPv4 are left out.

    A member maps to at most one element and distinct members to distinct elements (an ``ip``
    member is its own element), so elements can be moved by member deltas.
    """
    return {e for e in (_element(kind, m) for m in members) if e is not None}


def map_entry(iface: str, chain: str) -> str:
    """A dispatch-map element: the interface and the endpoint chain it goes to."""
    return f'"{iface}" : goto {chain}'


def source_elements(endpoint: EndpointProgram) -> set[str]:
    """The ``wl-sources`` elements of an endpoint: its IPv4 addresses (IPv6 never reaches this table)."""
    entries = set()
    for i, ip in enumerate(endpoint.ips):
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            raise RenderError(f"endpoints[{endpoint.key}].ips[{i}]: {ip!r} is not an IP address") from None
        if isinstance(address, ipaddress.IPv4Address):
            entries.add(f'"{endpoint.iface}" . {address}')
    return entries


def _range(r: PortRange) -> str:
    return str(r.first) if r.first == r.last else f"{r.first}-{r.last}"


def _set_match(ipset: IpSet, src: bool, negate: bool) -> str:
    addr, port = ("ip saddr", "th sport") if src else ("ip daddr", "th dport")
    op = "!= " if negate else ""
    if ipset.kind == "ip_port":
        return f"{addr} . meta l4proto . {port} {op}@{set_name(ipset.set_id)}"
    return f"{addr} {op}@{set_name(ipset.set_id)}"


def _icmp_criteria(rule: Rule) -> list[Criterion]:
    proto = rule.protocol
    icmp = "icmpv6" if proto == 58 else "icmp"
    criteria: list[Criterion] = []
    if rule.icmp is not None:
        criteria.append([_icmp_alternative(icmp, rule.icmp)])
    if rule.not_icmp is not None and (proto is None or proto in (1, 58)):
        t, code = rule.not_icmp.type, rule.not_icmp.code
        alts: Criterion = [(f"{icmp} type != {t}",)]
        if code is not None:
            alts.append((f"{icmp} type {t}", f"{icmp} code != {code}"))
        if proto is None:
            alts.append(("meta l4proto != 1",))
        criteria.append(alts)
    return criteria


def _icmp_alternative(icmp: str, match: IcmpMatch) -> Alternative:
    if match.code is None:
        return (f"{icmp} type {match.type}",)
    return (f"{icmp} type {match.type}", f"{icmp} code {match.code}")


class _Missing(Exception):
    def __init__(self, set_id: str) -> None:
        self.set_id = set_id


_SIDES = {
    src: operator.attrgetter(
        *(
            f"{prefix}{s}_{name}"
            for s in ["src" if src else "dst"]
            for name in ("ipsets", "named_port_ipsets", "nets", "ports")
            for prefix in ("", "not_")
        )
    )
    for src in (True, False)
}


def _lookup(ipsets: Mapping[str, IpSet], set_ids: tuple[str, ...]) -> list[IpSet]:
    found = []
    for set_id in set_ids:
        ipset = ipsets.get(set_id)
        if ipset is None:
            raise _Missing(set_id)
        found.append(ipset)
    return found


_Ids: TypeAlias = tuple[str, ...]
_Ranges: TypeAlias = tuple[PortRange, ...]
_SideFields = tuple[_Ids, _Ids, _Ids, _Ids, _Ids, _Ids, _Ranges, _Ranges]
"""A side's (not_)ipsets, (not_)named_port_ipsets, (not_)nets and (not_)ports, in `_SIDES` order."""
SideMemo = dict[object, tuple[list[Criterion], dict[str, tuple[str, ...]], str | None]]
"""One render's side criteria by what they depend on (rules repeat sets, nets and ports)."""


def _side(
    rule: Rule, ipsets: Mapping[str, IpSet], src: bool, nets_out: dict[str, tuple[str, ...]], memo: SideMemo
) -> list[Criterion]:
    """The criteria of one side of a rule; raises `_Missing` for a missing ip set."""
    fields: _SideFields = _SIDES[src](rule)
    if not any(fields):
        return []
    key = (src, rule.protocol is None or rule.protocol not in PORT_PROTOCOLS, fields)
    found = memo.get(key)
    if found is None:
        nets: dict[str, tuple[str, ...]] = {}
        try:
            found = (_side_criteria(rule, fields, ipsets, src, nets), nets, None)
        except _Missing as missing:
            found = ([], {}, missing.set_id)
        memo[key] = found
    criteria, nets, missing_id = found
    if missing_id is not None:
        raise _Missing(missing_id)
    nets_out.update(nets)
    return criteria


def _side_criteria(
    rule: Rule,
    fields: _SideFields,
    ipsets: Mapping[str, IpSet],
    src: bool,
    nets_out: dict[str, tuple[str, ...]],
) -> list[Criterion]:
    set_ids, not_set_ids, named_ids, not_named_ids, nets, not_nets, ranges, not_ranges = fields
    addr, port = ("ip saddr", "th sport") if src else ("ip daddr", "th dport")
    criteria: list[Criterion] = []
    if set_ids:
        criteria.append([(_set_match(x, src, False),) for x in _lookup(ipsets, set_ids)])
    if not_set_ids:
        criteria.append([tuple(_set_match(x, src, True) for x in _lookup(ipsets, not_set_ids))])
    named = _lookup(ipsets, named_ids) if named_ids else []
    not_named = _lookup(ipsets, not_named_ids) if not_named_ids else []
    for negate, cidr_list in ((False, nets), (True, not_nets)):
        if cidr_list:
            field = f"{rule.rule_id}.{'not_' if negate else ''}{'src' if src else 'dst'}_nets"
            cidrs = collapse_nets(cidr_list, field)
            name = nets_set_name(cidrs)
            nets_out[name] = cidrs
            criteria.append([(f"{addr} {'!= ' if negate else ''}@{name}",)])
    if not (ranges or named or not_ranges or not_named):
        return criteria
    guard: Alternative = ()
    if rule.protocol is None or rule.protocol not in PORT_PROTOCOLS:
        guard = (f"meta l4proto @{PORT_PROTOCOLS_SET}",)
    if ranges or named:
        alts = [(*guard, f"{port} {_range(r)}") for r in ranges]
        criteria.append(alts + [(_set_match(x, src, False),) for x in named])
    if not_ranges or not_named:
        negations = tuple(f"{port} != {_range(r)}" for r in not_ranges)
        negations += tuple(_set_match(x, src, True) for x in not_named)
        if guard:
            criteria.append([(f"meta l4proto != @{PORT_PROTOCOLS_SET}",), (*guard, *negations)])
        else:
            criteria.append([negations])
    return criteria


_MARK_ACCEPT = f"meta mark set meta mark | {ACCEPT_MARK:#x} return"
_MARK_PASS = f"meta mark set meta mark | {PASS_MARK:#x} return"


def _verdict(rule: Rule, direction: Direction) -> str:
    if rule.action == "allow":
        return "accept" if direction == "ingress" else _MARK_ACCEPT
    if rule.action == "pass":
        return _MARK_PASS
    if rule.action == "deny":
        return "drop"
    return f'log prefix "{sanitize("kaliko " + rule.rule_id, 60)} "'


def rule_lines(
    rule: Rule,
    ipsets: Mapping[str, IpSet],
    nets_out: dict[str, tuple[str, ...]],
    direction: Direction = "egress",
    memo: SideMemo | None = None,
) -> list[str]:
    """The nft rule lines of one IR rule (one per combination of alternatives), in order.

    Inline CIDR lists the lines use are added to ``nets_out`` (set name → CIDRs). ``direction``
    is the policy chain's: an ingress allow accepts at once (see the module docstring). ``memo``
    (one per render: it assumes ``ipsets`` does not change) saves re-deriving repeated sides.
    """
    memo = {} if memo is None else memo
    criteria: list[Criterion] = []
    if rule.protocol is not None:
        criteria.append([(f"meta l4proto {rule.protocol}",)])
    if rule.not_protocol is not None:
        criteria.append([(f"meta l4proto != {rule.not_protocol}",)])
    if rule.icmp is not None or rule.not_icmp is not None:
        criteria += _icmp_criteria(rule)
    local_nets: dict[str, tuple[str, ...]] = {}
    try:
        sides = _side(rule, ipsets, True, local_nets, memo) + _side(rule, ipsets, False, local_nets, memo)
    except _Missing as missing:
        label = f"{rule.rule_id} fail closed: missing ip set {missing.set_id}"
        return [line(" ".join([*_flatten(combo), "counter drop"]), label) for combo in _combos(criteria)]
    nets_out.update(local_nets)
    tail = "counter " + _verdict(rule, direction)
    return [line(" ".join([*_flatten(combo), tail]), rule.rule_id) for combo in _combos(criteria + sides)]


def _combos(criteria: list[Criterion]) -> Iterable[tuple[Alternative, ...]]:
    """Every choice of one alternative per criterion (almost always exactly one choice)."""
    for alternatives in criteria:
        if len(alternatives) != 1:
            return itertools.product(*criteria)
    return (tuple([alternatives[0] for alternatives in criteria]),)


def _flatten(combo: tuple[Alternative, ...]) -> list[str]:
    return [match for alternative in combo for match in alternative]


def policy_chain_rules(
    rules: Sequence[Rule],
    ipsets: Mapping[str, IpSet],
    nets_out: dict[str, tuple[str, ...]],
    direction: Direction = "egress",
    memo: SideMemo | None = None,
) -> tuple[str, ...]:
    """Every line of one policy chain (one direction of one policy); ``memo`` as for `rule_lines`."""
    memo = {} if memo is None else memo
    return tuple(text for rule in rules for text in rule_lines(rule, ipsets, nets_out, direction, memo))


def endpoint_chain_rules(
    endpoint: EndpointProgram, direction: Direction, policies: Mapping[str, PolicyProgram]
) -> tuple[str, ...]:
    """Every line of one endpoint chain (``kaliko-tw-`` ingress / ``kaliko-fw-`` egress).

    A tier naming a policy that ``policies`` does not hold drops there (fail closed); a policy
    with no rules in ``direction`` is skipped (it has no chain).
    """
    tiers: tuple[TierProgram, ...] = endpoint.ingress if direction == "ingress" else endpoint.egress
    done = "accept" if direction == "ingress" else "return"
    rules = [line(f"{_CLEAR_MARKS} counter", "clear marks")]
    for tier in tiers:
        rules.append(line(f"{_CLEAR_PASS} counter", f"Start of tier {tier.name}"))
        first = True
        for policy_id in tier.policies:
            program = policies.get(policy_id)
            if program is None:
                rules.append(line("counter drop", f"fail closed: missing policy {policy_id}"))
                return tuple(rules)
            if not (program.ingress if direction == "ingress" else program.egress):
                continue
            jump = f"counter jump {policy_chain(policy_id, direction)}"
            rules.append(line(jump if first else f"{_NOT_PASSED} {jump}", f"policy {policy_id}"))
            if direction == "egress":  # an ingress policy that allows has accepted already
                rules.append(line(f"{_ACCEPTED} counter {done}", "Return if policy accepted"))
            first = False
        if tier.default_action == "deny":
            label = f"End of tier {tier.name}: drop if no policy passed"
            rules.append(line(f"{_NOT_PASSED} counter drop", label))
    rules.append(line(f"counter {done}", "no tier decided: profile allows"))
    return tuple(rules)
