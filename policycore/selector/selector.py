"""`Selector`: a parsed, compiled, immutable selector, and the functions that make one.

Owns the selector value the rest of the core uses: its canonical string, its content-hash id,
its compiled evaluator and its label restrictions, plus `parse` (cached) and `and_all`. It does
not own the grammar (`parser`), the tree (`ast`) or code generation (`evaluator`).

Invariants:

* a `Selector` never changes after construction; equality and hash are those of `canonical`;
* ``unique_id`` is Calico's ``UniqueID()``: ``"s:"`` + base64url-without-padding of
  SHA-224(``"s:" + canonical``) (``libcalico-go/lib/hash``), so ``all()`` is
  ``s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug`` and equal selectors share one ip-set name;
* ``parse(s.canonical) == s`` for every selector `parse` returns;
* when ``restrictions_are_exact()``, ``evaluate(labels)`` holds exactly when `labels` satisfy
  every entry of ``label_restrictions()`` (the label index then skips evaluation).
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NoReturn

from policycore.selector.ast import All, And, Eq, Global, Has, InSet, Node
from policycore.selector.evaluator import Evaluator, compile_evaluator
from policycore.selector.parser import parse_tree

LabelRestrictions = Mapping[str, frozenset[str] | None]
"""Per label: ``None`` = must be present; a set = must have one of these values (empty: matches
nothing). Labels not listed are unrestricted; an empty mapping means the selector is not indexable."""

_PARSE_CACHE_SIZE = 1 << 16


def unique_id(prefix: str, content: str) -> str:
    """Calico's ``hash.MakeUniqueID``: ``prefix:`` + base64url(SHA-224(``prefix:content``)), unpadded."""
    digest = hashlib.sha224(f"{prefix}:{content}".encode()).digest()
    return f"{prefix}:" + base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")


class Selector:
    """A selector: ``evaluate(labels)``, ``canonical``, ``unique_id``, ``label_restrictions()``."""

    __slots__ = ("_exact", "_hash", "_restrictions", "canonical", "evaluate", "root", "unique_id")

    root: Node
    canonical: str
    unique_id: str
    evaluate: Evaluator
    """``evaluate(labels) -> bool``: whether the selector matches a label mapping."""
    _hash: int
    _restrictions: LabelRestrictions
    _exact: bool

    def __init__(self, root: Node) -> None:
        canonical = root.canonical()
        init = object.__setattr__
        init(self, "root", root)
        init(self, "canonical", canonical)
        init(self, "unique_id", unique_id("s", canonical))
        init(self, "evaluate", compile_evaluator(root))
        init(self, "_hash", hash(canonical))
        init(self, "_restrictions", MappingProxyType(root.restrictions()))
        init(self, "_exact", _is_exact(root))

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError(f"Selector is immutable; cannot set {name!r}")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Selector) and other.canonical == self.canonical

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"Selector({self.canonical!r})"

    def __str__(self) -> str:
        return self.canonical

    def label_restrictions(self) -> LabelRestrictions:
        """What an item's labels must satisfy to match (Calico's ``LabelRestrictions``), read-only."""
        return self._restrictions

    def restrictions_are_exact(self) -> bool:
        """Whether the label restrictions are also *sufficient*: labels match exactly when they satisfy
        every restriction (``all()``, or ``&&`` of ``==``, ``in`` and ``has`` terms, nested or not)."""
        return self._exact

    def uses_global(self) -> bool:
        """Whether ``global()`` appears anywhere in the selector."""
        return any(isinstance(node, Global) for node in self.root.walk())

    def is_all(self) -> bool:
        """Whether this is exactly ``all()`` (which the empty selector also is)."""
        return isinstance(self.root, All)

    def with_label_prefix(self, prefix: str) -> Selector:
        """This selector with `prefix` prepended to every label name (Calico's ``PrefixVisitor``)."""
        return Selector(self.root.prefixed(prefix))


_EXACT_TERMS = (Eq, InSet, Has)


def _is_exact(root: Node) -> bool:
    return isinstance(root, All) or _is_exact_term(root)


def _is_exact_term(node: Node) -> bool:
    if isinstance(node, And):
        return all(map(_is_exact_term, node.operands))
    return isinstance(node, _EXACT_TERMS)


@functools.lru_cache(maxsize=_PARSE_CACHE_SIZE)
def parse(text: str) -> Selector:
    """Parse a selector; raise `SelectorError` (a `ValueError`) that says where it broke."""
    return Selector(parse_tree(text))


ALL = parse("")
"""The selector that matches everything: ``all()``."""


def and_all(*selectors: Selector) -> Selector:
    """The AND of `selectors`, as Calico builds ``(a) && (b)``; ``all()`` operands drop out."""
    roots = tuple(s.root for s in selectors if not s.is_all())
    if not roots:
        return ALL
    if len(roots) == 1:
        return next(s for s in selectors if not s.is_all())
    return Selector(And(roots))
