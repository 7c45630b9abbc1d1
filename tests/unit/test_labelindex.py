"""LabelIndex: incremental selector/item matching, indexing efficiency, and a brute-force oracle.

Proves: callbacks report exactly the changes of the match relation (no duplicates, nothing for
no-op updates); removal and replacement of selectors and items; that item and selector updates
only evaluate indexed candidates (10k namespace-restricted selectors -> ~10 evaluations); and,
with Hypothesis, that any interleaving of updates leaves the index equal to brute-force
evaluation with callbacks equal to the differences, whether selector updates report pair by pair
or in one batch, and with selectors stored with or without their item → selectors entries
(``by_item``, switched at random).
"""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from policycore.labelindex import LabelIndex
from policycore.selector import parse

NS = "projectcalico.org/namespace"


class Recorder:
    def __init__(self) -> None:
        self.started: list[tuple[str, str]] = []
        self.stopped: list[tuple[str, str]] = []

    def index(self, batched: bool = False) -> LabelIndex[str, str]:
        return LabelIndex(
            lambda s, i: self.started.append((s, i)),
            lambda s, i: self.stopped.append((s, i)),
            self.changed if batched else None,
        )

    def changed(self, selector: str, stopped: set[str], started: set[str]) -> None:
        assert stopped or started, "a batch reports something"
        assert not stopped & started
        self.stopped += [(selector, i) for i in stopped]
        self.started += [(selector, i) for i in started]

    def take(self) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        started, stopped = set(self.started), set(self.stopped)
        assert len(started) == len(self.started) and len(stopped) == len(self.stopped)
        self.started.clear()
        self.stopped.clear()
        return started, stopped


def test_matches_start_and_stop_as_selectors_and_items_change() -> None:
    rec = Recorder()
    index = rec.index()
    index.update_item("pod1", {"app": "web", NS: "ns1"})
    index.update_item("pod2", {"app": "db", NS: "ns1"})
    index.update_selector("web", parse("app == 'web'"))
    assert rec.take() == ({("web", "pod1")}, set())
    index.update_selector("ns1", parse(f"{NS} == 'ns1'"))
    assert rec.take() == ({("ns1", "pod1"), ("ns1", "pod2")}, set())
    assert index.selectors_matching("pod1") == {"web", "ns1"}

    index.update_item("pod1", {"app": "db", NS: "ns1"})
    assert rec.take() == (set(), {("web", "pod1")})
    index.update_item("pod2", {"app": "web", NS: "ns2"})
    assert rec.take() == ({("web", "pod2")}, {("ns1", "pod2")})

    index.update_selector("web", parse("app in {'web', 'db'}"))
    assert rec.take() == ({("web", "pod1")}, set())
    assert index.items_matching("web") == {"pod1", "pod2"}

    index.update_item("pod1", None)
    assert rec.take() == (set(), {("web", "pod1"), ("ns1", "pod1")})
    index.update_selector("web", None)
    assert rec.take() == (set(), {("web", "pod2")})
    assert index.items_matching("web") == set()
    assert index.selectors_matching("pod2") == set()
    assert index.selector("web") is None and index.labels("pod1") is None


def test_identical_updates_and_removals_of_absent_keys_do_nothing() -> None:
    rec = Recorder()
    index = rec.index()
    index.update_item("pod", {"a": "1"})
    index.update_selector("s", parse("a == '1'"))
    rec.take()
    before = index.evaluations
    index.update_item("pod", {"a": "1"})
    index.update_selector("s", parse("a=='1'"))
    index.update_item("ghost", None)
    index.update_selector("ghost", None)
    assert rec.take() == (set(), set())
    assert index.evaluations == before


def test_stored_labels_are_a_copy() -> None:
    index: LabelIndex[str, str] = LabelIndex()
    labels = {"a": "1"}
    index.update_item("pod", labels)
    index.update_selector("s", parse("a == '1'"))
    labels["a"] = "2"
    assert index.labels("pod") == {"a": "1"}
    assert index.items_matching("s") == {"pod"}


def test_not_equal_and_not_in_match_items_without_the_label() -> None:
    index: LabelIndex[str, str] = LabelIndex()
    index.update_item("bare", {})
    index.update_item("web", {"app": "web"})
    index.update_selector("ne", parse("app != 'web'"))
    index.update_selector("notin", parse("app not in {'web'}"))
    index.update_selector("all", parse(""))
    assert index.items_matching("ne") == {"bare"}
    assert index.items_matching("notin") == {"bare"}
    assert index.items_matching("all") == {"bare", "web"}


