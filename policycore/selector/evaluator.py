"""Compiles a selector tree into one fast Python function ``labels -> bool``.

Owns evaluation semantics (Calico's ``ast.go`` ``Evaluate`` methods) and their compilation. It
does not own parsing or printing.

Why generate code: at 100k endpoints the label index evaluates selectors millions of times. A
tree of closures costs one Python call per node; here the whole tree becomes a single expression
in a single function, so one evaluation is one call with no allocation. Label names and values
never appear in the generated source: each becomes a closure variable (``_c0``, ``_c1``...), so
any string is safe and the source depends only on the tree's shape. Compilation (~0.2 ms) is
cached per shape, so selectors made from one template (every namespace's policy) compile once.

Semantics (calico.md 3.3): ``==``, ``in``, ``contains``, ``starts with``, ``ends with`` and
``has`` need the label present; ``!=`` and ``not in`` also match an absent label; ``all()`` and
``global()`` are true; ``!``, ``&&``, ``||`` are boolean and short-circuit. Every generated
sub-expression is a `bool`, so the function returns a `bool`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from policycore.selector.ast import (
    All,
    And,
    Contains,
    EndsWith,
    Eq,
    Global,
    Has,
    InSet,
    Ne,
    Node,
    Not,
    NotInSet,
    Or,
    StartsWith,
)

Evaluator = Callable[[Mapping[str, str]], bool]

_FACTORY_CACHE_SIZE = 4096


class _Constants:
    """Names the generated code uses for label names, values and value sets."""

    def __init__(self) -> None:
        self.names: dict[object, str] = {}

    def name(self, value: object) -> str:
        if value not in self.names:
            self.names[value] = f"_c{len(self.names)}"
        return self.names[value]


def compile_evaluator(root: Node) -> Evaluator:
    """One function that evaluates `root` against a label mapping."""
    constants = _Constants()
    expression = _emit(root, constants)
    evaluate: Evaluator = _factory(expression, len(constants.names))(*constants.names)
    return evaluate


@functools.lru_cache(maxsize=_FACTORY_CACHE_SIZE)
def _factory(expression: str, arity: int) -> Callable[..., Evaluator]:
    """Compile `expression` once per shape; the factory binds a selector's constants to it."""
    parameters = ", ".join(f"_c{n}" for n in range(arity))
    source = (
        f"def _make({parameters}):\n    def evaluate(L):\n        return {expression}\n    return evaluate\n"
    )
    namespace: dict[str, Callable[..., Evaluator]] = {}
    exec(compile(source, "<selector>", "exec"), namespace)
    return namespace["_make"]


def _emit(node: Node, constants: _Constants) -> str:
    match node:
        case Eq(label, value):
            return f"L.get({constants.name(label)}) == {constants.name(value)}"
        case Ne(label, value):
            return f"L.get({constants.name(label)}) != {constants.name(value)}"
        case InSet(label, values):
            return f"L.get({constants.name(label)}) in {constants.name(frozenset(values))}"
        case NotInSet(label, values):
            return f"L.get({constants.name(label)}) not in {constants.name(frozenset(values))}"
        case Has(label):
            return f"{constants.name(label)} in L"
        case Contains(label, value):
            key = constants.name(label)
            return f"({key} in L and {constants.name(value)} in L[{key}])"
        case StartsWith(label, value):
            key = constants.name(label)
            return f"({key} in L and L[{key}].startswith({constants.name(value)}))"
        case EndsWith(label, value):
            key = constants.name(label)
            return f"({key} in L and L[{key}].endswith({constants.name(value)}))"
        case All() | Global():
            return "True"
        case Not(operand):
            return f"not ({_emit(operand, constants)})"
        case And(operands):
            return "(" + " and ".join(_emit(op, constants) for op in operands) + ")"
        case Or(operands):
            return "(" + " or ".join(_emit(op, constants) for op in operands) + ")"
    raise TypeError(f"not a selector node: {node!r}")
