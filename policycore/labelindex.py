"""`LabelIndex`: incremental matching of selectors against labelled items (Felix's labelindex).

Owns, for a set of keyed selectors and a set of keyed label maps, which selectors match which
items, and reports every change of that relation through two callbacks. It does not own what
the items or selectors mean (endpoints, namespaces, ip sets: the calc graph decides) nor the
selector language (`policycore.selector`).

Theory of operation (Felix's ``labelrestrictionindex``):

* Each selector is **registered** under one of its label restrictions (calico.md 3.5): a label
  with the values it must have (``a == "x"``, ``a in {...}``), or a label that must be present
  (``has(a)``, ``a contains ...``). Among its restrictions the one with the fewest current
  candidate items wins. A selector with no restriction (``all()``, ``!``, ``!=``, most ``||``)
  is **unindexed**; one whose restriction allows no value (``a == "x" && a == "y"``) matches
  nothing and is never evaluated.
* Items are indexed by label and value. An item update evaluates only the selectors registered
  under one of its (label, value) pairs or labels, plus the unindexed ones; a selector update
  evaluates only the items that carry its registered label (with one of its values). So work per
  event is proportional to the candidates, not to the number of selectors or items.
* A selector that is not a candidate for an item cannot match it, because every restriction is
  necessary for a match; so previously matching non-candidates simply stop matching.
* A new selector's candidates are the items satisfying *all* its value restrictions at once (set
  intersections, in C). When its restrictions are exact (`Selector.restrictions_are_exact`: an
  ``&&`` of ``==`` and ``in`` terms, or ``all()``) those candidates are its matches, unevaluated.

* A selector stored with ``by_item=False`` is left out of the item → selectors map, so storing
  or dropping one that matches thousands of items (a cluster-wide ip set) does no per-item work
  there; an item update finds the ones it matched among its candidates by membership instead.

Invariants, after every call:

* ``items_matching(s)`` is exactly ``{i : selector(s).evaluate(labels(i))}`` (the brute force);
* ``selectors_matching(i)`` is its inverse, restricted to selectors stored with ``by_item=True``;
* the callbacks received exactly the pairs that entered (``on_match_started``) or left
  (``on_match_stopped``) that relation, each once, stopped before started within one call.
  With ``on_matches_changed``, a selector update reports its pairs in one call instead
  (``(selector, stopped items, started items)``; the callee must neither change nor keep the
  sets); item updates still report pair by pair. Callbacks run after the index is updated and
  must not call back into it.

Existence from values: ``None`` removes; an update equal to the current value changes nothing
and calls nothing. `evaluations` counts selector evaluations so tests can check the indexing.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator, Mapping
from itertools import chain
from typing import Generic, TypeVar

from policycore.selector import Selector

SK = TypeVar("SK", bound=Hashable)
IK = TypeVar("IK", bound=Hashable)

Registration = tuple[str, frozenset[str] | None] | None
"""Where a selector is indexed: (label, required values or ``None`` for presence), or ``None``
for unindexed."""


def _ignore(_selector: object, _item: object) -> None:
    """Default callback."""


class LabelIndex(Generic[SK, IK]):
    """Which selectors match which items, maintained incrementally; see the module docstring."""

    def __init__(
        self,
        on_match_started: Callable[[SK, IK], None] = _ignore,
        on_match_stopped: Callable[[SK, IK], None] = _ignore,
        on_matches_changed: Callable[[SK, set[IK], set[IK]], None] | None = None,
    ) -> None:
        self._on_started = on_match_started
        self._on_stopped = on_match_stopped
        self._on_changed = on_matches_changed
        self.evaluations = 0
        """How many times a selector was evaluated against labels, in total."""
        self._selectors: dict[SK, Selector] = {}
        self._registrations: dict[SK, Registration] = {}
        self._labels: dict[IK, dict[str, str]] = {}
        self._matches: dict[SK, set[IK]] = {}
        self._matched_by: dict[IK, set[SK]] = {}
        self._items_by_value: dict[str, dict[str, set[IK]]] = {}
        self._item_count_by_label: dict[str, int] = {}
        self._selectors_by_value: dict[str, dict[str, set[SK]]] = {}
        self._selectors_by_label: dict[str, set[SK]] = {}
        self._unindexed: set[SK] = set()
        self._blind: set[SK] = set()
        """Selectors stored with ``by_item=False``: not in ``_matched_by``."""

    # Queries.

    def items_matching(self, sel_key: SK) -> set[IK]:
        """The items the selector currently matches (a copy)."""
        return set(self._matches.get(sel_key, ()))

    def selectors_matching(self, item_key: IK) -> set[SK]:
        """The selectors stored with ``by_item=True`` that currently match the item (a copy)."""
        return set(self._matched_by.get(item_key, ()))

    def selector(self, sel_key: SK) -> Selector | None:
        """The selector stored under `sel_key`, if any."""
        return self._selectors.get(sel_key)

    def labels(self, item_key: IK) -> Mapping[str, str] | None:
        """The labels stored for `item_key`, if any."""
        return self._labels.get(item_key)

    # Selector updates.

    def update_selector(self, sel_key: SK, selector: Selector | None, *, by_item: bool = True) -> None:
        """Set (or with ``None`` remove) the selector under `sel_key` and report match changes.

        ``by_item=False``: `selectors_matching` never reports this selector (see the module docstring).
        """
        old = self._selectors.get(sel_key)
        if old is not None and by_item == (sel_key in self._blind):
            self._set_by_item(sel_key, by_item)
        if old == selector:
            return
        if old is not None:
            self._unregister(sel_key)
        if selector is None:
            del self._selectors[sel_key]
            self._apply_selector_matches(sel_key, set())
            self._blind.discard(sel_key)
            return
        if not by_item:
            self._blind.add(sel_key)
        self._selectors[sel_key] = selector
        registration = self._register(sel_key, selector)
        self._apply_selector_matches(sel_key, self._initial_matches(selector, registration))

    def _set_by_item(self, sel_key: SK, by_item: bool) -> None:
        """Move a stored selector into (or out of) the item → selectors map; no match changes."""
        if by_item:
            self._blind.discard(sel_key)
            for item in self._matches.get(sel_key, ()):
                self._matched_by.setdefault(item, set()).add(sel_key)
        else:
            self._blind.add(sel_key)
            for item in self._matches.get(sel_key, ()):
                _discard(self._matched_by, item, sel_key)

    def _register(self, sel_key: SK, selector: Selector) -> Registration:
        registration = self._choose_registration(selector)
        self._registrations[sel_key] = registration
        if registration is None:
            self._unindexed.add(sel_key)
            return None
        label, values = registration
        if values is None:
            self._selectors_by_label.setdefault(label, set()).add(sel_key)
        elif values:
            by_value = self._selectors_by_value.setdefault(label, {})
            for value in values:
                by_value.setdefault(value, set()).add(sel_key)
        return registration

    def _unregister(self, sel_key: SK) -> None:
        registration = self._registrations.pop(sel_key)
        if registration is None:
            self._unindexed.discard(sel_key)
            return
        label, values = registration
        if values is None:
            _discard(self._selectors_by_label, label, sel_key)
            return
        if values:
            by_value = self._selectors_by_value[label]
            for value in values:
                _discard(by_value, value, sel_key)
            if not by_value:
                del self._selectors_by_value[label]

    def _choose_registration(self, selector: Selector) -> Registration:
        """The restriction with the fewest candidate items now; ties: values, fewer values, name."""
        best: tuple[int, bool, int, str] | None = None
        chosen: Registration = None
        for label, values in selector.label_restrictions().items():
            if values is None:
                rank = (self._item_count_by_label.get(label, 0), True, 0, label)
            else:
                by_value = self._items_by_value.get(label, {})
                count = sum(len(by_value.get(value, ())) for value in values)
                rank = (count, False, len(values), label)
            if best is None or rank < best:
                best, chosen = rank, (label, values)
        return chosen

    def _initial_matches(self, selector: Selector, registration: Registration) -> set[IK]:
        """The items a newly stored selector matches (see the module docstring)."""
        value_sets: list[set[IK]] = []
        restricted = presence = False
        everything = len(self._labels)
        for label, values in selector.label_restrictions().items():
            if values is None:
                presence = True
                continue
            restricted = True
            by_value = self._items_by_value.get(label, {})
            parts = [by_value[value] for value in values if value in by_value]
            # a restriction every item satisfies (``projectcalico.org/orchestrator == 'k8s'``) narrows nothing
            if not any(len(part) == everything for part in parts):
                value_sets.append(parts[0] if len(parts) == 1 else set().union(*parts))
        value_sets.sort(key=len)
        fewest = len(value_sets[0]) if value_sets else everything
        if restricted and not self._presence_narrower(registration, fewest):
            candidates = value_sets[0].intersection(*value_sets[1:]) if value_sets else set(self._labels)
            if selector.restrictions_are_exact() and not presence:
                return candidates
        elif registration is None and selector.is_all():
            return set(self._labels)
        else:
            candidates = set(self._candidate_items(registration))
        self.evaluations += len(candidates)
        evaluate, labels = selector.evaluate, self._labels
        return {item for item in candidates if evaluate(labels[item])}

    def _presence_narrower(self, registration: Registration, than: int) -> bool:
        """Whether the selector is registered under a presence restriction with fewer than `than` items."""
        if registration is None or registration[1] is not None:
            return False
        return self._item_count_by_label.get(registration[0], 0) < than

    def _candidate_items(self, registration: Registration) -> Iterator[IK]:
        if registration is None:
            return iter(self._labels)
        label, values = registration
        by_value = self._items_by_value.get(label, {})
        if values is None:
            return chain.from_iterable(by_value.values())
        return chain.from_iterable(by_value.get(value, ()) for value in values)

    def _apply_selector_matches(self, sel_key: SK, new: set[IK]) -> None:
        old = self._matches.pop(sel_key, set())
        if new:
            self._matches[sel_key] = new
        if not old or not new:
            stopped, started = old, new
        else:
            stopped, started = old - new, new - old
        if sel_key not in self._blind:
            matched_by = self._matched_by
            for item in stopped:
                _discard(matched_by, item, sel_key)
            for item in started:
                found = matched_by.get(item)
                if found is None:
                    matched_by[item] = {sel_key}
                else:
                    found.add(sel_key)
        if self._on_changed is not None:
            if stopped or started:
                self._on_changed(sel_key, stopped, started)
            return
        for item in stopped:
            self._on_stopped(sel_key, item)
        for item in started:
            self._on_started(sel_key, item)

    # Item updates.

    def update_item(self, item_key: IK, labels: Mapping[str, str] | None) -> None:
        """Set (or with ``None`` remove) the item's labels and report match changes."""
        old = self._labels.get(item_key)
        new = None if labels is None else dict(labels)
        if old == new:
            return
        blind_before = self._blind_matches(item_key, old) if old is not None and self._blind else set()
        self._reindex_item(item_key, old or {}, new or {})
        if new is None:
            del self._labels[item_key]
            self._apply_item_matches(item_key, set(), blind_before)
            return
        self._labels[item_key] = new
        selectors = self._selectors
        candidates = self._candidate_selectors(new)
        self.evaluations += len(candidates)
        matched = {s for s in candidates if selectors[s].evaluate(new)}
        self._apply_item_matches(item_key, matched, blind_before)

    def _blind_matches(self, item_key: IK, labels: Mapping[str, str]) -> set[SK]:
        """The ``by_item=False`` selectors that match the item (with its current `labels`): among
        its candidates, those whose matches hold it."""
        matches = self._matches
        return {s for s in self._candidate_selectors(labels) & self._blind if item_key in matches.get(s, ())}

    def _reindex_item(self, item_key: IK, old: Mapping[str, str], new: Mapping[str, str]) -> None:
        """Move the item in the label index from `old` to `new`, touching only changed pairs."""
        counts, items_by_value = self._item_count_by_label, self._items_by_value
        for label, value in old.items():
            if new.get(label) == value:
                continue
            by_value = items_by_value[label]
            _discard(by_value, value, item_key)
            if not by_value:
                del items_by_value[label]
            counts[label] -= 1
            if not counts[label]:
                del counts[label]
        for label, value in new.items():
            if old.get(label) == value:
                continue
            items_by_value.setdefault(label, {}).setdefault(value, set()).add(item_key)
            counts[label] = counts.get(label, 0) + 1

    def _candidate_selectors(self, labels: Mapping[str, str]) -> set[SK]:
        found: set[SK] = set(self._unindexed)
        by_label, by_value = self._selectors_by_label, self._selectors_by_value
        for label, value in labels.items():
            present = by_label.get(label)
            if present:
                found |= present
            values = by_value.get(label)
            if values:
                exact = values.get(value)
                if exact:
                    found |= exact
        return found

    def _apply_item_matches(self, item_key: IK, new: set[SK], blind_before: set[SK]) -> None:
        """`new`: every selector matching the item now; `blind_before`: the ``by_item=False`` ones
        that matched it before (the others are in ``_matched_by``)."""
        tracked = self._matched_by.pop(item_key, set())
        tracked_now = new - self._blind if self._blind else new
        if tracked_now:
            self._matched_by[item_key] = tracked_now
        old = tracked | blind_before if blind_before else tracked
        if old == new:
            return
        stopped, started = old - new, new - old
        for sel_key in stopped:
            _discard(self._matches, sel_key, item_key)
        for sel_key in started:
            self._matches.setdefault(sel_key, set()).add(item_key)
        for sel_key in stopped:
            self._on_stopped(sel_key, item_key)
        for sel_key in started:
            self._on_started(sel_key, item_key)


K = TypeVar("K", bound=Hashable)
V = TypeVar("V", bound=Hashable)


def _discard(index: dict[K, set[V]], key: K, member: V) -> None:
    """Remove `member` from ``index[key]``, dropping the entry when it becomes empty."""
    members = index.get(key)
    if members is not None:
        members.discard(member)
        if not members:
            del index[key]
