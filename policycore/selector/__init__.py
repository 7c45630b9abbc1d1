"""Calico's selector language: parse, print canonically, hash, evaluate, index.

Public API (everything else in the package is internal):

* ``parse(text) -> Selector`` (cached); ``SelectorError(ValueError)`` with ``.position``;
* ``Selector``: ``.canonical``, ``.unique_id``, ``.evaluate(labels)``, ``.label_restrictions()``,
  ``.restrictions_are_exact()``, ``.with_label_prefix(prefix)``, ``.uses_global()``, ``.is_all()``;
* ``and_all(*selectors)``, ``ALL``, ``unique_id(prefix, content)``, ``is_valid_label(label)``.

Modules: `tokenizer` (lexical rules, errors) -> `parser` (grammar) -> `ast` (tree, canonical
form, prefixing, restrictions) -> `evaluator` (tree compiled to one function) -> `selector`
(the value type). The reference is calico.md section 3.
"""

from policycore.selector.selector import ALL, LabelRestrictions, Selector, and_all, parse, unique_id
from policycore.selector.tokenizer import MAX_LABEL_LENGTH, SelectorError, is_valid_label

__all__ = [
    "ALL",
    "MAX_LABEL_LENGTH",
    "LabelRestrictions",
    "Selector",
    "SelectorError",
    "and_all",
    "is_valid_label",
    "parse",
    "unique_id",
]
