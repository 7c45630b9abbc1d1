"""The selector syntax tree (``libcalico-go/lib/selector/parser/ast.go``).

Owns the node types, their canonical printing (Calico's ``collectFragments``), label prefixing
(Calico's ``PrefixVisitor``) and label restrictions (Calico's ``LabelRestrictions``, used by the
label index). It does not own parsing (`parser`) or fast evaluation (`evaluator`).

Invariants:

* nodes are frozen and hashable; two trees are equal exactly when their canonical strings are;
* `And`/`Or` hold at least two operands; `InSet`/`NotInSet` values are sorted and de-duplicated;
* a `Not` never directly wraps a `Not` (`negate` collapses stacked negations by parity).

Canonical form: ``&&``/``||`` groups in parentheses with single spaces, ``!`` with no space,
values quoted with ``"`` unless they contain ``"`` (then ``'``), ``starts with``/``ends with``
spelled out, the empty selector as ``all()``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar

Restrictions = dict[str, frozenset[str] | None]
"""Per label name: ``None`` = the label must be present; a set = it must have one of these values
(an empty set = the selector can match nothing). A label not listed is unrestricted."""


class Node:
    """Base of all selector nodes."""

    __slots__ = ()

    def write(self, out: list[str]) -> None:
        """Append this node's canonical fragments to `out`."""
        raise NotImplementedError

    def prefixed(self, prefix: str) -> Node:
        """This tree with `prefix` prepended to every label name."""
        raise NotImplementedError

    def restrictions(self) -> Restrictions:
        """What any labels this node matches must satisfy (a fresh dict the caller may change)."""
        return {}

    def children(self) -> tuple[Node, ...]:
        """The direct sub-nodes."""
        return ()

    def walk(self) -> Iterator[Node]:
        """This node and all nodes below it, depth first."""
        yield self
        for child in self.children():
            yield from child.walk()

    def canonical(self) -> str:
        """Calico's canonical string for this tree."""
        out: list[str] = []
        self.write(out)
        return "".join(out)


def quote(value: str) -> str:
    """Quote a value the way Calico prints it: ``"`` unless the value contains ``"``."""
    return f"'{value}'" if '"' in value else f'"{value}"'


@dataclass(frozen=True, slots=True)
class LabelValue(Node):
    """Base of ``label <op> "value"`` matches."""

    OPERATOR: ClassVar[str] = ""
    label: str
    value: str

    def write(self, out: list[str]) -> None:
        out.extend((self.label, " ", self.OPERATOR, " ", quote(self.value)))

    def prefixed(self, prefix: str) -> Node:
        return type(self)(prefix + self.label, self.value)

    def restrictions(self) -> Restrictions:
        return {self.label: None}


@dataclass(frozen=True, slots=True)
class Eq(LabelValue):
    """``label == "value"``: present and equal."""

    OPERATOR: ClassVar[str] = "=="

    def restrictions(self) -> Restrictions:
        return {self.label: frozenset((self.value,))}


@dataclass(frozen=True, slots=True)
class Ne(LabelValue):
    """``label != "value"``: absent, or present with another value."""

    OPERATOR: ClassVar[str] = "!="

    def restrictions(self) -> Restrictions:
        return {}


@dataclass(frozen=True, slots=True)
class Contains(LabelValue):
    """``label contains "value"``: present and containing the value."""

    OPERATOR: ClassVar[str] = "contains"


@dataclass(frozen=True, slots=True)
class StartsWith(LabelValue):
    """``label starts with "value"``: present and starting with the value."""

    OPERATOR: ClassVar[str] = "starts with"


@dataclass(frozen=True, slots=True)
class EndsWith(LabelValue):
    """``label ends with "value"``: present and ending with the value."""

    OPERATOR: ClassVar[str] = "ends with"


@dataclass(frozen=True, slots=True)
class LabelSet(Node):
    """Base of ``label <op> {"v1", ...}`` matches; build with `of` to sort and de-duplicate."""

    OPERATOR: ClassVar[str] = ""
    label: str
    values: tuple[str, ...]

    @classmethod
    def of(cls, label: str, values: Iterable[str]) -> LabelSet:
        """A set match with `values` sorted (by code point, as Go sorts UTF-8) and de-duplicated."""
        return cls(label, tuple(sorted(set(values))))

    def write(self, out: list[str]) -> None:
        out.extend((self.label, " ", self.OPERATOR, " {", ", ".join(map(quote, self.values)), "}"))

    def prefixed(self, prefix: str) -> Node:
        return type(self)(prefix + self.label, self.values)


