"""Calico's own selector test vectors (libcalico-go/lib/selector/{parser,tokenizer}/*_test.go).

Proves: matching/non-matching label maps for the 58 upstream selectors, before and after
canonicalising; rejection of the 26 upstream bad selectors with a positioned error; the
canonicalisation/UID table; the PrefixVisitor table; the tokenizer cases, including keyword-looking
label names, ``startswith``/``endswith``/``notin`` and the 512/513-character label limit.
"""

from __future__ import annotations

import pickle

import pytest

from policycore.selector import MAX_LABEL_LENGTH, SelectorError, and_all, is_valid_label, parse
from policycore.selector.tokenizer import Kind, tokenize

Labels = dict[str, str]

SELECTOR_TESTS: list[tuple[str, list[Labels], list[Labels]]] = [
    ('a == "b"', [{"a": "b"}, {"a": "b", "c": "d"}], [{}, {"a": "c"}, {"c": "d"}]),
    (
        'a == "b" && c == "d"',
        [{"a": "b", "c": "d"}],
        [{}, {"a": "b", "c": "e"}, {"a": "c", "c": "d"}, {"c": "d"}, {"a": "b"}],
    ),
    (
        'a == "b" || c == "d"',
        [{"a": "b", "c": "d"}, {"a": "b"}, {"c": "d"}],
        [{}, {"a": "e", "c": "e"}, {"c": "e"}, {"a": "e"}],
    ),
    ('a in {"\'", \'"\', "c"}', [{"a": "c"}, {"a": '"'}, {"a": "'"}], [{}, {"a": "e"}]),
    ('a not in {"\'", \'"\', "c"}', [{}, {"a": "e"}], [{"a": "c"}, {"a": '"'}, {"a": "'"}]),
    ("a == 'a'", [{"a": "a"}], []),
    ('a == "a"', [{"a": "a"}], []),
    ('a != "b"', [{"a": "a"}], []),
    ('a != "a"', [{}], []),
    ('a contains "a"', [{"a": "a"}, {"a": "bab"}, {"a": "aaa", "b": "c"}], [{}, {"a": "b"}, {"b": "aaa"}]),
    (
        'a starts with "a"',
        [{"a": "a"}, {"a": "abb"}, {"a": "aaa", "b": "c"}],
        [{}, {"a": "b"}, {"a": "baa"}, {"b": "aaa"}],
    ),
    (
        'a ends with "a"',
        [{"a": "a"}, {"a": "bba"}, {"a": "aaa", "b": "c"}],
        [{}, {"a": "b"}, {"a": "aab"}, {"b": "aaa"}],
    ),
    ('a in {"a"}', [{"a": "a"}], []),
    ('!a in {"a"}', [{"a": "b"}], []),
    ('a in {"a", "b"}', [{"a": "a"}], []),
    ('a in {"a", "b"}', [{"a": "b"}], []),
    ('a not in {"d", "e"}', [{"a": "a"}], []),
    ("has(a)", [{"a": "b"}], []),
    ("!has(a)", [{"b": "b"}], []),
    ("", [{}], []),
    (" ", [{}], []),
    ("", [{"a": "b"}], []),
    ("all()", [{}], []),
    (" all()", [{}], []),
    (" all()", [{"a": "b"}], []),
    ("global()", [{}], []),
    (" global()", [{}], []),
    (" global()", [{"a": "b"}], []),
    ("a == 'a'", [], [{"a": "b"}]),
    ("a == 'a'", [], [{}]),
    ('a != "a"', [], [{"a": "a"}]),
    ("a != 'a'", [], [{"a": "a"}]),
    ('a in {"a"}', [], [{"a": "b"}]),
    ('a not in {"a"}', [], [{"a": "a"}]),
    ('a in {"a", "b"}', [], [{"a": "c"}]),
    ("has(b)", [], [{"a": "b"}]),
    ("!!has(b)", [], [{"a": "b"}]),
    ("! has(a)", [], [{"a": "b"}]),
    ("!has(a)", [], [{"a": "b"}]),
    ("!!! has(a)", [], [{"a": "b"}]),
    ("!!!has(a)", [], [{"a": "b"}]),
    ("!! ! has(a)", [], [{"a": "b"}]),
    ("! !!has(a)", [], [{"a": "b"}]),
    ("a == 'a1' && b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a == 'a1' && b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("a != 'a1' && !b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("!a == 'a1' && b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("has(a) && !has(b)", [{"a": "a"}], []),
    ("!has(b) && has(a)", [{"a": "a"}], []),
    ("!(!has(a) || has(b))", [{"a": "a"}], []),
    ("!(has(b) || !has(a))", [{"a": "a"}], []),
    ("a == 'a1' || b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a == 'a1' || b != 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a != 'a1' || b == 'b1'", [{"a": "a1", "b": "b1"}], []),
    ("a != 'a1' || b != 'b1'", [], [{"a": "a1", "b": "b1"}]),
    ("! a == 'a1' || ! b == 'b1'", [], [{"a": "a1", "b": "b1"}]),
]

BAD_SELECTORS = [
    "b == b",
    "b contains b",
    "b starts with b",
    "b ends with b",
    "'b1' == b",
    "b",
    "a b",
    "!",
    'foo == "bar" &',
    'foo == "bar" |',
    "foo != ||",
    'foo in {"", ||',
    'foo in ""',
    '"FOO',
    "\"FOO'",
    '"FOO',
    "'FOO",
    "(",
    '(a == "foo"',
    ")",
    "()",
    "%",
    'a == "b" && %',
    'a == "b" || %',
    "a ",
    "has(foo) &&",
]

CANONICAL = [
    ("", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" all() ", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    (" (all() )", "all()", "s:5y5I3VdRZfDU01O--xXAPx2yxCQQqMf0M6IWug"),
    ("! (has( b)||! has(a ))", "!(has(b) || !has(a))", "s:Iss0uCleLYv1GSv_pNm7hAO58kE9jAx1NKyG3Q"),
    ('! (a == "b"&&! c != "d")', '!(a == "b" && !c != "d")', "s:lh3haoY1ikTRkd4UZu0nWSaIBknYLPJLX16d-w"),
    ('a == "\'"', 'a == "\'"', None),
    ("a == '\"'", "a == '\"'", None),
    ("a contains '\"'", "a contains '\"'", None),
    ('a contains "\'"', 'a contains "\'"', None),
    ("a startswith '\"'", "a starts with '\"'", None),
    ('a endswith "\'"', 'a ends with "\'"', None),
    ("a!='\"'", "a != '\"'", None),
    ('a in {"d"}', 'a in {"d"}', None),
    ('a in {"a", "b"}', 'a in {"a", "b"}', None),
    ('a in {"d", "a", "b"}', 'a in {"a", "b", "d"}', None),
    ('a in {"z", "x", "y", "a"}', 'a in {"a", "x", "y", "z"}', None),
    ('a in {"z", "z", "x", "y", "x", "a"}', 'a in {"a", "x", "y", "z"}', None),
]

PREFIX_TESTS = [
    ("k == 'v'", 'visited/k == "v"'),
    ("k != 'v'", 'visited/k != "v"'),
    ("k contains 'v'", 'visited/k contains "v"'),
    ("k starts with 'v'", 'visited/k starts with "v"'),
    ("k ends with 'v'", 'visited/k ends with "v"'),
    ("k == 'v' && x == 'y'", '(visited/k == "v" && visited/x == "y")'),
    ("k == 'v' || has(x)", '(visited/k == "v" || has(visited/x))'),
    ("!(k == 'v')", '!visited/k == "v"'),
    ("k in {'v'}", 'visited/k in {"v"}'),
    ("k not in {'v'}", 'visited/k not in {"v"}'),
    (
        "!(!(k == 'v' && has(t) || all()) && (a in {'b', 'c'}))",
        '!(!((visited/k == "v" && has(visited/t)) || all()) && visited/a in {"b", "c"})',
    ),
]


@pytest.mark.parametrize(("text", "matches", "non_matches"), SELECTOR_TESTS)
def test_upstream_selector_vectors(text: str, matches: list[Labels], non_matches: list[Labels]) -> None:
    for sel in (parse(text), parse(parse(text).canonical)):
        assert [sel.evaluate(labels) for labels in matches] == [True] * len(matches)
        assert [sel.evaluate(labels) for labels in non_matches] == [False] * len(non_matches)


@pytest.mark.parametrize("text", BAD_SELECTORS)
def test_upstream_bad_selectors_are_rejected_with_a_position(text: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse(text)
    assert 0 <= caught.value.position <= len(text)
    assert str(caught.value).startswith(f"selector {text!r}: at position {caught.value.position}: ")
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize(("text", "canonical", "uid"), CANONICAL)
def test_upstream_canonical_form_and_unique_id(text: str, canonical: str, uid: str | None) -> None:
    sel = parse(text)
    assert sel.canonical == canonical
    again = parse(canonical)
    assert again.canonical == canonical
    assert again.unique_id == sel.unique_id
    if uid is not None:
        assert sel.unique_id == uid


@pytest.mark.parametrize(("text", "prefixed"), PREFIX_TESTS)
def test_upstream_prefix_visitor(text: str, prefixed: str) -> None:
    assert parse(text).with_label_prefix("visited/").canonical == prefixed


TOKEN_TESTS: list[tuple[str, list[tuple[Kind, str]]]] = [
    ('a=="b"', [(Kind.LABEL, "a"), (Kind.EQ, ""), (Kind.STRING, "b")]),
    ('label == "value"', [(Kind.LABEL, "label"), (Kind.EQ, ""), (Kind.STRING, "value")]),
    ('label contains "value"', [(Kind.LABEL, "label"), (Kind.CONTAINS, ""), (Kind.STRING, "value")]),
    (
        'contains contains "contains"',
        [(Kind.LABEL, "contains"), (Kind.CONTAINS, ""), (Kind.STRING, "contains")],
    ),
    (
        "contains contains 'contains'",
        [(Kind.LABEL, "contains"), (Kind.CONTAINS, ""), (Kind.STRING, "contains")],
    ),
    ('label contains"value"', [(Kind.LABEL, "label"), (Kind.CONTAINS, ""), (Kind.STRING, "value")]),
    ('label startswith "value"', [(Kind.LABEL, "label"), (Kind.STARTS_WITH, ""), (Kind.STRING, "value")]),
    ('label endswith "value"', [(Kind.LABEL, "label"), (Kind.ENDS_WITH, ""), (Kind.STRING, "value")]),
    ('label starts with "value"', [(Kind.LABEL, "label"), (Kind.STARTS_WITH, ""), (Kind.STRING, "value")]),
    (
        'startswith starts with "value"',
        [(Kind.LABEL, "startswith"), (Kind.STARTS_WITH, ""), (Kind.STRING, "value")],
    ),
    ('label ends with "value"', [(Kind.LABEL, "label"), (Kind.ENDS_WITH, ""), (Kind.STRING, "value")]),
    ('endswith ends with "value"', [(Kind.LABEL, "endswith"), (Kind.ENDS_WITH, ""), (Kind.STRING, "value")]),
    ('label starts  with "value"', [(Kind.LABEL, "label"), (Kind.STARTS_WITH, ""), (Kind.STRING, "value")]),
    ('label ends \twith "value"', [(Kind.LABEL, "label"), (Kind.ENDS_WITH, ""), (Kind.STRING, "value")]),
    (
        'a not in "bar" && !has(foo) || b in c',
        [
            (Kind.LABEL, "a"),
            (Kind.NOT_IN, ""),
            (Kind.STRING, "bar"),
            (Kind.AND, ""),
            (Kind.NOT, ""),
            (Kind.HAS, "foo"),
            (Kind.OR, ""),
            (Kind.LABEL, "b"),
            (Kind.IN, ""),
            (Kind.LABEL, "c"),
        ],
    ),
    ("has(calico/k8s_ns)", [(Kind.HAS, "calico/k8s_ns")]),
    ("has(calico/k8s_ns/role)", [(Kind.HAS, "calico/k8s_ns/role")]),
    ("has(calico/k8s_NS-.1/role)", [(Kind.HAS, "calico/k8s_NS-.1/role")]),
    (
        'calico/k8s_ns == "kube-system" && k8s-app == "kube-dns"',
        [
            (Kind.LABEL, "calico/k8s_ns"),
            (Kind.EQ, ""),
            (Kind.STRING, "kube-system"),
            (Kind.AND, ""),
            (Kind.LABEL, "k8s-app"),
            (Kind.EQ, ""),
            (Kind.STRING, "kube-dns"),
        ],
    ),
    (
        'a  not  in  "bar"  &&  ! has( foo )  ||  b  in  c ',
        [
            (Kind.LABEL, "a"),
            (Kind.NOT_IN, ""),
            (Kind.STRING, "bar"),
            (Kind.AND, ""),
            (Kind.NOT, ""),
            (Kind.HAS, "foo"),
            (Kind.OR, ""),
            (Kind.LABEL, "b"),
            (Kind.IN, ""),
            (Kind.LABEL, "c"),
        ],
    ),
    (
        'a notin"bar"&&!has(foo)||b in"c"',
        [
            (Kind.LABEL, "a"),
            (Kind.NOT_IN, ""),
            (Kind.STRING, "bar"),
            (Kind.AND, ""),
            (Kind.NOT, ""),
            (Kind.HAS, "foo"),
            (Kind.OR, ""),
            (Kind.LABEL, "b"),
            (Kind.IN, ""),
            (Kind.STRING, "c"),
        ],
    ),
    ("a not in {}", [(Kind.LABEL, "a"), (Kind.NOT_IN, ""), (Kind.LBRACE, ""), (Kind.RBRACE, "")]),
    (
        'a not in {"a","B"}',
        [
            (Kind.LABEL, "a"),
            (Kind.NOT_IN, ""),
            (Kind.LBRACE, ""),
            (Kind.STRING, "a"),
            (Kind.COMMA, ""),
            (Kind.STRING, "B"),
            (Kind.RBRACE, ""),
        ],
    ),
    ("global()", [(Kind.GLOBAL, "")]),
    ("all( \t)", [(Kind.ALL, "")]),
    ('all == "x"', [(Kind.LABEL, "all"), (Kind.EQ, ""), (Kind.STRING, "x")]),
    ('has == "x"', [(Kind.LABEL, "has"), (Kind.EQ, ""), (Kind.STRING, "x")]),
    (
        'in in {"in"}',
        [(Kind.LABEL, "in"), (Kind.IN, ""), (Kind.LBRACE, ""), (Kind.STRING, "in"), (Kind.RBRACE, "")],
    ),
    (
        'not not in {"x"}',
        [(Kind.LABEL, "not"), (Kind.NOT_IN, ""), (Kind.LBRACE, ""), (Kind.STRING, "x"), (Kind.RBRACE, "")],
    ),
    ("'a\\b'", [(Kind.STRING, "a\\b")]),
    ("\"say 'hi'\"", [(Kind.STRING, "say 'hi'")]),
    ("-1.a/b_c", [(Kind.LABEL, "-1.a/b_c")]),
]

TOKEN_ERRORS = [
    'label starts foo "value"',
    'label ends foo "value"',
    'label squiggles "value"',
    'a inx {"b"}',
    'a containsx "b"',
    'a startswithx "b"',
    "has()",
    "has(foo",
    "has(foo bar)",
    "all(",
    "all(x)",
    "global(",
    'a = "b"',
    "has(a) & has(b)",
    "has(a) | has(b)",
    'a == "b"\n',
    'a == "b" \r',
    'é == "b"',
    "'unterminated",
]


@pytest.mark.parametrize(("text", "expected"), TOKEN_TESTS)
def test_upstream_tokens(text: str, expected: list[tuple[Kind, str]]) -> None:
    tokens = tokenize(text)
    assert [(t.kind, t.value) for t in tokens] == [*expected, (Kind.EOF, "")]


@pytest.mark.parametrize("text", TOKEN_ERRORS)
def test_tokenizer_errors(text: str) -> None:
    with pytest.raises(SelectorError):
        tokenize(text)


def test_token_positions_point_into_the_input() -> None:
    assert [t.position for t in tokenize('  ab  ==\t"c" ')] == [2, 6, 9, 13]


def test_label_length_limit_is_512() -> None:
    longest = "a" * MAX_LABEL_LENGTH
    assert parse(f'{longest} == "x"').evaluate({longest: "x"})
    assert parse(f"has({longest})").evaluate({longest: ""})
    assert is_valid_label(longest)
    assert not is_valid_label(longest + "a")
    for text in (f'{longest}a == "x"', f"has({longest}a)"):
        with pytest.raises(SelectorError, match="longer than 512"):
            parse(text)


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ('all == "x"', {"all": "x"}, True),
        ('has == "x"', {"has": "x"}, True),
        ('global != "x"', {}, True),
        ('contains contains "contains"', {"contains": "xcontainsx"}, True),
        ('in in {"in"}', {"in": "in"}, True),
        ('not not in {"in"}', {"not": "in"}, False),
        ('starts starts with "s"', {"starts": "sx"}, True),
        ('ends ends with "s"', {"ends": "xs"}, True),
        ('with == "w"', {"with": "w"}, True),
    ],
)
def test_keyword_looking_labels(text: str, labels: Labels, expected: bool) -> None:
    assert parse(text).evaluate(labels) is expected


@pytest.mark.parametrize(
    ("text", "position", "reason"),
    [
        ("a == ", 5, "expected a string literal"),
        ("b == b", 5, "expected a string literal"),
        ('"b" == a', 0, "unexpected string literal 'b'"),
        ('a in {"x"', 9, "expected '}'"),
        ("a in {,}", 6, "expected '}' or a string literal"),
        ("a in {web}", 6, "expected '}' or a string literal"),
        ('a == "b" c == "d"', 9, "unexpected label 'c' after a complete expression"),
        ('has(a) == "x"', 7, "unexpected '==' after a complete expression"),
        ("has(a))", 6, "unexpected ')' after a complete expression"),
        ("'it''s'", 0, "unexpected string literal 'it', expected an expression"),
        ("has (a)", 4, "expected an operator after label 'has'"),
        ("a == 1", 5, "expected a string literal after '==', found label '1'"),
        ("a == %", 5, "unexpected character '%'"),
        ("x ~ y", 2, "expected an operator after label 'x'"),
        ('"x', 0, "unterminated string literal"),
        ("(a == 'b' && c == 'd'", 21, "expected ')' to close the '(' at position 0"),
    ],
)
def test_errors_say_where_and_why(text: str, position: int, reason: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse(text)
    assert caught.value.position == position
    assert caught.value.reason.startswith(reason)
    assert f"at position {position}: {reason}" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "labels", "expected"),
    [
        ('a != "x"', {}, True),
        ('a not in {"x"}', {}, True),
        ("a not in {}", {"a": "y"}, True),
        ("a in {}", {"a": ""}, False),
        ("has(a)", {"a": ""}, True),
        ('a contains ""', {"a": ""}, True),
        ('a contains ""', {}, False),
        ('a starts with ""', {"a": "v"}, True),
        ('a ends with ""', {}, False),
        ('a == "B"', {"a": "b"}, False),
        ('a in {"x",}', {"a": "x"}, True),
        ('a == "\\n"', {"a": "\\n"}, True),
        ("!(!has(a))", {"a": "1"}, True),
        ("!has(a) || !has(b)", {"a": "1", "b": "2"}, False),
        ('!a == "x" && b == "y"', {"b": "y"}, True),
    ],
)
def test_evaluation_semantics(text: str, labels: Labels, expected: bool) -> None:
    assert parse(text).evaluate(labels) is expected


def test_double_negation_through_parentheses_collapses_to_a_fixed_point() -> None:
    assert parse("!(!has(a))").canonical == "has(a)"
    assert parse("!(!(a == 'x' && b == 'y'))") == parse("a == 'x' && b == 'y'")


def test_selector_error_survives_pickling() -> None:
    with pytest.raises(SelectorError) as caught:
        parse("a == ")
    copy = pickle.loads(pickle.dumps(caught.value))
    assert (str(copy), copy.position, copy.reason) == (str(caught.value), 5, caught.value.reason)


def test_parse_is_cached_and_selectors_are_immutable_values() -> None:
    sel = parse("a == 'b'")
    assert parse("a == 'b'") is sel
    assert parse('a=="b"') == sel
    assert hash(parse('a=="b"')) == hash(sel)
    assert repr(sel) == "Selector('a == \"b\"')"
    with pytest.raises(AttributeError):
        sel.canonical = "x"  # type: ignore[misc]


def test_and_all_drops_all_and_matches_calico_string_composition() -> None:
    a, b = parse("x == 'y' && has(z)"), parse("projectcalico.org/namespace == 'ns1'")
    assert and_all() == parse("")
    assert and_all(parse(""), a, parse("all()")) is a
    assert and_all(a, b) == parse(f"({a.canonical}) && {b.canonical}")
    assert and_all(a, b).canonical == '((x == "y" && has(z)) && projectcalico.org/namespace == "ns1")'
    assert and_all(parse("global()"), b).canonical == '(global() && projectcalico.org/namespace == "ns1")'


def test_uses_global() -> None:
    assert parse("global()").uses_global()
    assert parse("has(a) && !(b == 'c' || global())").uses_global()
    assert not parse("all() && has(global)").uses_global()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('a == "b"', {"a": {"b"}}),
        ('a in {"b", "c"}', {"a": {"b", "c"}}),
        ("a in {}", {"a": set()}),
        ("has(a)", {"a": None}),
        ('a contains "x"', {"a": None}),
        ('a starts with "x"', {"a": None}),
        ('a ends with "x"', {"a": None}),
        ('a != "b"', {}),
        ('a not in {"b"}', {}),
        ("!has(a)", {}),
        ('!a == "b"', {}),
        ("all()", {}),
        ("global()", {}),
        ('a == "b" && has(c)', {"a": {"b"}, "c": None}),
        ('has(a) && a in {"b", "c"}', {"a": {"b", "c"}}),
        ('a in {"b", "c"} && a in {"c", "d"}', {"a": {"c"}}),
        ('a == "B" && a == "C"', {"a": set()}),
        ('a == "b" || a == "c"', {"a": {"b", "c"}}),
        ('a == "b" || has(a)', {"a": None}),
        ('a == "b" || c == "d"', {}),
        ('(a == "b" && c == "d") || (a == "e" && has(f))', {"a": {"b", "e"}}),
        ('a == "b" || !has(a)', {}),
    ],
)
def test_label_restrictions(text: str, expected: dict[str, set[str] | None]) -> None:
    assert dict(parse(text).label_restrictions()) == {
        k: None if v is None else frozenset(v) for k, v in expected.items()
    }


def test_deep_nesting_is_bounded_with_a_clear_error() -> None:
    deep = "(" * 64 + "has(a)" + ")" * 64
    assert parse("!" + deep).evaluate({}) is True
    with pytest.raises(SelectorError, match="nested deeper than 64"):
        parse("(" + deep + ")")