def test_item_update_evaluates_only_the_selectors_of_its_namespace() -> None:
    index: LabelIndex[str, str] = LabelIndex()
    for n in range(10_000):
        index.update_selector(f"s{n}", parse(f"{NS} == 'ns{n % 1000}' && role == 'r{n % 7}'"))
    before = index.evaluations
    index.update_item("pod", {NS: "ns42", "role": "r0", "app": "x"})
    assert index.evaluations - before == 10
    assert index.selectors_matching("pod") == {f"s{n}" for n in range(42, 10_000, 1000) if n % 7 == 0}


def test_selector_update_evaluates_only_items_with_the_restricted_labels() -> None:
    index: LabelIndex[str, int] = LabelIndex()
    for n in range(10_000):
        labels = {NS: f"ns{n % 100}", "app": f"a{n % 10}"}
        if n % 1000 == 0:
            labels["special"] = ""
        index.update_item(n, labels)
    before = index.evaluations
    index.update_selector("ns", parse(f"{NS} in {{'ns1', 'ns2'}} && app == 'a1' && app != 'a2'"))
    # the two namespaces hold 200 items, 'app == a1' 1000: only their intersection is evaluated
    assert index.evaluations - before == 100
    assert index.items_matching("ns") == {n for n in range(10_000) if n % 100 == 1}
    # exact restrictions (an && of == and in) need no evaluation: the intersection is the answer
    before = index.evaluations
    index.update_selector("exact", parse(f"{NS} in {{'ns1', 'ns2'}} && app == 'a1'"))
    index.update_selector("everything", parse("all()"))
    assert index.evaluations == before
    assert index.items_matching("exact") == index.items_matching("ns")
    assert len(index.items_matching("everything")) == 10_000
    index.update_selector("everything", None)
    before = index.evaluations
    index.update_selector("has", parse("has(special) && app != 'a1'"))
    assert index.evaluations - before == 10
    before = index.evaluations
    index.update_selector("never", parse("app == 'a1' && app == 'a2'"))
    assert index.evaluations == before
    index.update_item(5, {"app": "a1"})  # no candidate: 'ns' needs the namespace, 'has' special
    assert index.evaluations == before
    index.update_item(7, {"app": "a7", "special": "x"})
    assert index.evaluations - before == 1
    assert index.items_matching("never") == set()
    assert index.items_matching("has") == {n for n in range(0, 10_000, 1000)} | {7}


def test_restrictions_every_item_satisfies_narrow_nothing_and_cost_nothing() -> None:
    index: LabelIndex[str, int] = LabelIndex()
    for n in range(1000):
        index.update_item(n, {"orchestrator": "k8s", "app": f"a{n % 10}", "v": "1"})
    index.update_selector("s", parse("orchestrator == 'k8s' && app == 'a1' && v in {'1', '2'}"))
    index.update_selector("everything", parse("orchestrator == 'k8s'"))
    index.update_selector("never", parse("orchestrator == 'k8s' && app == 'zz'"))
    assert index.evaluations == 0
    assert index.items_matching("s") == set(range(1, 1000, 10))
    assert index.items_matching("everything") == set(range(1000))
    assert index.items_matching("never") == set()


def test_a_selector_stored_without_its_item_entries_still_reports_every_change() -> None:
    rec = Recorder()
    index = rec.index(batched=True)
    index.update_item("a", {"app": "web"})
    index.update_selector("set", parse("app == 'web'"), by_item=False)
    index.update_selector("policy", parse("app == 'web'"))
    assert index.selectors_matching("a") == {"policy"}
    assert rec.take() == ({("set", "a"), ("policy", "a")}, set())
    index.update_item("a", {"app": "db"})
    assert rec.take() == (set(), {("set", "a"), ("policy", "a")})
    index.update_item("a", {"app": "web"})
    index.update_item("a", None)
    assert rec.take() == ({("set", "a"), ("policy", "a")}, {("set", "a"), ("policy", "a")})
    index.update_item("a", {"app": "web"})
    index.update_selector("set", parse("app == 'web'"))  # now with its item entries
    assert index.selectors_matching("a") == {"policy", "set"}
    assert rec.take() == ({("set", "a"), ("policy", "a")}, set())


