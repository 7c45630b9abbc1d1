"""Recursive-descent parser for Calico's selector language (``parser/parser.go``).

Owns the grammar; turns tokens into a tree of `policycore.selector.ast` nodes. It does not own
the lexical rules (`tokenizer`) or the `Selector` value built from the tree (`selector`).

Grammar (calico.md 3.2)::

    selector  := <empty> | or_expr EOF            (empty or whitespace-only -> all())
    or_expr   := and_expr { "||" and_expr }
    and_expr  := operation { "&&" operation }
    operation := { "!" } ( has(label) | all() | global()
                         | label ("=="|"!="|contains|starts with|ends with) string
                         | label (in|not in) "{" [ string { "," string } [","] ] "}"
                         | "(" or_expr ")" )

Stacked ``!`` collapse by parity, and a ``!`` in front of a parenthesised negation cancels it
(``!(!has(a))`` is ``has(a)``; Calico keeps it as ``!!has(a)``, whose canonical form would not be a
fixed point). Parentheses may nest at most `MAX_NESTING` deep so that parsing and compilation
stay within Python's recursion limits; Calico has no such limit.
"""

from __future__ import annotations

from policycore.selector.ast import (
    All,
    And,
    Contains,
    EndsWith,
    Eq,
    Global,
    Has,
    InSet,
    LabelValue,
    Ne,
    Node,
    NotInSet,
    Or,
    StartsWith,
    negate,
)
from policycore.selector.tokenizer import Kind, SelectorError, Token, tokenize

MAX_NESTING = 64

_VALUE_OPERATORS: dict[Kind, type[LabelValue]] = {
    Kind.EQ: Eq,
    Kind.NE: Ne,
    Kind.CONTAINS: Contains,
    Kind.STARTS_WITH: StartsWith,
    Kind.ENDS_WITH: EndsWith,
}
_SET_OPERATORS = {Kind.IN: InSet, Kind.NOT_IN: NotInSet}


def parse_tree(text: str) -> Node:
    """The syntax tree of `text`; raise `SelectorError` naming the position if it is not valid."""
    return _Parser(text).parse()


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.depth = 0

    def parse(self) -> Node:
        if self.peek().kind is Kind.EOF:
            return All()
        node = self.or_expression()
        token = self.peek()
        if token.kind is not Kind.EOF:
            raise self.error(token, f"unexpected {token.describe()} after a complete expression")
        return node

    def peek(self) -> Token:
        return self.tokens[self.index]

    def take(self) -> Token:
        token = self.tokens[self.index]
        if token.kind is not Kind.EOF:
            self.index += 1
        return token

    def error(self, token: Token, reason: str) -> SelectorError:
        return SelectorError(self.text, token.position, reason)

    def expect(self, kind: Kind, context: str) -> Token:
        token = self.take()
        if token.kind is not kind:
            raise self.error(token, f"expected {kind.value} {context}, found {token.describe()}")
        return token

    def or_expression(self) -> Node:
        operands = [self.and_expression()]
        while self.peek().kind is Kind.OR:
            self.take()
            operands.append(self.and_expression())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def and_expression(self) -> Node:
        operands = [self.operation()]
        while self.peek().kind is Kind.AND:
            self.take()
            operands.append(self.operation())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def operation(self) -> Node:
        negated = False
        while self.peek().kind is Kind.NOT:
            self.take()
            negated = not negated
        node = self.positive_operation()
        return negate(node) if negated else node

    def positive_operation(self) -> Node:
        token = self.take()
        match token.kind:
            case Kind.HAS:
                return Has(token.value)
            case Kind.ALL:
                return All()
            case Kind.GLOBAL:
                return Global()
            case Kind.LABEL:
                return self.label_match(token.value)
            case Kind.LPAREN:
                return self.parenthesised(token)
            case Kind.EOF:
                raise self.error(token, "unexpected end of selector, expected an expression")
        raise self.error(token, f"unexpected {token.describe()}, expected an expression")

    def parenthesised(self, opening: Token) -> Node:
        if self.depth >= MAX_NESTING:
            raise self.error(opening, f"parentheses nested deeper than {MAX_NESTING}")
        self.depth += 1
        node = self.or_expression()
        self.depth -= 1
        self.expect(Kind.RPAREN, f"to close the '(' at position {opening.position}")
        return node

    def label_match(self, label: str) -> Node:
        operator = self.take()
        if operator.kind in _VALUE_OPERATORS:
            value = self.expect(Kind.STRING, f"after {operator.kind.value}")
            return _VALUE_OPERATORS[operator.kind](label, value.value)
        if operator.kind in _SET_OPERATORS:
            self.expect(Kind.LBRACE, f"after {operator.kind.value}")
            return _SET_OPERATORS[operator.kind].of(label, self.set_values())
        if operator.kind is Kind.EOF:
            raise self.error(operator, f"unexpected end of selector, expected an operator after {label!r}")
        raise self.error(operator, f"expected an operator after label {label!r}, found {operator.describe()}")

    def set_values(self) -> list[str]:
        """The string literals of a set after its ``{``, up to and including the ``}``."""
        values: list[str] = []
        while self.peek().kind is Kind.STRING:
            values.append(self.take().value)
            if self.peek().kind is not Kind.COMMA:
                self.expect(Kind.RBRACE, "or ',' after a set element")
                return values
            self.take()
        self.expect(Kind.RBRACE, "or a string literal in a set")
        return values
