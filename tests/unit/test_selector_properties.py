"""Property tests for the selector language (Hypothesis).

Proves, for random selector trees printed in random (non-canonical) styles: parsing gives back the
same tree, canonical string and unique id; the canonical form is a fixed point; the compiled
evaluator agrees with a direct reading of Calico's semantics before and after the round trip;
label prefixing and `and_all` mean what they say; label restrictions are sound (every matching
label map satisfies them), which is what the label index relies on; arbitrary text either parses
or raises `SelectorError`, never anything else.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policycore.selector import MAX_LABEL_LENGTH, Selector, SelectorError, and_all, parse
from policycore.selector.ast import (
    All,
    And,
    Contains,
    EndsWith,
    Eq,
    Global,
    Has,
    InSet,
    LabelSet,
    LabelValue,
    Ne,
    Node,
    Not,
    NotInSet,
    Or,
    StartsWith,
    negate,
)

KEYWORDS = ["a", "b", "in", "not", "has", "all", "global", "contains", "starts", "ends", "with", "notin"]
labels_st = st.sampled_from(KEYWORDS) | st.from_regex(r"[A-Za-z0-9_./-]{1,24}", fullmatch=True)
values_st = st.sampled_from(["", "x", "'", '"', "it's", 'say "hi"', "a b", "\\", "é\n"]) | st.text(
    max_size=6
).filter(lambda v: not ('"' in v and "'" in v))

VALUE_TYPES = [Eq, Ne, Contains, StartsWith, EndsWith]
SET_TYPES = [InSet, NotInSet]


def leaves(label: st.SearchStrategy[str]) -> st.SearchStrategy[Node]:
    return st.one_of(
        st.builds(lambda t, k, v: t(k, v), st.sampled_from(VALUE_TYPES), label, values_st),
        st.builds(
            lambda t, k, vs: t.of(k, vs), st.sampled_from(SET_TYPES), label, st.lists(values_st, max_size=4)
        ),
        st.builds(Has, label),
        st.just(All()),
        st.just(Global()),
    )


def trees(label: st.SearchStrategy[str] = labels_st) -> st.SearchStrategy[Node]:
    return st.recursive(
        leaves(label),
        lambda inner: st.one_of(
            st.builds(negate, inner),
            st.builds(lambda ops: And(tuple(ops)), st.lists(inner, min_size=2, max_size=4)),
            st.builds(lambda ops: Or(tuple(ops)), st.lists(inner, min_size=2, max_size=4)),
        ),
        max_leaves=12,
    )


def reference(node: Node, labels: Mapping[str, str]) -> bool:
    """Calico's ast.go Evaluate, read directly."""
    match node:
        case Eq(k, v):
            return k in labels and labels[k] == v
        case Ne(k, v):
            return k not in labels or labels[k] != v
        case Contains(k, v):
            return k in labels and v in labels[k]
        case StartsWith(k, v):
            return k in labels and labels[k].startswith(v)
        case EndsWith(k, v):
            return k in labels and labels[k].endswith(v)
        case InSet(k, vs):
            return k in labels and labels[k] in vs
        case NotInSet(k, vs):
            return k not in labels or labels[k] not in vs
        case Has(k):
            return k in labels
        case All() | Global():
            return True
        case Not(op):
            return not reference(op, labels)
        case And(ops):
            return all(reference(op, labels) for op in ops)
        case Or(ops):
            return any(reference(op, labels) for op in ops)
    raise AssertionError(node)


@st.composite
def rendered(draw: st.DrawFn, node: Node, top: bool = True) -> str:
    """`node` as text in a random but equivalent style."""
    ws = lambda: draw(st.sampled_from(["", " ", "\t", "  "]))  # noqa: E731
    ws1 = lambda: draw(st.sampled_from([" ", "\t", " \t "]))  # noqa: E731

    def lit(value: str) -> str:
        quotes = [q for q in "\"'" if q not in value]
        q = draw(st.sampled_from(quotes))
        return f"{q}{value}{q}"

    text: str
    match node:
        case All() if top and draw(st.booleans()):
            text = ws()
        case All():
            text = f"all({ws()})"
        case Global():
            text = f"global({ws()})"
        case Has(k):
            text = f"has({ws()}{k}{ws()})"
        case Eq(k, v) | Ne(k, v):
            text = f"{k}{ws()}{'==' if isinstance(node, Eq) else '!='}{ws()}{lit(v)}"
        case LabelValue(k, v):
            spelling = {
                Contains: ["contains"],
                StartsWith: ["starts with", "startswith", "starts \t with"],
                EndsWith: ["ends with", "endswith", "ends  with"],
            }[type(node)]
            text = f"{k}{ws1()}{draw(st.sampled_from(spelling))}{ws()}{lit(v)}"
        case LabelSet(k, vs):
            op = "in" if isinstance(node, InSet) else draw(st.sampled_from(["not in", "notin", "not\tin"]))
            elements = draw(
                st.permutations(list(vs) + draw(st.lists(st.sampled_from(vs), max_size=2)) if vs else [])
            )
            body = f"{ws()},{ws()}".join(lit(v) for v in elements)
            if elements and draw(st.booleans()):
                body += ","
            text = f"{k}{ws1()}{op}{ws()}{{{ws()}{body}{ws()}}}"
        case Not(op):
            inner = draw(rendered(op, top=False))
            if isinstance(op, And | Or):
                inner = f"({inner})"
            text = f"{draw(st.sampled_from(['!', '!!!', '! !!']))}{ws()}{inner}"
        case And(ops) | Or(ops):
            joiner = f"{ws()}{'&&' if isinstance(node, And) else '||'}{ws()}"
            parts = []
            for op in ops:
                part = draw(rendered(op, top=False))
                parts.append(f"({part})" if isinstance(op, And | Or) else part)
            text = joiner.join(parts)
        case _:
            raise AssertionError(node)
    if draw(st.integers(0, 5)) == 0 and text.strip():
        text = f"({ws()}{text}{ws()})"
    return f"{ws()}{text}{ws()}"


