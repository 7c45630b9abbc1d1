"""Tokenizer for Calico's selector language (``libcalico-go/lib/selector/tokenizer``).

Owns the lexical rules and `SelectorError`, the one error type of the selector package. It does
not own the grammar (`parser`) or the meaning of a selector (`ast`, `evaluator`).

Lexical rules, exactly as Calico's tokenizer applies them:

* whitespace is only space and tab; anything else that cannot start a token is an error;
* a label is 1-512 characters of ``a-z A-Z 0-9 _ . / -`` (ASCII), and may start with a digit or ``-``;
* a string literal runs from ``"`` or ``'`` to the next occurrence of the same quote, with no escapes;
* word operators (``contains``, ``starts with``/``startswith``, ``ends with``/``endswith``,
  ``not in``/``notin``, ``in``) are recognised only directly after a label and need a word
  boundary after them, so any word may be a label name (``in in {"in"}`` is valid);
* ``has(<label>)``, ``all()`` and ``global()`` allow spaces and tabs inside the parentheses but not
  between the name and ``(``.

Invariant: `tokenize` returns a list that ends with exactly one ``EOF`` token, and every token
records the index in the input where it starts, so errors can say where they are.
"""

from __future__ import annotations

import enum
import re
from typing import NamedTuple

MAX_LABEL_LENGTH = 512
"""Calico's ``MaxLabelLength``: a label of 513 characters is rejected."""

_MAX_SHOWN = 120


class SelectorError(ValueError):
    """A selector that does not parse; `position` is the 0-based index where it broke."""

    def __init__(self, selector: str, position: int, reason: str) -> None:
        shown = selector if len(selector) <= _MAX_SHOWN else selector[:_MAX_SHOWN] + "..."
        super().__init__(f"selector {shown!r}: at position {position}: {reason}")
        self.selector = selector
        self.position = position
        self.reason = reason

    def __reduce__(self) -> tuple[type[SelectorError], tuple[str, int, str]]:
        return (SelectorError, (self.selector, self.position, self.reason))


class Kind(enum.Enum):
    """Token kinds; the value is how an error message names the token."""

    LABEL = "a label"
    STRING = "a string literal"
    LBRACE = "'{'"
    RBRACE = "'}'"
    COMMA = "','"
    EQ = "'=='"
    NE = "'!='"
    IN = "'in'"
    NOT_IN = "'not in'"
    CONTAINS = "'contains'"
    STARTS_WITH = "'starts with'"
    ENDS_WITH = "'ends with'"
    NOT = "'!'"
    AND = "'&&'"
    OR = "'||'"
    LPAREN = "'('"
    RPAREN = "')'"
    HAS = "has()"
    ALL = "all()"
    GLOBAL = "global()"
    EOF = "the end of the selector"


class Token(NamedTuple):
    """One token: its kind, its text (label name or literal contents, else ``""``) and position."""

    kind: Kind
    value: str
    position: int

    def describe(self) -> str:
        """How an error message names this token."""
        if self.kind is Kind.LABEL:
            return f"label {self.value!r}"
        if self.kind is Kind.STRING:
            return f"string literal {self.value!r}"
        return str(self.kind.value)


_SINGLE = {
    "(": Kind.LPAREN,
    ")": Kind.RPAREN,
    "{": Kind.LBRACE,
    "}": Kind.RBRACE,
    ",": Kind.COMMA,
}
_DOUBLE = {"=": ("==", Kind.EQ), "&": ("&&", Kind.AND), "|": ("||", Kind.OR)}
_IDENTIFIER = re.compile(r"[A-Za-z0-9_./-]+")
_WHITESPACE = re.compile(r"[ \t]*")
_BOUNDARY = r"(?![A-Za-z0-9_./-])"
_OPERATORS = (
    (re.compile(r"contains" + _BOUNDARY), Kind.CONTAINS),
    (re.compile(r"starts[ \t]*with" + _BOUNDARY), Kind.STARTS_WITH),
    (re.compile(r"ends[ \t]*with" + _BOUNDARY), Kind.ENDS_WITH),
    (re.compile(r"not[ \t]*in" + _BOUNDARY), Kind.NOT_IN),
    (re.compile(r"in" + _BOUNDARY), Kind.IN),
)
_FUNCTIONS = (("has(", Kind.HAS), ("all(", Kind.ALL), ("global(", Kind.GLOBAL))


def tokenize(text: str) -> list[Token]:
    """Split `text` into tokens, ending with ``EOF``; raise `SelectorError` on a lexical error."""
    tokens: list[Token] = []
    pos = _skip_whitespace(text, 0)
    end = len(text)
    while pos < end:
        char = text[pos]
        if char in _SINGLE:
            tokens.append(Token(_SINGLE[char], "", pos))
            pos += 1
        elif char in "\"'":
            close = text.find(char, pos + 1)
            if close < 0:
                raise SelectorError(text, pos, "unterminated string literal")
            tokens.append(Token(Kind.STRING, text[pos + 1 : close], pos))
            pos = close + 1
        elif char in _DOUBLE:
            pair, kind = _DOUBLE[char]
            if not text.startswith(pair, pos):
                raise SelectorError(text, pos, f"expected '{pair}'")
            tokens.append(Token(kind, "", pos))
            pos += 2
        elif char == "!":
            if text.startswith("!=", pos):
                tokens.append(Token(Kind.NE, "", pos))
                pos += 2
            else:
                tokens.append(Token(Kind.NOT, "", pos))
                pos += 1
        elif tokens and tokens[-1].kind is Kind.LABEL:
            pos = _operator(text, pos, tokens)
        else:
            pos = _function_or_label(text, pos, tokens)
        pos = _skip_whitespace(text, pos)
    tokens.append(Token(Kind.EOF, "", end))
    return tokens


def _skip_whitespace(text: str, pos: int) -> int:
    match = _WHITESPACE.match(text, pos)
    assert match is not None  # the pattern matches the empty string
    return match.end()


def _operator(text: str, pos: int, tokens: list[Token]) -> int:
    for pattern, kind in _OPERATORS:
        match = pattern.match(text, pos)
        if match:
            tokens.append(Token(kind, "", pos))
            return match.end()
    raise SelectorError(text, pos, f"expected an operator after label {tokens[-1].value!r}")


def _function_or_label(text: str, pos: int, tokens: list[Token]) -> int:
    for opening, kind in _FUNCTIONS:
        if text.startswith(opening, pos):
            inner = _skip_whitespace(text, pos + len(opening))
            label = ""
            if kind is Kind.HAS:
                label, inner = _label(text, inner)
                inner = _skip_whitespace(text, inner)
            if not text.startswith(")", inner):
                raise SelectorError(text, inner, f"expected ')' to close {opening}")
            tokens.append(Token(kind, label, pos))
            return inner + 1
    label, after = _label(text, pos)
    tokens.append(Token(Kind.LABEL, label, pos))
    return after


def _label(text: str, pos: int) -> tuple[str, int]:
    match = _IDENTIFIER.match(text, pos)
    if match is None:
        if pos >= len(text):
            raise SelectorError(text, pos, "unexpected end of selector, expected a label")
        raise SelectorError(text, pos, f"unexpected character {text[pos]!r}")
    if match.end() - pos > MAX_LABEL_LENGTH:
        raise SelectorError(text, pos, f"label longer than {MAX_LABEL_LENGTH} characters")
    return match.group(), match.end()


def is_valid_label(label: str) -> bool:
    """Whether `label` is a label name the tokenizer accepts (Calico's ``ValidLabel``)."""
    return len(label) <= MAX_LABEL_LENGTH and _IDENTIFIER.fullmatch(label) is not None