@dataclass(frozen=True, slots=True)
class InSet(LabelSet):
    """``label in {...}``: present with one of the values (an empty set never matches)."""

    OPERATOR: ClassVar[str] = "in"

    def restrictions(self) -> Restrictions:
        return {self.label: frozenset(self.values)}


@dataclass(frozen=True, slots=True)
class NotInSet(LabelSet):
    """``label not in {...}``: absent, or present with none of the values."""

    OPERATOR: ClassVar[str] = "not in"


@dataclass(frozen=True, slots=True)
class Has(Node):
    """``has(label)``: present, whatever the value (even ``""``)."""

    label: str

    def write(self, out: list[str]) -> None:
        out.extend(("has(", self.label, ")"))

    def prefixed(self, prefix: str) -> Node:
        return Has(prefix + self.label)

    def restrictions(self) -> Restrictions:
        return {self.label: None}


@dataclass(frozen=True, slots=True)
class All(Node):
    """``all()`` (and the empty selector): always true."""

    def write(self, out: list[str]) -> None:
        out.append("all()")

    def prefixed(self, prefix: str) -> Node:
        return self


@dataclass(frozen=True, slots=True)
class Global(Node):
    """``global()``: true; its "non-namespaced only" meaning comes from rewriting (calico.md 2.6)."""

    def write(self, out: list[str]) -> None:
        out.append("global()")

    def prefixed(self, prefix: str) -> Node:
        return self


@dataclass(frozen=True, slots=True)
class Not(Node):
    """``!operand``; build with `negate` so that stacked negations collapse."""

    operand: Node

    def write(self, out: list[str]) -> None:
        out.append("!")
        self.operand.write(out)

    def prefixed(self, prefix: str) -> Node:
        return Not(self.operand.prefixed(prefix))

    def children(self) -> tuple[Node, ...]:
        return (self.operand,)


def negate(node: Node) -> Node:
    """``!node``, with ``!!x`` collapsed to ``x``."""
    return node.operand if isinstance(node, Not) else Not(node)


@dataclass(frozen=True, slots=True)
class And(Node):
    """``(a && b && ...)``: every operand matches."""

    operands: tuple[Node, ...]

    def write(self, out: list[str]) -> None:
        _write_group(out, self.operands, " && ")

    def prefixed(self, prefix: str) -> Node:
        return And(tuple(op.prefixed(prefix) for op in self.operands))

    def children(self) -> tuple[Node, ...]:
        return self.operands

    def restrictions(self) -> Restrictions:
        merged: Restrictions = {}
        for operand in self.operands:
            for label, values in operand.restrictions().items():
                known = merged.get(label)
                if known is None:
                    merged[label] = values
                elif values is not None:
                    merged[label] = known & values
        return merged


@dataclass(frozen=True, slots=True)
class Or(Node):
    """``(a || b || ...)``: some operand matches."""

    operands: tuple[Node, ...]

    def write(self, out: list[str]) -> None:
        _write_group(out, self.operands, " || ")

    def prefixed(self, prefix: str) -> Node:
        return Or(tuple(op.prefixed(prefix) for op in self.operands))

    def children(self) -> tuple[Node, ...]:
        return self.operands

    def restrictions(self) -> Restrictions:
        """Only labels every operand requires; values only if every operand limits them (union)."""
        common = self.operands[0].restrictions()
        for operand in self.operands[1:]:
            other = operand.restrictions()
            for label in list(common):
                if label not in other:
                    del common[label]
                    continue
                mine, theirs = common[label], other[label]
                common[label] = None if mine is None or theirs is None else mine | theirs
        return common


def _write_group(out: list[str], operands: tuple[Node, ...], joiner: str) -> None:
    out.append("(")
    for index, operand in enumerate(operands):
        if index:
            out.append(joiner)
        operand.write(out)
    out.append(")")