def label_maps(node: Node) -> st.SearchStrategy[dict[str, str]]:
    names = sorted({n.label for n in node.walk() if isinstance(n, LabelValue | LabelSet | Has)} | {"other"})
    values = sorted(
        {n.value for n in node.walk() if isinstance(n, LabelValue)}
        | {v for n in node.walk() if isinstance(n, LabelSet) for v in n.values}
        | {""}
    )
    value = st.sampled_from(values) | st.text(max_size=3)
    return st.dictionaries(st.sampled_from(names), value, max_size=len(names))


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_print_parse_round_trip_gives_the_same_tree_canonical_and_id(data: st.DataObject) -> None:
    tree = data.draw(trees())
    text = data.draw(rendered(tree))
    sel = parse(text)
    expected = Selector(tree)
    assert sel.root == tree
    assert sel.canonical == tree.canonical() == expected.canonical
    assert sel.unique_id == expected.unique_id
    again = parse(sel.canonical)
    assert again == sel and again.canonical == sel.canonical and again.unique_id == sel.unique_id


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_evaluation_agrees_with_the_semantics_before_and_after_round_trip(data: st.DataObject) -> None:
    tree = data.draw(trees())
    sel, canonical = Selector(tree), parse(tree.canonical())
    for _ in range(5):
        labels = data.draw(label_maps(tree))
        expected = reference(tree, labels)
        assert sel.evaluate(labels) is expected
        assert canonical.evaluate(labels) is expected


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_label_restrictions_are_necessary_for_a_match(data: st.DataObject) -> None:
    tree = data.draw(trees(st.sampled_from(["a", "b", "c"])))
    sel = Selector(tree)
    for _ in range(10):
        labels = data.draw(label_maps(tree))
        if sel.evaluate(labels):
            for label, values in sel.label_restrictions().items():
                assert label in labels
                assert values is None or labels[label] in values


def satisfies_restrictions(sel: Selector, labels: Mapping[str, str]) -> bool:
    return all(
        label in labels and (values is None or labels[label] in values)
        for label, values in sel.label_restrictions().items()
    )


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_exact_restrictions_are_also_sufficient(data: st.DataObject) -> None:
    tree = data.draw(trees(st.sampled_from(["a", "b", "c"])))
    sel = Selector(tree)
    for _ in range(10):
        labels = data.draw(label_maps(tree))
        if sel.restrictions_are_exact():
            assert sel.evaluate(labels) is satisfies_restrictions(sel, labels)


@pytest.mark.parametrize(
    ("text", "exact"),
    [
        ("", True),
        ("a == 'x'", True),
        ("has(a) && b in {'1', '2'} && c == ''", True),
        ("a == 'x' && a == 'y'", True),
        ("a != 'x'", False),
        ("a == 'x' || b == 'y'", False),
        ("a == 'x' && !has(b)", False),
        ("a contains 'x'", False),
        ("(a == 'x' && b == 'y') && c == 'z'", True),
        ("all() && a == 'x'", False),
    ],
)
def test_which_selectors_are_exact(text: str, exact: bool) -> None:
    assert parse(text).restrictions_are_exact() is exact


@settings(max_examples=100, deadline=None)
@given(st.data(), st.sampled_from(["pcns.", "pcsa.", "visited/"]))
def test_label_prefix_renames_every_label(data: st.DataObject, prefix: str) -> None:
    tree = data.draw(trees())
    sel = Selector(tree).with_label_prefix(prefix)
    assert parse(sel.canonical) == sel
    for _ in range(3):
        labels = data.draw(label_maps(tree))
        assert sel.evaluate({prefix + k: v for k, v in labels.items()}) is reference(tree, labels)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_and_all_is_conjunction(data: st.DataObject) -> None:
    parts = data.draw(st.lists(trees(st.sampled_from(["a", "b"])), max_size=3))
    combined = and_all(*(Selector(t) for t in parts))
    assert parse(combined.canonical) == combined
    for _ in range(5):
        labels = data.draw(st.dictionaries(st.sampled_from(["a", "b"]), st.sampled_from(["", "x", "'"])))
        assert combined.evaluate(labels) is all(reference(t, labels) for t in parts)


FRAGMENTS = [*"ab =!&|(){},'\"\tinotsh%", "has(", "all()", " in ", "\n", "contains", "starts", "with"]


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=20).map("".join))
def test_arbitrary_text_parses_or_raises_selector_error(text: str) -> None:
    try:
        sel = parse(text)
    except SelectorError as err:
        assert 0 <= err.position <= len(text)
        return
    assert parse(sel.canonical) == sel


def test_long_labels_round_trip() -> None:
    label = "x" * MAX_LABEL_LENGTH
    sel = parse(f"{label} in {{'b', 'a'}} && !has({label})")
    assert parse(sel.canonical) == sel
