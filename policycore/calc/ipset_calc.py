"""`IpSetCalculator`: content-addressed ip sets, their members and which nodes use them.

Owns, per ip set in use anywhere: its `IpSetSpec`, its members (with how many endpoint
contributions each has, so a member shared by two endpoints leaves only with the last), the net
member change since the last flush, and per node how many active policies there reference it
(Felix's RuleScanner refcounts plus SelectorAndNamedPortIndex, calico.md 1.2/1.4). It does not own
matching (the graph's `LabelIndex` reports which endpoints a set's selector matches), policies
(`active_policies`) or output (node sequencers, told when a node starts or stops using a set).

Lifecycle: a node's first reference makes the node use the set; the first node anywhere asks for
the set's selector to be registered in the label index (`take_registrations`, because callers
are themselves inside label-index callbacks and must not call back in); the last node going asks
for it to be unregistered, which removes every member. A record without users is kept until the
flush commits, so the contents a node was last sent stay readable (`flushed`).

Invariants: ``members`` equals the union of `IpSetSpec.members_of` over the endpoints the index
says match (``matched`` counts them), each member counted once per contributing endpoint;
``added``/``removed`` are disjoint and are exactly ``members`` minus, and the flushed contents
minus, each other; `flushed` is the contents every node holding the set was sent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import chain
from operator import attrgetter

from policycore.calc.endpoints import WorkloadEndpoint
from policycore.calc.lowering import IpSetSpec
from policycore.calc.sequencer import NodeSequencer
from policycore.diff import IpSetDelta
from policycore.ir import IpSet
from policycore.selector import Selector


class _Record:
    __slots__ = ("added", "frozen", "matched", "members", "nodes", "removed", "spec")

    def __init__(self, spec: IpSetSpec) -> None:
        self.spec = spec
        self.matched = 0
        self.members: dict[str, int] = {}
        self.added: set[str] = set()
        self.removed: set[str] = set()
        self.nodes: dict[str, int] = {}
        self.frozen: IpSet | None = None


class IpSetCalculator:
    """Ip sets in use: members, per-node reference counts, pending deltas; see the module docstring."""

    def __init__(
        self, endpoints: Mapping[str, WorkloadEndpoint], sequencer: Callable[[str], NodeSequencer]
    ) -> None:
        self._endpoints = endpoints
        self._sequencer = sequencer
        self._sets: dict[str, _Record] = {}
        self._registrations: dict[str, Selector | None] = {}
        self._changed: set[str] = set()
        self._idle: set[str] = set()
        self._fresh: set[str] = set()

    # Reference counting (from active policies).

    def incref(self, spec: IpSetSpec, node: str) -> None:
        """One more active policy on `node` references the set."""
        record = self._sets.get(spec.set_id)
        if record is None:
            record = self._sets[spec.set_id] = _Record(spec)
            self._fresh.add(spec.set_id)
        count = record.nodes.get(node, 0)
        record.nodes[node] = count + 1
        if count:
            return
        self._sequencer(node).use_ipset(spec.set_id, True)
        if len(record.nodes) == 1:
            self._idle.discard(spec.set_id)
            self._registrations[spec.set_id] = spec.selector

    def decref(self, set_id: str, node: str) -> None:
        """One fewer active policy on `node` references the set."""
        record = self._sets[set_id]
        count = record.nodes[node] - 1
        if count:
            record.nodes[node] = count
            return
        del record.nodes[node]
        self._sequencer(node).use_ipset(set_id, False)
        if not record.nodes:
            self._idle.add(set_id)
            self._registrations[set_id] = None

    def take_registrations(self) -> list[tuple[str, Selector | None]]:
        """Selectors to (un)register in the label index under the set id, since the last call."""
        pending = list(self._registrations.items())
        self._registrations.clear()
        return pending

    # Membership (from the label index).

    def match_started(self, set_id: str, endpoint_key: str) -> bool:
        """The set's selector started matching the endpoint; ``False`` if `set_id` is not a set."""
        record = self._sets.get(set_id)
        if record is None:
            return False
        record.matched += 1
        self._add(set_id, record, _contribution(record.spec, self._endpoints[endpoint_key]))
        return True

    def match_stopped(self, set_id: str, endpoint_key: str) -> bool:
        """The set's selector stopped matching the endpoint; ``False`` if `set_id` is not a set."""
        record = self._sets.get(set_id)
        if record is None:
            return False
        record.matched -= 1
        self._remove(set_id, record, _contribution(record.spec, self._endpoints[endpoint_key]))
        return True

    def matches_changed(self, set_id: str, stopped: set[str], started: set[str]) -> bool:
        """The set's selector stopped and started matching many endpoints at once (a selector was
        registered or unregistered); ``False`` if `set_id` is not a set. Whole-set changes take
        set operations instead of a pass per member."""
        record = self._sets.get(set_id)
        if record is None:
            return False
        if stopped and len(stopped) == record.matched:
            self._clear(set_id, record)
        elif stopped:
            self._remove(set_id, record, self._contributions(record.spec, stopped))
        record.matched -= len(stopped)
        record.matched += len(started)
        contributions = list(self._contributions(record.spec, started))
        if record.members or not contributions:
            self._add(set_id, record, contributions)
            return True
        record.members = dict(Counter(contributions))  # a fresh set: counted in C
        fresh = record.members.keys()
        record.added = fresh - record.removed
        record.removed.difference_update(fresh)
        record.frozen = None
        self._changed.add(set_id)
        return True

    def _contributions(self, spec: IpSetSpec, endpoint_keys: Iterable[str]) -> Iterable[str]:
        """What the endpoints add to the set, with one entry per contribution (IPs: iterated in C)."""
        endpoints = map(self._endpoints.__getitem__, endpoint_keys)
        if spec.kind == "ip":
            return chain.from_iterable(map(_IPS, endpoints))
        return chain.from_iterable(_contribution(spec, endpoint) for endpoint in endpoints)

    def _add(self, set_id: str, record: _Record, contributions: Iterable[str]) -> None:
        members, added, removed = record.members, record.added, record.removed
        for member in contributions:
            count = members.get(member, 0)
            members[member] = count + 1
            if not count:
                if member in removed:
                    removed.discard(member)
                else:
                    added.add(member)
                record.frozen = None
                self._changed.add(set_id)

    def _remove(self, set_id: str, record: _Record, contributions: Iterable[str]) -> None:
        members, added, removed = record.members, record.added, record.removed
        for member in contributions:
            count = members[member] - 1
            if count:
                members[member] = count
                continue
            del members[member]
            if member in added:
                added.discard(member)
            else:
                removed.add(member)
            record.frozen = None
            self._changed.add(set_id)

    def _clear(self, set_id: str, record: _Record) -> None:
        """Every member leaves: what to remove is what was flushed, ``(members - added) | removed``."""
        if not record.members:
            return
        record.removed |= record.members.keys() - record.added
        record.added = set()
        record.members = {}
        record.frozen = None
        self._changed.add(set_id)

    # Contents and output.

    def current(self, set_id: str) -> IpSet:
        """The set with its members now (materialised once until the members change)."""
        record = self._sets[set_id]
        if record.frozen is None:
            record.frozen = IpSet(set_id, record.spec.kind, frozenset(record.members))
        return record.frozen

    def flushed(self, set_id: str) -> IpSet:
        """The set as it was at the last flush (what every node holding it has)."""
        record = self._sets[set_id]
        if not (record.added or record.removed):
            return self.current(set_id)
        members = (record.members.keys() - record.added) | record.removed
        return IpSet(set_id, record.spec.kind, frozenset(members))

    def deltas(self) -> Iterator[tuple[IpSetDelta, Iterable[str]]]:
        """Each set changed since the last flush, by id: its delta and the nodes using it now.

        Left out: sets created since the last flush (no node holds them yet, so every node using
        one is sent its whole contents instead) and sets no node uses any more."""
        fresh = self._fresh
        for set_id in sorted(self._changed):
            record = self._sets[set_id]
            if (record.added or record.removed) and record.nodes and set_id not in fresh:
                yield (
                    IpSetDelta(set_id, frozenset(record.added), frozenset(record.removed)),
                    record.nodes.keys(),
                )

    def commit(self) -> None:
        """The flush was sent: pending deltas become the flushed contents; unused sets go."""
        for set_id in self._changed:
            record = self._sets[set_id]
            record.added.clear()
            record.removed.clear()
        self._changed.clear()
        for set_id in self._idle:
            del self._sets[set_id]  # unregistered, so its members are gone too
        self._idle.clear()
        self._fresh.clear()

    def nodes_using(self, set_id: str) -> frozenset[str]:
        record = self._sets.get(set_id)
        return frozenset(record.nodes) if record else frozenset()

    def __len__(self) -> int:
        return len(self._sets)


_IPS: Callable[[WorkloadEndpoint], tuple[str, ...]] = attrgetter("ips")


def _contribution(spec: IpSetSpec, endpoint: WorkloadEndpoint) -> tuple[str, ...] | list[str]:
    """What a matching endpoint adds to the set (`IpSetSpec.members_of` without re-evaluating)."""
    if spec.kind == "ip":
        return endpoint.ips
    return [
        f"{ip},{port.protocol}:{port.port}"
        for port in endpoint.ports
        if port.name == spec.named_port and port.protocol == spec.protocol
        for ip in endpoint.ips
    ]