def test_or_of_indexed_values_is_indexed() -> None:
    index: LabelIndex[str, int] = LabelIndex()
    for n in range(1000):
        index.update_item(n, {"app": f"a{n % 100}"})
    before = index.evaluations
    index.update_selector("or", parse("app == 'a1' || app == 'a2'"))
    assert index.evaluations - before == 20
    assert index.items_matching("or") == {n for n in range(1000) if n % 100 in (1, 2)}


def test_unindexed_selectors_see_every_item() -> None:
    index: LabelIndex[str, int] = LabelIndex()
    index.update_selector("not", parse("!has(app)"))
    for n in range(10):
        index.update_item(n, {"app": "x"} if n % 2 else {})
    assert index.items_matching("not") == {0, 2, 4, 6, 8}
    assert index.evaluations == 10


LABEL_NAMES = ["a", "b", NS]
VALUES = ["1", "2", ""]
SELECTOR_POOL = [
    "",
    "a == '1'",
    "a != '1'",
    "a in {'1', '2'}",
    "a not in {'1'}",
    "has(b)",
    "!has(b)",
    "a == '1' && b == '2'",
    "a == '1' || b == '2'",
    "a == '1' || has(a)",
    f"{NS} == '1' && a in {{'2', ''}}",
    "a contains '1'",
    "b starts with ''",
    "a == '1' && a == '2'",
    "a in {}",
    "!(a == '2' && has(b))",
    f"(a == '1' && has({NS})) || (a == '2' && b != '1')",
]


class LabelIndexMachine(RuleBasedStateMachine):
    """Random interleavings of updates, checked against brute force after every step."""

    batched = False

    def __init__(self) -> None:
        super().__init__()
        self.recorder = Recorder()
        self.index = self.recorder.index(self.batched)
        self.selectors: dict[str, str] = {}
        self.by_item: dict[str, bool] = {}
        self.items: dict[str, dict[str, str]] = {}
        self.relation: set[tuple[str, str]] = set()

    @rule(
        key=st.sampled_from(["s0", "s1", "s2", "s3", "s4"]),
        text=st.none() | st.sampled_from(SELECTOR_POOL),
        by_item=st.booleans(),
    )
    def update_selector(self, key: str, text: str | None, by_item: bool) -> None:
        self.index.update_selector(key, None if text is None else parse(text), by_item=by_item)
        if text is None:
            self.selectors.pop(key, None)
            self.by_item.pop(key, None)
        else:
            self.selectors[key] = text
            self.by_item[key] = by_item
        self.check_step()

    @rule(
        key=st.sampled_from(["i0", "i1", "i2", "i3", "i4", "i5"]),
        labels=st.none() | st.dictionaries(st.sampled_from(LABEL_NAMES), st.sampled_from(VALUES)),
    )
    def update_item(self, key: str, labels: dict[str, str] | None) -> None:
        self.index.update_item(key, labels)
        if labels is None:
            self.items.pop(key, None)
        else:
            self.items[key] = labels
        self.check_step()

    def check_step(self) -> None:
        expected = {
            (s, i)
            for s, text in self.selectors.items()
            for i, labels in self.items.items()
            if parse(text).evaluate(labels)
        }
        started, stopped = self.recorder.take()
        assert started == expected - self.relation
        assert stopped == self.relation - expected
        self.relation = expected

    @invariant()
    def queries_equal_brute_force(self) -> None:
        for s in ["s0", "s1", "s2", "s3", "s4"]:
            assert self.index.items_matching(s) == {i for (t, i) in self.relation if t == s}
        for i in ["i0", "i1", "i2", "i3", "i4", "i5"]:
            expected = {s for (s, j) in self.relation if j == i and self.by_item[s]}
            assert self.index.selectors_matching(i) == expected


class BatchedLabelIndexMachine(LabelIndexMachine):
    """The same, with selector updates reported in one ``on_matches_changed`` call each."""

    batched = True


LabelIndexMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
BatchedLabelIndexMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestLabelIndexMachine = LabelIndexMachine.TestCase
TestBatchedLabelIndexMachine = BatchedLabelIndexMachine.TestCase
