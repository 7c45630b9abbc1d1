"""Our table as read back from the kernel, and what differs from the model we programmed.

Owns `KernelTable` (what the kernel holds: sets with their elements, chains with their hook and
each rule's comment, objects of other kinds), `parse_sets` (nft's text listing of sets and maps →
`KernelSet`s) and `kernel_model`, which expresses the kernel's table as a `TableModel` so that
`nft_model.update_script(kernel, desired)` is exactly the repair and `drift` counts the objects
it repairs. It does not talk to the kernel (`nft_driver`, `nft_netlink`) or render rules
(`nft_rules`). Pure: no I/O.

Chains are compared by their rules' comments: every line we program ends with a fingerprint
comment, so comparing a chain means comparing its comments in order (Felix compares rule hashes
the same way). A rule edited in place that keeps our comment is not detected; anything added,
deleted, moved or flushed is. Set elements are compared as nft prints them (text, not JSON: on
large tables libnftables prints text about 3x faster).

Invariants: an object in our table that the model does not hold is drift (it is ours by location);
anything the parser does not understand (an unknown object kind, a set whose type or flags differ)
makes `kernel_model` return None, which means "rebuild the whole table in one transaction".
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field

from node_agent.dataplane.nft_model import ChainSpec, SetSpec, TableModel

_COMMENT = re.compile(r' comment "([^"]*)"$')
_OBJECT = re.compile(r"^\t(set|map) (\S+) \{$")


@dataclass(slots=True)
class KernelSet:
    """A set or map as listed: header lines and normalised elements."""

    is_map: bool
    type: str = ""
    flags: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    elements: frozenset[str] = frozenset()


@dataclass(slots=True)
class KernelChain:
    """A chain as read back: its base-chain hook ("" for a regular chain) and each rule's comment."""

    hook: str = ""
    comments: list[str | None] = field(default_factory=list)


@dataclass(slots=True)
class KernelTable:
    sets: dict[str, KernelSet] = field(default_factory=dict)
    chains: dict[str, KernelChain] = field(default_factory=dict)
    others: list[str] = field(default_factory=list)
    """Headers of objects of kinds we never create (counters, flowtables, ...)."""


def rule_comment(rule: str) -> str | None:
    """The comment a rule line ends with (None when it has none)."""
    found = _COMMENT.search(rule)
    return found.group(1) if found else None


def _normalise(element: str, interval: bool) -> list[str]:
    if not interval or "/" in element:
        return [element]
    first, _, last = element.partition("-")
    try:
        lo = ipaddress.IPv4Address(first)
        hi = ipaddress.IPv4Address(last) if last else lo
    except ValueError:
        return [element]
    return [str(n) for n in ipaddress.summarize_address_range(lo, hi)]


def _parse_set(is_map: bool, body: list[str]) -> KernelSet:
    kset = KernelSet(is_map)
    extra: list[str] = []
    joined: list[str] = []
    collecting = False
    for raw in body:
        text = raw.strip()
        if collecting or text.startswith("elements = {"):
            collecting = not text.endswith("}")
            joined.append(text)
        elif text.startswith("type "):
            kset.type = text[5:]
        elif text.startswith("flags "):
            kset.flags = tuple(f.strip() for f in text[6:].split(","))
        elif not text.startswith("comment "):
            extra.append(text)
    kset.extra = tuple(extra)
    listed = " ".join(joined).removeprefix("elements = {").removesuffix("}")
    interval = "interval" in kset.flags
    items = [e.strip() for e in listed.split(",") if e.strip()]
    kset.elements = frozenset(n for e in items for n in _normalise(e, interval))
    return kset


def parse_sets(text: str) -> dict[str, KernelSet]:
    """The sets and maps in a listing (nft's text format, stateless, numeric protocols)."""
    found: dict[str, KernelSet] = {}
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        header = _OBJECT.match(lines[i])
        i += 1
        if header is None:
            continue
        body: list[str] = []
        while i < len(lines) and lines[i] != "\t}":
            body.append(lines[i])
            i += 1
        found[header.group(2)] = _parse_set(header.group(1) == "map", body)
    return found


def _set_matches_header(kset: KernelSet, spec: SetSpec) -> bool:
    flags = ("interval",) if spec.interval else ()
    return kset.is_map == spec.is_map and kset.type == spec.type and kset.flags == flags and not kset.extra


def kernel_model(kernel: KernelTable, desired: TableModel) -> TableModel | None:
    """The kernel's table as a model (objects equal to the desired ones are the desired objects).

    None when the difference cannot be repaired object by object (rebuild the table instead).
    """
    if kernel.others:
        return None
    sets: dict[str, SetSpec] = {}
    for name, kset in kernel.sets.items():
        spec = desired.sets.get(name)
        if spec is not None and not _set_matches_header(kset, spec):
            return None
        if spec is not None and kset.elements == spec.elements:
            sets[name] = spec
        else:
            kind_type = spec.type if spec is not None else kset.type
            sets[name] = SetSpec(name, kind_type, kset.elements, "interval" in kset.flags, kset.is_map)
    chains: dict[str, ChainSpec] = {}
    for name, kchain in kernel.chains.items():
        chain = desired.chains.get(name)
        if chain is not None and kchain.hook != chain.hook:
            return None
        if chain is not None and kchain.comments == [rule_comment(r) for r in chain.rules]:
            chains[name] = chain
        else:
            placeholders = tuple(f"# kernel rule: {c}" for c in kchain.comments)  # never equal to ours
            chains[name] = ChainSpec(name, placeholders, hook=kchain.hook)
    return TableModel(sets, chains)


def drift(kernel: TableModel, desired: TableModel) -> int:
    """How many objects (sets, maps, chains) differ between the two models."""
    names = {("s", n) for n in kernel.sets.keys() | desired.sets.keys()}
    names |= {("c", n) for n in kernel.chains.keys() | desired.chains.keys()}
    count = 0
    for kind, name in names:
        have = (kernel.sets if kind == "s" else kernel.chains).get(name)
        want = (desired.sets if kind == "s" else desired.chains).get(name)
        count += have is not want
    return count
