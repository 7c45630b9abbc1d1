"""Kaliko's nftables table as a value, and the nft scripts that create it or move it forward.

Owns `TableModel` (every set, map and chain of ``table ip kaliko`` with its content, as plain
values), the identity diffs between two versions of a mapping (`replaced_keys`, `removed_keys`),
and the scripts: `create_script` (replace the whole table in one transaction), `update_script`
(the smallest ordered delta between two models) and `delete_script`. It does not own how a node state
becomes a model (`nft_render`), rule text (`nft_rules`), reading the kernel back (`nft_readback`)
or sending scripts (`nft_driver`, `nft_batch`). Pure: no I/O.

Invariants: `update_script(a, b)` applied to a kernel holding ``a`` yields ``b``, is empty when
``a == b``, and orders its commands so that nothing is referenced before it exists or deleted
while referenced (sets, then chains, then elements and rules; deletions last); scripts never
name another table. Models are treated as immutable: unchanged objects are shared between
versions, so identity is the cheap and exact test of "unchanged".
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from node_agent.dataplane.nft_rules import FAMILY, TABLE

T = TypeVar("T")

ElementMoves = Mapping[str, tuple[frozenset[str], frozenset[str]]]
"""Set name → (elements gone, elements added): a delta already known, so not diffed again."""


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


def replaced_keys(new: Mapping[str, T], old: Mapping[str, T]) -> list[str]:
    """The keys of ``new`` whose value is not the very object ``old`` holds, in ``new``'s order.

    Runs in C (no Python-level loop): states are compared on every apply, and unchanged objects
    are shared between consecutive states, so identity is the cheap and exact test.
    """
    return list(itertools.compress(new.keys(), map(operator.is_not, new.values(), map(old.get, new.keys()))))


def removed_keys(new: Mapping[str, T], old: Mapping[str, T], replaced: list[str]) -> set[str]:
    """The keys of ``old`` that ``new`` lacks, without building a key set when none can be missing."""
    added = sum(1 for key in replaced if key not in old)
    return set() if len(old) == len(new) - added else set(old.keys() - new.keys())


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


def update_script(old: TableModel, new: TableModel, moves: ElementMoves | None = None) -> str:
    """The nft commands that turn a table holding ``old`` into ``new`` ("" when equal).

    ``moves`` (`Rendered.moves` of ``new``'s render, when it was moved from ``old``'s) saves
    diffing those sets' elements again; the script is the same with or without it.
    """
    moves = moves or {}
    out: list[str] = []
    set_names = replaced_keys(new.sets, old.sets)
    sets = [(n, new.sets[n], old.sets.get(n)) for n in set_names]
    retyped = {n for n, spec, before in sets if before is not None and before.header() != spec.header()}
    removed_sets = sorted(removed_keys(new.sets, old.sets, set_names))
    for _, spec, before in sets:
        if before is None:
            out += _add_set(spec, elements=not spec.is_map)  # map entries name chains: added below
    same_chains = old.chains is new.chains  # a render that changed no chain shares the mapping
    chain_names = [] if same_chains else replaced_keys(new.chains, old.chains)
    chains = [(n, new.chains[n], old.chains.get(n)) for n in chain_names]
    new_chains = [c for _, c, before in chains if before is None]
    out += [_add_chain(c) for c in new_chains]
    for name, spec, before in sets:
        if before is None and spec.is_map:
            before = SetSpec(name, spec.type)
        if before is None or name in retyped:
            continue
        gone, added = moves.get(name) or (before.elements - spec.elements, spec.elements - before.elements)
        if gone:
            out.append(f"delete element {_q(name)} {_elements(gone, keys=spec.is_map)}")
        if added:
            out.append(f"add element {_q(name)} {_elements(added)}")
    changed = [c for _, c, before in chains if before is not None and before.rules != c.rules]
    removed_chains = [] if same_chains else sorted(removed_keys(new.chains, old.chains, chain_names))
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
